//! The upload form every writer speaks (element multipart, ingester multipart, tus
//! `Upload-Metadata`, the UI): its field names and the checks each value must pass, so a
//! bad value is refused with the same message wherever it arrives.

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// The text fields of an upload, besides the `file` part.
pub const FORM_FIELDS: &[&str] = &[
    "description",
    "tags",
    "metadata",
    "document_id",
    "retention_policy",
    "retention_mode",
    "retain_until",
    "legal_hold",
    "disposition",
];

/// Checks one field's value; the error names the field and says what it must be.
pub fn check_field(name: &str, value: &str) -> Result<(), String> {
    let v = value.trim();
    match name {
        "description" | "tags" | "retention_policy" => Ok(()),
        "metadata" => match serde_json::from_str::<serde_json::Value>(value) {
            Ok(serde_json::Value::Object(_)) => Ok(()),
            Ok(_) => Err("metadata must be a JSON object".to_owned()),
            Err(e) => Err(format!("metadata is not valid JSON: {e}")),
        },
        "document_id" => Uuid::parse_str(v).map(|_| ()).map_err(|_| format!("document_id {v:?} is not a UUID")),
        "retention_mode" => match v {
            "compliance" | "governance" | "none" | "" => Ok(()),
            other => Err(format!("retention_mode {other:?} is not compliance or governance")),
        },
        "retain_until" => {
            DateTime::parse_from_rfc3339(v).map(|_| ()).map_err(|e| format!("retain_until {v:?} is not RFC 3339: {e}"))
        }
        "legal_hold" => match v {
            "true" | "false" | "" => Ok(()),
            other => Err(format!("legal_hold {other:?} is not true or false")),
        },
        "disposition" => match v {
            "dispose" | "review" => Ok(()),
            other => Err(format!("disposition {other:?} is not dispose or review")),
        },
        other => Err(format!("unknown field {other:?} (known: file, {})", FORM_FIELDS.join(", "))),
    }
}

/// The text fields of one upload, in the order they came.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UploadFields(pub Vec<(String, String)>);

impl UploadFields {
    /// Adds a field after checking it; a field given twice is refused.
    pub fn push(&mut self, name: &str, value: String) -> Result<(), String> {
        check_field(name, &value)?;
        if self.get(name).is_some() {
            return Err(format!("field {name:?} is given twice"));
        }
        self.0.push((name.to_owned(), value));
        Ok(())
    }

    /// A field's value, if given.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The document this upload is a new version of.
    pub fn document_id(&self) -> Option<Uuid> {
        self.get("document_id").and_then(|v| Uuid::parse_str(v.trim()).ok())
    }

    /// The named retention policy, if any.
    pub fn policy(&self) -> Option<&str> {
        self.get("retention_policy").map(str::trim).filter(|p| !p.is_empty())
    }

    /// The explicit retention date, if any.
    pub fn retain_until(&self) -> Option<DateTime<Utc>> {
        self.get("retain_until")
            .and_then(|v| DateTime::parse_from_rfc3339(v.trim()).ok())
            .map(|d| d.with_timezone(&Utc))
    }

    /// Whether any retention is asked for besides a policy (a mode, a date, a hold).
    pub fn explicit_retention(&self) -> bool {
        self.get("retention_mode").is_some_and(|m| !matches!(m.trim(), "" | "none"))
            || self.retain_until().is_some()
            || self.get("legal_hold").is_some_and(|h| h.trim() == "true")
    }

    /// The disposition asked for (`dispose` is the element's default).
    pub fn disposes(&self) -> bool {
        self.get("disposition").is_none_or(|d| d.trim() == "dispose")
    }
}

/// Largest text field of an upload form.
pub const MAX_FIELD_BYTES: usize = 1 << 20;

/// Reads one text field of a multipart form whole; the error says what is wrong with it.
pub async fn read_text_field(mut field: multer::Field<'_>, name: &str) -> Result<String, String> {
    let mut buf = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(|e| format!("malformed multipart body: {e}"))? {
        buf.extend_from_slice(&chunk);
        if buf.len() > MAX_FIELD_BYTES {
            return Err(format!("part {name:?} is larger than {MAX_FIELD_BYTES} bytes"));
        }
    }
    String::from_utf8(buf).map_err(|_| format!("part {name:?} is not UTF-8"))
}

/// The sha-256 (hex) an RFC 9530 `Content-Digest` / `Repr-Digest` value names, if any
/// (other algorithms are ignored, as the RFC allows).
pub fn sha256_from_content_digest(value: &str) -> Result<Option<String>, String> {
    use base64::Engine as _;
    for item in value.split(',') {
        let Some((alg, val)) = item.trim().split_once('=') else { continue };
        if alg.trim().eq_ignore_ascii_case("sha-256") {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(val.trim().trim_matches(':'))
                .map_err(|_| "Content-Digest sha-256 is not base64 between colons (sha-256=:…:)".to_owned())?;
            if raw.len() != 32 {
                return Err("Content-Digest sha-256 must be 32 bytes".to_owned());
            }
            return Ok(Some(raw.iter().map(|b| format!("{b:02x}")).collect()));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_checked_by_name() {
        let mut f = UploadFields::default();
        f.push("tags", "a,b".into()).unwrap();
        assert!(f.push("tags", "c".into()).unwrap_err().contains("twice"));
        assert!(f.push("metadata", "[1]".into()).unwrap_err().contains("JSON object"));
        assert!(f.push("document_id", "x".into()).unwrap_err().contains("UUID"));
        assert!(f.push("retain_until", "tomorrow".into()).unwrap_err().contains("RFC 3339"));
        assert!(f.push("legal_hold", "yes".into()).is_err());
        assert!(f.push("disposition", "burn".into()).is_err());
        assert!(f.push("colour", "red".into()).unwrap_err().contains("unknown field"));
        f.push("retain_until", "2030-01-01T00:00:00Z".into()).unwrap();
        assert!(f.explicit_retention() && f.disposes());
    }
}

/// A stream that hands out one item per poll, then yields once (waking itself). Multipart
/// parsers read their input until it would block; over a fast client and a slower sink
/// (an element, a disk) that buffers the whole difference in memory. Paced, the parser
/// holds about one chunk ahead of what was consumed, so memory stays flat.
#[derive(Debug)]
pub struct Paced<S> {
    inner: S,
    yielded: bool,
}

/// Paces `inner` (see [`Paced`]).
pub fn paced<S>(inner: S) -> Paced<S> {
    Paced { inner, yielded: false }
}

impl<S: futures_util::Stream + Unpin> futures_util::Stream for Paced<S> {
    type Item = S::Item;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        if self.yielded {
            self.yielded = false;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let r = std::pin::Pin::new(&mut self.inner).poll_next(cx);
        if matches!(r, Poll::Ready(Some(_))) {
            self.yielded = true;
        }
        r
    }
}
