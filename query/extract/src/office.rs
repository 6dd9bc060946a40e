//! The ZIP containers: DOCX, XLSX, PPTX (Office Open XML) and ODT, ODS, ODP (OpenDocument).
//!
//! Parts are streamed out of the archive through a limiter that counts the bytes actually
//! decompressed (declared sizes are not trusted) against one budget for the whole
//! archive: going over it is [`ExtractError::Unpacked`]. The XML is read event by event
//! with quick-xml, so memory stays small whatever a part unpacks to, and reading stops as
//! soon as the text is full. Archives with too many entries are refused, and at most
//! [`MAX_PARTS`] parts are read.

use std::io::{BufRead, BufReader, Cursor, Read};

use quick_xml::Reader;
use quick_xml::events::{BytesRef, BytesStart, Event};

use crate::sink::TextSink;
use crate::{ExtractError, Format};

/// Archives with more entries than this are refused.
const MAX_ENTRIES: usize = 20_000;
/// At most this many parts (slides, sheets, headers, …) are read.
const MAX_PARTS: usize = 2_000;
/// Shared strings of an XLSX kept for the sheets: at most this many.
const MAX_SHARED_STRINGS: usize = 1_000_000;

/// Extracts the text of an Office Open XML or OpenDocument file.
pub(crate) fn extract(
    bytes: &[u8],
    format: Format,
    max_unpacked: u64,
    sink: &mut TextSink,
) -> Result<(), ExtractError> {
    let mut container = Container::open(bytes, format, max_unpacked)?;
    match format {
        Format::Docx => docx(&mut container, sink),
        Format::Xlsx => xlsx(&mut container, sink),
        Format::Pptx => pptx(&mut container, sink),
        Format::Odt => odf(&mut container, &ODT, sink),
        Format::Ods => odf(&mut container, &ODS, sink),
        Format::Odp => odf(&mut container, &ODP, sink),
        Format::Text | Format::Markdown | Format::Html | Format::Pdf => {
            Err(ExtractError::malformed(format, "not a zip container format"))
        }
    }
}

/// `word/document.xml`, then footnotes, endnotes, headers and footers.
fn docx(container: &mut Container<'_>, sink: &mut TextSink) -> Result<(), ExtractError> {
    let main = if container.has("word/document.xml") {
        "word/document.xml".to_owned()
    } else {
        container
            .numbered("word/document", ".xml")
            .into_iter()
            .next()
            .ok_or_else(|| ExtractError::malformed(Format::Docx, "missing word/document.xml"))?
    };
    let mut parts = vec![main, "word/footnotes.xml".to_owned(), "word/endnotes.xml".to_owned()];
    parts.extend(container.numbered("word/header", ".xml"));
    parts.extend(container.numbered("word/footer", ".xml"));
    for part in parts {
        container.walk(&part, &DOCX, sink)?;
        sink.paragraph();
    }
    Ok(())
}

/// The slides in order (`ppt/slides/slideN.xml`).
fn pptx(container: &mut Container<'_>, sink: &mut TextSink) -> Result<(), ExtractError> {
    let slides = container.numbered("ppt/slides/slide", ".xml");
    if slides.is_empty() && !container.has("ppt/presentation.xml") {
        return Err(ExtractError::malformed(Format::Pptx, "missing ppt/presentation.xml"));
    }
    for slide in slides {
        container.walk(&slide, &PPTX, sink)?;
        sink.paragraph();
    }
    Ok(())
}

/// `content.xml` of an OpenDocument file.
fn odf(container: &mut Container<'_>, rules: &Rules, sink: &mut TextSink) -> Result<(), ExtractError> {
    if !container.walk("content.xml", rules, sink)? {
        return Err(ExtractError::malformed(container.format, "missing content.xml"));
    }
    Ok(())
}

/// The sheets in order, row by row: shared strings, inline strings and values.
fn xlsx(container: &mut Container<'_>, sink: &mut TextSink) -> Result<(), ExtractError> {
    let sheets = container.numbered("xl/worksheets/sheet", ".xml");
    if sheets.is_empty() && !container.has("xl/workbook.xml") {
        return Err(ExtractError::malformed(Format::Xlsx, "missing xl/workbook.xml"));
    }
    let shared = container.read("xl/sharedStrings.xml", shared_strings)?.unwrap_or_default();
    for sheet in sheets {
        container.read(&sheet, |reader| sheet_text(reader, &shared, sink))?;
        sink.paragraph();
        if sink.is_full() {
            break;
        }
    }
    Ok(())
}

