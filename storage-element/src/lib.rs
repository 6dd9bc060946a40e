//! The ArtStore storage element: each document is a plain content file next to its
//! `*.attr.json` sidecar, written by a WAL-guarded protocol whose commit point is the
//! sidecar rename. Caches are mirrors; the files are the truth.

pub mod api;
pub mod applier;
pub mod audit;
pub mod cache;
pub mod config;
pub mod durable;
pub mod element;
pub mod error;
pub mod heartbeat;
pub mod journal;
pub mod layout;
pub mod metrics;
pub mod outbox;
pub mod pg;
pub mod policies;
pub mod rebuild;
pub mod retention_clock;
pub mod scrub;
pub mod server;
pub mod status;
pub use artstore_shared::sidecar;
pub mod store;
pub mod synthetic;
pub mod verify;
pub mod wal;
pub mod workers;

pub use element::ElementMode;
pub use error::StoreError;
pub use sidecar::Sidecar;
pub use store::{Store, StoreConfig};
