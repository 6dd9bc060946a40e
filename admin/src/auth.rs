//! Credentials and tokens: Argon2id hashing of passwords and client secrets, the failed-login
//! rate limiter, and the access and refresh tokens the token endpoint answers.

use crate::config::AdminConfig;
use crate::node::Node;
use crate::state::State;
use artstore_shared::{ApiError, ErrorCode};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The audience of refresh tokens: no service accepts them as access tokens.
pub fn refresh_audience(cfg: &AdminConfig) -> String {
    format!("{}:refresh", cfg.audience)
}

/// `n` random bytes, URL-safe base64.
pub fn random_secret(n: usize) -> String {
    let mut b = vec![0u8; n];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).unwrap_or_default();
    URL_SAFE_NO_PAD.encode(b)
}

/// Argon2id PHC string of `secret` (runs off the async threads: it is slow on purpose).
pub async fn hash_secret(secret: &str) -> Result<String, ApiError> {
    let secret = secret.to_owned();
    tokio::task::spawn_blocking(move || {
        use argon2::password_hash::{PasswordHasher as _, SaltString, rand_core::OsRng};
        let salt = SaltString::generate(&mut OsRng);
        argon2::Argon2::default()
            .hash_password(secret.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| ApiError::internal(format!("password hashing failed: {e}")))
    })
    .await
    .map_err(|e| ApiError::internal(format!("hashing task: {e}")))?
}

/// A hash of a random secret, checked when the user is unknown so both cases take as long.
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
        use argon2::password_hash::{PasswordHasher as _, SaltString, rand_core::OsRng};
        let salt = SaltString::generate(&mut OsRng);
        argon2::Argon2::default()
            .hash_password(random_secret(16).as_bytes(), &salt)
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

/// Whether `secret` matches the PHC `hash` (`None`: check against a dummy, answer false).
pub async fn verify_secret(secret: &str, hash: Option<String>) -> bool {
    let secret = secret.to_owned();
    let known = hash.is_some();
    tokio::task::spawn_blocking(move || {
        use argon2::password_hash::{PasswordHash, PasswordVerifier as _};
        let hash = hash.unwrap_or_else(|| dummy_hash().to_owned());
        let Ok(parsed) = PasswordHash::new(&hash) else { return false };
        argon2::Argon2::default().verify_password(secret.as_bytes(), &parsed).is_ok() && known
    })
    .await
    .unwrap_or(false)
}

/// Counts failed logins per user name and per client address in a fixed window.
pub struct LoginLimiter {
    per_user: u32,
    per_address: u32,
    window: Duration,
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

impl LoginLimiter {
    pub fn new(cfg: &AdminConfig) -> Self {
        Self {
            per_user: cfg.login_max_failures.max(1),
            per_address: cfg.login_max_failures_per_address.max(1),
            window: Duration::from_secs(cfg.login_window_secs.max(1)),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Seconds to wait if `user` or `address` has used up its failures.
    pub fn blocked(&self, user: &str, address: &str) -> Option<u64> {
        let mut m = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let window = self.window;
        m.retain(|_, (_, start)| start.elapsed() < window);
        let wait = |key: String, limit: u32| {
            m.get(&key).filter(|(n, _)| *n >= limit).map(|(_, start)| (window - start.elapsed()).as_secs().max(1))
        };
        wait(format!("u:{user}"), self.per_user).or_else(|| wait(format!("a:{address}"), self.per_address))
    }

    /// Records a failed attempt.
    pub fn failed(&self, user: &str, address: &str) {
        let mut m = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        for key in [format!("u:{user}"), format!("a:{address}")] {
            let e = m.entry(key).or_insert((0, Instant::now()));
            e.0 += 1;
        }
    }

    /// Forgets a user's failures after a successful login.
    pub fn succeeded(&self, user: &str) {
        self.failures.lock().unwrap_or_else(|e| e.into_inner()).remove(&format!("u:{user}"));
    }
}

/// Who a token is for.
#[derive(Debug, Clone)]
pub struct Principal {
    pub subject: String,
    pub roles: Vec<String>,
    /// `user` or `service_account`.
    pub kind: &'static str,
}

/// Finds an enabled principal by subject in the state.
pub fn principal(state: &State, subject: &str) -> Option<Principal> {
    if let Some(u) = state.users.get(subject).filter(|u| !u.disabled) {
        return Some(Principal { subject: u.username.clone(), roles: u.roles.clone(), kind: "user" });
    }
    state.service_accounts.get(subject).filter(|a| !a.disabled).map(|a| Principal {
        subject: a.client_id.clone(),
        roles: a.roles.clone(),
        kind: "service_account",
    })
}

/// The OAuth2 token response for `p`: an access token and a refresh token.
pub fn token_response(node: &Node, p: &Principal) -> Result<Value, ApiError> {
    let signer = node.signer()?;
    let cfg = &node.cfg;
    let now = Utc::now();
    let access = signer
        .issue(&p.subject, &p.roles, Duration::from_secs(cfg.token_ttl_secs), now)
        .map_err(|e| ApiError::internal(format!("signing failed: {e}")))?;
    let iat = now.timestamp();
    let refresh = signer
        .sign_claims(&json!({
            "iss": cfg.issuer, "aud": refresh_audience(cfg), "sub": p.subject, "iat": iat, "nbf": iat,
            "exp": iat + cfg.refresh_ttl_secs as i64, "jti": uuid::Uuid::now_v7().to_string(),
            "token_use": "refresh", "principal": p.kind,
        }))
        .map_err(|e| ApiError::internal(format!("signing failed: {e}")))?;
    Ok(json!({
        "access_token": access, "token_type": "Bearer", "expires_in": cfg.token_ttl_secs,
        "refresh_token": refresh, "scope": p.roles.join(" "),
    }))
}

/// Checks a refresh token (signature with this cluster's keys, audience, expiry) and
/// answers its subject.
pub async fn check_refresh(node: &Node, token: &str) -> Result<String, ApiError> {
    node.refresh_verifier.verify(token).await.map(|c| c.subject).map_err(|e| {
        ApiError::typed(ErrorCode::BadRequest, "invalid-grant", format!("refresh token refused: {e}"))
            .with("error", "invalid_grant")
    })
}
