//! What the cluster keeps, and how each committed change is applied to it.
//!
//! Applying is deterministic: it reads only the [`Request`] and the state, never a clock or a
//! random source, so every node reaches the same state and the same audit chain. Secrets
//! (password hashes, client-secret hashes, private keys) live here because every node must be
//! able to check a password and sign a token; [`State::public_view`] and friends leave them out
//! of everything that leaves the process.

use crate::types::{Refusal, RefusalKind, Request, Response};
pub use artstore_shared::retention::Term;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The maps of the state are persistent (structure-sharing) maps: a snapshot takes a copy in
/// O(1) and serialises it while changes go on.
pub type Map<V> = imbl::OrdMap<String, V>;

/// A person who logs in with a password.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct User {
    pub username: String,
    /// Argon2id PHC string; computed by the proposer (it needs a random salt).
    pub password_hash: String,
    pub roles: Vec<String>,
    #[serde(default)]
    pub disabled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A program that authenticates with client credentials.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServiceAccount {
    pub client_id: String,
    /// Argon2id PHC string of the client secret.
    pub secret_hash: String,
    pub roles: Vec<String>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub disabled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A storage element known to the cluster.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Element {
    pub id: String,
    pub url: String,
    pub mode: String,
    #[serde(default)]
    pub capacity_bytes: u64,
    #[serde(default = "one")]
    pub weight: u32,
    #[serde(default)]
    pub dc: String,
    /// Free-form `key=value` facts an operator attaches (`rack=r12`, `tier=ssd`); see
    /// [`check_labels`]. Left out when empty, so entries and snapshots without labels keep
    /// their old bytes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

fn one() -> u32 {
    1
}

/// A retention policy: resolved into dates at ingest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Policy {
    pub name: String,
    /// ISO 8601 duration, years/months/weeks/days (`P7Y`, `P18M`, `P30D`).
    pub term: String,
    /// `compliance` or `governance`.
    pub mode: String,
    /// `dispose` or `review`.
    pub disposition: String,
    #[serde(default)]
    pub description: String,
    /// Set the first time an element stores a document under this policy; a policy in use
    /// cannot be deleted.
    #[serde(default)]
    pub in_use: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// An RS256 signing key pair.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
pub struct SigningKey {
    pub kid: String,
    /// PKCS#8 DER, base64. Never leaves the process except in Raft replication and snapshots.
    pub pkcs8: String,
    pub created_at: DateTime<Utc>,
    /// Set when a newer key took over; the key stays in the JWKS for the grace period.
    #[serde(default)]
    pub retired_at: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("created_at", &self.created_at)
            .field("retired_at", &self.retired_at)
            .finish_non_exhaustive()
    }
}

pub use crate::audit_log::AuditHead;
pub use artstore_shared::audit_chain::{AuditEntry, GENESIS, hex};

/// The whole replicated state.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct State {
    /// Set by the one `Bootstrap` change of a fresh cluster.
    #[serde(default)]
    pub bootstrapped_at: Option<DateTime<Utc>>,
    /// Ed25519 PKCS#8 (base64) signing the audit chain; created once by the bootstrap.
    #[serde(default)]
    pub audit_key: String,
    #[serde(default)]
    pub users: Map<User>,
    #[serde(default)]
    pub service_accounts: Map<ServiceAccount>,
    #[serde(default)]
    pub elements: Map<Element>,
    /// Bumped on every registry change; Redis publication compares against it.
    #[serde(default)]
    pub elements_version: u64,
    #[serde(default)]
    pub policies: Map<Policy>,
    /// Oldest first; the last one not retired signs new tokens.
    #[serde(default)]
    pub keys: Vec<SigningKey>,
    /// The audit chain's last link; the chain itself is in the audit segments
    /// ([`crate::audit_log`]), never in the state or its snapshots.
    #[serde(default)]
    pub audit_head: AuditHead,
    /// The whole chain as snapshots held it before the segments; read once when such a
    /// snapshot is opened or installed (moved into the segments), never written.
    #[serde(default, rename = "audit", skip_serializing)]
    pub legacy_audit: Vec<AuditEntry>,
}

