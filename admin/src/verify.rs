//! `artstore admin verify-audit --data DIR`: checks the node's audit chain without a running
//! node: every entry's hash, its link to the previous entry, and its Ed25519 signature by
//! the key the chain's first entry (the cluster's bootstrap) names, or by the key the
//! operator pins with `--public-key`. It reads the segments in `<data>/state/audit/`, or a
//! data folder's `audit.jsonl` from before the segments (not migrated yet).

use crate::audit_log::{AUDIT_DIR, for_each, list_segments};
use crate::sm::LEGACY_AUDIT_FILE;
use artstore_shared::audit_chain::{AuditEntry, ChainCheck, ChainKey};
use std::io::BufRead as _;
use std::path::Path;

/// What a verification found.
#[derive(Debug, Default)]
pub struct AuditReport {
    pub entries: u64,
    pub public_key: Option<String>,
    /// One line per problem, naming the entry.
    pub problems: Vec<String>,
}

/// Verifies the chain of the node whose data folder is `data`.
pub fn verify_audit(data: &Path, pinned_key: Option<&str>) -> anyhow::Result<AuditReport> {
    let state = data.join("state");
    let mut check = ChainCheck::new(match pinned_key {
        Some(k) => ChainKey::Pinned(k.to_owned()),
        None => ChainKey::Recorded(None),
    });
    let segments = state.join(AUDIT_DIR);
    let mut problems = Vec::new();
    if !list_segments(&segments)?.is_empty() {
        problems = for_each(&segments, |e| check.push(e))?;
    } else {
        let path = state.join(LEGACY_AUDIT_FILE);
        let f = std::fs::File::open(&path)
            .map_err(|e| anyhow::anyhow!("{}: {e} (and no segments in {})", path.display(), segments.display()))?;
        for (n, line) in std::io::BufReader::new(f).lines().enumerate() {
            let line = line.map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            match serde_json::from_str::<AuditEntry>(&line) {
                Ok(e) => check.push(&e),
                Err(err) => {
                    problems.push(format!("line {}: not an audit entry: {err}", n + 1));
                    break;
                }
            }
        }
    }
    let r = check.finish();
    let mut all = r.problems;
    if r.more_problems > 0 {
        all.push(format!("… and {} more problems", r.more_problems));
    }
    all.extend(problems);
    Ok(AuditReport { entries: r.entries, public_key: r.key, problems: all })
}
