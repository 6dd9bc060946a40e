//! End-to-end tests of `artstore_extract::extract`. Every fixture is built here: ZIP
//! containers with `zip::ZipWriter`, PDFs by hand with a computed xref table.

use std::io::{Cursor, Write};

use artstore_extract::{ExtractError, Extracted, Format, Limits, detect_format, extract};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

fn limits() -> Limits {
    Limits::default()
}

fn ok(bytes: &[u8], content_type: &str, name: &str) -> Extracted {
    match extract(bytes, content_type, name, &limits()) {
        Ok(extracted) => extracted,
        Err(e) => panic!("extracting {name} ({content_type}) failed: {e}"),
    }
}

// ---------------------------------------------------------------------------------------
// Fixture builders

/// A ZIP archive of `entries`, deflated (the ODF `mimetype` stored, as the spec wants).
fn zip_of(entries: &[(&str, &str)]) -> Vec<u8> {
    let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
    let deflated = SimpleFileOptions::default().compression_method(CompressionMethod::Deflated);
    for (name, content) in entries {
        let options =
            if *name == "mimetype" { deflated.compression_method(CompressionMethod::Stored) } else { deflated };
        writer.start_file(*name, options).expect("start zip entry");
        writer.write_all(content.as_bytes()).expect("write zip entry");
    }
    writer.finish().expect("finish zip").into_inner()
}

const W_NS: &str = r#"xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main""#;

fn docx_document(paragraphs: &[&str]) -> String {
    let body: String = paragraphs
        .iter()
        .map(|p| {
            format!(
                r#"<w:p><w:pPr><w:pStyle w:val="Normal"/></w:pPr><w:r><w:t xml:space="preserve">{p}</w:t></w:r></w:p>"#
            )
        })
        .collect();
    format!(
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<w:document {W_NS}><w:body>{body}<w:sectPr/></w:body></w:document>"#
    )
}

fn docx(paragraphs: &[&str]) -> Vec<u8> {
    let document = docx_document(paragraphs);
    let header = format!(r#"<w:hdr {W_NS}><w:p><w:r><w:t>Header of the contract</w:t></w:r></w:p></w:hdr>"#);
    zip_of(&[
        (
            "[Content_Types].xml",
            r#"<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/></Types>"#,
        ),
        (
            "_rels/.rels",
            r#"<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="word/document.xml"/></Relationships>"#,
        ),
        ("word/document.xml", &document),
        ("word/header1.xml", &header),
    ])
}

fn odt(paragraphs: &[&str]) -> Vec<u8> {
    let body: String = paragraphs.iter().map(|p| format!("<text:p text:style-name=\"P1\">{p}</text:p>")).collect();
    let content = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<office:document-content xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" office:version="1.3">
<office:automatic-styles/>
<office:body><office:text><text:h text:outline-level="1">Heading<text:s/>one</text:h>{body}</office:text></office:body>
</office:document-content>"#
    );
    zip_of(&[
        ("mimetype", "application/vnd.oasis.opendocument.text"),
        ("content.xml", &content),
        (
            "META-INF/manifest.xml",
            r#"<?xml version="1.0"?><manifest:manifest xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0"/>"#,
        ),
    ])
}

