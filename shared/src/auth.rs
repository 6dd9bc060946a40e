//! RS256 token verification for every service: keys from a JWKS file or URL chosen by
//! `kid`, the standard claim checks, roles and permissions, and the axum extractor.
//!
//! Only RS256 is accepted; `none`, HMAC and every other algorithm are refused before any
//! key is looked at. The [`LocalSigner`] exists for the standalone mode that has no admin
//! cluster yet: it keeps one RSA key in the data folder and publishes its JWKS there.

use crate::clock::Clock;
use crate::error::{ApiError, ErrorCode};
use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// The issuer and audience every ArtStore token carries unless configured otherwise.
pub const DEFAULT_ISSUER: &str = "artstore";
/// See [`DEFAULT_ISSUER`].
pub const DEFAULT_AUDIENCE: &str = "artstore";

/// A role a token may carry in its `roles` claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads metadata and content.
    Reader,
    /// Reader, plus ingest, metadata updates, deletes (as retention allows), holds.
    Writer,
    /// Reader, plus element mode changes, restores from the cold tier, holds.
    Operator,
    /// Everything except the retention bypass, which must be granted explicitly.
    Admin,
    /// Reads metadata, content and audit journals; changes nothing.
    Auditor,
}

impl Role {
    /// Every role, in a stable order.
    pub const ALL: [Role; 5] = [Role::Reader, Role::Writer, Role::Operator, Role::Admin, Role::Auditor];

    /// The name used in tokens and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Writer => "writer",
            Role::Operator => "operator",
            Role::Admin => "admin",
            Role::Auditor => "auditor",
        }
    }

    /// Parses a role name.
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// Something a caller may be allowed to do. Roles grant sets of these; the two
/// `*_PERMISSION` strings can also be granted one by one in the `roles` claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Read sidecars and listings.
    ReadMetadata,
    /// Read content.
    ReadContent,
    /// Ingest new files and versions.
    Create,
    /// Change description, tags, user metadata.
    UpdateMetadata,
    /// Delete a document (still subject to mode and retention).
    Delete,
    /// Set a legal hold or extend a retention date.
    Protect,
    /// Lift a legal hold.
    LiftLegalHold,
    /// Delete under governance retention before its date.
    RetentionBypass,
    /// Change an element's mode, run its workers.
    ManageElement,
    /// Stage archived content back from the cold tier.
    Restore,
    /// Read audit journals.
    ReadAudit,
}

/// The claim value that grants [`Permission::RetentionBypass`].
pub const RETENTION_BYPASS_PERMISSION: &str = "retention:bypass";
/// The claim value that grants [`Permission::LiftLegalHold`] without the admin role.
pub const LIFT_HOLD_PERMISSION: &str = "legal-hold:lift";

/// The claims of an ArtStore access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: Audience,
    pub exp: i64,
    pub iat: i64,
    #[serde(default)]
    pub nbf: Option<i64>,
    #[serde(default)]
    pub jti: Option<String>,
    #[serde(default)]
    pub roles: Vec<String>,
}

/// `aud` may be one string or a list.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

/// The verified caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token's subject: a user name or a service account.
    pub subject: String,
    /// The raw `roles` claim: role names and single permissions.
    pub roles: Vec<String>,
    /// The token id, for the audit trail.
    pub token_id: Option<String>,
}

impl Caller {
    /// Whether the token carries this role.
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.iter().any(|r| r == role.as_str())
    }

    /// Whether any of the caller's roles or single permissions grants `p`.
    pub fn can(&self, p: Permission) -> bool {
        use Permission::*;
        let by_role = |r: Role| match r {
            Role::Admin => !matches!(p, RetentionBypass),
            Role::Reader => matches!(p, ReadMetadata | ReadContent),
            Role::Auditor => matches!(p, ReadMetadata | ReadContent | ReadAudit),
            Role::Writer => {
                matches!(p, ReadMetadata | ReadContent | Create | UpdateMetadata | Delete | Protect | Restore)
            }
            Role::Operator => matches!(p, ReadMetadata | ReadContent | Protect | ManageElement | Restore | ReadAudit),
        };
        self.roles.iter().any(|r| match r.as_str() {
            RETENTION_BYPASS_PERMISSION => p == RetentionBypass,
            LIFT_HOLD_PERMISSION => p == LiftLegalHold,
            other => Role::parse(other).is_some_and(by_role),
        })
    }

    /// `Ok` if the caller may do `p`, otherwise a 403 naming the missing permission.
    pub fn require(&self, p: Permission) -> Result<(), ApiError> {
        if self.can(p) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "the token of {} does not grant {:?} (roles: {})",
                self.subject,
                p,
                if self.roles.is_empty() { "none".to_owned() } else { self.roles.join(", ") }
            )))
        }
    }
}

