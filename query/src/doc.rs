//! What one indexed document is made of, and how it is read back as a search hit.

use crate::schema::{Fields, content_field_for};
use artstore_shared::sidecar::{Disposition, DocState, Sidecar};
use chrono::{DateTime, Datelike, Utc};
use serde_json::{Value, json};
use tantivy::schema::Value as _;
use tantivy::tokenizer::{PreTokenizedString, Token};
use tantivy::{DateTime as TDate, TantivyDocument};

/// How the text of a document's content was obtained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Extraction {
    /// Text extracted (possibly cut at the limit).
    Ok { text: String, format: String, truncated: bool },
    /// Extraction was tried and failed; the document is indexed by its metadata.
    Failed { reason: String },
    /// Not tried: the content is not readable (archived, tombstone) or not a text format.
    Skipped { reason: String },
}

impl Extraction {
    /// `ok`, `failed` or `skipped`.
    pub fn status(&self) -> &'static str {
        match self {
            Extraction::Ok { .. } => "ok",
            Extraction::Failed { .. } => "failed",
            Extraction::Skipped { .. } => "skipped",
        }
    }
}

/// How the reason of an extraction starts when the content could not be read at all.
pub const UNREAD_PREFIX: &str = "content not read";

/// A document ready to be indexed: its sidecar, where it lives and its text.
#[derive(Debug, Clone)]
pub struct DocInput {
    pub sidecar: Sidecar,
    /// The sidecar as it came (unknown fields kept), stored for hits and reads.
    pub raw: Value,
    pub element_id: String,
    pub extraction: Extraction,
}

impl DocInput {
    /// Reads a sidecar as the element sent it.
    pub fn parse_sidecar(raw: &Value) -> Result<Sidecar, String> {
        serde_json::from_value::<Sidecar>(raw.clone()).map_err(|e| format!("sidecar does not parse: {e}"))
    }
}

/// How much of a text language detection reads.
pub const DETECT_BYTES: usize = 1024;

/// The languages detection chooses among: those the index stems and their neighbours in
/// script (so an Italian text is not taken for Spanish). Texts in other scripts are `und`.
/// Fewer candidates make detection several times cheaper; it was most of the indexing time.
const CANDIDATES: &[whatlang::Lang] = &[
    whatlang::Lang::Eng,
    whatlang::Lang::Rus,
    whatlang::Lang::Ukr,
    whatlang::Lang::Bel,
    whatlang::Lang::Bul,
    whatlang::Lang::Srp,
    whatlang::Lang::Deu,
    whatlang::Lang::Fra,
    whatlang::Lang::Spa,
    whatlang::Lang::Ita,
    whatlang::Lang::Por,
    whatlang::Lang::Nld,
    whatlang::Lang::Pol,
    whatlang::Lang::Swe,
    whatlang::Lang::Fin,
    whatlang::Lang::Ces,
    whatlang::Lang::Tur,
];

fn detector() -> &'static whatlang::Detector {
    static D: std::sync::OnceLock<whatlang::Detector> = std::sync::OnceLock::new();
    D.get_or_init(|| whatlang::Detector::with_allowlist(CANDIDATES.to_vec()))
}

