//! Choosing the parser: by content type, then by file extension, then by the leading bytes.

use std::io::Cursor;

use encoding_rs::Encoding;

/// A format we extract text from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// Plain text in any common encoding.
    Text,
    /// CommonMark / GitHub-flavoured Markdown.
    Markdown,
    /// HTML or XHTML.
    Html,
    /// PDF.
    Pdf,
    /// Word (Office Open XML) document.
    Docx,
    /// OpenDocument text.
    Odt,
    /// Excel (Office Open XML) workbook.
    Xlsx,
    /// PowerPoint (Office Open XML) presentation.
    Pptx,
    /// OpenDocument spreadsheet.
    Ods,
    /// OpenDocument presentation.
    Odp,
}

impl Format {
    /// The name reported in [`crate::Extracted::format`].
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Text => "text",
            Format::Markdown => "markdown",
            Format::Html => "html",
            Format::Pdf => "pdf",
            Format::Docx => "docx",
            Format::Odt => "odt",
            Format::Xlsx => "xlsx",
            Format::Pptx => "pptx",
            Format::Ods => "ods",
            Format::Odp => "odp",
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Chooses the format of `bytes`: a known content type wins, then a known extension of
/// `name`, then the leading bytes. `None` means nothing we extract.
///
/// Generic content types (`application/octet-stream`, `application/zip`, empty) fall
/// through to the extension and the bytes; unknown bytes under a generic type are taken
/// as text when they look like text. `text/plain` with a Markdown extension is Markdown.
pub fn detect_format(bytes: &[u8], content_type: &str, name: &str) -> Option<Format> {
    let media = media_type(content_type);
    let by_ext = from_extension(name);
    if media == "text/plain" && by_ext == Some(Format::Markdown) {
        return by_ext;
    }
    if let Some(format) = from_media_type(&media) {
        return Some(format);
    }
    if let Some(format) = by_ext {
        return Some(format);
    }
    if let Some(format) = from_magic(bytes) {
        return Some(format);
    }
    if is_generic(&media) && looks_like_text(bytes) {
        return Some(Format::Text);
    }
    None
}

/// The lowercased `type/subtype` of a content type, without parameters.
fn media_type(content_type: &str) -> String {
    content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

/// The encoding named by a `charset` parameter of the content type, if any.
pub(crate) fn charset_param(content_type: &str) -> Option<&'static Encoding> {
    content_type.split(';').skip(1).find_map(|param| {
        let (key, value) = param.split_once('=')?;
        if !key.trim().eq_ignore_ascii_case("charset") {
            return None;
        }
        Encoding::for_label(value.trim().trim_matches(|c| c == '"' || c == '\'').as_bytes())
    })
}

fn is_generic(media: &str) -> bool {
    matches!(
        media,
        "" | "application/octet-stream"
            | "binary/octet-stream"
            | "application/binary"
            | "application/unknown"
            | "application/zip"
            | "application/x-zip-compressed"
            | "application/x-zip"
    )
}

fn from_media_type(media: &str) -> Option<Format> {
    let format = match media {
        "text/markdown" | "text/x-markdown" | "text/x-gfm" => Format::Markdown,
        "text/html" | "application/xhtml+xml" => Format::Html,
        "application/pdf" | "application/x-pdf" | "application/acrobat" => Format::Pdf,
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
        | "application/vnd.openxmlformats-officedocument.wordprocessingml.template"
        | "application/vnd.ms-word.document.macroenabled.12" => Format::Docx,
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
        | "application/vnd.openxmlformats-officedocument.spreadsheetml.template"
        | "application/vnd.ms-excel.sheet.macroenabled.12" => Format::Xlsx,
        "application/vnd.openxmlformats-officedocument.presentationml.presentation"
        | "application/vnd.openxmlformats-officedocument.presentationml.slideshow"
        | "application/vnd.ms-powerpoint.presentation.macroenabled.12" => Format::Pptx,
        "application/vnd.oasis.opendocument.text" | "application/vnd.oasis.opendocument.text-template" => Format::Odt,
        "application/vnd.oasis.opendocument.spreadsheet"
        | "application/vnd.oasis.opendocument.spreadsheet-template" => Format::Ods,
        "application/vnd.oasis.opendocument.presentation"
        | "application/vnd.oasis.opendocument.presentation-template" => Format::Odp,
        "application/json"
        | "application/xml"
        | "application/x-yaml"
        | "application/yaml"
        | "application/toml"
        | "application/x-sh"
        | "application/javascript"
        | "application/sql" => Format::Text,
        // RTF is markup, not text.
        "text/rtf" | "text/richtext" => return None,
        m if m.starts_with("text/") => Format::Text,
        _ => return None,
    };
    Some(format)
}

fn from_extension(name: &str) -> Option<Format> {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    let (stem, ext) = base.rsplit_once('.')?;
    if stem.is_empty() {
        return None;
    }
    let format = match ext.to_ascii_lowercase().as_str() {
        "txt" | "text" | "log" | "csv" | "tsv" | "json" | "xml" | "yaml" | "yml" | "toml" | "ini" | "cfg" | "conf"
        | "rst" | "tex" | "eml" | "srt" | "vtt" => Format::Text,
        "md" | "markdown" | "mdown" | "mkd" | "mkdn" => Format::Markdown,
        "htm" | "html" | "xhtml" | "xht" => Format::Html,
        "pdf" => Format::Pdf,
        "docx" | "docm" | "dotx" | "dotm" => Format::Docx,
        "xlsx" | "xlsm" | "xltx" | "xltm" => Format::Xlsx,
        "pptx" | "pptm" | "ppsx" | "potx" => Format::Pptx,
        "odt" | "ott" => Format::Odt,
        "ods" | "ots" => Format::Ods,
        "odp" | "otp" => Format::Odp,
        _ => return None,
    };
    Some(format)
}

/// Recognises PDF, the Office and OpenDocument ZIP containers, and HTML by their leading
/// bytes.
fn from_magic(bytes: &[u8]) -> Option<Format> {
    // PDF readers accept the header anywhere in the first KiB.
    let head = &bytes[..bytes.len().min(1024)];
    if head.windows(5).any(|w| w == b"%PDF-") {
        return Some(Format::Pdf);
    }
    if bytes.starts_with(b"PK\x03\x04") {
        return zip_format(bytes);
    }
    let start: Vec<u8> = bytes
        .iter()
        .skip(if bytes.starts_with(b"\xEF\xBB\xBF") { 3 } else { 0 })
        .skip_while(|b| b.is_ascii_whitespace())
        .take(64)
        .map(u8::to_ascii_lowercase)
        .collect();
    if start.starts_with(b"<!doctype html") || start.starts_with(b"<html") {
        return Some(Format::Html);
    }
    None
}

/// Tells the ZIP containers apart by their parts: ODF's `mimetype`, else the OOXML main
/// parts.
fn zip_format(bytes: &[u8]) -> Option<Format> {
    use std::io::Read;

    let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).ok()?;
    if let Ok(entry) = archive.by_name("mimetype") {
        let mut mime = String::new();
        entry.take(128).read_to_string(&mut mime).ok()?;
        let mime = mime.trim();
        return [
            ("application/vnd.oasis.opendocument.text", Format::Odt),
            ("application/vnd.oasis.opendocument.spreadsheet", Format::Ods),
            ("application/vnd.oasis.opendocument.presentation", Format::Odp),
        ]
        .into_iter()
        .find_map(|(prefix, format)| mime.starts_with(prefix).then_some(format));
    }
    [("word/document.xml", Format::Docx), ("xl/workbook.xml", Format::Xlsx), ("ppt/presentation.xml", Format::Pptx)]
        .into_iter()
        .find_map(|(part, format)| archive.index_for_name(part).map(|_| format))
}