/// Why a token was refused. Every variant answers 401.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer` header.
    #[error("missing bearer token")]
    Missing,
    /// The token is not a well-formed JWT.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// The header names an algorithm other than RS256.
    #[error("token algorithm {0} is not accepted (only RS256)")]
    Algorithm(String),
    /// The header has no `kid`.
    #[error("token has no kid")]
    NoKid,
    /// No published key has this `kid`, even after a refresh.
    #[error("no signing key with kid {0}")]
    UnknownKid(String),
    /// Signature, expiry, not-before, issuer or audience check failed.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// The key set could not be loaded.
    #[error("key set unavailable: {0}")]
    KeySet(String),
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::KeySet(_) => ApiError::typed(ErrorCode::Unavailable, "jwks-unavailable", e.to_string()),
            _ => ApiError::typed(ErrorCode::Unauthenticated, "unauthenticated", e.to_string()),
        }
    }
}

/// A function that answers the current JWKS document (the admin's own key set).
pub type JwksProvider = Arc<dyn Fn() -> Vec<u8> + Send + Sync>;

/// Where the verifier gets its public keys.
#[derive(Clone)]
pub enum JwksSource {
    /// A JWKS JSON file on disk (re-read on an unknown `kid`).
    File(PathBuf),
    /// A JWKS served over HTTP(S), e.g. the admin's `/.well-known/jwks.json`.
    Url(String),
    /// A key set held in this process (the admin verifies with its own keys).
    Provider(JwksProvider),
    /// The union of several sources (standalone: the admin's keys and the local key).
    Any(Vec<JwksSource>),
}

impl std::fmt::Debug for JwksSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JwksSource::File(p) => write!(f, "File({})", p.display()),
            JwksSource::Url(u) => write!(f, "Url({u})"),
            JwksSource::Provider(_) => f.write_str("Provider"),
            JwksSource::Any(v) => f.debug_list().entries(v).finish(),
        }
    }
}

impl JwksSource {
    /// `http://` and `https://` are URLs; anything else is a path.
    pub fn parse(s: &str) -> Self {
        if s.starts_with("http://") || s.starts_with("https://") {
            JwksSource::Url(s.to_owned())
        } else {
            JwksSource::File(PathBuf::from(s))
        }
    }
}

/// Verification settings.
#[derive(Debug, Clone)]
pub struct VerifierConfig {
    pub issuer: String,
    pub audience: String,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
    /// At most one key-set refresh per this interval, however many unknown `kid`s arrive;
    /// a token with a new `kid` waits at most this long for it.
    pub min_refresh_interval: Duration,
    /// The key set is re-read when older than this, so keys dropped at the source (past
    /// their grace period) stop being accepted here too.
    pub max_key_age: Duration,
}

impl Default for VerifierConfig {
    fn default() -> Self {
        Self {
            issuer: DEFAULT_ISSUER.to_owned(),
            audience: DEFAULT_AUDIENCE.to_owned(),
            leeway: Duration::from_secs(30),
            min_refresh_interval: Duration::from_secs(2),
            max_key_age: Duration::from_secs(300),
        }
    }
}

/// Most tokens whose signature check is remembered (see [`TokenVerifier::verify`]); the
/// memory is emptied when full, so it holds at most this many (about 1 KiB each).
const VERIFIED_MAX: usize = 4096;

/// Verifies tokens against a cached key set.
pub struct TokenVerifier {
    source: JwksSource,
    config: VerifierConfig,
    clock: Arc<dyn Clock>,
    keys: RwLock<HashMap<String, DecodingKey>>,
    /// Tokens whose signature and claims checked out against the key set held now, by
    /// their exact text: a client sends the same token with every request, and an RS256
    /// check costs more CPU than the rest of a small write. Emptied whenever the key set
    /// is replaced, so a token is never accepted on a key no longer held.
    verified: std::sync::Mutex<HashMap<String, Claims>>,
    /// Bumped whenever the key set is replaced: a check made against an older set is not
    /// remembered.
    generation: AtomicU64,
    last_refresh: tokio::sync::Mutex<Option<Instant>>,
    http: reqwest::Client,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier").field("source", &self.source).finish_non_exhaustive()
    }
}

