//! The search query language.
//!
//! ```text
//! contract payment          both words (every word must match)
//! "supply contract"         the exact phrase
//! invoice OR receipt        either word
//! contract -draft           without "draft"
//! contr*                    words that start with "contr"
//! contrakt~1                one typo allowed (fuzzy matches rank below exact ones)
//! name:report tags:finance  one field: name, description, tags, content_type, content,
//!                           state, element, document_id, file_id, language, or any
//!                           metadata key (`customer:acme`)
//! created:[2024-01-01 TO 2024-12-31]   a date range (`*` leaves an end open)
//! (invoice OR receipt) 2024           groups
//! ```
//!
//! A query that does not parse is refused with the character position of the problem.

/// One part of a parsed query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// Every part must match.
    And(Vec<Node>),
    /// At least one part must match.
    Or(Vec<Node>),
    /// Must not match.
    Not(Box<Node>),
    /// One term, in a field or in the default fields.
    Term {
        /// The field named before `:`, lower-cased.
        field: Option<String>,
        value: Value,
        /// Character position of the term (for error messages about its value).
        position: usize,
    },
}

/// What a term matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Word(String),
    Phrase(String),
    Prefix(String),
    Fuzzy(String, u8),
    /// Inclusive range; `None` is an open end.
    Range(Option<String>, Option<String>),
}

/// A query that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} at character {position}")]
pub struct SyntaxError {
    /// Zero-based character position of the problem.
    pub position: usize,
    pub message: String,
}

fn err<T>(position: usize, message: impl Into<String>) -> Result<T, SyntaxError> {
    Err(SyntaxError { position, message: message.into() })
}

/// The longest fuzzy distance allowed (`word~2`).
pub const MAX_FUZZY: u8 = 2;

/// Parses a query. The empty query (only spaces) is `And([])`: it matches everything.
pub fn parse(input: &str) -> Result<Node, SyntaxError> {
    let chars: Vec<char> = input.chars().collect();
    let mut p = Parser { c: chars, i: 0, depth: 0 };
    let node = p.sequence()?;
    p.skip_ws();
    if p.i < p.c.len() {
        return err(p.i, "unexpected ')'");
    }
    Ok(node)
}

struct Parser {
    c: Vec<char>,
    i: usize,
    depth: usize,
}

