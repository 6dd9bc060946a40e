//! The `*.attr.json` sidecar: the single source of truth for one stored file.
//!
//! Every version of the schema that was ever written keeps parsing; fields this version
//! does not know are carried through rewrites untouched. A malformed sidecar is refused with
//! an error that names the file and the reason; nothing is guessed.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use uuid::Uuid;

/// The schema tag written into every new sidecar.
pub const SCHEMA_V1: &str = "artstore/sidecar/v1";

/// The suffix that marks a sidecar next to its content file.
pub const SIDECAR_SUFFIX: &str = ".attr.json";

/// Where a document stands in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DocState {
    /// Content is readable in the hot tier.
    Active,
    /// Content was moved to the cold tier when the element entered `ar`.
    Archived,
    /// Deleted by a person; only the tombstone sidecar remains.
    Deleted,
    /// Removed by the disposition schedule at the end of its term; tombstone only.
    Disposed,
}

impl DocState {
    /// Whether the content is gone for good.
    pub fn is_tombstone(self) -> bool {
        matches!(self, DocState::Deleted | DocState::Disposed)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DocState::Active => "active",
            DocState::Archived => "archived",
            DocState::Deleted => "deleted",
            DocState::Disposed => "disposed",
        }
    }
}

/// How strictly the retention date is enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RetentionMode {
    /// No retention: deletable whenever the mode allows.
    #[default]
    None,
    /// Deletable before the date only with the `retention:bypass` permission, audited.
    Governance,
    /// Nobody can delete before the date or shorten it.
    Compliance,
}

impl RetentionMode {
    /// Strength for the "only add protection" rule.
    pub fn rank(self) -> u8 {
        match self {
            RetentionMode::None => 0,
            RetentionMode::Governance => 1,
            RetentionMode::Compliance => 2,
        }
    }
}

/// What happens when the term ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Disposition {
    /// The sweeper removes the content and leaves a tombstone.
    #[default]
    Dispose,
    /// Listed for a person to decide.
    Review,
}

/// The retention block of a sidecar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Retention {
    /// The admin policy this was resolved from, if any.
    #[serde(default)]
    pub policy: Option<String>,
    #[serde(default)]
    pub mode: RetentionMode,
    /// Until when the document must be kept.
    #[serde(default)]
    pub retain_until: Option<DateTime<Utc>>,
    /// Blocks deletion and disposition regardless of dates.
    #[serde(default)]
    pub legal_hold: bool,
    /// Why the hold was set (a case or matter reference); cleared when it is lifted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legal_hold_reason: Option<String>,
    #[serde(default)]
    pub disposition: Disposition,
    /// Fields a newer version wrote; kept on rewrite.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Retention {
    /// Whether the term is still running at `now`.
    pub fn is_under_retention(&self, now: DateTime<Utc>) -> bool {
        self.mode != RetentionMode::None && self.retain_until.is_some_and(|t| t > now)
    }

    /// Whether the term has ended (a managed document whose date has passed).
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.mode != RetentionMode::None && self.retain_until.is_some_and(|t| t <= now)
    }
}

/// Which tier holds the content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Hot,
    Cold,
    /// No content any more (tombstone).
    None,
}

/// A staged copy of cold content in the hot tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RestoreState {
    /// Being copied back.
    Staging,
    /// Readable until `expires_at`.
    Ready,
}