impl TokenVerifier {
    /// A verifier that loads its keys lazily on first use.
    pub fn new(source: JwksSource, config: VerifierConfig, clock: Arc<dyn Clock>) -> Self {
        Self {
            source,
            config,
            clock,
            keys: RwLock::new(HashMap::new()),
            verified: std::sync::Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
            last_refresh: tokio::sync::Mutex::new(None),
            http: crate::tls::http_client().timeout(Duration::from_secs(5)).build().unwrap_or_default(),
        }
    }

    /// Loads the key set now; used at start-up so a bad `--jwks` fails early.
    pub async fn load(&self) -> Result<usize, AuthError> {
        let set = self.fetch().await?;
        let n = set.len();
        self.set_keys(set);
        *self.last_refresh.lock().await = Some(Instant::now());
        Ok(n)
    }

    async fn fetch(&self) -> Result<HashMap<String, DecodingKey>, AuthError> {
        self.fetch_from(&self.source).await
    }

    async fn fetch_from(&self, source: &JwksSource) -> Result<HashMap<String, DecodingKey>, AuthError> {
        let body = match source {
            JwksSource::Any(sources) => {
                // Every source that answers contributes; it fails only if none answers.
                let mut all = HashMap::new();
                let mut last_err = None;
                for s in sources {
                    match Box::pin(self.fetch_from(s)).await {
                        Ok(keys) => all.extend(keys),
                        Err(e) => last_err = Some(e),
                    }
                }
                return match (all.is_empty(), last_err) {
                    (true, Some(e)) => Err(e),
                    _ => Ok(all),
                };
            }
            JwksSource::Provider(p) => p(),
            JwksSource::File(p) => {
                tokio::fs::read(p).await.map_err(|e| AuthError::KeySet(format!("{}: {e}", p.display())))?
            }
            JwksSource::Url(u) => {
                let r = self.http.get(u).send().await.map_err(|e| AuthError::KeySet(format!("{u}: {e}")))?;
                if !r.status().is_success() {
                    return Err(AuthError::KeySet(format!("{u}: http {}", r.status())));
                }
                r.bytes().await.map_err(|e| AuthError::KeySet(format!("{u}: {e}")))?.to_vec()
            }
        };
        parse_jwks(&body)
    }

