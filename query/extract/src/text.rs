//! Plain text: charset detection and decoding, and the binary check shared by the text
//! formats (plain text, Markdown, HTML).

use std::borrow::Cow;

use chardetng::{EncodingDetector, Iso2022JpDetection, Utf8Detection};
use encoding_rs::{Encoding, REPLACEMENT, UTF_8, UTF_16BE, UTF_16LE};

use crate::ExtractError;
use crate::sink::TextSink;

/// How many leading bytes chardetng looks at.
const DETECT_BYTES: usize = 1 << 20;
/// How many leading characters the binary check looks at.
const BINARY_SAMPLE_CHARS: usize = 1 << 20;

/// Extracts plain text: decodes and normalises it.
pub(crate) fn extract(
    bytes: &[u8],
    declared: Option<&'static Encoding>,
    sink: &mut TextSink,
) -> Result<(), ExtractError> {
    let text = decode(bytes, declared, None)?;
    sink.push_str(&text);
    Ok(())
}

/// Decodes text bytes to UTF-8 and refuses binary content.
///
/// The encoding is chosen by, in order: a byte order mark; the `declared` charset (a
/// declared UTF-8 that does not validate is ignored, and so is the replacement encoding);
/// the `hint` (e.g. an HTML `<meta charset>`, same rule); UTF-16 recognised by its NUL
/// pattern; valid UTF-8; chardetng's guess.
pub(crate) fn decode<'a>(
    bytes: &'a [u8],
    declared: Option<&'static Encoding>,
    hint: Option<&'static Encoding>,
) -> Result<Cow<'a, str>, ExtractError> {
    let text = if let Some((encoding, bom_len)) = Encoding::for_bom(bytes) {
        encoding.decode_without_bom_handling(&bytes[bom_len..]).0
    } else {
        let utf8 = std::str::from_utf8(bytes).ok();
        let trusted = |e: &&'static Encoding| *e != REPLACEMENT && (*e != UTF_8 || utf8.is_some());
        if let Some(encoding) = declared.filter(trusted).or(hint.filter(trusted)) {
            encoding.decode_without_bom_handling(bytes).0
        } else if let Some(encoding) = utf16_by_nuls(bytes) {
            encoding.decode_without_bom_handling(bytes).0
        } else if let Some(text) = utf8 {
            Cow::Borrowed(text)
        } else {
            guess(bytes).decode_without_bom_handling(bytes).0
        }
    };
    if is_binary(&text) {
        return Err(ExtractError::Binary);
    }
    Ok(text)
}

/// chardetng's guess for non-UTF-8 bytes.
fn guess(bytes: &[u8]) -> &'static Encoding {
    let mut detector = EncodingDetector::new(Iso2022JpDetection::Deny);
    let sample = &bytes[..bytes.len().min(DETECT_BYTES)];
    detector.feed(sample, sample.len() == bytes.len());
    detector.guess(None, Utf8Detection::Allow)
}

/// UTF-16 without a byte order mark: ASCII-range text has a NUL in every other byte.
fn utf16_by_nuls(bytes: &[u8]) -> Option<&'static Encoding> {
    let sample = &bytes[..bytes.len().min(4096) & !1];
    let pairs = sample.len() / 2;
    if pairs < 2 {
        return None;
    }
    let even = sample.iter().step_by(2).filter(|&&b| b == 0).count();
    let odd = sample.iter().skip(1).step_by(2).filter(|&&b| b == 0).count();
    if odd * 10 >= pairs * 4 && even * 50 <= pairs {
        Some(UTF_16LE)
    } else if even * 10 >= pairs * 4 && odd * 50 <= pairs {
        Some(UTF_16BE)
    } else {
        None
    }
}

/// Decoded text that is really binary: any NUL, or more than 5% control characters or
/// undecodable bytes among the leading characters.
fn is_binary(text: &str) -> bool {
    let mut total = 0usize;
    let mut odd = 0usize;
    for c in text.chars().take(BINARY_SAMPLE_CHARS) {
        total += 1;
        match c {
            '\0' => return true,
            '\t' | '\n' | '\r' | '\u{0c}' | '\u{1b}' => {}
            c if c.is_control() || c == char::REPLACEMENT_CHARACTER => odd += 1,
            _ => {}
        }
    }
    odd * 20 > total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf16_without_bom() {
        let bytes: Vec<u8> = "hello world".encode_utf16().flat_map(u16::to_le_bytes).collect();
        assert_eq!(decode(&bytes, None, None).ok().as_deref(), Some("hello world"));
        let bytes: Vec<u8> = "hello world".encode_utf16().flat_map(u16::to_be_bytes).collect();
        assert_eq!(decode(&bytes, None, None).ok().as_deref(), Some("hello world"));
    }

    #[test]
    fn declared_utf8_that_does_not_validate_is_ignored() {
        let (bytes, _, _) = encoding_rs::WINDOWS_1252.encode("café crème brûlée à la française, déjà vu");
        let text = decode(&bytes, Some(UTF_8), None).ok();
        assert_eq!(text.as_deref(), Some("café crème brûlée à la française, déjà vu"));
    }

    #[test]
    fn binary_check() {
        assert!(is_binary("ab\0cd"));
        assert!(is_binary("\u{1}\u{2}\u{3}abcdefghijklmnop"));
        assert!(!is_binary("plain\ttext\r\n"));
        assert!(!is_binary(""));
    }
}