fn is_special(c: char) -> bool {
    c.is_whitespace() || c == '(' || c == ')' || c == '"'
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.c.get(self.i).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.i += 1;
        }
    }

    /// Whether the next bare word is exactly `kw` (followed by a space, `(`, `"` or the end).
    fn at_keyword(&self, kw: &str) -> bool {
        let n = kw.chars().count();
        let word: String = self.c.iter().skip(self.i).take(n).collect();
        word == kw && self.c.get(self.i + n).is_none_or(|c| is_special(*c))
    }

    /// Clauses joined by AND until the end or a `)`.
    fn sequence(&mut self) -> Result<Node, SyntaxError> {
        let mut parts = Vec::new();
        loop {
            self.skip_ws();
            match self.peek() {
                None | Some(')') => break,
                _ => {}
            }
            if self.at_keyword("OR") {
                return err(self.i, "OR needs a term on each side");
            }
            if self.at_keyword("AND") {
                self.i += 3;
                continue;
            }
            parts.push(self.disjunction()?);
        }
        Ok(if parts.len() == 1 { parts.pop().unwrap_or(Node::And(Vec::new())) } else { Node::And(parts) })
    }

    fn disjunction(&mut self) -> Result<Node, SyntaxError> {
        let mut parts = vec![self.unary()?];
        loop {
            let save = self.i;
            self.skip_ws();
            if self.at_keyword("OR") {
                let at = self.i;
                self.i += 2;
                self.skip_ws();
                if matches!(self.peek(), None | Some(')')) || self.at_keyword("OR") {
                    return err(at, "OR needs a term on each side");
                }
                parts.push(self.unary()?);
            } else {
                self.i = save;
                break;
            }
        }
        Ok(if parts.len() == 1 { parts.remove(0) } else { Node::Or(parts) })
    }

    fn unary(&mut self) -> Result<Node, SyntaxError> {
        self.skip_ws();
        if self.peek() == Some('-') {
            let at = self.i;
            self.i += 1;
            if self.peek().is_none_or(char::is_whitespace) {
                return err(at, "'-' must be followed by the term to exclude");
            }
            return Ok(Node::Not(Box::new(self.primary()?)));
        }
        if self.at_keyword("NOT") {
            let at = self.i;
            self.i += 3;
            self.skip_ws();
            if matches!(self.peek(), None | Some(')')) {
                return err(at, "NOT must be followed by the term to exclude");
            }
            return Ok(Node::Not(Box::new(self.primary()?)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Node, SyntaxError> {
        self.skip_ws();
        let start = self.i;
        match self.peek() {
            Some('(') => {
                self.depth += 1;
                if self.depth > 32 {
                    return err(start, "groups nest too deeply");
                }
                self.i += 1;
                let inner = self.sequence()?;
                self.skip_ws();
                if self.peek() != Some(')') {
                    return err(start, "'(' is never closed");
                }
                self.i += 1;
                self.depth -= 1;
                Ok(inner)
            }
            Some(')') => err(start, "unexpected ')'"),
            Some('"') => Ok(Node::Term { field: None, value: self.phrase()?, position: start }),
            None => err(start, "a term is missing"),
            Some(_) => {
                // A field name: letters, digits, `_`, `.`, `-` followed by `:`.
                let mut j = self.i;
                while self.c.get(j).is_some_and(|c| c.is_alphanumeric() || matches!(c, '_' | '.' | '-')) {
                    j += 1;
                }
                if j > self.i && self.c.get(j) == Some(&':') {
                    let field: String = self.c[self.i..j].iter().collect::<String>().to_lowercase();
                    self.i = j + 1;
                    let vpos = self.i;
                    let value = match self.peek() {
                        Some('"') => self.phrase()?,
                        Some('[') => self.range()?,
                        None => return err(vpos, format!("{field}: needs a value")),
                        Some(c) if is_special(c) => return err(vpos, format!("{field}: needs a value")),
                        Some(_) => self.word()?,
                    };
                    return Ok(Node::Term { field: Some(field), value, position: start });
                }
                Ok(Node::Term { field: None, value: self.word()?, position: start })
            }
        }
    }

    fn phrase(&mut self) -> Result<Value, SyntaxError> {
        let start = self.i;
        self.i += 1;
        let mut s = String::new();
        loop {
            match self.peek() {
                None => return err(start, "'\"' is never closed"),
                Some('"') => {
                    self.i += 1;
                    break;
                }
                Some('\\') if self.c.get(self.i + 1) == Some(&'"') => {
                    s.push('"');
                    self.i += 2;
                }
                Some(c) => {
                    s.push(c);
                    self.i += 1;
                }
            }
        }
        if s.trim().is_empty() {
            return err(start, "the phrase is empty");
        }
        Ok(Value::Phrase(s))
    }

    fn word(&mut self) -> Result<Value, SyntaxError> {
        let start = self.i;
        while self.peek().is_some_and(|c| !is_special(c)) {
            self.i += 1;
        }
        let raw: String = self.c[start..self.i].iter().collect();
        if let Some((w, d)) = raw.rsplit_once('~') {
            if w.is_empty() {
                return err(start, "'~' must follow a word");
            }
            let dist = if d.is_empty() {
                1
            } else {
                match d.parse::<u8>() {
                    Ok(n) if n <= MAX_FUZZY => n,
                    _ => {
                        return err(
                            start + w.chars().count() + 1,
                            format!("typo distance after '~' must be 0 to {MAX_FUZZY}"),
                        );
                    }
                }
            };
            return Ok(Value::Fuzzy(w.to_owned(), dist));
        }
        if let Some(w) = raw.strip_suffix('*') {
            if w.is_empty() || w.ends_with('*') {
                return err(start, "'*' must follow the start of a word");
            }
            return Ok(Value::Prefix(w.to_owned()));
        }
        Ok(Value::Word(raw))
    }

    fn range(&mut self) -> Result<Value, SyntaxError> {
        let start = self.i;
        self.i += 1;
        let close = (self.i..self.c.len()).find(|&j| self.c[j] == ']');
        let Some(close) = close else { return err(start, "'[' is never closed") };
        let inner: String = self.c[self.i..close].iter().collect();
        let parts: Vec<&str> = inner.split_whitespace().collect();
        let [from, to_kw, to] = parts.as_slice() else {
            return err(start, "a range is written [FROM TO UNTIL], e.g. [2024-01-01 TO 2024-12-31]");
        };
        if *to_kw != "TO" {
            return err(start, "a range is written [FROM TO UNTIL], e.g. [2024-01-01 TO 2024-12-31]");
        }
        self.i = close + 1;
        let open = |s: &str| (s != "*").then(|| s.to_owned());
        Ok(Value::Range(open(from), open(to)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &str, pos: usize) -> Node {
        Node::Term { field: None, value: Value::Word(s.to_owned()), position: pos }
    }

    #[test]
    fn words_phrases_and_operators() {
        assert_eq!(parse("a b").unwrap(), Node::And(vec![w("a", 0), w("b", 2)]));
        assert_eq!(parse("a OR b c").unwrap(), Node::And(vec![Node::Or(vec![w("a", 0), w("b", 5)]), w("c", 7)]));
        assert_eq!(parse("-a").unwrap(), Node::Not(Box::new(w("a", 1))));
        assert_eq!(
            parse("\"supply contract\"").unwrap(),
            Node::Term { field: None, value: Value::Phrase("supply contract".into()), position: 0 }
        );
        assert_eq!(
            parse("contr*").unwrap(),
            Node::Term { field: None, value: Value::Prefix("contr".into()), position: 0 }
        );
        assert_eq!(
            parse("kontract~1").unwrap(),
            Node::Term { field: None, value: Value::Fuzzy("kontract".into(), 1), position: 0 }
        );
        assert_eq!(parse("   ").unwrap(), Node::And(vec![]));
        assert_eq!(parse("(a OR b)").unwrap(), Node::Or(vec![w("a", 1), w("b", 6)]));
    }

    #[test]
    fn fields_and_ranges() {
        assert_eq!(
            parse("content_type:application/pdf").unwrap(),
            Node::Term {
                field: Some("content_type".into()),
                value: Value::Word("application/pdf".into()),
                position: 0
            }
        );
        assert_eq!(
            parse("created:[2024-01-01 TO *]").unwrap(),
            Node::Term {
                field: Some("created".into()),
                value: Value::Range(Some("2024-01-01".into()), None),
                position: 0
            }
        );
        assert_eq!(
            parse("Customer:\"ACME Corp\"").unwrap(),
            Node::Term { field: Some("customer".into()), value: Value::Phrase("ACME Corp".into()), position: 0 }
        );
        // A colon not after a field name is part of the word.
        assert_eq!(
            parse("12:30").unwrap(),
            Node::Term { field: Some("12".into()), value: Value::Word("30".into()), position: 0 }
        );
    }

    #[test]
    fn errors_point_at_the_problem() {
        let e = |q: &str| parse(q).unwrap_err();
        assert_eq!(e("a \"b c").position, 2);
        assert_eq!(e("(a b").position, 0);
        assert_eq!(e("a b)").position, 3);
        assert_eq!(e("a OR").position, 2);
        assert_eq!(e("OR a").position, 0);
        assert_eq!(e("a - b").position, 2);
        assert_eq!(e("name:").position, 5);
        assert_eq!(e("x~7").position, 2);
        assert_eq!(e("created:[2024 2025]").position, 8);
        assert_eq!(e("*").position, 0);
        assert!(e("(((((((((((((((((((((((((((((((((((a").message.contains("deeply"));
    }
}