    /// Reads the key set again for a token whose `kid` is unknown: at most once per
    /// `min_refresh_interval` (a stream of forged kids costs one fetch per interval), and a
    /// request that arrives inside the interval waits for the next fetch instead of being
    /// refused, so a key published just after the last fetch (a rotation) is accepted.
    /// Requests queued meanwhile share the fetch that started after they arrived.
    async fn refresh_for_unknown_kid(&self) -> Result<(), AuthError> {
        let arrived = Instant::now();
        let mut last = self.last_refresh.lock().await;
        if last.is_some_and(|t| t >= arrived) {
            return Ok(());
        }
        if let Some(t) = *last {
            let wait = self.config.min_refresh_interval.saturating_sub(t.elapsed());
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
        *last = Some(Instant::now());
        let set = self.fetch().await?;
        self.set_keys(set);
        Ok(())
    }

    /// Re-reads a key set older than `max_key_age`; on failure keeps the old one (logged).
    async fn refresh_if_stale(&self) {
        let stale = self.last_refresh.lock().await.is_some_and(|t| t.elapsed() >= self.config.max_key_age);
        if !stale {
            return;
        }
        let mut last = self.last_refresh.lock().await;
        if last.is_some_and(|t| t.elapsed() < self.config.max_key_age) {
            return; // another request refreshed meanwhile
        }
        *last = Some(Instant::now());
        match self.fetch().await {
            Ok(set) => self.set_keys(set),
            Err(e) => tracing::warn!(error = %e, "key set refresh failed; keeping the keys held"),
        }
    }

    /// Replaces the key set, forgetting every token checked against the old one.
    fn set_keys(&self, set: HashMap<String, DecodingKey>) {
        let mut keys = self.keys.write().unwrap_or_else(|e| e.into_inner());
        *keys = set;
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.verified.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// The key held for `kid`, with the generation of the key set it belongs to.
    fn key(&self, kid: &str) -> Option<(DecodingKey, u64)> {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        let generation = self.generation.load(Ordering::SeqCst);
        keys.get(kid).map(|k| (k.clone(), generation))
    }

    /// Checks the token's signature with the key held for `kid` (reading the key set again
    /// for an unknown one) and its issuer, audience and required claims; remembers it.
    async fn check_signature(&self, token: &str, kid: &str) -> Result<Claims, AuthError> {
        let (key, generation) = match self.key(kid) {
            Some(k) => k,
            None => {
                self.refresh_for_unknown_kid().await?;
                self.key(kid).ok_or_else(|| AuthError::UnknownKid(kid.to_owned()))?
            }
        };
        let mut v = Validation::new(Algorithm::RS256);
        v.set_issuer(&[&self.config.issuer]);
        v.set_audience(&[&self.config.audience]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        // Time checks are done by the caller against our clock, so tests can move it.
        v.validate_exp = false;
        v.validate_nbf = false;
        let claims =
            jsonwebtoken::decode::<Claims>(token, &key, &v).map_err(|e| AuthError::Invalid(e.to_string()))?.claims;
        // Remembered only if the key set it was checked against is still held (a refresh
        // may have replaced it meanwhile).
        let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if self.generation.load(Ordering::SeqCst) == generation {
            if verified.len() >= VERIFIED_MAX {
                verified.clear();
            }
            verified.insert(token.to_owned(), claims.clone());
        }
        Ok(claims)
    }

    /// Verifies a compact JWS and returns the caller it names.
    pub async fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| match raw_alg(token) {
            Some(alg) if alg != "RS256" => AuthError::Algorithm(alg),
            _ => AuthError::Malformed(e.to_string()),
        })?;
        if header.alg != Algorithm::RS256 {
            return Err(AuthError::Algorithm(format!("{:?}", header.alg)));
        }
        let kid = header.kid.ok_or(AuthError::NoKid)?;
        self.refresh_if_stale().await;
        // A remembered token was checked against the key set held now (replacing the set
        // forgets every token), so its key is still held.
        let remembered = self.verified.lock().unwrap_or_else(|e| e.into_inner()).get(token).cloned();
        let c = match remembered {
            Some(c) => c,
            None => self.check_signature(token, &kid).await?,
        };
        let now = self.clock.now().timestamp();
        let leeway = self.config.leeway.as_secs() as i64;
        if c.exp.saturating_add(leeway) < now {
            return Err(AuthError::Invalid("token expired".to_owned()));
        }
        if c.nbf.is_some_and(|nbf| nbf.saturating_sub(leeway) > now) {
            return Err(AuthError::Invalid("token not yet valid".to_owned()));
        }
        Ok(Caller { subject: c.sub, roles: c.roles, token_id: c.jti })
    }
}

/// Reads `alg` from a header that jsonwebtoken refused to parse (e.g. `none`), for a
/// clearer error.
fn raw_alg(token: &str) -> Option<String> {
    let h = token.split('.').next()?;
    let bytes = URL_SAFE_NO_PAD.decode(h.trim_end_matches('=')).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.get("alg")?.as_str().map(str::to_owned)
}

/// Parses a JWKS document, keeping the RSA keys that have a `kid`.
pub fn parse_jwks(body: &[u8]) -> Result<HashMap<String, DecodingKey>, AuthError> {
    let set: JwkSet = serde_json::from_slice(body).map_err(|e| AuthError::KeySet(format!("malformed jwks: {e}")))?;
    let mut out = HashMap::new();
    for jwk in &set.keys {
        let Some(kid) = jwk.common.key_id.clone() else {
            continue;
        };
        if let jsonwebtoken::jwk::AlgorithmParameters::RSA(_) = jwk.algorithm {
            let key = DecodingKey::from_jwk(jwk).map_err(|e| AuthError::KeySet(format!("key {kid}: {e}")))?;
            out.insert(kid, key);
        }
    }
    Ok(out)
}

/// Anything that can hand out the verifier: handlers' state implements `FromRef`.
#[derive(Clone)]
pub struct Auth(pub Arc<TokenVerifier>);

impl<S> FromRequestParts<S> for Caller
where
    Auth: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Auth(verifier) = Auth::from_ref(state);
        let value = parts.headers.get(http::header::AUTHORIZATION).ok_or(AuthError::Missing)?;
        let value = value.to_str().map_err(|_| AuthError::Malformed("authorization header is not ascii".to_owned()))?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or_else(|| AuthError::Malformed("authorization is not a bearer token".to_owned()))?;
        Ok(verifier.verify(token.trim()).await?)
    }
}

