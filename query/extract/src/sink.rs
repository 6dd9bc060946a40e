//! The bounded text buffer every parser writes into.
//!
//! It normalises whitespace as text arrives (runs of spaces and tabs become one space,
//! `\r\n` and `\r` become `\n`, at most one blank line in a row, no whitespace at either
//! end of a line or of the text, control characters become spaces) and stops taking text
//! once `max_bytes` would be exceeded, cutting on a character boundary.

/// Bounded, whitespace-normalising text buffer.
#[derive(Debug)]
pub(crate) struct TextSink {
    out: String,
    max_bytes: usize,
    /// Whitespace seen since the last character written: a space is owed.
    pending_space: bool,
    /// Line breaks owed before the next character (0, 1 or 2).
    pending_newlines: u8,
    /// The last character pushed was `\r`: a following `\n` belongs to it.
    after_cr: bool,
    truncated: bool,
}

impl TextSink {
    /// An empty sink that keeps at most `max_bytes` bytes.
    pub(crate) fn new(max_bytes: usize) -> Self {
        TextSink {
            out: String::new(),
            max_bytes,
            pending_space: false,
            pending_newlines: 0,
            after_cr: false,
            truncated: false,
        }
    }

    /// The sink takes no more text: the parser may stop.
    pub(crate) fn is_full(&self) -> bool {
        self.truncated
    }

    /// Appends `s`, normalising its whitespace.
    pub(crate) fn push_str(&mut self, s: &str) {
        for c in s.chars() {
            if self.truncated {
                return;
            }
            self.push_char(c);
        }
    }

    /// Appends one character, normalising whitespace.
    pub(crate) fn push_char(&mut self, c: char) {
        let after_cr = std::mem::replace(&mut self.after_cr, false);
        match c {
            '\n' if after_cr => {}
            '\r' => {
                self.after_cr = true;
                self.line_feed();
            }
            '\n' | '\u{0b}' | '\u{0c}' | '\u{85}' | '\u{2028}' | '\u{2029}' => self.line_feed(),
            // Byte order marks and NULs carry nothing.
            '\u{feff}' | '\0' => {}
            c if c.is_whitespace() || c.is_control() => self.space(),
            c => self.emit(c),
        }
    }

    /// A word separator: one space unless a line break is owed anyway.
    pub(crate) fn space(&mut self) {
        self.pending_space = true;
    }

    /// A line break where there is none yet (two in a row are still one).
    pub(crate) fn newline(&mut self) {
        self.pending_newlines = self.pending_newlines.max(1);
    }

    /// A line feed in the text: two in a row make a blank line.
    fn line_feed(&mut self) {
        self.pending_newlines = (self.pending_newlines + 1).min(2);
    }

    /// A paragraph break: one blank line.
    pub(crate) fn paragraph(&mut self) {
        self.pending_newlines = 2;
    }

    fn emit(&mut self, c: char) {
        if self.truncated {
            return;
        }
        let sep = if self.out.is_empty() {
            ""
        } else {
            match self.pending_newlines {
                0 if self.pending_space => " ",
                0 => "",
                1 => "\n",
                _ => "\n\n",
            }
        };
        if self.out.len() + sep.len() + c.len_utf8() > self.max_bytes {
            self.truncated = true;
            return;
        }
        self.out.push_str(sep);
        self.out.push(c);
        self.pending_space = false;
        self.pending_newlines = 0;
    }

    /// The text and whether it was cut.
    pub(crate) fn finish(self) -> (String, bool) {
        (self.out, self.truncated)
    }
}

#[cfg(test)]
mod tests {
    use super::TextSink;

    fn norm(s: &str, max: usize) -> (String, bool) {
        let mut sink = TextSink::new(max);
        sink.push_str(s);
        sink.finish()
    }

    #[test]
    fn collapses_spaces_and_blank_lines() {
        let (t, cut) = norm("  a \t  b\r\n\r\n\r\n\n c  \n", 100);
        assert_eq!(t, "a b\n\nc");
        assert!(!cut);
    }

    #[test]
    fn crlf_is_one_line_break() {
        assert_eq!(norm("a\r\nb\rc\nd", 100).0, "a\nb\nc\nd");
    }

    #[test]
    fn control_characters_become_spaces() {
        assert_eq!(norm("a\u{1}b\0c\u{feff}d", 100).0, "a bcd");
    }

    #[test]
    fn cuts_on_char_boundary() {
        let (t, cut) = norm("абв где", 5);
        assert_eq!(t, "аб");
        assert!(cut);
        // Trailing whitespace alone does not count as cut text.
        let (t, cut) = norm("ab   \n\n", 2);
        assert_eq!(t, "ab");
        assert!(!cut);
    }
}