/// The `<si>` entries of `xl/sharedStrings.xml`, phonetic runs left out.
fn shared_strings(reader: &mut dyn BufRead) -> Result<Vec<String>, quick_xml::Error> {
    let mut reader = Reader::from_reader(reader);
    let mut buf = Vec::new();
    let mut strings = Vec::new();
    let mut current = String::new();
    let (mut in_t, mut in_phonetic) = (0usize, 0usize);
    loop {
        buf.clear();
        match reader.read_event_into(&mut buf)? {
            Event::Start(e) => match e.local_name().as_ref() {
                "t" => in_t += 1,
                "rPh" => in_phonetic += 1,
                _ => {}
            },
            Event::End(e) => match e.local_name().as_ref() {
                "t" => in_t = in_t.saturating_sub(1),
                "rPh" => in_phonetic = in_phonetic.saturating_sub(1),
                "si" if strings.len() < MAX_SHARED_STRINGS => strings.push(std::mem::take(&mut current)),
                "si" => current.clear(),
                _ => {}
            },
            Event::Empty(e) if e.local_name().as_ref() == "si" && strings.len() < MAX_SHARED_STRINGS => {
                strings.push(String::new());
            }
            Event::Text(t) if in_t > 0 && in_phonetic == 0 => current.push_str(&t),
            Event::CData(t) if in_t > 0 && in_phonetic == 0 => current.push_str(&t),
            Event::GeneralRef(r) if in_t > 0 && in_phonetic == 0 => push_ref(&r, |s| current.push_str(s)),
            Event::Eof => return Ok(strings),
            _ => {}
        }
    }
}

/// One worksheet: cells separated by spaces, rows by line breaks.
fn sheet_text(reader: &mut dyn BufRead, shared: &[String], sink: &mut TextSink) -> Result<(), quick_xml::Error> {
    let mut reader = Reader::from_reader(reader);
    let mut buf = Vec::new();
    let mut cell_type = String::new();
    let mut value = String::new();
    let mut inline = String::new();
    let (mut in_v, mut in_t) = (0usize, 0usize);
    loop {
        buf.clear();
        match reader.read_event_into(&mut buf)? {
            Event::Start(e) => match e.local_name().as_ref() {
                "c" => {
                    cell_type = attribute(&e, "t").unwrap_or_default();
                    value.clear();
                    inline.clear();
                }
                "v" => in_v += 1,
                "t" => in_t += 1,
                _ => {}
            },
            Event::End(e) => match e.local_name().as_ref() {
                "v" => in_v = in_v.saturating_sub(1),
                "t" => in_t = in_t.saturating_sub(1),
                "c" => {
                    let text = match cell_type.as_str() {
                        "s" => {
                            value.trim().parse::<usize>().ok().and_then(|i| shared.get(i)).map_or("", String::as_str)
                        }
                        "inlineStr" => inline.as_str(),
                        // Booleans and errors say little.
                        "b" | "e" => "",
                        _ => value.as_str(),
                    };
                    sink.push_str(text);
                    sink.space();
                }
                "row" => sink.newline(),
                _ => {}
            },
            Event::Text(t) => push_cell_text(&t, in_v, in_t, &mut value, &mut inline),
            Event::CData(t) => push_cell_text(&t, in_v, in_t, &mut value, &mut inline),
            Event::GeneralRef(r) if in_v > 0 || in_t > 0 => {
                push_ref(&r, |s| push_cell_text(s, in_v, in_t, &mut value, &mut inline));
            }
            Event::Eof => return Ok(()),
            _ => {}
        }
        if sink.is_full() {
            return Ok(());
        }
    }
}

fn push_cell_text(text: &str, in_v: usize, in_t: usize, value: &mut String, inline: &mut String) {
    if in_v > 0 {
        value.push_str(text);
    } else if in_t > 0 {
        inline.push_str(text);
    }
}

/// The value of attribute `name` (qualified name as written).
fn attribute(e: &BytesStart<'_>, name: &str) -> Option<String> {
    e.try_get_attribute(name).ok().flatten().map(|a| a.value.into_owned())
}

/// Writes what an entity or character reference stands for; unknown entities are dropped.
fn push_ref(r: &BytesRef<'_>, mut push: impl FnMut(&str)) {
    if let Ok(Some(c)) = r.resolve_char_ref() {
        push(c.encode_utf8(&mut [0; 4]));
    } else if let Some(s) = quick_xml::escape::resolve_predefined_entity(r) {
        push(s);
    }
}

/// What to do with the elements of one XML vocabulary, by local name.
#[derive(Debug)]
struct Rules {
    /// Text is kept only inside these.
    text: &'static [&'static str],
    /// The end of these is a line break.
    line_end: &'static [&'static str],
    /// The end of these is a paragraph break.
    paragraph_end: &'static [&'static str],
    /// These (empty elements, usually) are a word separator: tabs, cells, `text:s`.
    space: &'static [&'static str],
    /// The end of these is a word separator.
    space_end: &'static [&'static str],
    /// These (empty elements, usually) are a line break.
    line_break: &'static [&'static str],
    /// Everything inside these is ignored.
    skip: &'static [&'static str],
}

