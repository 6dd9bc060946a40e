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
pub mod metrics;
pub mod network;
pub mod node;
pub mod proposer;
pub mod server;
pub mod sm;
pub mod state;
pub mod types;
pub mod verify;

/// Waits three seconds at a named point when `ARTSTORE_TEST_PAUSE_AT` names it, so crash
/// tests can kill the process there: `snapshot` (a snapshot serialised, not yet written) or
/// `rotation` (a new audit segment created and synced, nothing in it yet). Unset outside
/// those tests; the pause is announced on stderr.
pub(crate) fn test_pause(point: &str) {
    static AT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    if AT.get_or_init(|| std::env::var("ARTSTORE_TEST_PAUSE_AT").ok()).as_deref() == Some(point) {
        eprintln!("artstore admin: test pause at {point}");
        std::thread::sleep(std::time::Duration::from_secs(3));
    }
}

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
