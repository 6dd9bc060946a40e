//! Markdown: the text of pulldown-cmark's events, without the markup.
//!
//! Text, inline code, code blocks, link and image text are kept; URLs, emphasis marks,
//! heading hashes and list bullets are dropped. Embedded HTML is stripped of its tags.

use encoding_rs::Encoding;
use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};

use crate::ExtractError;
use crate::sink::TextSink;
use crate::text;

/// Extracts the text of a Markdown document.
pub(crate) fn extract(
    bytes: &[u8],
    declared: Option<&'static Encoding>,
    sink: &mut TextSink,
) -> Result<(), ExtractError> {
    let source = text::decode(bytes, declared, None)?;
    let options = Options::ENABLE_TABLES
        | Options::ENABLE_FOOTNOTES
        | Options::ENABLE_STRIKETHROUGH
        | Options::ENABLE_TASKLISTS
        | Options::ENABLE_YAML_STYLE_METADATA_BLOCKS;
    let mut in_metadata = false;
    for event in Parser::new_ext(&source, options) {
        if sink.is_full() {
            break;
        }
        match event {
            Event::Start(Tag::MetadataBlock(_)) => in_metadata = true,
            Event::End(TagEnd::MetadataBlock(_)) => in_metadata = false,
            _ if in_metadata => {}
            Event::Text(t) | Event::Code(t) | Event::InlineMath(t) | Event::DisplayMath(t) => sink.push_str(&t),
            Event::Html(t) | Event::InlineHtml(t) => strip_tags(&t, sink),
            Event::SoftBreak => sink.space(),
            Event::HardBreak => sink.newline(),
            Event::Rule => sink.paragraph(),
            Event::Start(Tag::Item | Tag::TableRow | Tag::TableHead) => sink.newline(),
            Event::End(TagEnd::TableCell) => sink.space(),
            Event::End(
                TagEnd::Paragraph
                | TagEnd::Heading(_)
                | TagEnd::CodeBlock
                | TagEnd::HtmlBlock
                | TagEnd::BlockQuote(_)
                | TagEnd::List(_)
                | TagEnd::Table
                | TagEnd::FootnoteDefinition,
            ) => sink.paragraph(),
            Event::End(TagEnd::Item | TagEnd::TableRow | TagEnd::TableHead) => sink.newline(),
            _ => {}
        }
    }
    Ok(())
}

/// Writes `html` without its tags (a tag ends a word).
fn strip_tags(html: &str, sink: &mut TextSink) {
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                sink.space();
            }
            _ if in_tag => {}
            c => sink.push_char(c),
        }
    }
}