const DOCX: Rules = Rules {
    text: &["t"],
    line_end: &["p"],
    paragraph_end: &["tbl"],
    space: &["tab", "ptab"],
    space_end: &["tc"],
    line_break: &["br", "cr"],
    skip: &[],
};

const PPTX: Rules = Rules {
    text: &["t"],
    line_end: &["p"],
    paragraph_end: &["sp"],
    space: &["tab"],
    space_end: &["tc"],
    line_break: &["br"],
    skip: &[],
};

const ODT: Rules = Rules {
    text: &["p", "h"],
    line_end: &["p", "h"],
    paragraph_end: &["table", "list"],
    space: &["s", "tab"],
    space_end: &["table-cell"],
    line_break: &["line-break"],
    skip: &["tracked-changes", "annotation", "notes-configuration"],
};

const ODS: Rules = Rules {
    text: &["p", "h"],
    line_end: &["table-row"],
    paragraph_end: &["table"],
    space: &["s", "tab"],
    space_end: &["p", "h", "table-cell"],
    line_break: &["line-break"],
    skip: &["tracked-changes", "annotation", "named-expressions"],
};

const ODP: Rules = Rules {
    text: &["p", "h"],
    line_end: &["p", "h"],
    paragraph_end: &["page", "frame"],
    space: &["s", "tab"],
    space_end: &["table-cell"],
    line_break: &["line-break"],
    skip: &["tracked-changes", "annotation"],
};

/// Writes the text of one XML part according to `rules`.
fn walk_xml(reader: &mut dyn BufRead, rules: &Rules, sink: &mut TextSink) -> Result<(), quick_xml::Error> {
    let mut reader = Reader::from_reader(reader);
    let mut buf = Vec::new();
    let (mut in_text, mut in_skip) = (0usize, 0usize);
    loop {
        buf.clear();
        match reader.read_event_into(&mut buf)? {
            Event::Start(e) => {
                let name = e.local_name();
                let name = name.as_ref();
                if rules.skip.contains(&name) {
                    in_skip += 1;
                } else if in_skip == 0 {
                    if rules.text.contains(&name) {
                        in_text += 1;
                    }
                    separators_at_start(name, rules, sink);
                }
            }
            Event::Empty(e) if in_skip == 0 => {
                let name = e.local_name();
                let name = name.as_ref();
                separators_at_start(name, rules, sink);
                separators_at_end(name, rules, sink);
            }
            Event::End(e) => {
                let name = e.local_name();
                let name = name.as_ref();
                if rules.skip.contains(&name) {
                    in_skip = in_skip.saturating_sub(1);
                } else if in_skip == 0 {
                    if rules.text.contains(&name) {
                        in_text = in_text.saturating_sub(1);
                    }
                    separators_at_end(name, rules, sink);
                }
            }
            Event::Text(t) if in_text > 0 && in_skip == 0 => sink.push_str(&t),
            Event::CData(t) if in_text > 0 && in_skip == 0 => sink.push_str(&t),
            Event::GeneralRef(r) if in_text > 0 && in_skip == 0 => push_ref(&r, |s| sink.push_str(s)),
            Event::Eof => return Ok(()),
            _ => {}
        }
        if sink.is_full() {
            return Ok(());
        }
    }
}

fn separators_at_start(name: &str, rules: &Rules, sink: &mut TextSink) {
    if rules.space.contains(&name) {
        sink.space();
    } else if rules.line_break.contains(&name) {
        sink.newline();
    }
}

fn separators_at_end(name: &str, rules: &Rules, sink: &mut TextSink) {
    if rules.paragraph_end.contains(&name) {
        sink.paragraph();
    } else if rules.line_end.contains(&name) {
        sink.newline();
    } else if rules.space_end.contains(&name) {
        sink.space();
    }
}

/// An opened archive with its unpack budget.
struct Container<'a> {
    archive: zip::ZipArchive<Cursor<&'a [u8]>>,
    format: Format,
    /// Bytes that may still be unpacked.
    remaining: u64,
    limit: u64,
    parts_read: usize,
}