/// Detects the language of a text: an ISO 639-1 code for the languages the index stems
/// (`en`, `ru`, `de`, `fr`, `es`), the ISO 639-3 code for others, `und` when unsure.
pub fn detect_language(text: &str) -> String {
    // The first KiB decides as well as the whole text, at a fraction of the cost.
    let mut end = text.len().min(DETECT_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let sample = &text[..end];
    // Latin and Cyrillic texts choose among the candidates; other scripts have few
    // languages each and are cheap to tell apart.
    let info = match whatlang::detect_script(sample) {
        Some(whatlang::Script::Latin | whatlang::Script::Cyrillic) => detector().detect(sample),
        _ => whatlang::detect(sample),
    };
    let Some(info) = info else { return "und".to_owned() };
    if info.confidence() < 0.25 {
        return "und".to_owned();
    }
    match info.lang() {
        whatlang::Lang::Eng => "en",
        whatlang::Lang::Rus => "ru",
        whatlang::Lang::Deu => "de",
        whatlang::Lang::Fra => "fr",
        whatlang::Lang::Spa => "es",
        other => other.code(),
    }
    .to_owned()
}

fn tdate(d: DateTime<Utc>) -> TDate {
    TDate::from_timestamp_secs(index_secs(d.timestamp()))
}

/// Lower-cased metadata key and value terms: `key:term` for each analysed word of the value.
fn metadata_tokens(
    analyzer: &mut tantivy::tokenizer::TextAnalyzer,
    metadata: &serde_json::Map<String, Value>,
) -> (PreTokenizedString, String) {
    let mut tokens = Vec::new();
    let mut text = String::new();
    let mut pos = 0usize;
    for (k, v) in metadata {
        let key = k.to_lowercase();
        let value = match v {
            Value::String(s) => s.clone(),
            Value::Null => continue,
            other => other.to_string(),
        };
        text.push_str(&value);
        text.push('\n');
        for term in crate::schema::analyze(analyzer, &value) {
            tokens.push(Token {
                offset_from: 0,
                offset_to: 0,
                position: pos,
                text: format!("{key}:{term}"),
                position_length: 1,
            });
            pos += 1;
        }
        // A gap so phrases never run from one value into the next.
        pos += 10;
    }
    (PreTokenizedString { text: String::new(), tokens }, text)
}

/// Builds the tantivy document.
pub fn to_document(
    f: &Fields,
    analyzer: &mut tantivy::tokenizer::TextAnalyzer,
    d: &DocInput,
) -> (TantivyDocument, Option<String>) {
    let s = &d.sidecar;
    let mut doc = TantivyDocument::default();
    doc.add_text(f.file_id, s.file_id.to_string());
    let (hi, lo) = s.file_id.as_u64_pair();
    doc.add_u64(f.id_hi, hi);
    doc.add_u64(f.id_lo, lo);
    doc.add_text(f.document_id, s.document_id.to_string());
    doc.add_u64(f.version, u64::from(s.version));
    doc.add_u64(f.revision, s.revision);
    doc.add_text(f.element_id, &d.element_id);
    doc.add_text(f.name, &s.original_name);
    doc.add_text(f.name_sort, s.original_name.to_lowercase());
    if let Some(desc) = &s.description {
        doc.add_text(f.description, desc);
    }
    for t in &s.tags {
        doc.add_text(f.tags, t.to_lowercase());
        doc.add_text(f.tags_text, t);
    }
    doc.add_text(f.content_type, s.content_type.to_lowercase());
    let (kv, meta_text) = metadata_tokens(analyzer, &s.metadata);
    doc.add_pre_tokenized_text(f.meta_kv, kv);
    if !meta_text.is_empty() {
        doc.add_text(f.meta_text, meta_text);
    }
    doc.add_date(f.created, tdate(s.created_at));
    doc.add_date(f.updated, tdate(s.updated_at));
    doc.add_u64(f.year, s.created_at.year().max(0) as u64);
    doc.add_u64(f.size, s.size);
    doc.add_text(f.sha256, &s.sha256);
    doc.add_text(f.state, s.state.as_str());
    doc.add_text(f.retention_mode, retention_mode(s));
    if let Some(policy) = s.retention.policy.as_deref().filter(|p| !p.is_empty()) {
        doc.add_text(f.retention_policy, policy);
    }
    if let Some(until) = s.retention.retain_until {
        doc.add_date(f.retain_until, tdate(until));
    }
    doc.add_u64(f.legal_hold, u64::from(s.retention.legal_hold));
    doc.add_text(f.disposition, disposition(s));
    let mut language = None;
    match &d.extraction {
        Extraction::Ok { text, truncated, .. } => {
            let lang = detect_language(text);
            doc.add_text(content_field_for(f, &lang), text);
            doc.add_text(f.text, text);
            doc.add_text(f.language, &lang);
            doc.add_u64(f.truncated, u64::from(*truncated));
            language = Some(lang);
        }
        Extraction::Failed { reason } | Extraction::Skipped { reason } => {
            doc.add_text(f.extraction_reason, reason);
        }
    }
    doc.add_text(f.extraction, d.extraction.status());
    doc.add_text(f.sidecar, d.raw.to_string());
    (doc, language)
}

fn retention_mode(s: &Sidecar) -> String {
    serde_json::to_value(s.retention.mode).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

fn disposition(s: &Sidecar) -> &'static str {
    match s.retention.disposition {
        Disposition::Dispose => "dispose",
        Disposition::Review => "review",
    }
}

/// The stored parts of an indexed document.
#[derive(Debug, Clone)]
pub struct Stored {
    pub sidecar: Value,
    pub element_id: String,
    pub text: Option<String>,
    pub language: Option<String>,
    pub extraction: String,
    pub extraction_reason: Option<String>,
    pub truncated: bool,
    pub revision: u64,
}

/// Reads the stored fields back.
pub fn stored(f: &Fields, doc: &TantivyDocument) -> Stored {
    let text_of = |field| doc.get_first(field).and_then(|v| v.as_str()).map(str::to_owned);
    Stored {
        sidecar: text_of(f.sidecar).and_then(|s| serde_json::from_str(&s).ok()).unwrap_or(Value::Null),
        element_id: text_of(f.element_id).unwrap_or_default(),
        text: text_of(f.text),
        language: text_of(f.language),
        extraction: text_of(f.extraction).unwrap_or_else(|| "skipped".to_owned()),
        extraction_reason: text_of(f.extraction_reason),
        truncated: doc.get_first(f.truncated).and_then(|v| v.as_u64()) == Some(1),
        revision: doc.get_first(f.revision).and_then(|v| v.as_u64()).unwrap_or(0),
    }
}

impl Stored {
    /// Whether the content could not be read at all (its element did not answer): such a
    /// document is read again by the next update, repair or rebuild.
    pub fn content_unread(&self) -> bool {
        self.extraction == "failed" && self.extraction_reason.as_deref().is_some_and(|r| r.starts_with(UNREAD_PREFIX))
    }

    /// The extraction this stored document carries, to keep it when only metadata changed
    /// (none when the content was never read).
    pub fn extraction(&self) -> Option<Extraction> {
        if self.content_unread() {
            return None;
        }
        match self.extraction.as_str() {
            "ok" => Some(Extraction::Ok {
                text: self.text.clone().unwrap_or_default(),
                format: String::new(),
                truncated: self.truncated,
            }),
            "failed" => Some(Extraction::Failed { reason: self.extraction_reason.clone().unwrap_or_default() }),
            _ => None,
        }
    }

    /// The hit's fields (without score and highlights).
    pub fn hit(&self) -> Value {
        let s = &self.sidecar;
        let r = &s["retention"];
        let mut hit = json!({
            "file_id": s["file_id"],
            "document_id": s["document_id"],
            "version": s["version"],
            "revision": s["revision"],
            "name": s["original_name"],
            "content_type": s["content_type"],
            "size": s["size"],
            "sha256": s["sha256"],
            "created_at": s["created_at"],
            "updated_at": s["updated_at"],
            "element_id": self.element_id,
            "state": s["state"],
            "tags": s["tags"],
            "description": s["description"],
            "retention": {
                "policy": r["policy"],
                "mode": r["mode"],
                "retain_until": r["retain_until"],
                "legal_hold": r["legal_hold"],
                "disposition": r["disposition"],
            },
            "extraction": self.extraction,
        });
        if let Some(reason) = &self.extraction_reason {
            hit["extraction_reason"] = json!(reason);
        }
        if let Some(lang) = &self.language {
            hit["language"] = json!(lang);
        }
        if self.truncated {
            hit["truncated"] = json!(true);
        }
        hit
    }
}

/// Whether a document in this state is a tombstone (no content).
pub fn is_tombstone(state: DocState) -> bool {
    state.is_tombstone()
}

/// Seconds as the index can hold them: tantivy keeps dates as i64 nanoseconds, so
/// 1677-09-21..2262-04-11. Dates beyond are clamped to the nearest end, which keeps their
/// order against every date in range (a document kept until 9999-12-31 stays "under
/// retention"; a filter from the year 1500 matches everything).
pub fn index_secs(secs: i64) -> i64 {
    const NANOS: i64 = 1_000_000_000;
    secs.clamp(i64::MIN / NANOS + 1, i64::MAX / NANOS - 1)
}

#[cfg(test)]
mod tests {
    use super::detect_language;

    #[test]
    fn languages_are_told_apart() {
        assert_eq!(detect_language("The supply contracts were signed in March by both parties and filed."), "en");
        assert_eq!(detect_language("Договоры поставки были подписаны в марте обеими сторонами."), "ru");
        assert_eq!(detect_language("Die Lieferverträge wurden im März von beiden Parteien unterzeichnet."), "de");
        assert_eq!(detect_language("Les contrats de fourniture ont été signés en mars par les deux parties."), "fr");
        assert_eq!(
            detect_language(
                "Los contratos de suministro fueron firmados en marzo por ambas partes, y la empresa pagará la factura cuando reciba los productos."
            ),
            "es"
        );
        assert_eq!(detect_language("I contratti di fornitura sono stati firmati a marzo da entrambe le parti."), "ita");
        assert_eq!(detect_language("供应合同于三月由双方签署，货物将于四月交付。"), "cmn");
    }
}