/// Every change the cluster accepts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Changes proposed together (group commit, see [`crate::proposer`]): each is applied
    /// on its own, in order, with its own answer and audit entry.
    Batch {
        changes: Vec<Request>,
    },
    /// The first change of a fresh cluster: the audit key, the `admin` user and the first
    /// signing key.
    Bootstrap {
        audit_key: String,
        admin: User,
        key: SigningKey,
    },
    CreateUser {
        user: User,
    },
    UpdateUser {
        username: String,
        password_hash: Option<String>,
        roles: Option<Vec<String>>,
        disabled: Option<bool>,
    },
    DeleteUser {
        username: String,
    },
    CreateServiceAccount {
        account: ServiceAccount,
    },
    UpdateServiceAccount {
        client_id: String,
        secret_hash: Option<String>,
        roles: Option<Vec<String>>,
        disabled: Option<bool>,
        description: Option<String>,
    },
    DeleteServiceAccount {
        client_id: String,
    },
    CreatePolicy {
        policy: Policy,
    },
    UpdatePolicy {
        name: String,
        term: Option<String>,
        mode: Option<String>,
        disposition: Option<String>,
        description: Option<String>,
    },
    DeletePolicy {
        name: String,
    },
    MarkPolicyUsed {
        name: String,
    },
    CreateElement {
        element: Element,
    },
    UpdateElement {
        id: String,
        url: Option<String>,
        capacity_bytes: Option<u64>,
        weight: Option<u32>,
        dc: Option<String>,
        /// Replaces the whole label set when given (entries written before labels have none).
        #[serde(default)]
        labels: Option<BTreeMap<String, String>>,
    },
    DeleteElement {
        id: String,
    },
    /// Committed only after the element confirmed the switch.
    SetElementMode {
        id: String,
        mode: String,
    },
    /// A new current key; the previous current key is retired at the request's time.
    AddSigningKey {
        key: SigningKey,
        reason: String,
    },
    /// Keys past their grace period leave the key set.
    DropSigningKeys {
        kids: Vec<String>,
    },
}

/// The roles and single permissions a token may carry.
pub const KNOWN_ROLES: [&str; 7] =
    ["admin", "operator", "writer", "reader", "auditor", "retention:bypass", "legal-hold:lift"];

/// Checks a list of roles.
pub fn check_roles(roles: &[String]) -> Result<(), Refusal> {
    for r in roles {
        if !KNOWN_ROLES.contains(&r.as_str()) {
            return Err(bad(format!("unknown role {r:?} (known: {})", KNOWN_ROLES.join(", "))));
        }
    }
    Ok(())
}

/// An element's id, a user name, a policy name: 1–64 of `[A-Za-z0-9._-]`.
pub fn check_name(what: &str, s: &str) -> Result<(), Refusal> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'));
    if ok { Ok(()) } else { Err(bad(format!("{what} {s:?} must be 1-64 characters of A-Z a-z 0-9 . _ - @"))) }
}

/// Checks an element mode name.
pub fn check_mode(mode: &str) -> Result<(), Refusal> {
    match mode {
        "edit" | "rw" | "ro" | "ar" => Ok(()),
        other => Err(bad(format!("unknown mode {other:?} (edit, rw, ro or ar)"))),
    }
}

/// Most labels one element may carry.
pub const MAX_LABELS: usize = 32;
/// Longest label key, in bytes (keys are ASCII).
pub const MAX_LABEL_KEY_LEN: usize = 63;
/// Longest label value, in characters.
pub const MAX_LABEL_VALUE_CHARS: usize = 256;

/// Checks an element's labels: at most [`MAX_LABELS`]; keys `[a-z0-9][a-z0-9._-]{0,62}`;
/// values up to [`MAX_LABEL_VALUE_CHARS`] characters without control characters (a value
/// is edited as one line of text).
pub fn check_labels(labels: &BTreeMap<String, String>) -> Result<(), Refusal> {
    if labels.len() > MAX_LABELS {
        return Err(bad(format!("{} labels given; an element carries at most {MAX_LABELS}", labels.len())));
    }
    for (k, v) in labels {
        let key_ok = k.len() <= MAX_LABEL_KEY_LEN
            && k.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && k.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'));
        if !key_ok {
            return Err(bad(format!(
                "label key {k:?} must be 1-{MAX_LABEL_KEY_LEN} characters of a-z 0-9 . _ -, starting with a-z or 0-9"
            )));
        }
        let chars = v.chars().count();
        if chars > MAX_LABEL_VALUE_CHARS {
            return Err(bad(format!(
                "label {k:?} has a value of {chars} characters; at most {MAX_LABEL_VALUE_CHARS} are allowed"
            )));
        }
        if v.chars().any(char::is_control) {
            return Err(bad(format!("label {k:?} has a control character (such as a line break) in its value")));
        }
    }
    Ok(())
}

fn mode_rank(mode: &str) -> u8 {
    match mode {
        "edit" => 0,
        "rw" => 1,
        "ro" => 2,
        _ => 3,
    }
}

/// Whether `to` is a forward step from `from` (modes only go forward: edit → rw → ro → ar).
pub fn mode_forward(from: &str, to: &str) -> bool {
    mode_rank(to) > mode_rank(from)
}