impl<'a> Container<'a> {
    fn open(bytes: &'a [u8], format: Format, limit: u64) -> Result<Self, ExtractError> {
        let archive =
            zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| ExtractError::malformed(format, crate::reason(&e)))?;
        if archive.len() > MAX_ENTRIES {
            let reason = format!("{} zip entries, over the limit of {MAX_ENTRIES}", archive.len());
            return Err(ExtractError::malformed(format, reason));
        }
        Ok(Container { archive, format, remaining: limit, limit, parts_read: 0 })
    }

    fn has(&self, name: &str) -> bool {
        self.archive.index_for_name(name).is_some()
    }

    /// Entries named `{prefix}N{suffix}`, in the order of N (`slide2` before `slide10`).
    fn numbered(&self, prefix: &str, suffix: &str) -> Vec<String> {
        let mut found: Vec<(u64, String)> = self
            .archive
            .file_names()
            .filter_map(|name| {
                let name = name.ok()?;
                let n = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
                let n = if n.is_empty() { 0 } else { n.parse().ok()? };
                Some((n, name.into_owned()))
            })
            .collect();
        found.sort();
        found.truncate(MAX_PARTS);
        found.into_iter().map(|(_, name)| name).collect()
    }

    /// Writes the text of XML part `name` by `rules`; `false` if there is no such part.
    fn walk(&mut self, name: &str, rules: &Rules, sink: &mut TextSink) -> Result<bool, ExtractError> {
        if sink.is_full() {
            return Ok(true);
        }
        Ok(self.read(name, |reader| walk_xml(reader, rules, sink))?.is_some())
    }

    /// Runs `parse` on part `name` streamed through the unpack budget; `None` if there is
    /// no such part, or if [`MAX_PARTS`] parts were read already.
    fn read<T>(
        &mut self,
        name: &str,
        parse: impl FnOnce(&mut dyn BufRead) -> Result<T, quick_xml::Error>,
    ) -> Result<Option<T>, ExtractError> {
        let format = self.format;
        if self.parts_read >= MAX_PARTS {
            return Ok(None);
        }
        let entry = match self.archive.by_name(name) {
            Ok(entry) => entry,
            Err(zip::result::ZipError::FileNotFound) => return Ok(None),
            Err(e) => return Err(ExtractError::malformed(format, format!("{name}: {}", crate::reason(&e)))),
        };
        self.parts_read += 1;
        let mut limited = BufReader::new(Limited { inner: entry, remaining: &mut self.remaining, exceeded: false });
        let parsed = parse(&mut limited);
        if limited.get_ref().exceeded {
            return Err(ExtractError::Unpacked { format: format.as_str().to_owned(), limit: self.limit });
        }
        parsed.map(Some).map_err(|e| ExtractError::malformed(format, format!("{name}: {}", crate::reason(&e))))
    }
}

/// A reader that fails once more than `remaining` bytes come out of `inner`.
struct Limited<'b, R> {
    inner: R,
    remaining: &'b mut u64,
    exceeded: bool,
}

impl<R: Read> Read for Limited<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if *self.remaining == 0 {
            // Over budget only if there really is more.
            let mut probe = [0u8; 1];
            if self.inner.read(&mut probe)? == 0 {
                return Ok(0);
            }
            self.exceeded = true;
            return Err(std::io::Error::other("unpack limit reached"));
        }
        let max = usize::try_from(*self.remaining).unwrap_or(usize::MAX).min(buf.len());
        let n = self.inner.read(&mut buf[..max])?;
        *self.remaining -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limited_reader_counts_what_it_reads() {
        let mut remaining = 10u64;
        let mut r = Limited { inner: &b"0123456789"[..], remaining: &mut remaining, exceeded: false };
        let mut out = Vec::new();
        assert!(r.read_to_end(&mut out).is_ok());
        assert_eq!(out.len(), 10);
        assert!(!r.exceeded);

        let mut remaining = 10u64;
        let mut r = Limited { inner: &b"0123456789A"[..], remaining: &mut remaining, exceeded: false };
        assert!(r.read_to_end(&mut Vec::new()).is_err());
        assert!(r.exceeded);
    }

    #[test]
    fn walks_docx_xml() {
        let xml = r#"<w:document xmlns:w="w"><w:body>
            <w:p><w:pPr><w:tabs><w:tab w:val="left"/></w:tabs></w:pPr><w:r><w:t>Hello</w:t></w:r><w:r><w:tab/><w:t xml:space="preserve">big &amp; </w:t></w:r><w:r><w:t>world</w:t><w:br/><w:t>&#1044;a</w:t></w:r></w:p>
            <w:p><w:r><w:instrText>PAGE</w:instrText><w:delText>gone</w:delText><w:t>next</w:t></w:r></w:p>
        </w:body></w:document>"#;
        let mut sink = TextSink::new(1000);
        assert!(walk_xml(&mut xml.as_bytes(), &DOCX, &mut sink).is_ok());
        assert_eq!(sink.finish().0, "Hello big & world\nДa\nnext");
    }

    #[test]
    fn malformed_xml_is_an_error() {
        let mut sink = TextSink::new(1000);
        assert!(walk_xml(&mut "<a><b></a>".as_bytes(), &DOCX, &mut sink).is_err());
    }
}
