//! The Raft type configuration: what a log entry carries (a [`Request`]) and what applying
//! it answers (a [`Response`]).

use crate::state::Op;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::io::Cursor;

openraft::declare_raft_types!(
    /// ArtStore's admin cluster.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A node id.
pub type NodeId = u64;
/// The Raft handle of this cluster.
pub type Raft = openraft::Raft<TypeConfig>;
/// A log id.
pub type LogId = openraft::LogId<NodeId>;
/// A log entry.
pub type Entry = openraft::Entry<TypeConfig>;
/// A storage error.
pub type StorageError = openraft::StorageError<NodeId>;

/// One change proposed to the cluster: who asks, from where, when, and what.
///
/// The time is the proposer's clock, carried in the entry so every node applies the same
/// change identically (retention terms, key ages and the audit chain depend on it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    /// The token subject (user or service account) or `system` for the cluster's own work.
    pub actor: String,
    /// The client address the change came from, where known.
    #[serde(default)]
    pub from: Option<String>,
    /// When the change was proposed.
    pub at: DateTime<Utc>,
    /// The change.
    pub op: Op,
}

/// What applying a [`Request`] answered: the changed object, or why it was refused.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Response {
    /// Applied; the value is the object as it now is (secrets left out).
    Ok(serde_json::Value),
    /// Refused by the state machine; nothing changed.
    Refused(Refusal),
    /// The answers to the changes of an [`Op::Batch`], in their order.
    Batch(Vec<Response>),
}

/// A refusal decided deterministically on every node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Refusal {
    /// What kind of refusal.
    pub kind: RefusalKind,
    /// One lowercase sentence.
    pub detail: String,
}

/// The kinds of refusal, each mapped to one HTTP status.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RefusalKind {
    /// The thing named does not exist.
    NotFound,
    /// The thing exists already.
    AlreadyExists,
    /// The change conflicts with the current state (in use, shorter compliance term...).
    Conflict,
    /// The change is malformed.
    BadRequest,
}

impl Refusal {
    pub fn new(kind: RefusalKind, detail: impl Into<String>) -> Self {
        Self { kind, detail: detail.into() }
    }
}