fn bad(d: impl Into<String>) -> Refusal {
    Refusal::new(RefusalKind::BadRequest, d)
}
fn missing(what: &str, name: &str) -> Refusal {
    Refusal::new(RefusalKind::NotFound, format!("no {what} named {name:?}"))
}
fn exists(what: &str, name: &str) -> Refusal {
    Refusal::new(RefusalKind::AlreadyExists, format!("a {what} named {name:?} exists already"))
}
fn conflict(d: impl Into<String>) -> Refusal {
    Refusal::new(RefusalKind::Conflict, d)
}

impl User {
    /// The user as an API shows it.
    pub fn view(&self) -> Value {
        json!({"username": self.username, "roles": self.roles, "disabled": self.disabled,
               "created_at": self.created_at, "updated_at": self.updated_at})
    }
}

impl ServiceAccount {
    /// The account as an API shows it.
    pub fn view(&self) -> Value {
        json!({"client_id": self.client_id, "roles": self.roles, "description": self.description,
               "disabled": self.disabled, "created_at": self.created_at, "updated_at": self.updated_at})
    }
}

impl SigningKey {
    /// The key's public facts.
    pub fn view(&self, grace: chrono::Duration) -> Value {
        json!({"kid": self.kid, "created_at": self.created_at, "retired_at": self.retired_at,
               "expires_at": self.retired_at.map(|r| r + grace), "current": self.retired_at.is_none()})
    }
}

fn to_value<T: Serialize>(t: &T) -> Value {
    serde_json::to_value(t).unwrap_or(Value::Null)
}

impl State {
    /// The key that signs new tokens.
    pub fn current_key(&self) -> Option<&SigningKey> {
        self.keys.iter().rev().find(|k| k.retired_at.is_none())
    }

    /// Applies one committed change; an applied change adds its audit entry to `audit`.
    /// Refusals change nothing.
    pub fn apply(&mut self, req: &Request, audit: &mut Vec<AuditEntry>) -> Response {
        if let Op::Batch { changes } = &req.op {
            return Response::Batch(changes.iter().map(|c| self.apply(c, audit)).collect());
        }
        match self.apply_op(req) {
            Ok((action, target, detail, answer)) => {
                audit.push(self.next_audit(req, action, target, detail));
                Response::Ok(answer)
            }
            Err(r) => Response::Refused(r),
        }
    }

