//! Where things live under an element's root, and how stored names are made.
//!
//! ```text
//! <root>/element.json   data/YYYY/MM/DD/<name> + <name>.attr.json   wal/   tmp/   audit/
//! ```
//! The date folder comes from the UUIDv7 time of the file id, so a document is found by id
//! with a directory listing of one folder and no cache at all.

use crate::sidecar::SIDECAR_SUFFIX;
use chrono::{DateTime, Datelike, Utc};
use std::path::{Path, PathBuf};
use uuid::Uuid;

/// The fixed sub-folders of an element root.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn element_file(&self) -> PathBuf {
        self.root.join("element.json")
    }
    pub fn data(&self) -> PathBuf {
        self.root.join("data")
    }
    pub fn wal(&self) -> PathBuf {
        self.root.join("wal")
    }
    pub fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }
    pub fn audit(&self) -> PathBuf {
        self.root.join("audit")
    }

    /// `data/YYYY/MM/DD` relative to the root, for a file id.
    pub fn day_dir_rel(id: Uuid) -> PathBuf {
        let t = id_time(id);
        PathBuf::from("data")
            .join(format!("{:04}", t.year()))
            .join(format!("{:02}", t.month()))
            .join(format!("{:02}", t.day()))
    }

    /// The absolute day folder of a file id.
    pub fn day_dir(&self, id: Uuid) -> PathBuf {
        self.root.join(Self::day_dir_rel(id))
    }

    /// Creates the fixed folders.
    pub fn create_dirs(&self) -> std::io::Result<()> {
        for d in [self.data(), self.wal(), self.tmp(), self.audit()] {
            std::fs::create_dir_all(d)?;
        }
        Ok(())
    }

    /// Finds a sidecar by file id by listing its day folder; `Ok(None)` if there is none.
    pub fn find_sidecar(&self, id: Uuid) -> std::io::Result<Option<PathBuf>> {
        let dir = self.day_dir(id);
        let needle = id.hyphenated().to_string();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(SIDECAR_SUFFIX) && name.contains(&needle) {
                return Ok(Some(dir.join(name.as_ref())));
            }
        }
        Ok(None)
    }
}

/// The creation time encoded in a UUIDv7 (the epoch for other versions).
pub fn id_time(id: Uuid) -> DateTime<Utc> {
    let (secs, nanos) = id.get_timestamp().map(|t| t.to_unix()).unwrap_or((0, 0));
    DateTime::from_timestamp(secs as i64, nanos).unwrap_or_default()
}

/// A new UUIDv7 for a file created at `at`.
pub fn new_file_id(at: DateTime<Utc>) -> Uuid {
    let ts = uuid::Timestamp::from_unix(uuid::NoContext, at.timestamp() as u64, at.timestamp_subsec_nanos());
    Uuid::new_v7(ts)
}

/// The stored name: the original name made safe, with the file id before the extension,
/// e.g. `Quarterly_report_0193a…-….pdf`.
pub fn stored_name(original: &str, id: Uuid) -> String {
    // Only the last path component of what a client sent is a name.
    let base = original.rsplit(['/', '\\']).next().unwrap_or("");
    let (stem, ext) = match base.rfind('.') {
        Some(i)
            if i > 0
                && base.len() - i <= 17
                && base[i + 1..].chars().all(|c| c.is_ascii_alphanumeric())
                && i + 1 < base.len() =>
        {
            (&base[..i], Some(base[i + 1..].to_ascii_lowercase()))
        }
        _ => (base, None),
    };
    let mut clean = String::new();
    for c in stem.chars() {
        let c = if c.is_alphanumeric() || c == '-' || c == '_' || c == '.' { c } else { '_' };
        if c == '_' && clean.ends_with('_') {
            continue;
        }
        if clean.len() + c.len_utf8() > 100 {
            break;
        }
        clean.push(c);
    }
    let clean = clean.trim_matches(['_', '.']);
    let clean = if clean.is_empty() { "file" } else { clean };
    match ext {
        Some(ext) => format!("{clean}_{id}.{ext}"),
        None => format!("{clean}_{id}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_stay_readable_and_safe() {
        let id = Uuid::now_v7();
        assert_eq!(stored_name("Quarterly report (final).PDF", id), format!("Quarterly_report_final_{id}.pdf"));
        assert_eq!(stored_name("../../etc/passwd", id), format!("passwd_{id}"));
        assert_eq!(stored_name("C:\\Users\\x\\Übersicht März.docx", id), format!("Übersicht_März_{id}.docx"));
        assert_eq!(stored_name(".bashrc", id), format!("bashrc_{id}"));
        assert_eq!(stored_name("", id), format!("file_{id}"));
        assert_eq!(stored_name("a\u{0}b\nc.txt", id), format!("a_b_c_{id}.txt"));
        let long = "x".repeat(500);
        assert!(stored_name(&long, id).len() < 160);
    }

    #[test]
    fn day_folder_comes_from_the_id() {
        let at = DateTime::parse_from_rfc3339("2024-03-05T23:59:59Z").unwrap().with_timezone(&Utc);
        let id = new_file_id(at);
        assert_eq!(Layout::day_dir_rel(id), PathBuf::from("data/2024/03/05"));
        assert_eq!(id_time(id).timestamp(), at.timestamp());
    }
}
