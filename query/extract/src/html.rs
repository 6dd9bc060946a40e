//! HTML: decoded with the declared or detected charset, rendered to plain text by
//! html2text (which drops `script` and `style` and decodes entities) without decorations
//! (no `#` before headings, no brackets around links, no link footnotes).

use encoding_rs::{Encoding, UTF_8};
use html2text::render::TrivialDecorator;

use crate::sink::TextSink;
use crate::text;
use crate::{ExtractError, Format};

/// Rendering width: wide enough that html2text never wraps a paragraph.
const WIDTH: usize = 100_000;
/// How far into the document a `<meta charset>` is looked for (the HTML prescan's 1024,
/// with room for long comments before it).
const PRESCAN_BYTES: usize = 4096;

/// Extracts the text of an HTML document.
pub(crate) fn extract(
    bytes: &[u8],
    declared: Option<&'static Encoding>,
    sink: &mut TextSink,
) -> Result<(), ExtractError> {
    let source = text::decode(bytes, declared, meta_charset(bytes))?;
    let rendered = html2text::config::with_decorator(TrivialDecorator::new())
        .raw_mode(true)
        .allow_width_overflow()
        .no_link_wrapping()
        .link_footnotes(false)
        .string_from_read(source.as_bytes(), WIDTH)
        .map_err(|e| ExtractError::malformed(Format::Html, crate::reason(&e)))?;
    sink.push_str(&rendered);
    Ok(())
}

/// The encoding named by a `<meta charset=…>` or `<meta http-equiv … content="…;
/// charset=…">` near the start. A UTF-16 label means UTF-8 here, as in browsers: bytes
/// that reached this far without a UTF-16 BOM are not UTF-16.
fn meta_charset(bytes: &[u8]) -> Option<&'static Encoding> {
    let head: Vec<u8> = bytes[..bytes.len().min(PRESCAN_BYTES)].to_ascii_lowercase();
    let mut from = 0;
    while let Some(at) = find(&head[from..], b"charset").map(|i| i + from) {
        from = at + b"charset".len();
        let tag_start = head[..at].iter().rposition(|&b| b == b'<');
        let in_meta = tag_start.is_some_and(|s| head[s..].starts_with(b"<meta") && !head[s..at].contains(&b'>'));
        if !in_meta {
            continue;
        }
        let rest = &head[from..];
        let rest = rest.trim_ascii_start();
        let Some(rest) = rest.strip_prefix(b"=") else { continue };
        let rest = rest.trim_ascii_start();
        let rest = rest.strip_prefix(b"\"").or_else(|| rest.strip_prefix(b"'")).unwrap_or(rest);
        let end = rest
            .iter()
            .position(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b':' | b'.')))
            .unwrap_or(rest.len());
        if let Some(encoding) = Encoding::for_label(&rest[..end]) {
            return Some(if encoding.output_encoding() == UTF_8 { UTF_8 } else { encoding });
        }
    }
    None
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_meta_charset() {
        let html = b"<html><head><meta charset=\"windows-1251\"><title>x</title>";
        assert_eq!(meta_charset(html), Some(encoding_rs::WINDOWS_1251));
        let html = b"<meta http-equiv=\"Content-Type\" content=\"text/html; charset=KOI8-R\">";
        assert_eq!(meta_charset(html), Some(encoding_rs::KOI8_R));
        assert_eq!(meta_charset(b"<p>charset=koi8-r</p>"), None);
        assert_eq!(meta_charset(b"<meta charset=utf-16le>"), Some(UTF_8));
    }
}
