//! Retention policies named at upload: resolved through the admin cluster (which records
//! that the policy is in use) and cached, then turned into the dates the sidecar carries.

use artstore_shared::clients::{AdminClient, ClientError, PolicyView};
use artstore_shared::{ApiError, ErrorCode};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Resolves policy names at the admin, with a cache.
#[derive(Debug)]
pub struct PolicyResolver {
    client: AdminClient,
    ttl: Duration,
    cache: Mutex<HashMap<String, (PolicyView, Instant)>>,
}

impl PolicyResolver {
    /// A resolver asking the admin at `admin_url`; answers are kept for `ttl`.
    pub fn new(admin_url: &str, ttl: Duration) -> Self {
        Self { client: AdminClient::new(admin_url), ttl, cache: Mutex::new(HashMap::new()) }
    }

    /// The policy named `name`, marked in use at the admin (with the caller's token) the
    /// first time this element stores a document under it.
    pub async fn resolve(&self, token: &str, name: &str) -> Result<PolicyView, ApiError> {
        if let Some((p, at)) = self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(name)
            && p.in_use
            && at.elapsed() < self.ttl
        {
            return Ok(p.clone());
        }
        let p = self.client.use_policy(token, name).await.map_err(|e| match e {
            ClientError::Refused { status: 404, .. } => ApiError::typed(
                ErrorCode::BadRequest,
                "unknown-retention-policy",
                format!("no retention policy named {name:?}"),
            ),
            ClientError::Refused { status: 401 | 403, detail, .. } => {
                ApiError::forbidden(format!("the admin refused to resolve retention policy {name:?}: {detail}"))
            }
            other => ApiError::typed(
                ErrorCode::Unavailable,
                "admin-unavailable",
                format!("retention policy {name:?} cannot be resolved now: {other}"),
            ),
        })?;
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).insert(name.to_owned(), (p.clone(), Instant::now()));
        Ok(p)
    }
}