fn xlsx() -> Vec<u8> {
    let main = r#"xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main""#;
    let workbook = format!(r#"<workbook {main}><sheets><sheet name="Sheet1" sheetId="1"/></sheets></workbook>"#);
    let shared = format!(
        r#"<sst {main} count="3" uniqueCount="3"><si><t>Invoice</t></si><si><r><t>Total </t></r><r><t>amount</t></r><rPh><t>ignored phonetic</t></rPh></si><si><t>Tom &amp; Jerry</t></si></sst>"#
    );
    let sheet1 = format!(
        r#"<worksheet {main}><sheetData>
<row r="1"><c r="A1" t="s"><v>0</v></c><c r="B1" t="s"><v>2</v></c></row>
<row r="2"><c r="A2" t="s"><v>1</v></c><c r="B2"><v>1234.5</v></c><c r="C2" t="inlineStr"><is><t>inline note</t></is></c></row>
</sheetData></worksheet>"#
    );
    let sheet2 = format!(
        r#"<worksheet {main}><sheetData><row r="1"><c r="A1" t="inlineStr"><is><t>second sheet</t></is></c></row></sheetData></worksheet>"#
    );
    zip_of(&[
        ("xl/workbook.xml", &workbook),
        ("xl/sharedStrings.xml", &shared),
        ("xl/worksheets/sheet1.xml", &sheet1),
        ("xl/worksheets/sheet2.xml", &sheet2),
    ])
}

fn pptx_slide(texts: &[&str]) -> String {
    let paragraphs: String =
        texts.iter().map(|t| format!("<a:p><a:r><a:rPr lang=\"en-US\"/><a:t>{t}</a:t></a:r></a:p>")).collect();
    format!(
        r#"<p:sld xmlns:a="http://schemas.openxmlformats.org/drawingml/2006/main" xmlns:p="http://schemas.openxmlformats.org/presentationml/2006/main"><p:cSld><p:spTree><p:sp><p:txBody><a:bodyPr/>{paragraphs}</p:txBody></p:sp></p:spTree></p:cSld></p:sld>"#
    )
}

fn pptx() -> Vec<u8> {
    zip_of(&[
        (
            "ppt/presentation.xml",
            r#"<p:presentation xmlns:p="http://schemas.openxmlformats.org/presentationml/2006/main"/>"#,
        ),
        ("ppt/slides/slide10.xml", &pptx_slide(&["Tenth slide"])),
        ("ppt/slides/slide1.xml", &pptx_slide(&["Quarterly results", "Revenue grew"])),
        ("ppt/slides/slide2.xml", &pptx_slide(&["Second slide"])),
    ])
}

/// A one-page PDF showing `text` in Helvetica, with a correct xref table.
fn pdf(text: &str) -> Vec<u8> {
    let stream = format!("BT /F1 24 Tf 72 700 Td ({text}) Tj ET\n");
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_owned(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_owned(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>"
            .to_owned(),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>".to_owned(),
        format!("<< /Length {} >>\nstream\n{stream}endstream", stream.len()),
    ];
    let mut out = b"%PDF-1.4\n%\xE2\xE3\xCF\xD3\n".to_vec();
    let mut offsets = Vec::new();
    for (i, object) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n{object}\nendobj\n", i + 1).as_bytes());
    }
    let xref = out.len();
    out.extend_from_slice(format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes());
    for offset in offsets {
        out.extend_from_slice(format!("{offset:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!("trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n", objects.len() + 1).as_bytes(),
    );
    out
}

/// Deterministic pseudo-random bytes (xorshift64).
fn random_bytes(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Plain text and encodings

#[test]
fn utf8_text() {
    let got = ok("Hello,   world!\r\n\r\n\r\n\r\nSecond  paragraph — ünïcödé ✓\n".as_bytes(), "text/plain", "a.txt");
    assert_eq!(got.text, "Hello, world!\n\nSecond paragraph — ünïcödé ✓");
    assert_eq!(got.format, "text");
    assert!(!got.truncated);
}

#[test]
fn windows_1251_russian_text() {
    let (bytes, _, _) = encoding_rs::WINDOWS_1251.encode("Договор поставки");
    assert!(std::str::from_utf8(&bytes).is_err());
    let got = ok(&bytes, "text/plain", "dogovor.txt");
    assert_eq!(got.text, "Договор поставки");
}

#[test]
fn windows_1251_longer_russian_text_without_declared_charset() {
    let source = "Договор поставки № 42. Поставщик обязуется передать в собственность покупателя товар, \
                  а покупатель обязуется принять и оплатить его в сроки, установленные договором.";
    let (bytes, _, _) = encoding_rs::WINDOWS_1251.encode(source);
    assert_eq!(ok(&bytes, "application/octet-stream", "dogovor.txt").text, source);
}

#[test]
fn koi8_r_russian_text() {
    // KOI8-R has no "№".
    let source = "Договор поставки номер 42. Поставщик обязуется передать в собственность покупателя товар.";
    let (bytes, _, _) = encoding_rs::KOI8_R.encode(source);
    assert_eq!(ok(&bytes, "text/plain", "dogovor.txt").text, source);
}

#[test]
fn declared_charset_is_honoured() {
    let (bytes, _, _) = encoding_rs::KOI8_R.encode("Договор");
    assert_eq!(ok(&bytes, "text/plain; charset=koi8-r", "d.txt").text, "Договор");
}

#[test]
fn latin1_text() {
    let source = "Ceci est un café très élégant, à Noël, où l'on mange des crêpes.";
    let (bytes, _, _) = encoding_rs::WINDOWS_1252.encode(source);
    assert_eq!(ok(&bytes, "text/plain", "fr.txt").text, source);
}

#[test]
fn utf16le_with_bom() {
    let mut bytes = vec![0xFF, 0xFE];
    bytes.extend("Договор поставки\r\nline two".encode_utf16().flat_map(u16::to_le_bytes));
    let got = ok(&bytes, "text/plain", "u16.txt");
    assert_eq!(got.text, "Договор поставки\nline two");
}

#[test]
fn utf8_bom_is_dropped() {
    assert_eq!(ok(b"\xEF\xBB\xBFhello", "text/plain", "a.txt").text, "hello");
}

#[test]
fn binary_named_txt_is_refused() {
    let mut bytes = random_bytes(4096, 0x9E37_79B9_7F4A_7C15);
    bytes[100] = 0;
    bytes[2000] = 0;
    assert!(matches!(extract(&bytes, "text/plain", "data.txt", &limits()), Err(ExtractError::Binary)));
    assert!(matches!(extract(&bytes, "application/octet-stream", "data.txt", &limits()), Err(ExtractError::Binary)));
}

#[test]
fn truncation_cuts_on_char_boundary() {
    let source = "Привет мир ".repeat(100);
    let limits = Limits { max_text_bytes: 101, ..Limits::default() };
    let got = extract(source.as_bytes(), "text/plain", "a.txt", &limits).expect("extract");
    assert!(got.truncated);
    assert!(got.text.len() <= 101, "{} bytes", got.text.len());
    assert!(got.text.len() >= 95, "{} bytes", got.text.len());
    assert!(source.starts_with(&got.text));

    let got = extract("short".as_bytes(), "text/plain", "a.txt", &limits).expect("extract");
    assert!(!got.truncated);
}

#[test]
fn too_large_input_is_refused_before_parsing() {
    let limits = Limits { max_input_bytes: 10, ..Limits::default() };
    let err = extract(b"01234567890", "text/plain", "a.txt", &limits);
    assert!(matches!(err, Err(ExtractError::TooLarge { size: 11, limit: 10 })), "{err:?}");
    assert!(extract(b"0123456789", "text/plain", "a.txt", &limits).is_ok());
}

#[test]
fn unsupported_content_type() {
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
    match extract(png, "image/png", "picture.png", &limits()) {
        Err(ExtractError::Unsupported(ct)) => assert_eq!(ct, "image/png"),
        other => panic!("expected unsupported, got {other:?}"),
    }
}

#[test]
fn octet_stream_goes_by_extension_then_magic() {
    assert_eq!(ok(b"# Title\n\nBody", "application/octet-stream", "notes.md").format, "markdown");
    assert_eq!(detect_format(&docx(&["x"]), "application/octet-stream", "blob"), Some(Format::Docx));
    assert_eq!(detect_format(&odt(&["x"]), "application/zip", "blob"), Some(Format::Odt));
    assert_eq!(detect_format(&xlsx(), "", "blob"), Some(Format::Xlsx));
    assert_eq!(detect_format(&pptx(), "", "blob"), Some(Format::Pptx));
    assert_eq!(detect_format(&pdf("x"), "application/octet-stream", "blob"), Some(Format::Pdf));
    let got = ok(&docx(&["Found by magic"]), "application/octet-stream", "upload.bin");
    assert_eq!(got.format, "docx");
    assert!(got.text.contains("Found by magic"));
}

// ---------------------------------------------------------------------------------------
// Markdown and HTML

#[test]
fn markdown_markup_is_dropped() {
    let source = "---\ntitle: front matter\n---\n# Delivery *terms*\n\nSome **bold** and _em_ text with a [link](http://example.com/x) \
                  and `code`.\n\n```rust\nfn main() {}\n```\n\n- item one\n- item two\n\n| a | b |\n|---|---|\n| c | d |\n";
    let got = ok(source.as_bytes(), "text/markdown", "README.md");
    assert_eq!(got.format, "markdown");
    let text = &got.text;
    for wanted in
        ["Delivery terms", "Some bold and em text with a link and code.", "fn main() {}", "item one\nitem two", "c d"]
    {
        assert!(text.contains(wanted), "{wanted:?} missing from {text:?}");
    }
    for unwanted in ["**", "# ", "http://", "](", "```", "- item", "|", "front matter"] {
        assert!(!text.contains(unwanted), "{unwanted:?} left in {text:?}");
    }
}

#[test]
fn html_drops_script_and_style_and_decodes_entities() {
    let html = r#"<!DOCTYPE html><html><head><title>t</title><style>body { color: red; }</style>
        <script>var secret = "do not index";</script></head>
        <body><h1>Annual   report</h1><p>Fish &amp; chips &lt;3 &nbsp;&euro;5</p>
        <p>See <a href="http://example.com/hidden">the appendix</a>.</p><script>alert(1)</script></body></html>"#;
    let got = ok(html.as_bytes(), "text/html; charset=utf-8", "page.html");
    assert_eq!(got.format, "html");
    let text = &got.text;
    for wanted in ["Annual report", "Fish & chips <3 €5", "See the appendix."] {
        assert!(text.contains(wanted), "{wanted:?} missing from {text:?}");
    }
    for unwanted in ["color", "secret", "alert", "http://example.com", "<p>", "&amp;"] {
        assert!(!text.contains(unwanted), "{unwanted:?} left in {text:?}");
    }
}

#[test]
fn html_meta_charset_windows_1251() {
    let html = "<html><head><meta charset=\"windows-1251\"></head><body><p>Договор поставки</p></body></html>";
    let (bytes, _, _) = encoding_rs::WINDOWS_1251.encode(html);
    assert_eq!(ok(&bytes, "text/html", "page.htm").text, "Договор поставки");
}

#[test]
fn html_undeclared_koi8_r_is_detected() {
    let html = "<html><body><p>Договор поставки номер 42. Поставщик обязуется передать в собственность покупателя товар.</p></body></html>";
    let (bytes, _, _) = encoding_rs::KOI8_R.encode(html);
    assert!(ok(&bytes, "text/html", "page.html").text.contains("Договор поставки номер 42."));
}

// ---------------------------------------------------------------------------------------
// PDF

#[test]
fn pdf_text_is_extracted() {
    let got = ok(&pdf("Contract number 42"), "application/pdf", "contract.pdf");
    assert_eq!(got.format, "pdf");
    assert!(got.text.contains("Contract number 42"), "{:?}", got.text);
}

#[test]
fn garbage_pdf_is_malformed() {
    let mut bytes = b"%PDF-1.4\n".to_vec();
    bytes.extend(random_bytes(2000, 42));
    let err = extract(&bytes, "application/pdf", "broken.pdf", &limits());
    assert!(matches!(&err, Err(ExtractError::Malformed { format, .. }) if format == "pdf"), "{err:?}");
}

#[test]
fn truncated_pdf_is_malformed() {
    let full = pdf("Contract number 42");
    let err = extract(&full[..full.len() / 2], "application/pdf", "cut.pdf", &limits());
    assert!(matches!(&err, Err(ExtractError::Malformed { format, .. }) if format == "pdf"), "{err:?}");
}

#[test]
fn mangled_pdfs_never_panic() {
    let full = pdf("Contract number 42");
    let noise = random_bytes(4096, 7);
    for i in 0..300 {
        let mut bytes = full.clone();
        // Overwrite a few bytes, or cut the tail.
        for j in 0..4 {
            let at = (usize::from(noise[(i * 4 + j) % noise.len()]) * 7 + i * 13) % bytes.len();
            bytes[at] = noise[(i * 5 + j) % noise.len()];
        }
        if i % 3 == 0 {
            bytes.truncate(bytes.len() - (i % bytes.len()).min(bytes.len() - 10));
        }
        // Ok or Err are both fine; a panic escaping would fail the test.
        let _ = extract(&bytes, "application/pdf", "mangled.pdf", &limits());
    }
}

// ---------------------------------------------------------------------------------------
// Office and OpenDocument

#[test]
fn docx_text() {
    let bytes = docx(&["Supply contract No. 42", "The Supplier &amp; the Buyer agree.", "Договор поставки"]);
    let got = ok(&bytes, "application/vnd.openxmlformats-officedocument.wordprocessingml.document", "c.docx");
    assert_eq!(got.format, "docx");
    assert_eq!(
        got.text,
        "Supply contract No. 42\nThe Supplier & the Buyer agree.\nДоговор поставки\n\nHeader of the contract"
    );
}

#[test]
fn docx_without_document_is_malformed() {
    let bytes = zip_of(&[("word/styles.xml", "<w:styles/>")]);
    let err = extract(&bytes, "application/octet-stream", "c.docx", &limits());
    assert!(matches!(&err, Err(ExtractError::Malformed { format, .. }) if format == "docx"), "{err:?}");
}

#[test]
fn not_a_zip_is_malformed() {
    let err = extract(b"PK\x03\x04 not really", "application/octet-stream", "c.docx", &limits());
    assert!(matches!(&err, Err(ExtractError::Malformed { format, .. }) if format == "docx"), "{err:?}");
}

#[test]
fn odt_text() {
    let got = ok(&odt(&["First paragraph", "Fish &amp; chips"]), "application/vnd.oasis.opendocument.text", "a.odt");
    assert_eq!(got.format, "odt");
    assert_eq!(got.text, "Heading one\nFirst paragraph\nFish & chips");
}

#[test]
fn xlsx_text() {
    let got = ok(&xlsx(), "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "book.xlsx");
    assert_eq!(got.format, "xlsx");
    assert_eq!(got.text, "Invoice Tom & Jerry\nTotal amount 1234.5 inline note\n\nsecond sheet");
}

#[test]
fn pptx_text() {
    let got = ok(&pptx(), "application/vnd.openxmlformats-officedocument.presentationml.presentation", "deck.pptx");
    assert_eq!(got.format, "pptx");
    assert_eq!(got.text, "Quarterly results\nRevenue grew\n\nSecond slide\n\nTenth slide");
}

#[test]
fn ods_and_odp_text() {
    let ns = r#"xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" xmlns:draw="urn:oasis:names:tc:opendocument:xmlns:drawing:1.0""#;
    let ods = format!(
        r#"<office:document-content {ns}><office:body><office:spreadsheet><table:table table:name="S">
<table:table-row><table:table-cell><text:p>Name</text:p></table:table-cell><table:table-cell office:value-type="float" office:value="42"><text:p>42</text:p></table:table-cell></table:table-row>
<table:table-row><table:table-cell><text:p>Other</text:p></table:table-cell><table:table-cell table:number-columns-repeated="1000"/></table:table-row>
</table:table></office:spreadsheet></office:body></office:document-content>"#
    );
    let bytes = zip_of(&[("mimetype", "application/vnd.oasis.opendocument.spreadsheet"), ("content.xml", &ods)]);
    let got = ok(&bytes, "application/octet-stream", "sheet.ods");
    assert_eq!((got.format.as_str(), got.text.as_str()), ("ods", "Name 42\nOther"));

    let odp = format!(
        r#"<office:document-content {ns}><office:body><office:presentation>
<draw:page draw:name="p1"><draw:frame><draw:text-box><text:p>Slide title</text:p></draw:text-box></draw:frame><draw:frame><draw:text-box><text:p>Point one</text:p></draw:text-box></draw:frame></draw:page>
<draw:page draw:name="p2"><draw:frame><draw:text-box><text:p>Second page</text:p></draw:text-box></draw:frame></draw:page>
</office:presentation></office:body></office:document-content>"#
    );
    let bytes = zip_of(&[("mimetype", "application/vnd.oasis.opendocument.presentation"), ("content.xml", &odp)]);
    let got = ok(&bytes, "", "deck.odp");
    assert_eq!((got.format.as_str(), got.text.as_str()), ("odp", "Slide title\n\nPoint one\n\nSecond page"));
}

#[test]
fn zip_bomb_docx_is_refused() {
    // word/document.xml unpacks to 600 MB of spaces inside one <w:t>: about 600 KB packed.
    let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default().compression_method(CompressionMethod::Deflated);
    writer.start_file("word/document.xml", options).expect("start");
    writer.write_all(format!("<w:document {W_NS}><w:body><w:p><w:r><w:t>").as_bytes()).expect("write");
    let chunk = vec![b' '; 1 << 20];
    for _ in 0..600 {
        writer.write_all(&chunk).expect("write");
    }
    writer.write_all(b"</w:t></w:r></w:p></w:body></w:document>").expect("write");
    let bomb = writer.finish().expect("finish").into_inner();
    assert!(bomb.len() < 2 << 20, "bomb is {} bytes", bomb.len());

    let limits = Limits { max_unpacked_bytes: 10 << 20, ..Limits::default() };
    let err =
        extract(&bomb, "application/vnd.openxmlformats-officedocument.wordprocessingml.document", "bomb.docx", &limits);
    assert!(
        matches!(&err, Err(ExtractError::Unpacked { format, limit }) if format == "docx" && *limit == 10 << 20),
        "{err:?}"
    );
}

#[test]
fn unpack_budget_spans_all_parts() {
    // Each header is small, together they are over the budget.
    let header = format!(r#"<w:hdr {W_NS}><w:p><w:r><w:t>{}</w:t></w:r></w:p></w:hdr>"#, "x ".repeat(50_000));
    let document = docx_document(&["body"]);
    let names: Vec<String> = (1..=30).map(|i| format!("word/header{i}.xml")).collect();
    let mut entries = vec![("word/document.xml", document.as_str())];
    entries.extend(names.iter().map(|n| (n.as_str(), header.as_str())));
    let bytes = zip_of(&entries);
    let limits = Limits { max_unpacked_bytes: 1 << 20, ..Limits::default() };
    let err = extract(&bytes, "", "many.docx", &limits);
    assert!(matches!(&err, Err(ExtractError::Unpacked { .. })), "{err:?}");
    // With room to unpack, the same file is fine.
    assert!(extract(&bytes, "", "many.docx", &Limits::default()).is_ok());
}

#[test]
fn office_text_is_truncated_too() {
    let long = "Договор ".repeat(1000);
    let limits = Limits { max_text_bytes: 1001, ..Limits::default() };
    let got = extract(&docx(&[&long]), "", "long.docx", &limits).expect("extract");
    assert!(got.truncated);
    assert!(got.text.len() <= 1001);
    assert!(got.text.starts_with("Договор Договор"));
}