/// Plausibly text: no NUL bytes and few control characters in the first KiBs.
fn looks_like_text(bytes: &[u8]) -> bool {
    if bytes.is_empty() {
        return false;
    }
    if bytes.starts_with(b"\xFF\xFE") || bytes.starts_with(b"\xFE\xFF") {
        return true;
    }
    let head = &bytes[..bytes.len().min(8192)];
    let controls = head.iter().filter(|&&b| b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r' | 0x0c | 0x1b)).count();
    !head.contains(&0) && controls * 100 <= head.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_type_then_extension_then_magic() {
        assert_eq!(detect_format(b"x", "text/html; charset=utf-8", "a.txt"), Some(Format::Html));
        assert_eq!(detect_format(b"x", "application/octet-stream", "A.PDF"), Some(Format::Pdf));
        assert_eq!(detect_format(b"%PDF-1.7\n", "application/octet-stream", "blob"), Some(Format::Pdf));
        assert_eq!(detect_format(b"# x", "text/plain", "notes.md"), Some(Format::Markdown));
        assert_eq!(detect_format(b"<!DOCTYPE html><p>x", "", ""), Some(Format::Html));
        assert_eq!(detect_format(b"hello", "", "README"), Some(Format::Text));
        assert_eq!(detect_format(b"\x89PNG\r\n\x1a\n\0\0", "image/png", "a.png"), None);
        assert_eq!(detect_format(b"", "", ".txt"), None);
    }

    #[test]
    fn charset_parameter() {
        assert_eq!(charset_param("text/plain; charset=\"windows-1251\""), Some(encoding_rs::WINDOWS_1251));
        assert_eq!(charset_param("text/plain; format=flowed"), None);
        assert_eq!(charset_param("text/plain; charset=bogus"), None);
    }
}
