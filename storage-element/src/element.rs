//! `element.json`: the element's identity, format version and mode, and the mode rules.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::path::Path;
use uuid::Uuid;

/// The on-disk format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// What an element accepts. Transitions go forward only: edit → rw → ro → ar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ElementMode {
    /// Create, read, update metadata, delete (as retention allows).
    Edit,
    /// Create, read, update metadata; no deletes.
    Rw,
    /// Read only.
    Ro,
    /// Archive: content is in the cold tier; reads need a restore.
    Ar,
}

/// A client operation, for the mode table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Create,
    ReadContent,
    UpdateMetadata,
    Delete,
}

impl Operation {
    pub fn describe(self) -> &'static str {
        match self {
            Operation::Create => "creating files",
            Operation::ReadContent => "reading content",
            Operation::UpdateMetadata => "updating metadata",
            Operation::Delete => "deleting files",
        }
    }
}

impl ElementMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ElementMode::Edit => "edit",
            ElementMode::Rw => "rw",
            ElementMode::Ro => "ro",
            ElementMode::Ar => "ar",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "edit" => Some(Self::Edit),
            "rw" => Some(Self::Rw),
            "ro" => Some(Self::Ro),
            "ar" => Some(Self::Ar),
            _ => None,
        }
    }

    /// The design brief's mode table. Holds and retention extensions are allowed in every
    /// mode and are not in this table.
    pub fn allows(self, op: Operation) -> bool {
        use ElementMode::*;
        use Operation::*;
        match op {
            Create | UpdateMetadata => matches!(self, Edit | Rw),
            ReadContent => matches!(self, Edit | Rw | Ro),
            Delete => self == Edit,
        }
    }
}

/// One recorded mode change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModeChange {
    pub from: ElementMode,
    pub to: ElementMode,
    pub at: DateTime<Utc>,
    pub by: String,
}

/// The contents of `element.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ElementFile {
    pub element_id: Uuid,
    pub format_version: u32,
    pub mode: ElementMode,
    pub created_at: DateTime<Utc>,
    #[serde(default)]
    pub mode_history: Vec<ModeChange>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ElementFile {
    pub fn new(mode: ElementMode, now: DateTime<Utc>) -> Self {
        Self {
            element_id: Uuid::now_v7(),
            format_version: FORMAT_VERSION,
            mode,
            created_at: now,
            mode_history: vec![],
            extra: Map::new(),
        }
    }

    /// Reads `element.json`, refusing a format this build does not know.
    pub fn read(path: &Path) -> anyhow::Result<Option<ElementFile>> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => anyhow::bail!("{}: {e}", path.display()),
        };
        let f: ElementFile = serde_json::from_slice(&bytes)
            .map_err(|e| anyhow::anyhow!("{}: malformed element file: {e}", path.display()))?;
        if f.format_version > FORMAT_VERSION {
            anyhow::bail!(
                "{}: format version {} is newer than this build understands ({FORMAT_VERSION})",
                path.display(),
                f.format_version
            );
        }
        Ok(Some(f))
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_table_matches_the_brief() {
        use ElementMode::*;
        use Operation::*;
        let table = [
            (Edit, [true, true, true, true]),
            (Rw, [true, true, true, false]),
            (Ro, [false, true, false, false]),
            (Ar, [false, false, false, false]),
        ];
        for (mode, expect) in table {
            let got = [Create, ReadContent, UpdateMetadata, Delete].map(|op| mode.allows(op));
            assert_eq!(got, expect, "{mode:?}");
        }
        assert!(Edit < Rw && Rw < Ro && Ro < Ar);
    }
}
