//! PDF: pdf-extract, with its panics on broken files caught and reported as malformed.

use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::sink::TextSink;
use crate::{ExtractError, Format};

/// Extracts the text of a PDF document.
pub(crate) fn extract(bytes: &[u8], sink: &mut TextSink) -> Result<(), ExtractError> {
    let text = match catch_unwind(AssertUnwindSafe(|| pdf_extract::extract_text_from_mem(bytes))) {
        Ok(Ok(text)) => text,
        Ok(Err(e)) => return Err(ExtractError::malformed(Format::Pdf, crate::reason(&e))),
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            return Err(ExtractError::malformed(Format::Pdf, format!("parser panicked: {message}")));
        }
    };
    sink.push_str(&text);
    Ok(())
}
