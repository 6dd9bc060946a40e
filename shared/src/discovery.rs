//! The discovery wire format in Redis, shared by the admin (publisher of the registry,
//! reader of heartbeats) and storage elements (writers of heartbeats).
//!
//! - `artstore:elements`: the whole registry as JSON ([`Registry`]), replaced on each change.
//! - `artstore:elements:changed`: a channel; each message is the registry's new version.
//! - `artstore:heartbeat:<element id>`: an element's [`Heartbeat`], written with a TTL; an
//!   element whose key expired is down.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The key holding the whole element registry.
pub const REGISTRY_KEY: &str = "artstore:elements";
/// The channel announcing registry changes.
pub const REGISTRY_CHANNEL: &str = "artstore:elements:changed";
/// Seconds a heartbeat lives unless renewed.
pub const HEARTBEAT_TTL_SECS: u64 = 30;
/// Seconds between heartbeats.
pub const HEARTBEAT_INTERVAL_SECS: u64 = 10;

/// The Redis key of an element's heartbeat.
pub fn heartbeat_key(element_id: &str) -> String {
    format!("artstore:heartbeat:{element_id}")
}

/// One element as the registry publishes it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RegistryElement {
    pub id: String,
    pub url: String,
    pub mode: String,
    pub capacity_bytes: u64,
    pub weight: u32,
    #[serde(default)]
    pub dc: String,
}

/// The published registry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Registry {
    /// Grows with every change; readers ignore an older version than the one they hold.
    pub version: u64,
    pub published_at: DateTime<Utc>,
    pub elements: Vec<RegistryElement>,
}

/// What an element says about itself every few seconds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Heartbeat {
    pub id: String,
    pub url: String,
    pub mode: String,
    pub free_bytes: u64,
    pub total_bytes: u64,
    pub at: DateTime<Utc>,
}
