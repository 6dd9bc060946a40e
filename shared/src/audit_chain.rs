//! The admin cluster's audit chain as it is stored and served: one entry per change,
//! hash-linked and Ed25519-signed. The admin writes it, `artstore admin verify-audit` checks
//! the node's file, and the web UI checks what `GET /api/v1/audit` answers — all with the
//! one canonical form and the one checker here.

use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The hash the first audit entry points back to.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The action of the cluster's first entry, whose detail records the chain's public key.
pub const BOOTSTRAP_ACTION: &str = "cluster.bootstrap";

/// One link of the chain.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditEntry {
    pub seq: u64,
    pub at: DateTime<Utc>,
    pub actor: String,
    #[serde(default)]
    pub from: Option<String>,
    pub action: String,
    pub target: String,
    #[serde(default)]
    pub detail: Value,
    /// Hex SHA-256 of the previous entry (64 zeros for the first).
    pub prev: String,
    /// Hex SHA-256 of this entry's canonical form (see [`AuditEntry::digest`]).
    pub hash: String,
    /// Base64 Ed25519 signature over the 32 hash bytes.
    #[serde(default)]
    pub sig: String,
}

impl AuditEntry {
    /// SHA-256 over the entry without `hash` and `sig`, as compact JSON with keys in a fixed
    /// order and the time with microseconds.
    pub fn digest(&self) -> [u8; 32] {
        let canonical = json!({
            "seq": self.seq, "at": self.at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "actor": self.actor, "from": self.from, "action": self.action, "target": self.target,
            "detail": self.detail, "prev": self.prev,
        });
        let bytes = serde_json::to_vec(&canonical).unwrap_or_default();
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes);
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        out
    }

    /// The public key (hex) a bootstrap entry records.
    pub fn recorded_key(&self) -> Option<&str> {
        (self.action == BOOTSTRAP_ACTION).then(|| self.detail.get("audit_public_key").and_then(Value::as_str)).flatten()
    }
}

/// Hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes of hex, if it is hex.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// Which key the signatures are checked with.
#[derive(Debug, Clone)]
pub enum ChainKey {
    /// This key, whatever the chain records (`verify-audit --public-key`).
    Pinned(String),
    /// The key the bootstrap entry records; without one, this key (as a node reports it),
    /// and a report that differs from the record is a problem.
    Recorded(Option<String>),
}

/// What a check of the chain found.
#[derive(Debug, Default)]
pub struct ChainReport {
    pub entries: u64,
    /// Signatures that verified.
    pub signatures: u64,
    /// The key the signatures were checked with (hex).
    pub key: Option<String>,
    /// Where that key came from.
    pub key_source: String,
    /// The first entry with a problem.
    pub first_broken: Option<u64>,
    /// One line per problem, naming the entry (at most [`ChainCheck::MAX_PROBLEMS`]).
    pub problems: Vec<String>,
    /// Problems beyond the listed ones.
    pub more_problems: u64,
}

impl ChainReport {
    pub fn ok(&self) -> bool {
        self.first_broken.is_none() && self.problems.is_empty()
    }
}

/// Checks entries one by one, oldest first: the sequence, the link to the previous hash,
/// the hash itself, and the signature.
#[derive(Debug)]
pub struct ChainCheck {
    report: ChainReport,
    prev: String,
    expect: u64,
    key: Option<Vec<u8>>,
    choice: ChainKey,
}

impl ChainCheck {
    /// Problems listed before the rest are only counted.
    pub const MAX_PROBLEMS: usize = 50;

    pub fn new(choice: ChainKey) -> ChainCheck {
        let mut c =
            ChainCheck { report: ChainReport::default(), prev: GENESIS.to_owned(), expect: 1, key: None, choice };
        if let ChainKey::Pinned(k) = c.choice.clone() {
            c.take_key(0, k, "given on the command line".to_owned());
        }
        c
    }

    fn problem(&mut self, seq: u64, text: String) {
        self.report.first_broken.get_or_insert(seq);
        if self.report.problems.len() < Self::MAX_PROBLEMS {
            self.report.problems.push(text);
        } else {
            self.report.more_problems += 1;
        }
    }

    fn take_key(&mut self, seq: u64, key: String, source: String) {
        match unhex(&key).filter(|k| k.len() == 32) {
            Some(bytes) => {
                self.key = Some(bytes);
                self.report.key = Some(key);
                self.report.key_source = source;
            }
            None => self.problem(seq, format!("entry {seq}: the audit key {key:?} is not a hex Ed25519 key")),
        }
    }

    fn choose_key(&mut self, e: &AuditEntry) {
        let ChainKey::Recorded(reported) = &self.choice else { return };
        if self.key.is_some() || self.report.key.is_some() {
            return;
        }
        let (key, source) = match (e.recorded_key(), reported.clone()) {
            (Some(k), reported) => {
                if let Some(r) = reported.filter(|r| !r.eq_ignore_ascii_case(k)) {
                    self.problem(
                        e.seq,
                        format!("the node names the audit key {r}, but the bootstrap entry {} recorded {k}", e.seq),
                    );
                }
                (k.to_owned(), format!("recorded by the cluster's bootstrap entry (seq {})", e.seq))
            }
            (None, Some(r)) => {
                (r, "as the node reports it (no bootstrap entry in the chain vouches for it)".to_owned())
            }
            (None, None) => return,
        };
        self.take_key(e.seq, key, source);
    }

