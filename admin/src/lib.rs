//! ArtStore's admin cluster: a Raft group (openraft) that keeps users, roles, service
//! accounts, the storage-element registry, retention policies and the token-signing keys,
//! and serves the OAuth2 token endpoint, the JWKS and the admin API.
//!
//! - [`types`]: the Raft type configuration, requests and responses.
//! - [`state`]: the replicated state and the deterministic apply, incl. the audit chain.
//! - [`log_store`]: the durable Raft log; [`sm`]: the state machine and its snapshots;
//!   [`audit_log`]: the audit chain's append-only segment files.
//! - [`network`]: Raft RPCs over HTTP with fault injection for tests.
//! - [`node`]: one running node; [`api`]: the HTTP API; [`discovery`]: Redis publication.
//! - [`verify`]: `artstore admin verify-audit`.

// openraft's `StorageError` is large and every storage trait method returns it.
#![allow(clippy::result_large_err)]

pub mod api;
pub mod audit_log;
pub mod auth;
pub mod config;
pub mod discovery;
pub mod log_store;
pub mod network;
pub mod node;
pub mod server;
pub mod sm;
pub mod state;
pub mod types;
pub mod verify;

#[cfg(test)]
mod storage_suite {
    use crate::log_store::LogStore;
    use crate::sm::StateMachine;
    use crate::types::{StorageError, TypeConfig};
    use openraft::testing::{StoreBuilder, Suite};

    struct Builder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
        async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
            let dir = tempfile::tempdir().expect("temp dir");
            let log = LogStore::open(&dir.path().join("log")).expect("log store");
            let sm = StateMachine::open(&dir.path().join("sm"), 4).expect("state machine");
            Ok((dir, log, sm))
        }
    }

    /// openraft's own storage test suite against our log store and state machine.
    #[test]
    fn openraft_storage_suite() {
        Suite::test_all(Builder).expect("openraft storage suite");
    }
}