    /// Returns (audit action, audit target, audit detail, answer).
    fn apply_op(&mut self, req: &Request) -> Result<(&'static str, String, Value, Value), Refusal> {
        let at = req.at;
        if self.bootstrapped_at.is_none() && !matches!(req.op, Op::Bootstrap { .. }) {
            return Err(conflict("the cluster is not bootstrapped yet"));
        }
        match &req.op {
            // Applied change by change in `apply`.
            Op::Batch { .. } => Err(bad("a batch is not a change of its own")),
            Op::Bootstrap { audit_key, admin, key } => {
                if self.bootstrapped_at.is_some() {
                    return Err(conflict("the cluster is bootstrapped already"));
                }
                self.bootstrapped_at = Some(at);
                self.audit_key = audit_key.clone();
                self.users.insert(admin.username.clone(), admin.clone());
                self.keys.push(key.clone());
                let d = json!({"admin": admin.username, "kid": key.kid, "audit_public_key": self.audit_public_key()});
                Ok(("cluster.bootstrap", "cluster".to_owned(), d.clone(), d))
            }
            Op::CreateUser { user } => {
                check_name("username", &user.username)?;
                check_roles(&user.roles)?;
                if self.users.contains_key(&user.username) {
                    return Err(exists("user", &user.username));
                }
                self.users.insert(user.username.clone(), user.clone());
                Ok(("user.create", user.username.clone(), json!({"roles": user.roles}), user.view()))
            }
            Op::UpdateUser { username, password_hash, roles, disabled } => {
                if let Some(r) = roles {
                    check_roles(r)?;
                }
                let removing_admin =
                    roles.as_ref().is_some_and(|r| !r.iter().any(|x| x == "admin")) || disabled == &Some(true);
                if removing_admin && self.is_last_admin(username) {
                    return Err(conflict(format!("{username:?} is the last enabled admin")));
                }
                let u = self.users.get_mut(username).ok_or_else(|| missing("user", username))?;
                if let Some(h) = password_hash {
                    u.password_hash.clone_from(h);
                }
                if let Some(r) = roles {
                    u.roles.clone_from(r);
                }
                if let Some(d) = disabled {
                    u.disabled = *d;
                }
                u.updated_at = at;
                let detail = json!({"password_changed": password_hash.is_some(), "roles": roles, "disabled": disabled});
                Ok(("user.update", username.clone(), detail, u.view()))
            }
            Op::DeleteUser { username } => {
                if !self.users.contains_key(username) {
                    return Err(missing("user", username));
                }
                if self.is_last_admin(username) {
                    return Err(conflict(format!("{username:?} is the last enabled admin")));
                }
                self.users.remove(username);
                Ok(("user.delete", username.clone(), Value::Null, json!({"username": username})))
            }
            Op::CreateServiceAccount { account } => {
                check_name("client_id", &account.client_id)?;
                check_roles(&account.roles)?;
                if self.service_accounts.contains_key(&account.client_id) {
                    return Err(exists("service account", &account.client_id));
                }
                self.service_accounts.insert(account.client_id.clone(), account.clone());
                Ok((
                    "service_account.create",
                    account.client_id.clone(),
                    json!({"roles": account.roles}),
                    account.view(),
                ))
            }
            Op::UpdateServiceAccount { client_id, secret_hash, roles, disabled, description } => {
                if let Some(r) = roles {
                    check_roles(r)?;
                }
                let a =
                    self.service_accounts.get_mut(client_id).ok_or_else(|| missing("service account", client_id))?;
                if let Some(h) = secret_hash {
                    a.secret_hash.clone_from(h);
                }
                if let Some(r) = roles {
                    a.roles.clone_from(r);
                }
                if let Some(d) = disabled {
                    a.disabled = *d;
                }
                if let Some(d) = description {
                    a.description.clone_from(d);
                }
                a.updated_at = at;
                let detail = json!({"secret_rotated": secret_hash.is_some(), "roles": roles, "disabled": disabled});
                Ok(("service_account.update", client_id.clone(), detail, a.view()))
            }
            Op::DeleteServiceAccount { client_id } => {
                self.service_accounts.remove(client_id).ok_or_else(|| missing("service account", client_id))?;
                Ok(("service_account.delete", client_id.clone(), Value::Null, json!({"client_id": client_id})))
            }
            Op::CreatePolicy { policy } => {
                check_name("policy name", &policy.name)?;
                check_policy_fields(&policy.term, &policy.mode, &policy.disposition)?;
                if self.policies.contains_key(&policy.name) {
                    return Err(exists("retention policy", &policy.name));
                }
                let mut p = policy.clone();
                p.in_use = false;
                self.policies.insert(p.name.clone(), p.clone());
                Ok((
                    "policy.create",
                    p.name.clone(),
                    json!({"term": p.term, "mode": p.mode, "disposition": p.disposition}),
                    to_value(&p),
                ))
            }
            Op::UpdatePolicy { name, term, mode, disposition, description } => {
                let p = self.policies.get(name).ok_or_else(|| missing("retention policy", name))?;
                let new_term = term.clone().unwrap_or_else(|| p.term.clone());
                let new_mode = mode.clone().unwrap_or_else(|| p.mode.clone());
                let new_disp = disposition.clone().unwrap_or_else(|| p.disposition.clone());
                check_policy_fields(&new_term, &new_mode, &new_disp)?;
                if p.mode == "compliance" && new_mode != "compliance" {
                    return Err(conflict(format!("policy {name:?} is compliance; its mode cannot be weakened")));
                }
                if p.mode == "compliance" || new_mode == "compliance" {
                    let (old_t, new_t) = (Term::parse(&p.term).map_err(bad)?, Term::parse(&new_term).map_err(bad)?);
                    if new_t.add_to(at) < old_t.add_to(at) {
                        return Err(conflict(format!(
                            "policy {name:?} is compliance; its term {} can be lengthened, never shortened (asked {new_term})",
                            p.term
                        )));
                    }
                }
                let p = self.policies.get_mut(name).ok_or_else(|| missing("retention policy", name))?;
                let detail = json!({"from": {"term": p.term, "mode": p.mode, "disposition": p.disposition},
                                    "to": {"term": new_term, "mode": new_mode, "disposition": new_disp}});
                p.term = new_term;
                p.mode = new_mode;
                p.disposition = new_disp;
                if let Some(d) = description {
                    p.description.clone_from(d);
                }
                p.updated_at = at;
                Ok(("policy.update", name.clone(), detail, to_value(p)))
            }
            Op::DeletePolicy { name } => {
                let p = self.policies.get(name).ok_or_else(|| missing("retention policy", name))?;
                if p.in_use {
                    return Err(conflict(format!("retention policy {name:?} is in use by stored documents")));
                }
                self.policies.remove(name);
                Ok(("policy.delete", name.clone(), Value::Null, json!({"name": name})))
            }
            Op::MarkPolicyUsed { name } => {
                let p = self.policies.get_mut(name).ok_or_else(|| missing("retention policy", name))?;
                p.in_use = true;
                Ok(("policy.in_use", name.clone(), Value::Null, to_value(p)))
            }
            Op::CreateElement { element } => {
                check_name("element id", &element.id)?;
                check_mode(&element.mode)?;
                check_url(&element.url)?;
                check_labels(&element.labels)?;
                if self.elements.contains_key(&element.id) {
                    return Err(exists("storage element", &element.id));
                }
                self.elements.insert(element.id.clone(), element.clone());
                self.elements_version += 1;
                // Only a labelled element adds the key: replaying an older entry must give
                // the very same audit detail (and so the same hash chain).
                let mut detail = json!({"url": element.url, "mode": element.mode});
                if !element.labels.is_empty() {
                    detail["labels"] = json!(element.labels);
                }
                Ok(("element.create", element.id.clone(), detail, to_value(element)))
            }
            Op::UpdateElement { id, url, capacity_bytes, weight, dc, labels } => {
                if let Some(u) = url {
                    check_url(u)?;
                }
                if let Some(l) = labels {
                    check_labels(l)?;
                }
                let e = self.elements.get_mut(id).ok_or_else(|| missing("storage element", id))?;
                let previous_labels = labels.as_ref().map(|_| e.labels.clone());
                if let Some(u) = url {
                    e.url.clone_from(u);
                }
                if let Some(c) = capacity_bytes {
                    e.capacity_bytes = *c;
                }
                if let Some(w) = weight {
                    e.weight = *w;
                }
                if let Some(d) = dc {
                    e.dc.clone_from(d);
                }
                if let Some(l) = labels {
                    e.labels.clone_from(l);
                }
                e.updated_at = at;
                let e = e.clone();
                self.elements_version += 1;
                // As for create: no `labels` key unless the change set them, so older
                // entries replay to the same audit detail.
                let mut detail = json!({"url": url, "capacity_bytes": capacity_bytes, "weight": weight, "dc": dc});
                if let (Some(to), Some(from)) = (labels, previous_labels) {
                    detail["labels"] = json!(to);
                    detail["previous_labels"] = json!(from);
                }
                Ok(("element.update", id.clone(), detail, to_value(&e)))
            }
            Op::DeleteElement { id } => {
                self.elements.remove(id).ok_or_else(|| missing("storage element", id))?;
                self.elements_version += 1;
                Ok(("element.delete", id.clone(), Value::Null, json!({"id": id})))
            }
            Op::SetElementMode { id, mode } => {
                check_mode(mode)?;
                let e = self.elements.get_mut(id).ok_or_else(|| missing("storage element", id))?;
                let from = e.mode.clone();
                e.mode.clone_from(mode);
                e.updated_at = at;
                let e = e.clone();
                self.elements_version += 1;
                Ok(("element.mode", id.clone(), json!({"from": from, "to": mode}), to_value(&e)))
            }
            Op::AddSigningKey { key, reason } => {
                if self.keys.iter().any(|k| k.kid == key.kid) {
                    return Err(exists("signing key", &key.kid));
                }
                for k in self.keys.iter_mut().filter(|k| k.retired_at.is_none()) {
                    k.retired_at = Some(at);
                }
                self.keys.push(key.clone());
                let d = json!({"kid": key.kid, "reason": reason});
                Ok(("key.rotate", key.kid.clone(), d.clone(), d))
            }
            Op::DropSigningKeys { kids } => {
                let before = self.keys.len();
                self.keys.retain(|k| k.retired_at.is_none() || !kids.contains(&k.kid));
                let dropped = before - self.keys.len();
                let d = json!({"kids": kids, "dropped": dropped});
                Ok(("key.drop", kids.join(","), d.clone(), d))
            }
        }
    }