    /// Checks the next entry.
    pub fn push(&mut self, e: &AuditEntry) {
        self.report.entries += 1;
        if e.seq != self.expect {
            self.problem(e.seq, format!("entry {}: sequence gap (expected {})", e.seq, self.expect));
        }
        if e.prev != self.prev {
            self.problem(e.seq, format!("entry {}: does not link to the previous entry's hash", e.seq));
        }
        let digest = e.digest();
        if hex(&digest) != e.hash {
            self.problem(e.seq, format!("entry {}: content does not match its hash (edited)", e.seq));
        }
        self.choose_key(e);
        if let Some(k) = &self.key {
            let sig = base64::engine::general_purpose::STANDARD.decode(&e.sig).unwrap_or_default();
            let key = aws_lc_rs::signature::UnparsedPublicKey::new(&aws_lc_rs::signature::ED25519, k);
            if key.verify(&digest, &sig).is_ok() {
                self.report.signatures += 1;
            } else {
                self.problem(e.seq, format!("entry {}: signature does not verify", e.seq));
            }
        }
        self.prev.clone_from(&e.hash);
        self.expect = e.seq + 1;
    }

    /// Problems found so far (the listed ones and the rest).
    pub fn problems(&self) -> u64 {
        self.report.problems.len() as u64 + self.report.more_problems
    }

    /// The last entry checked (0 before the first).
    pub fn checked_up_to(&self) -> u64 {
        self.expect - 1
    }

    /// The report; a chain no key could be found for is not verified (its signatures went
    /// unchecked), which is a problem of its own.
    pub fn finish(mut self) -> ChainReport {
        if self.key.is_none() && self.report.entries > 0 {
            self.report.problems.push("no audit public key is known: signatures were not checked".to_owned());
            self.report.key_source = "none".to_owned();
        }
        std::mem::take(&mut self.report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};

    fn chain(n: u64) -> (Vec<AuditEntry>, String) {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let kp = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let public = hex(kp.public_key().as_ref());
        let mut prev = GENESIS.to_owned();
        let mut out = Vec::new();
        for seq in 1..=n {
            let (action, detail) = if seq == 1 {
                (BOOTSTRAP_ACTION.to_owned(), json!({"audit_public_key": public}))
            } else {
                ("user.create".to_owned(), json!({"n": seq}))
            };
            let mut e = AuditEntry {
                seq,
                at: Utc::now(),
                actor: "admin".into(),
                from: None,
                action,
                target: format!("t{seq}"),
                detail,
                prev: prev.clone(),
                hash: String::new(),
                sig: String::new(),
            };
            let d = e.digest();
            e.hash = hex(&d);
            e.sig = base64::engine::general_purpose::STANDARD.encode(kp.sign(&d).as_ref());
            prev.clone_from(&e.hash);
            out.push(e);
        }
        (out, public)
    }

    fn check(entries: &[AuditEntry], key: ChainKey) -> ChainReport {
        let mut c = ChainCheck::new(key);
        entries.iter().for_each(|e| c.push(e));
        c.finish()
    }

    #[test]
    fn an_intact_chain_verifies_with_its_recorded_key() {
        let (entries, public) = chain(5);
        let r = check(&entries, ChainKey::Recorded(Some(public.clone())));
        assert!(r.ok(), "{:?}", r.problems);
        assert_eq!((r.entries, r.signatures), (5, 5));
        assert_eq!(r.key.as_deref(), Some(public.as_str()));
        assert!(check(&entries, ChainKey::Pinned(public)).ok());
    }

    #[test]
    fn edits_gaps_and_foreign_keys_are_named() {
        let (mut entries, public) = chain(5);
        entries[2].target = "changed".into();
        let r = check(&entries, ChainKey::Recorded(None));
        assert_eq!(r.first_broken, Some(3));
        assert!(r.problems.iter().any(|p| p.contains("entry 3: content does not match its hash")), "{:?}", r.problems);
        let (mut entries, _) = chain(5);
        entries.remove(3);
        let r = check(&entries, ChainKey::Recorded(None));
        assert!(r.problems.iter().any(|p| p.contains("entry 5: sequence gap")), "{:?}", r.problems);
        let (entries, _) = chain(3);
        let r = check(&entries, ChainKey::Pinned(public));
        assert_eq!(r.signatures, 0, "another chain's key verifies nothing");
        assert!(!r.ok());
        let r = check(&entries, ChainKey::Recorded(Some("00".repeat(32))));
        assert!(r.problems.iter().any(|p| p.contains("the node names the audit key")), "{:?}", r.problems);
    }

    #[test]
    fn a_chain_without_a_key_is_not_verified() {
        let (mut entries, _) = chain(3);
        entries.remove(0);
        entries.iter_mut().for_each(|e| e.seq -= 1);
        let r = check(&entries, ChainKey::Recorded(None));
        assert!(!r.ok());
        assert!(r.problems.iter().any(|p| p.contains("signatures were not checked")));
    }
}
