//! The ingester: the front door for writes. It finds a writable storage element through
//! discovery, streams multipart uploads through to it, takes resumable uploads (tus 1.0.0)
//! into its own data folder, remembers idempotency keys, numbers versions across elements,
//! and forwards writes on existing documents to the element that holds them.

pub mod api;
pub mod config;
pub mod form;
pub mod idempotency;
pub mod locations;
pub mod placement;
pub mod server;
pub mod store;
pub mod tus;