    fn is_last_admin(&self, username: &str) -> bool {
        let is_admin = |u: &User| !u.disabled && u.roles.iter().any(|r| r == "admin");
        self.users.get(username).is_some_and(is_admin) && self.users.values().filter(|u| is_admin(u)).count() == 1
    }

    /// The audit chain's Ed25519 public key, hex.
    pub fn audit_public_key(&self) -> Option<String> {
        audit_keypair(&self.audit_key).map(|k| {
            use aws_lc_rs::signature::KeyPair as _;
            hex(k.public_key().as_ref())
        })
    }

    /// The audit entry of an applied change, linked to the head, which moves to it.
    fn next_audit(&mut self, req: &Request, action: &str, target: String, detail: Value) -> AuditEntry {
        let prev = self.audit_head.hash.clone();
        let seq = self.audit_head.seq + 1;
        let mut e = AuditEntry {
            seq,
            at: req.at,
            actor: req.actor.clone(),
            from: req.from.clone(),
            action: action.to_owned(),
            target,
            detail,
            prev,
            hash: String::new(),
            sig: String::new(),
        };
        let digest = e.digest();
        e.hash = hex(&digest);
        // Ed25519 signatures are deterministic, so every node signs identically.
        if let Some(k) = audit_keypair(&self.audit_key) {
            e.sig = B64.encode(k.sign(&digest).as_ref());
        }
        self.audit_head = AuditHead::of(&e);
        e
    }
}