/// A restore request's state, shown in the sidecar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Restore {
    pub state: RestoreState,
    pub requested_at: DateTime<Utc>,
    pub requested_by: String,
    /// How many days the staged copy stays readable.
    pub days: u32,
    #[serde(default)]
    pub ready_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Where the content lives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContentLocation {
    pub location: Tier,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<Restore>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// What is left to say about removed content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tombstone {
    /// When the content was removed.
    pub at: DateTime<Utc>,
    /// Who or what removed it (a subject, or `system:disposition`).
    pub by: String,
    /// `deleted` or `disposed`.
    pub reason: String,
    /// Whether a governance retention was bypassed to do it.
    #[serde(default)]
    pub retention_bypassed: bool,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One sidecar, schema v1. Field names are the on-disk contract (docs/storage-format.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sidecar {
    pub schema: String,
    /// UUIDv7; its time part names the `data/YYYY/MM/DD/` folder.
    pub file_id: Uuid,
    /// Shared by every version of one document.
    pub document_id: Uuid,
    /// 1 for the first version of a document.
    pub version: u32,
    /// Grows by one with every rewrite of this sidecar.
    pub revision: u64,
    pub state: DocState,
    pub original_name: String,
    /// The content file's name in its folder; the sidecar is this plus `.attr.json`.
    pub stored_name: String,
    pub content_type: String,
    pub size: u64,
    /// Lowercase hex SHA-256 of the content.
    pub sha256: String,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub updated_at: DateTime<Utc>,
    pub updated_by: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub metadata: Map<String, Value>,
    pub retention: Retention,
    pub content: ContentLocation,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tombstone: Option<Tombstone>,
    /// Fields a newer version wrote; kept on rewrite.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Why a sidecar could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SidecarError {
    /// The file could not be read.
    #[error("{path}: cannot read sidecar: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// Not JSON, or a field has the wrong type or is missing.
    #[error("{path}: malformed sidecar: {reason}")]
    Malformed { path: PathBuf, reason: String },
    /// A `schema` this build does not know (written by a newer ArtStore).
    #[error("{path}: unsupported sidecar schema {schema:?}")]
    UnsupportedSchema { path: PathBuf, schema: String },
}

impl SidecarError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            SidecarError::Io { path, .. }
            | SidecarError::Malformed { path, .. }
            | SidecarError::UnsupportedSchema { path, .. } => path,
        }
    }
}

