//! Text extraction for the query role.
//!
//! Runs inside the query role's extraction worker processes (never in the service process
//! itself): a parser that overflows its stack or loops forever takes down only a worker.
//! Every function here still bounds what it reads and what it produces.
//!
//! The entry point is [`extract`]; [`detect_format`] tells which parser it would use.
//!
//! Modules:
//! - `detect`: choosing a [`Format`] from the content type, the extension and the bytes;
//! - `sink`: the bounded, whitespace-normalising text buffer every parser writes into;
//! - `text`: charset detection and decoding, the binary check, plain text;
//! - `markdown`, `html`, `pdf`: those formats;
//! - `office`: the ZIP containers (DOCX, XLSX, PPTX, ODT, ODS, ODP) with the unpack budget.

mod detect;
mod html;
mod markdown;
mod office;
mod pdf;
mod sink;
mod text;

use serde::{Deserialize, Serialize};

pub use detect::{Format, detect_format};

use sink::TextSink;

/// Bounds on one extraction.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Limits {
    /// Inputs larger than this are refused before parsing.
    pub max_input_bytes: u64,
    /// Extracted text is cut at this many bytes (on a character boundary).
    pub max_text_bytes: usize,
    /// Total bytes a container format (DOCX, ODT, …) may unpack.
    pub max_unpacked_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_input_bytes: 256 << 20, max_text_bytes: 4 << 20, max_unpacked_bytes: 512 << 20 }
    }
}

/// What an extraction gave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extracted {
    /// The text, whitespace-normalised enough to index and to show in snippets.
    pub text: String,
    /// The format that was parsed: `text`, `markdown`, `html`, `pdf`, `docx`, `odt`, `xlsx`,
    /// `pptx`, `ods`, `odp`.
    pub format: String,
    /// The text was cut at `max_text_bytes`.
    pub truncated: bool,
}

/// Why an extraction gave no text.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// The content type and name name no format we extract.
    #[error("no text extractor for {0}")]
    Unsupported(String),
    /// Declared as text but the bytes are binary.
    #[error("content is binary, not text")]
    Binary,
    /// Larger than `max_input_bytes`.
    #[error("content is {size} bytes, over the extraction limit of {limit}")]
    TooLarge { size: u64, limit: u64 },
    /// A container unpacks to more than `max_unpacked_bytes`.
    #[error("{format} unpacks to more than {limit} bytes (zip bomb?)")]
    Unpacked { format: String, limit: u64 },
    /// The file is broken.
    #[error("{format} is malformed: {reason}")]
    Malformed { format: String, reason: String },
}

impl ExtractError {
    /// A [`ExtractError::Malformed`] for `format`.
    pub(crate) fn malformed(format: Format, reason: impl Into<String>) -> Self {
        ExtractError::Malformed { format: format.as_str().to_owned(), reason: reason.into() }
    }
}

/// A library error as a reason: lowercase first letter (unless the first word is an
/// acronym like `PDF`), no trailing period.
pub(crate) fn reason(e: &dyn std::fmt::Display) -> String {
    let text = e.to_string();
    let text = text.trim().trim_end_matches('.');
    let first_word = text.split(|c: char| !c.is_alphanumeric()).next().unwrap_or("");
    let acronym = first_word.chars().filter(|c| c.is_uppercase()).count() > 1;
    let mut chars = text.chars();
    match chars.next() {
        Some(first) if !acronym => first.to_lowercase().chain(chars).collect(),
        Some(_) => text.to_owned(),
        None => String::from("unknown error"),
    }
}

/// Extracts the text of `bytes`, choosing the format from the content type, the file
/// name's extension and the leading bytes.
///
/// The content type may carry parameters; a `charset` parameter is honoured for the text
/// formats (plain text, Markdown, HTML).
pub fn extract(bytes: &[u8], content_type: &str, name: &str, limits: &Limits) -> Result<Extracted, ExtractError> {
    let size = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    if size > limits.max_input_bytes {
        return Err(ExtractError::TooLarge { size, limit: limits.max_input_bytes });
    }
    let Some(format) = detect_format(bytes, content_type, name) else {
        let what = if content_type.trim().is_empty() { name } else { content_type };
        return Err(ExtractError::Unsupported(what.to_owned()));
    };
    let charset = detect::charset_param(content_type);
    let mut sink = TextSink::new(limits.max_text_bytes);
    match format {
        Format::Text => text::extract(bytes, charset, &mut sink)?,
        Format::Markdown => markdown::extract(bytes, charset, &mut sink)?,
        Format::Html => html::extract(bytes, charset, &mut sink)?,
        Format::Pdf => pdf::extract(bytes, &mut sink)?,
        Format::Docx | Format::Xlsx | Format::Pptx | Format::Odt | Format::Ods | Format::Odp => {
            office::extract(bytes, format, limits.max_unpacked_bytes, &mut sink)?
        }
    }
    let (text, truncated) = sink.finish();
    Ok(Extracted { text, format: format.as_str().to_owned(), truncated })
}
