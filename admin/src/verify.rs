//! `artstore admin verify-audit --data DIR`: checks the node's audit chain file without a
//! running node: every entry's hash, its link to the previous entry, and its Ed25519
//! signature by the key the chain's first entry (the cluster's bootstrap) names, or by the
//! key the operator pins with `--public-key`.

use crate::sm::AUDIT_FILE;
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

/// Verifies `<data>/state/audit.jsonl`.
pub fn verify_audit(data: &Path, pinned_key: Option<&str>) -> anyhow::Result<AuditReport> {
    let path = data.join("state").join(AUDIT_FILE);
    let f = std::fs::File::open(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let mut check = ChainCheck::new(match pinned_key {
        Some(k) => ChainKey::Pinned(k.to_owned()),
        None => ChainKey::Recorded(None),
    });
    let mut unreadable = None;
    for (n, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        match serde_json::from_str::<AuditEntry>(&line) {
            Ok(e) => check.push(&e),
            Err(err) => {
                unreadable = Some(format!("line {}: not an audit entry: {err}", n + 1));
                break;
            }
        }
    }
    let r = check.finish();
    let mut problems = r.problems;
    if r.more_problems > 0 {
        problems.push(format!("… and {} more problems", r.more_problems));
    }
    problems.extend(unreadable);
    Ok(AuditReport { entries: r.entries, public_key: r.key, problems })
}
