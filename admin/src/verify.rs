//! `artstore admin verify-audit --data DIR`: checks the node's audit chain file without a
//! running node: every entry's hash, its link to the previous entry, and its Ed25519
//! signature by the key the chain's first entry (the cluster's bootstrap) names, or by the
//! key the operator pins with `--public-key`.

use crate::sm::AUDIT_FILE;
use crate::state::{AuditEntry, GENESIS, hex};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
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
    let mut report = AuditReport { public_key: pinned_key.map(str::to_owned), ..Default::default() };
    let mut prev = GENESIS.to_owned();
    let mut expect_seq = 1u64;
    for (n, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let e: AuditEntry = match serde_json::from_str(&line) {
            Ok(e) => e,
            Err(err) => {
                report.problems.push(format!("line {}: not an audit entry: {err}", n + 1));
                break;
            }
        };
        report.entries += 1;
        if report.public_key.is_none() && e.action == "cluster.bootstrap" {
            report.public_key = e.detail.get("audit_public_key").and_then(|v| v.as_str()).map(str::to_owned);
        }
        if e.seq != expect_seq {
            report.problems.push(format!("entry {}: sequence gap (expected {expect_seq})", e.seq));
        }
        if e.prev != prev {
            report.problems.push(format!("entry {}: does not link to the previous entry", e.seq));
        }
        let digest = e.digest();
        if hex(&digest) != e.hash {
            report.problems.push(format!("entry {}: content does not match its hash (edited)", e.seq));
        }
        match report.public_key.as_deref().and_then(|k| {
            (0..k.len()).step_by(2).map(|i| u8::from_str_radix(k.get(i..i + 2)?, 16).ok()).collect::<Option<Vec<u8>>>()
        }) {
            Some(pk) => {
                let sig = B64.decode(&e.sig).unwrap_or_default();
                let key = ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, pk);
                if key.verify(&digest, &sig).is_err() {
                    report.problems.push(format!("entry {}: signature does not verify", e.seq));
                }
            }
            None => report.problems.push(format!("entry {}: no audit public key to check the signature with", e.seq)),
        }
        prev = e.hash.clone();
        expect_seq = e.seq + 1;
    }
    Ok(report)
}