/// One RSA signing key kept on local disk, for standalone mode and tests.
pub struct LocalSigner {
    key: aws_lc_rs::signature::RsaKeyPair,
    kid: String,
    issuer: String,
    audience: String,
}

impl std::fmt::Debug for LocalSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalSigner").field("kid", &self.kid).finish_non_exhaustive()
    }
}

/// The private key's file name inside a key folder.
pub const SIGNING_KEY_FILE: &str = "signing-key.pk8";
/// The public key set's file name inside a key folder.
pub const JWKS_FILE: &str = "jwks.json";

impl LocalSigner {
    /// A fresh 2048-bit key.
    pub fn generate() -> anyhow::Result<Self> {
        use aws_lc_rs::encoding::AsDer;
        let kp = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
            .map_err(|_| anyhow::anyhow!("rsa key generation failed"))?;
        let der = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der<'static>>::as_der(&kp)
            .map_err(|_| anyhow::anyhow!("rsa key encoding failed"))?;
        Self::from_pkcs8(der.as_ref())
    }

    /// Loads a PKCS#8 DER key.
    pub fn from_pkcs8(der: &[u8]) -> anyhow::Result<Self> {
        use aws_lc_rs::signature::KeyPair as _;
        let key = aws_lc_rs::signature::RsaKeyPair::from_pkcs8(der)
            .map_err(|e| anyhow::anyhow!("signing key rejected: {e}"))?;
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.public_key().as_ref());
        let kid = digest.as_ref()[..12].iter().map(|b| format!("{b:02x}")).collect();
        Ok(Self { key, kid, issuer: DEFAULT_ISSUER.to_owned(), audience: DEFAULT_AUDIENCE.to_owned() })
    }

    /// Loads the key from `dir`, creating it (private key mode 0600) and its JWKS the first time.
    pub fn load_or_create(dir: &Path) -> anyhow::Result<Self> {
        use aws_lc_rs::encoding::AsDer;
        std::fs::create_dir_all(dir)?;
        let key_path = dir.join(SIGNING_KEY_FILE);
        let signer = match std::fs::read(&key_path) {
            Ok(der) => Self::from_pkcs8(&der).map_err(|e| anyhow::anyhow!("{}: {e}", key_path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let kp = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                    .map_err(|_| anyhow::anyhow!("rsa key generation failed"))?;
                let der = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der<'static>>::as_der(&kp)
                    .map_err(|_| anyhow::anyhow!("rsa key encoding failed"))?;
                write_private(&key_path, der.as_ref())?;
                Self::from_pkcs8(der.as_ref())?
            }
            Err(e) => return Err(anyhow::anyhow!("{}: {e}", key_path.display())),
        };
        std::fs::write(dir.join(JWKS_FILE), serde_json::to_vec_pretty(&signer.jwks())?)?;
        Ok(signer)
    }

    /// Sets the issuer and audience written into tokens.
    pub fn with_names(mut self, issuer: &str, audience: &str) -> Self {
        issuer.clone_into(&mut self.issuer);
        audience.clone_into(&mut self.audience);
        self
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key set with this one key.
    pub fn jwks(&self) -> serde_json::Value {
        use aws_lc_rs::signature::KeyPair as _;
        let pk = self.key.public_key();
        let n = URL_SAFE_NO_PAD.encode(pk.modulus().big_endian_without_leading_zero());
        let e = URL_SAFE_NO_PAD.encode(pk.exponent().big_endian_without_leading_zero());
        serde_json::json!({"keys": [{"kty": "RSA", "use": "sig", "alg": "RS256", "kid": self.kid, "n": n, "e": e}]})
    }

    /// Signs arbitrary claims with RS256 and this key's `kid`.
    pub fn sign_claims(&self, claims: &serde_json::Value) -> anyhow::Result<String> {
        let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": self.kid});
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header)?),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims)?)
        );
        let mut sig = vec![0u8; self.key.public_modulus_len()];
        self.key
            .sign(
                &aws_lc_rs::signature::RSA_PKCS1_SHA256,
                &aws_lc_rs::rand::SystemRandom::new(),
                signing_input.as_bytes(),
                &mut sig,
            )
            .map_err(|_| anyhow::anyhow!("rsa signing failed"))?;
        Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig)))
    }

    /// Issues an access token for `subject` with `roles`, valid for `ttl` from `now`.
    pub fn issue(
        &self,
        subject: &str,
        roles: &[String],
        ttl: Duration,
        now: chrono::DateTime<chrono::Utc>,
    ) -> anyhow::Result<String> {
        let iat = now.timestamp();
        self.sign_claims(&serde_json::json!({
            "iss": self.issuer, "aud": self.audience, "sub": subject,
            "iat": iat, "nbf": iat, "exp": iat + ttl.as_secs() as i64,
            "jti": uuid::Uuid::now_v7().to_string(), "roles": roles,
        }))
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use chrono::Utc;

    fn setup() -> (tempfile::TempDir, LocalSigner, TokenVerifier, Arc<ManualClock>) {
        let dir = tempfile::tempdir().unwrap();
        let signer = LocalSigner::load_or_create(dir.path()).unwrap();
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let v =
            TokenVerifier::new(JwksSource::File(dir.path().join(JWKS_FILE)), VerifierConfig::default(), clock.clone());
        (dir, signer, v, clock)
    }

    #[tokio::test]
    async fn accepts_own_token_and_refuses_expired() {
        let (_d, s, v, clock) = setup();
        let t = s.issue("alice", &["writer".to_owned()], Duration::from_secs(60), clock.now()).unwrap();
        let c = v.verify(&t).await.unwrap();
        assert_eq!(c.subject, "alice");
        assert!(c.can(Permission::Create));
        assert!(!c.can(Permission::ManageElement));
        clock.advance(chrono::Duration::seconds(120));
        assert!(matches!(v.verify(&t).await, Err(AuthError::Invalid(_))));
    }

    #[tokio::test]
    async fn refuses_alg_none_and_wrong_audience() {
        let (_d, s, v, clock) = setup();
        let claims = serde_json::json!({"iss":"artstore","aud":"artstore","sub":"x","exp":clock.now().timestamp()+60,"iat":0,"roles":["admin"]});
        let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let p = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
        assert!(matches!(v.verify(&format!("{h}.{p}.")).await, Err(AuthError::Algorithm(_))));
        let mut wrong = claims.clone();
        wrong["aud"] = "other".into();
        assert!(v.verify(&s.sign_claims(&wrong).unwrap()).await.is_err());
        assert!(v.verify(&s.sign_claims(&claims).unwrap()).await.is_ok());
    }

    /// Serves a swappable JWKS on loopback.
    async fn jwks_server(initial: serde_json::Value) -> (String, Arc<std::sync::Mutex<serde_json::Value>>) {
        let doc = Arc::new(std::sync::Mutex::new(initial));
        let d = doc.clone();
        let app = axum::Router::new().route(
            "/.well-known/jwks.json",
            axum::routing::get(move || {
                let d = d.clone();
                async move { axum::Json(d.lock().unwrap().clone()) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/.well-known/jwks.json", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (url, doc)
    }

    fn merged(a: &LocalSigner, b: &LocalSigner) -> serde_json::Value {
        let mut keys = a.jwks()["keys"].as_array().unwrap().clone();
        keys.extend(b.jwks()["keys"].as_array().unwrap().iter().cloned());
        serde_json::json!({ "keys": keys })
    }

    #[tokio::test]
    async fn jwks_url_is_refreshed_on_an_unknown_kid_at_most_once_per_interval() {
        let a = LocalSigner::generate().unwrap();
        let b = LocalSigner::generate().unwrap();
        let c = LocalSigner::generate().unwrap();
        let (url, doc) = jwks_server(a.jwks()).await;
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let cfg = VerifierConfig { min_refresh_interval: Duration::from_millis(1000), ..Default::default() };
        let v = TokenVerifier::new(JwksSource::parse(&url), cfg, clock.clone());
        let tok =
            |s: &LocalSigner| s.issue("svc", &["reader".to_owned()], Duration::from_secs(60), clock.now()).unwrap();
        assert!(v.verify(&tok(&a)).await.is_ok(), "first use loads the set");
        // Rotation: the admin publishes b next to a; a token with b's kid triggers a refresh.
        *doc.lock().unwrap() = merged(&a, &b);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert!(v.verify(&tok(&b)).await.is_ok());
        // c is published right after: its token waits for the next allowed refresh (the
        // interval is not over yet) and is accepted then.
        *doc.lock().unwrap() = merged(&b, &c);
        let t0 = std::time::Instant::now();
        assert!(v.verify(&tok(&c)).await.is_ok());
        assert!(t0.elapsed() >= Duration::from_millis(800), "waited for the interval: {:?}", t0.elapsed());
        // A burst of forged kids: each waits for one shared fetch, and is refused after it.
        let forged = LocalSigner::generate().unwrap();
        let t0 = std::time::Instant::now();
        let vr = &v;
        let burst = futures_util::future::join_all((0..20).map(|_| {
            let t = tok(&forged);
            async move { vr.verify(&t).await }
        }))
        .await;
        assert!(burst.iter().all(|r| matches!(r, Err(AuthError::UnknownKid(_)))));
        assert!(t0.elapsed() < Duration::from_millis(2500), "one fetch for the burst, not 20: {:?}", t0.elapsed());
        // A key dropped from the set stops working after the next refresh.
        assert!(v.verify(&tok(&a)).await.is_err());
    }

    #[tokio::test]
    async fn a_remembered_token_still_expires_and_goes_with_its_key() {
        let a = LocalSigner::generate().unwrap();
        let b = LocalSigner::generate().unwrap();
        let (url, doc) = jwks_server(a.jwks()).await;
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let cfg = VerifierConfig {
            max_key_age: Duration::from_millis(200),
            min_refresh_interval: Duration::from_millis(10),
            ..Default::default()
        };
        let v = TokenVerifier::new(JwksSource::parse(&url), cfg, clock.clone());
        let t = a.issue("svc", &["writer".to_owned()], Duration::from_secs(60), clock.now()).unwrap();
        assert_eq!(v.verify(&t).await.unwrap().subject, "svc");
        assert!(v.verified.lock().unwrap().contains_key(&t), "a checked token is remembered");
        assert_eq!(v.verify(&t).await.unwrap().roles, vec!["writer".to_owned()]);
        // Another signature on the same header and claims is checked, not taken from memory.
        let (head, sig) = t.rsplit_once('.').unwrap();
        let flipped = if sig.starts_with('A') { 'B' } else { 'A' };
        let forged = format!("{head}.{flipped}{}", &sig[1..]);
        assert!(matches!(v.verify(&forged).await, Err(AuthError::Invalid(_))));
        assert!(!v.verified.lock().unwrap().contains_key(&forged));
        // Time still counts for a remembered token.
        clock.advance(chrono::Duration::seconds(120));
        assert!(matches!(v.verify(&t).await, Err(AuthError::Invalid(_))));
        clock.advance(chrono::Duration::seconds(-120));
        assert!(v.verify(&t).await.is_ok());
        // Its key leaves the published set: once the set is re-read, the token is refused.
        *doc.lock().unwrap() = b.jwks();
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(matches!(v.verify(&t).await, Err(AuthError::UnknownKid(_))));
        assert!(v.verified.lock().unwrap().is_empty(), "a new key set forgets every token");
    }

    #[tokio::test]
    async fn unreachable_jwks_is_unavailable_not_unauthenticated() {
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let v = TokenVerifier::new(
            JwksSource::parse("http://127.0.0.1:1/jwks.json"),
            VerifierConfig::default(),
            clock.clone(),
        );
        let s = LocalSigner::generate().unwrap();
        let t = s.issue("x", &[], Duration::from_secs(60), clock.now()).unwrap();
        let e = v.verify(&t).await.unwrap_err();
        assert!(matches!(e, AuthError::KeySet(_)), "{e}");
        assert_eq!(ApiError::from(e).code, ErrorCode::Unavailable);
    }

    #[test]
    fn bypass_is_never_implied_by_admin() {
        let admin = Caller { subject: "a".into(), roles: vec!["admin".into()], token_id: None };
        assert!(!admin.can(Permission::RetentionBypass));
        assert!(admin.can(Permission::LiftLegalHold));
        let b = Caller {
            subject: "b".into(),
            roles: vec!["writer".into(), RETENTION_BYPASS_PERMISSION.into()],
            token_id: None,
        };
        assert!(b.can(Permission::RetentionBypass));
        assert!(!b.can(Permission::LiftLegalHold));
    }
}