/// The audit key pair from its base64 PKCS#8.
///
/// Parsing a key pair derives its public key, which costs as much as a signature; the last
/// one parsed is kept, since a cluster signs every entry with the same key.
pub fn audit_keypair(b64: &str) -> Option<std::sync::Arc<aws_lc_rs::signature::Ed25519KeyPair>> {
    type Parsed = (String, std::sync::Arc<aws_lc_rs::signature::Ed25519KeyPair>);
    static LAST: std::sync::Mutex<Option<Parsed>> = std::sync::Mutex::new(None);
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((k, pair)) = &*last
        && k == b64
    {
        return Some(pair.clone());
    }
    let der = B64.decode(b64).ok()?;
    let pair = std::sync::Arc::new(aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8(&der).ok()?);
    *last = Some((b64.to_owned(), pair.clone()));
    Some(pair)
}

fn check_url(u: &str) -> Result<(), Refusal> {
    if (u.starts_with("http://") || u.starts_with("https://")) && u.len() > 8 {
        Ok(())
    } else {
        Err(bad(format!("url {u:?} must be an http:// or https:// address")))
    }
}

/// Checks a policy's term, mode and disposition.
pub fn check_policy_fields(term: &str, mode: &str, disposition: &str) -> Result<(), Refusal> {
    Term::parse(term).map_err(bad)?;
    if !matches!(mode, "compliance" | "governance") {
        return Err(bad(format!("mode {mode:?} is not compliance or governance")));
    }
    if !matches!(disposition, "dispose" | "review") {
        return Err(bad(format!("disposition {disposition:?} is not dispose or review")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn req(op: Op) -> Request {
        Request { actor: "admin".into(), from: None, at: at("2026-01-31T00:00:00Z"), op }
    }

    /// A state with the audit entries its applies produced.
    #[derive(Clone)]
    struct Audited {
        state: State,
        audit: Vec<AuditEntry>,
    }

    impl std::ops::Deref for Audited {
        type Target = State;
        fn deref(&self) -> &State {
            &self.state
        }
    }

    impl std::ops::DerefMut for Audited {
        fn deref_mut(&mut self) -> &mut State {
            &mut self.state
        }
    }

    impl Audited {
        fn apply(&mut self, r: &Request) -> Response {
            self.state.apply(r, &mut self.audit)
        }
    }

    fn boot() -> Audited {
        let rng = ring::rand::SystemRandom::new();
        let pk = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let now = at("2026-01-01T00:00:00Z");
        let admin = User {
            username: "admin".into(),
            password_hash: "x".into(),
            roles: vec!["admin".into()],
            disabled: false,
            created_at: now,
            updated_at: now,
        };
        let key = SigningKey { kid: "k1".into(), pkcs8: String::new(), created_at: now, retired_at: None };
        let mut s = Audited { state: State::default(), audit: Vec::new() };
        let r = s.apply(&req(Op::Bootstrap { audit_key: B64.encode(pk.as_ref()), admin, key }));
        assert!(matches!(r, Response::Ok(_)));
        s
    }

    fn policy(name: &str, term: &str, mode: &str) -> Op {
        let now = at("2026-01-01T00:00:00Z");
        Op::CreatePolicy {
            policy: Policy {
                name: name.into(),
                term: term.into(),
                mode: mode.into(),
                disposition: "dispose".into(),
                description: String::new(),
                in_use: true,
                created_at: now,
                updated_at: now,
            },
        }
    }

    #[test]
    fn a_batch_applies_exactly_like_its_changes_one_by_one() {
        let changes = vec![
            req(policy("a", "P1Y", "governance")),
            req(policy("a", "P2Y", "governance")),
            Request { actor: "bob".into(), ..req(policy("b", "P7Y", "compliance")) },
        ];
        let base = boot();
        let mut one_by_one = base.clone();
        let singles: Vec<Response> = changes.iter().map(|c| one_by_one.apply(c)).collect();
        let mut batched = base.clone();
        let Response::Batch(answers) = batched.apply(&req(Op::Batch { changes })) else { panic!("not a batch answer") };
        assert_eq!(format!("{answers:?}"), format!("{singles:?}"));
        assert!(matches!(answers[1], Response::Refused(Refusal { kind: RefusalKind::AlreadyExists, .. })));
        assert_eq!(batched.audit, one_by_one.audit, "the same entries, actors and links");
        assert_eq!(batched.audit.len(), base.audit.len() + 2);
        assert_eq!(batched.audit.last().unwrap().actor, "bob");
        let json = |s: &State| serde_json::to_value(s).unwrap();
        assert_eq!(json(&batched.state), json(&one_by_one.state));
    }

    #[test]
    fn compliance_terms_only_grow_and_used_policies_stay() {
        let mut s = boot();
        assert!(matches!(s.apply(&req(policy("tax", "P7Y", "compliance"))), Response::Ok(_)));
        assert!(!s.policies["tax"].in_use, "a new policy is never created in use");
        let shorten = Op::UpdatePolicy {
            name: "tax".into(),
            term: Some("P6Y11M".into()),
            mode: None,
            disposition: None,
            description: None,
        };
        match s.apply(&req(shorten)) {
            Response::Refused(r) => assert_eq!(r.kind, RefusalKind::Conflict),
            other => panic!("{other:?}"),
        }
        let weaken = Op::UpdatePolicy {
            name: "tax".into(),
            term: None,
            mode: Some("governance".into()),
            disposition: None,
            description: None,
        };
        assert!(matches!(s.apply(&req(weaken)), Response::Refused(_)));
        let lengthen = Op::UpdatePolicy {
            name: "tax".into(),
            term: Some("P10Y".into()),
            mode: None,
            disposition: None,
            description: None,
        };
        assert!(matches!(s.apply(&req(lengthen)), Response::Ok(_)));
        assert!(matches!(s.apply(&req(Op::MarkPolicyUsed { name: "tax".into() })), Response::Ok(_)));
        match s.apply(&req(Op::DeletePolicy { name: "tax".into() })) {
            Response::Refused(r) => assert_eq!(r.kind, RefusalKind::Conflict),
            other => panic!("{other:?}"),
        }
        // Governance policies may be shortened; unused ones deleted.
        assert!(matches!(s.apply(&req(policy("mail", "P2Y", "governance"))), Response::Ok(_)));
        let shorten = Op::UpdatePolicy {
            name: "mail".into(),
            term: Some("P1Y".into()),
            mode: None,
            disposition: None,
            description: None,
        };
        assert!(matches!(s.apply(&req(shorten)), Response::Ok(_)));
        assert!(matches!(s.apply(&req(Op::DeletePolicy { name: "mail".into() })), Response::Ok(_)));
    }

    #[test]
    fn audit_chain_links_and_signs_every_change() {
        let mut s = boot();
        s.apply(&req(policy("a", "P1Y", "governance")));
        s.apply(&req(Op::DeleteUser { username: "admin".into() })); // refused: last admin
        assert_eq!(s.audit.len(), 2, "refusals leave no audit entry");
        let pk = audit_keypair(&s.audit_key).unwrap();
        use aws_lc_rs::signature::KeyPair as _;
        let public =
            ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, pk.public_key().as_ref().to_vec());
        let mut prev = GENESIS.to_owned();
        for e in &s.audit {
            assert_eq!(e.prev, prev);
            assert_eq!(e.hash, hex(&e.digest()));
            public.verify(&e.digest(), &B64.decode(&e.sig).unwrap()).unwrap();
            prev.clone_from(&e.hash);
        }
        // The same requests give the same chain on another node.
        let mut replay = s.clone();
        replay.audit.truncate(1);
        replay.state.audit_head = AuditHead::of(&replay.audit[0]);
        replay.policies.clear();
        replay.apply(&req(policy("a", "P1Y", "governance")));
        assert_eq!(replay.audit, s.audit);
    }

    #[test]
    fn last_admin_cannot_be_removed_or_disabled() {
        let mut s = boot();
        let off = Op::UpdateUser { username: "admin".into(), password_hash: None, roles: None, disabled: Some(true) };
        assert!(matches!(s.apply(&req(off)), Response::Refused(_)));
        let demote = Op::UpdateUser {
            username: "admin".into(),
            password_hash: None,
            roles: Some(vec!["reader".into()]),
            disabled: None,
        };
        assert!(matches!(s.apply(&req(demote)), Response::Refused(_)));
        assert!(s.users["admin"].roles.contains(&"admin".to_owned()));
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn element(id: &str, labels: BTreeMap<String, String>) -> Element {
        let now = at("2026-01-01T00:00:00Z");
        Element {
            id: id.into(),
            url: "http://10.0.0.1:8081".into(),
            mode: "edit".into(),
            capacity_bytes: 0,
            weight: 1,
            dc: String::new(),
            labels,
            created_at: now,
            updated_at: now,
        }
    }

    fn update_labels(id: &str, l: Option<BTreeMap<String, String>>) -> Op {
        Op::UpdateElement { id: id.into(), url: None, capacity_bytes: None, weight: None, dc: None, labels: l }
    }

    #[test]
    fn entries_and_snapshots_from_before_labels_still_parse() {
        // A log entry as written before elements had labels.
        let old = r#"{"op":"update_element","id":"se-1","url":"http://10.0.0.1:9","capacity_bytes":null,"weight":3,"dc":null}"#;
        match serde_json::from_str::<Op>(old).unwrap() {
            Op::UpdateElement { id, weight, labels, .. } => {
                assert_eq!((id.as_str(), weight, labels), ("se-1", Some(3), None));
            }
            other => panic!("{other:?}"),
        }
        // An element as a snapshot held it before labels.
        let old = r#"{"id":"se-1","url":"http://10.0.0.1:8081","mode":"rw","capacity_bytes":5,"weight":2,"dc":"eu",
            "created_at":"2026-01-01T00:00:00Z","updated_at":"2026-01-02T00:00:00Z"}"#;
        let e: Element = serde_json::from_str(old).unwrap();
        assert!(e.labels.is_empty());
        assert_eq!((e.mode.as_str(), e.weight, e.dc.as_str()), ("rw", 2, "eu"));
        // Unlabelled elements keep their old bytes; labelled ones round-trip.
        assert!(serde_json::to_value(&e).unwrap().get("labels").is_none());
        let create = Op::CreateElement { element: element("se-2", labels(&[("rack", "r12")])) };
        let back: Op = serde_json::from_str(&serde_json::to_string(&create).unwrap()).unwrap();
        assert!(matches!(back, Op::CreateElement { element } if element.labels == labels(&[("rack", "r12")])));
    }

    #[test]
    fn labels_are_checked_replaced_whole_and_audited() {
        let mut s = boot();
        let r = s.apply(&req(Op::CreateElement { element: element("se-1", labels(&[("rack", "r12")])) }));
        assert!(matches!(r, Response::Ok(_)), "{r:?}");
        assert_eq!(s.audit.last().unwrap().detail["labels"], json!({"rack": "r12"}));

        let r = s.apply(&req(update_labels("se-1", Some(labels(&[("tier", "ssd")])))));
        assert!(matches!(r, Response::Ok(_)), "{r:?}");
        assert_eq!(s.elements["se-1"].labels, labels(&[("tier", "ssd")]), "the whole set is replaced");
        let d = &s.audit.last().unwrap().detail;
        assert_eq!((&d["labels"], &d["previous_labels"]), (&json!({"tier": "ssd"}), &json!({"rack": "r12"})));

        // A change without labels keeps them and audits exactly what it did before labels.
        let r = s.apply(&req(Op::UpdateElement {
            id: "se-1".into(),
            url: None,
            capacity_bytes: None,
            weight: Some(2),
            dc: None,
            labels: None,
        }));
        assert!(matches!(r, Response::Ok(_)), "{r:?}");
        assert_eq!(s.elements["se-1"].labels, labels(&[("tier", "ssd")]));
        assert_eq!(
            s.audit.last().unwrap().detail,
            json!({"url": null, "capacity_bytes": null, "weight": 2, "dc": null})
        );
        let r = s.apply(&req(Op::CreateElement { element: element("se-2", BTreeMap::new()) }));
        assert!(matches!(r, Response::Ok(_)), "{r:?}");
        assert_eq!(s.audit.last().unwrap().detail, json!({"url": "http://10.0.0.1:8081", "mode": "edit"}));

        let audited = s.audit.len();
        let r = s.apply(&req(update_labels("se-1", Some(labels(&[("Rack", "r1")])))));
        match r {
            Response::Refused(r) => {
                assert_eq!(r.kind, RefusalKind::BadRequest);
                assert!(r.detail.contains("\"Rack\""), "{}", r.detail);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(s.elements["se-1"].labels, labels(&[("tier", "ssd")]), "a refusal changes nothing");
        assert_eq!(s.audit.len(), audited);
    }

    #[test]
    fn label_rules() {
        assert!(check_labels(&labels(&[("rack", "r12"), ("0.zone_a-b", ""), ("tier", &"é".repeat(256))])).is_ok());
        let long_key = "k".repeat(64);
        for (k, v) in
            [("", "x"), ("-rack", "x"), ("Rack", "x"), ("ra ck", "x"), ("räck", "x"), (long_key.as_str(), "x")]
        {
            let e = check_labels(&labels(&[(k, v)])).unwrap_err();
            assert!(e.detail.contains(&format!("{k:?}")), "{}", e.detail);
        }
        assert!(check_labels(&labels(&[(&"k".repeat(63), "x")])).is_ok());
        let e = check_labels(&labels(&[("tier", &"x".repeat(257))])).unwrap_err();
        assert!(e.detail.contains("\"tier\"") && e.detail.contains("257"), "{}", e.detail);
        assert!(check_labels(&labels(&[("note", "two\nlines")])).unwrap_err().detail.contains("\"note\""));
        let many: BTreeMap<String, String> = (0..33).map(|i| (format!("k{i}"), String::new())).collect();
        assert!(check_labels(&many).unwrap_err().detail.contains("at most 32"));
        let enough: BTreeMap<String, String> = (0..32).map(|i| (format!("k{i}"), String::new())).collect();
        assert!(check_labels(&enough).is_ok());
    }
}