impl Sidecar {
    /// Parses sidecar bytes; `path` only names the file in errors.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Sidecar, SidecarError> {
        let malformed = |reason: String| SidecarError::Malformed { path: path.to_owned(), reason };
        let value: Value = serde_json::from_slice(bytes).map_err(|e| malformed(e.to_string()))?;
        let schema = value
            .get("schema")
            .ok_or_else(|| malformed("missing field `schema`".to_owned()))?
            .as_str()
            .ok_or_else(|| malformed("`schema` is not a string".to_owned()))?
            .to_owned();
        let sc: Sidecar = match schema.as_str() {
            SCHEMA_V1 => serde_json::from_value(value).map_err(|e| malformed(e.to_string()))?,
            _ => {
                return Err(SidecarError::UnsupportedSchema { path: path.to_owned(), schema });
            }
        };
        sc.validate().map_err(malformed)?;
        Ok(sc)
    }

    /// Reads and parses a sidecar file.
    pub fn read(path: &Path) -> Result<Sidecar, SidecarError> {
        let bytes = std::fs::read(path).map_err(|source| SidecarError::Io { path: path.to_owned(), source })?;
        Self::parse(&bytes, path)
    }

    fn validate(&self) -> Result<(), String> {
        if self.sha256.len() != 64 || !self.sha256.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
            return Err(format!("`sha256` is not 64 lowercase hex digits: {:?}", self.sha256));
        }
        if self.stored_name.is_empty()
            || self.stored_name.contains(['/', '\\', '\0'])
            || self.stored_name.starts_with('.')
        {
            return Err(format!("`stored_name` is not a plain file name: {:?}", self.stored_name));
        }
        if self.file_id.get_version_num() != 7 {
            return Err(format!("`file_id` {} is not a UUIDv7", self.file_id));
        }
        if self.version == 0 || self.revision == 0 {
            return Err("`version` and `revision` start at 1".to_owned());
        }
        Ok(())
    }

    /// The bytes written to disk: pretty JSON and a final newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// The sidecar's own file name.
    pub fn sidecar_name(&self) -> String {
        format!("{}{SIDECAR_SUFFIX}", self.stored_name)
    }

    /// The strong ETag of the content.
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.sha256)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn sample() -> Sidecar {
        let id = Uuid::now_v7();
        Sidecar {
            schema: SCHEMA_V1.to_owned(),
            file_id: id,
            document_id: Uuid::now_v7(),
            version: 1,
            revision: 1,
            state: DocState::Active,
            original_name: "Report 2024.pdf".to_owned(),
            stored_name: format!("Report_2024_{id}.pdf"),
            content_type: "application/pdf".to_owned(),
            size: 3,
            sha256: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".to_owned(),
            created_at: Utc::now(),
            created_by: "alice".to_owned(),
            updated_at: Utc::now(),
            updated_by: "alice".to_owned(),
            description: Some("q4".to_owned()),
            tags: vec!["finance".to_owned()],
            metadata: Map::new(),
            retention: Retention::default(),
            content: ContentLocation { location: Tier::Hot, restore: None, extra: Map::new() },
            tombstone: None,
            extra: Map::new(),
        }
    }

    #[test]
    fn unknown_fields_survive_a_rewrite() {
        let mut v = serde_json::to_value(sample()).unwrap();
        v["future_field"] = serde_json::json!({"a": 1});
        v["retention"]["future_retention_field"] = "x".into();
        let sc = Sidecar::parse(&serde_json::to_vec(&v).unwrap(), Path::new("x.attr.json")).unwrap();
        let again: Value = serde_json::from_slice(&sc.to_bytes()).unwrap();
        assert_eq!(again["future_field"], serde_json::json!({"a": 1}));
        assert_eq!(again["retention"]["future_retention_field"], "x");
    }

    #[test]
    fn malformed_sidecars_name_the_file_and_reason() {
        let p = Path::new("data/2026/01/01/x.attr.json");
        let e = Sidecar::parse(b"{not json", p).unwrap_err();
        assert!(e.to_string().starts_with("data/2026/01/01/x.attr.json: malformed sidecar"), "{e}");
        let e = Sidecar::parse(br#"{"schema":"artstore/sidecar/v99"}"#, p).unwrap_err();
        assert!(matches!(e, SidecarError::UnsupportedSchema { .. }), "{e}");
        let mut v = serde_json::to_value(sample()).unwrap();
        v["sha256"] = "XYZ".into();
        let e = Sidecar::parse(&serde_json::to_vec(&v).unwrap(), p).unwrap_err();
        assert!(e.to_string().contains("sha256"), "{e}");
        let mut v = serde_json::to_value(sample()).unwrap();
        v.as_object_mut().unwrap().remove("file_id");
        assert!(Sidecar::parse(&serde_json::to_vec(&v).unwrap(), p).unwrap_err().to_string().contains("file_id"));
    }

    #[test]
    fn top_level_keys_are_spelled_as_the_contract_says() {
        let v = serde_json::to_value(sample()).unwrap();
        for k in [
            "schema",
            "file_id",
            "document_id",
            "version",
            "sha256",
            "size",
            "revision",
            "state",
            "retention",
            "content",
        ] {
            assert!(v.get(k).is_some(), "missing {k}");
        }
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| Value::Number(n.into())),
            "[a-zA-Z0-9 äöü€\\\\\"]{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn round_trip(desc in proptest::option::of(".{0,40}"), tags in prop::collection::vec("[\\PC]{1,10}", 0..5),
                      meta in prop::collection::btree_map("[a-z]{1,6}", arb_json(), 0..5),
                      extra in prop::collection::btree_map("x_[a-z]{1,6}", arb_json(), 0..3),
                      size in any::<u64>(), rev in 1u64.., hold in any::<bool>()) {
            let mut sc = sample();
            sc.description = desc;
            sc.tags = tags;
            sc.metadata = meta.into_iter().collect();
            sc.extra = extra.into_iter().collect();
            sc.size = size;
            sc.revision = rev;
            sc.retention.legal_hold = hold;
            let parsed = Sidecar::parse(&sc.to_bytes(), Path::new("p")).unwrap();
            prop_assert_eq!(parsed, sc);
        }
    }
}
