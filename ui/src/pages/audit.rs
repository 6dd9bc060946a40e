//! The audit page: the admin cluster's hash-chained, signed audit chain, filtered by actor,
//! action, target and dates (the API pages by sequence number only, so the UI filters a
//! bounded window of the chain per request), and a check of the whole chain: sequence,
//! hash links, each entry's hash and its Ed25519 signature.
//!
//! The elements' own journals are not part of the public API (the one port serves admin,
//! ingester and query routes); the page says so and how to check them.

use crate::UiState;
use crate::api::{Api, UiError};
use crate::layout::{self, Nav};
use crate::session::{Sess, error_box};
pub use artstore_shared::audit_chain::{AuditEntry, ChainCheck, ChainKey, ChainReport};
use axum::Router;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, NaiveDate, Utc};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::Value;

pub fn routes() -> Router<UiState> {
    Router::new().route("/audit", get(page)).route("/audit/verify", post(verify))
}

/// Entries asked for per API call (the API's maximum).
const PAGE: u64 = 1000;
/// Entries one filtered view looks at before it offers to look further back.
const SCAN_LIMIT: u64 = 5000;
/// Matches one view shows.
const SHOW: usize = 100;
/// Proposers' clocks may differ a little; a date filter stops scanning only this far past it.
const CLOCK_SLACK: chrono::Duration = chrono::Duration::hours(1);

/// One answer of `GET /api/v1/audit?after=&limit=`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct AuditPage {
    pub items: Vec<AuditEntry>,
    pub next_after: Option<u64>,
    pub last_seq: u64,
    /// The chain's Ed25519 public key (hex), as the node reports it.
    pub public_key: Option<String>,
}

/// Where the chain is read from: the API, or a list in tests.
pub(crate) trait ChainSource {
    /// Entries with `seq > after`, at most `limit`, oldest first.
    async fn page(&self, after: u64, limit: u64) -> Result<AuditPage, UiError>;
}

/// The chain through the public API, with the user's token.
pub struct ApiChain<'a> {
    pub api: &'a Api,
    pub token: &'a str,
}

impl ChainSource for ApiChain<'_> {
    async fn page(&self, after: u64, limit: u64) -> Result<AuditPage, UiError> {
        self.api.get(self.token, &format!("/api/v1/audit?after={after}&limit={}", limit.clamp(1, PAGE))).await
    }
}

/// The newest `n` entries, newest first.
pub(crate) async fn latest(src: &impl ChainSource, n: u64) -> Result<Vec<AuditEntry>, UiError> {
    let last = src.page(0, 1).await?.last_seq;
    if last == 0 {
        return Ok(Vec::new());
    }
    let mut items = src.page(last.saturating_sub(n), n).await?.items;
    items.reverse();
    Ok(items)
}

/// The filter form.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct AuditQuery {
    pub actor: String,
    pub action: String,
    pub target: String,
    /// `YYYY-MM-DD`, inclusive.
    pub from: String,
    /// `YYYY-MM-DD`, inclusive.
    pub to: String,
    /// Look at entries with a smaller sequence number only (paging back).
    pub before: String,
}

/// What an entry must match: case-insensitive parts of actor, action and target, and a
/// time range.
#[derive(Debug, Default, PartialEq)]
pub struct Filter {
    actor: String,
    action: String,
    target: String,
    from: Option<DateTime<Utc>>,
    /// Exclusive: the start of the day after the `to` date.
    until: Option<DateTime<Utc>>,
}

fn day(s: &str, what: &str) -> Result<Option<NaiveDate>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d").map(Some).map_err(|_| format!("the {what} date {s:?} is not YYYY-MM-DD"))
}

fn start_of(d: NaiveDate) -> DateTime<Utc> {
    d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc()
}

impl Filter {
    pub fn parse(q: &AuditQuery) -> Result<Filter, String> {
        let from = day(&q.from, "from")?;
        let to = day(&q.to, "to")?;
        if let (Some(f), Some(t)) = (from, to)
            && f > t
        {
            return Err(format!("the from date {f} is after the to date {t}"));
        }
        Ok(Filter {
            actor: q.actor.trim().to_lowercase(),
            action: q.action.trim().to_lowercase(),
            target: q.target.trim().to_lowercase(),
            from: from.map(start_of),
            until: to.and_then(|t| t.succ_opt()).map(start_of),
        })
    }

    pub fn is_empty(&self) -> bool {
        *self == Filter::default()
    }

    pub fn matches(&self, e: &AuditEntry) -> bool {
        let has = |field: &str, part: &str| part.is_empty() || field.to_lowercase().contains(part);
        has(&e.actor, &self.actor)
            && has(&e.action, &self.action)
            && has(&e.target, &self.target)
            && self.from.is_none_or(|f| e.at >= f)
            && self.until.is_none_or(|u| e.at < u)
    }
}

/// One filtered view of the chain.
#[derive(Debug, Default)]
pub struct Found {
    /// Matches, newest first.
    pub items: Vec<AuditEntry>,
    pub last_seq: u64,
    pub scanned: u64,
    /// The lowest sequence number looked at.
    pub lowest: Option<u64>,
    /// `before=` of the next older view, when the chain goes further back.
    pub older: Option<u64>,
}

/// The entry with sequence number `seq`.
async fn entry_at(src: &impl ChainSource, seq: u64) -> Result<Option<AuditEntry>, UiError> {
    Ok(src.page(seq.saturating_sub(1), 1).await?.items.into_iter().find(|e| e.seq == seq))
}

/// The largest sequence number up to `end` written before `until` (0: none), by bisection
/// over the chain's times (about 20 small calls for a million entries).
async fn last_before(src: &impl ChainSource, until: DateTime<Utc>, end: u64) -> Result<u64, UiError> {
    let (mut lo, mut hi) = (0u64, end);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        match entry_at(src, mid).await? {
            Some(e) if e.at < until => lo = mid,
            _ => hi = mid - 1,
        }
    }
    Ok(lo)
}

/// Walks the chain backwards from the newest entry (or from `before`), keeping matches,
/// until [`SHOW`] matches, [`SCAN_LIMIT`] entries looked at, the start of the chain, or
/// entries older than the filter's first day.
pub(crate) async fn search(src: &impl ChainSource, f: &Filter, before: Option<u64>) -> Result<Found, UiError> {
    let last = src.page(0, 1).await?.last_seq;
    let mut end = before.map_or(last, |b| b.saturating_sub(1).min(last));
    if let Some(until) = f.until
        && end > 0
    {
        end = last_before(src, until, end).await?;
    }
    let mut found = Found { last_seq: last, ..Found::default() };
    let mut exhausted = false;
    'scan: while end > 0 && found.scanned < SCAN_LIMIT {
        let start = end.saturating_sub(PAGE);
        let p = src.page(start, end - start).await?;
        if p.items.is_empty() {
            exhausted = true;
            break;
        }
        for e in p.items.iter().rev().filter(|e| e.seq <= end) {
            found.scanned += 1;
            found.lowest = Some(e.seq);
            if f.from.is_some_and(|from| e.at < from - CLOCK_SLACK) {
                exhausted = true;
                break 'scan;
            }
            if f.matches(e) {
                found.items.push(e.clone());
                if found.items.len() >= SHOW {
                    break 'scan;
                }
            }
        }
        end = start;
    }
    found.older = found.lowest.filter(|&l| l > 1 && !exhausted);
    Ok(found)
}

/// Reads the whole chain page by page and checks every entry.
pub(crate) async fn verify_chain(src: &impl ChainSource) -> Result<ChainReport, UiError> {
    let mut after = 0;
    let mut check: Option<ChainCheck> = None;
    loop {
        let p = src.page(after, PAGE).await?;
        let c = check.get_or_insert_with(|| ChainCheck::new(ChainKey::Recorded(p.public_key.clone())));
        for e in &p.items {
            c.push(e);
        }
        match (p.next_after, p.items.last()) {
            (Some(n), Some(_)) if n > after => after = n,
            _ => break,
        }
    }
    Ok(check.unwrap_or_else(|| ChainCheck::new(ChainKey::Recorded(None))).finish())
}

/// Compact JSON of an entry's detail (shortened).
fn detail_text(v: &Value) -> String {
    if v.is_null() {
        return String::new();
    }
    let s = v.to_string();
    if s.chars().count() > 240 { format!("{}…", s.chars().take(240).collect::<String>()) } else { s }
}

/// Entries as a table, in the order given.
pub fn entries_table(items: &[AuditEntry], caption: &str) -> Markup {
    html! {
        div.table-wrap {
            table {
                caption.vh { (caption) }
                thead { tr {
                    th scope="col" { "Seq" } th scope="col" { "Time" } th scope="col" { "Actor" }
                    th scope="col" { "Address" } th scope="col" { "Action" } th scope="col" { "Target" }
                    th scope="col" { "Detail" }
                } }
                tbody {
                    @for e in items {
                        tr {
                            th scope="row" title=(format!("hash {}", e.hash)) { (e.seq) }
                            td { (e.at.format("%Y-%m-%d %H:%M:%S UTC")) }
                            td { (e.actor) }
                            td { @if let Some(f) = &e.from { (f) } @else { span.muted { "—" } } }
                            td { code { (e.action) } }
                            td { (e.target) }
                            td { code.detail { (detail_text(&e.detail)) } }
                        }
                    }
                }
            }
        }
    }
}

fn elements_note() -> Markup {
    html! {
        h2 { "Storage elements' journals" }
        p {
            "Each storage element keeps its own hash-chained journal (" code { "audit/journal.jsonl" }
            " in its folder). It is not reachable through the public API: the public surface serves the "
            "admin, ingester and query routes, and an element's own API is for the roles only. Check an "
            "element's journal, and every sidecar against it, on its machine with "
            code { "artstore storage-element verify-audit --data DIR" } "."
        }
    }
}

fn query_string(q: &AuditQuery, before: Option<u64>) -> String {
    let mut pairs: Vec<(&str, String)> =
        [("actor", &q.actor), ("action", &q.action), ("target", &q.target), ("from", &q.from), ("to", &q.to)]
            .into_iter()
            .filter(|(_, v)| !v.trim().is_empty())
            .map(|(k, v)| (k, v.trim().to_owned()))
            .collect();
    if let Some(b) = before {
        pairs.push(("before", b.to_string()));
    }
    serde_urlencoded::to_string(pairs).unwrap_or_default()
}

fn filter_form(q: &AuditQuery) -> Markup {
    html! {
        form.searchbar method="get" action="/audit" role="search" aria-label="Filter the audit chain" {
            div { label for="f-actor" { "Actor" } br; input #f-actor name="actor" value=(q.actor) placeholder="user or service account"; }
            div { label for="f-action" { "Action" } br; input #f-action name="action" value=(q.action) placeholder="e.g. user. or element.mode"; }
            div { label for="f-target" { "Target" } br; input #f-target name="target" value=(q.target); }
            div { label for="f-from" { "From" } br; input #f-from name="from" type="date" value=(q.from); }
            div { label for="f-to" { "To" } br; input #f-to name="to" type="date" value=(q.to); }
            div { button type="submit" { "Filter" } " " a href="/audit" { "Clear" } }
        }
        p.muted { "Actor, action and target match any part, ignoring case; dates are UTC days, both included." }
    }
}

async fn page(State(state): State<UiState>, s: Sess, Query(q): Query<AuditQuery>) -> Response {
    let title = "Audit";
    if !Nav::Audit.allowed(&s) {
        return layout::forbidden(&s, title, Nav::Audit);
    }
    let token = s.token();
    let src = ApiChain { api: &state.api, token: &token };
    let filter = Filter::parse(&q);
    let before = q.before.trim().parse::<u64>().ok();
    let found = match &filter {
        Ok(f) => Some(search(&src, f, before).await),
        Err(_) => None,
    };
    let body = html! {
        p {
            "Every change to the admin cluster (users, service accounts, policies, elements, keys) is one "
            "entry of a hash-chained audit chain, each entry signed with the cluster's Ed25519 audit key."
        }
        form method="post" action="/audit/verify" {
            (layout::csrf(&s))
            button type="submit" { "Verify chain" }
            " " span.muted { "Reads the whole chain and checks every link, hash and signature." }
        }
        h2 { "Admin chain" }
        (filter_form(&q))
        @if let Err(e) = &filter { div.msg.err role="alert" { "The filter is not valid: " (e) "." } }
        @match &found {
            None => {}
            Some(Err(e)) => (error_box(e)),
            Some(Ok(f)) => {
                p role="status" {
                    @if f.last_seq == 0 { "The chain is empty." }
                    @else {
                        (f.items.len()) " matching " (if f.items.len() == 1 { "entry" } else { "entries" })
                        " among " (f.scanned) " looked at"
                        @if let Some(l) = f.lowest { " (sequence " (l) " and later)" }
                        "; the chain has " (f.last_seq) " entries."
                    }
                }
                @if !f.items.is_empty() { (entries_table(&f.items, "Audit entries, newest first")) }
                nav.pager aria-label="Audit pages" {
                    @if before.is_some() { a href=(format!("/audit?{}", query_string(&q, None))) { "Newest entries" } }
                    @if let Some(o) = f.older { a href=(format!("/audit?{}", query_string(&q, Some(o)))) { "Older entries" } }
                }
            }
        }
        (elements_note())
    };
    layout::page(&s, title, Nav::Audit, body).into_response()
}

async fn verify(State(state): State<UiState>, s: Sess) -> Response {
    let title = "Audit chain verification";
    if !Nav::Audit.allowed(&s) {
        return layout::forbidden(&s, title, Nav::Audit);
    }
    let token = s.token();
    let report = verify_chain(&ApiChain { api: &state.api, token: &token }).await;
    let body = html! {
        p { a href="/audit" { "← Back to the audit chain" } }
        @match &report {
            Err(e) => (error_box(e)),
            Ok(r) => {
                @if r.ok() {
                    div.msg.ok role="status" { "OK: the chain of " (r.entries) " entries is intact." }
                } @else {
                    div.msg.err role="alert" {
                        "The chain is broken"
                        @if let Some(b) = r.first_broken { " from entry " (b) }
                        ": " (r.problems.len() as u64 + r.more_problems) " problem(s) in " (r.entries) " entries."
                    }
                }
                dl.fields {
                    dt { "Entries checked" } dd { (r.entries) }
                    dt { "Signatures verified" } dd { (r.signatures) }
                    dt { "Audit key" } dd {
                        @if let Some(k) = &r.key { code { (k) } br; } small.muted { (r.key_source) }
                    }
                    dt { "First broken entry" } dd {
                        @if let Some(b) = r.first_broken { (b) } @else { "none" }
                    }
                }
                @if !r.problems.is_empty() {
                    h2 { "Problems" }
                    ul { @for p in &r.problems { li { (p) } } }
                    @if r.more_problems > 0 { p { "… and " (r.more_problems) " more." } }
                }
                h2 { "What was checked" }
                ul {
                    li { "Sequence numbers run from 1 without gaps." }
                    li { "Each entry names the hash of the entry before it (the first names 64 zeros)." }
                    li { "Each entry's SHA-256 over its canonical form equals its recorded hash, so no entry was edited." }
                    li { "Each signature verifies with the audit key above." }
                }
                p.muted {
                    "This checks the chain as the admin node serves it. To rule out a node that serves a "
                    "forged chain under a new key, compare the audit key with the one recorded when the "
                    "cluster was set up, or run " code { "artstore admin verify-audit --data DIR --public-key KEY" }
                    " on a node's folder."
                }
            }
        }
    };
    layout::page(&s, title, Nav::Audit, body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real answer of the admin (standalone, first start).
    const FIXTURE: &str = r#"{"items":[{"seq":1,"at":"2026-11-30T11:29:57.904452492Z","actor":"system","from":null,"action":"cluster.bootstrap","target":"cluster","detail":{"admin":"admin","kid":"cbae1a96038f11e08ea8b16b","audit_public_key":"f0cff0cfe7807b425a596a6158dbc5c5e93e12277f93832b5c43578d9e2dbecf"},"prev":"0000000000000000000000000000000000000000000000000000000000000000","hash":"e68e9f94707d15dce467e2077a8ca2de19a0bc21288be0e7067b1b9e9b6c49c8","sig":"+CLsbvW5a0fYk76Pk0bBujiTtLfxAgFkaTSFIlOCu+Y9DdxfE5ML1fZw68y8QjhHwreejOZqKmDwxLVs/5I5AA=="},{"seq":2,"at":"2026-11-30T11:29:57.955669453Z","actor":"system","from":null,"action":"element.create","target":"standalone","detail":{"url":"http://127.0.0.1:36695","mode":"edit"},"prev":"e68e9f94707d15dce467e2077a8ca2de19a0bc21288be0e7067b1b9e9b6c49c8","hash":"896b7c4a9e0fbd67dfc53164ff02e2ddda7ffd9ad1c4703fb3f7c77a7548e2c8","sig":"uxp3hh4ZSfJDfz4R0O9qHgW7R27ah19UGyNmHNX5L2jWhfR/9GjX5S05QhaxQXXpmEwu1WV7NMQUBE2OYwzrBg=="}],"next_after":null,"last_seq":2,"public_key":"f0cff0cfe7807b425a596a6158dbc5c5e93e12277f93832b5c43578d9e2dbecf"}"#;

    fn fixture() -> AuditPage {
        serde_json::from_str(FIXTURE).unwrap()
    }

    /// An in-memory chain, answering like the API.
    struct Chain(Vec<AuditEntry>, Option<String>);

    impl ChainSource for Chain {
        async fn page(&self, after: u64, limit: u64) -> Result<AuditPage, UiError> {
            let items: Vec<AuditEntry> =
                self.0.iter().filter(|e| e.seq > after).take(limit.clamp(1, PAGE) as usize).cloned().collect();
            let last = self.0.last().map_or(0, |e| e.seq);
            let next_after = items.last().map(|e| e.seq).filter(|&s| s < last);
            Ok(AuditPage { items, next_after, last_seq: last, public_key: self.1.clone() })
        }
    }

    fn entry(seq: u64, at: &str, actor: &str, action: &str, target: &str) -> AuditEntry {
        AuditEntry {
            seq,
            at: DateTime::parse_from_rfc3339(at).unwrap().with_timezone(&Utc),
            actor: actor.into(),
            from: None,
            action: action.into(),
            target: target.into(),
            detail: Value::Null,
            prev: String::new(),
            hash: String::new(),
            sig: String::new(),
        }
    }

    /// `n` entries, one a day from 2026-01-01, alternating actors.
    fn long_chain(n: u64) -> Chain {
        let start = DateTime::parse_from_rfc3339("2026-01-01T12:00:00Z").unwrap().with_timezone(&Utc);
        let items = (1..=n)
            .map(|i| {
                let mut e =
                    entry(i, "2026-01-01T00:00:00Z", if i % 2 == 0 { "alice" } else { "bob" }, "user.update", "x");
                e.at = start + chrono::Duration::days(i as i64 - 1);
                e
            })
            .collect();
        Chain(items, None)
    }

    fn run<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    }

    #[test]
    fn digest_matches_the_admin() {
        for e in fixture().items {
            assert_eq!(artstore_shared::audit_chain::hex(&e.digest()), e.hash, "entry {}", e.seq);
        }
    }

    #[test]
    fn a_real_chain_verifies() {
        let p = fixture();
        let r = run(verify_chain(&Chain(p.items, p.public_key))).unwrap();
        assert!(r.ok(), "{:?}", r.problems);
        assert_eq!((r.entries, r.signatures), (2, 2));
        assert!(r.key_source.contains("bootstrap"));
    }

    #[test]
    fn an_edited_entry_breaks_the_chain() {
        let mut p = fixture();
        p.items[1].target = "elsewhere".into();
        let r = run(verify_chain(&Chain(p.items, p.public_key))).unwrap();
        assert_eq!(r.first_broken, Some(2));
        assert!(r.problems.iter().any(|x| x.contains("does not match its hash")), "{:?}", r.problems);
        assert!(r.problems.iter().any(|x| x.contains("signature")), "{:?}", r.problems);
    }

    #[test]
    fn a_removed_entry_and_a_swapped_key_show() {
        let mut p = fixture();
        p.items.remove(0);
        let other = "11".repeat(32);
        let r = run(verify_chain(&Chain(p.items, Some(other)))).unwrap();
        assert_eq!(r.first_broken, Some(2));
        assert!(r.problems.iter().any(|x| x.contains("sequence gap")));
        assert!(r.problems.iter().any(|x| x.contains("does not link")));
        assert!(r.key_source.contains("no bootstrap entry"));
    }

    #[test]
    fn filters_match_parts_and_days() {
        let q = AuditQuery {
            actor: "ALI".into(),
            action: "user.".into(),
            from: "2026-01-02".into(),
            to: "2026-01-02".into(),
            ..Default::default()
        };
        let f = Filter::parse(&q).unwrap();
        assert!(f.matches(&entry(1, "2026-01-02T23:59:59Z", "alice", "user.create", "bob")));
        assert!(!f.matches(&entry(2, "2026-01-03T00:00:00Z", "alice", "user.create", "bob")));
        assert!(!f.matches(&entry(3, "2026-01-01T23:59:59Z", "alice", "user.create", "bob")));
        assert!(!f.matches(&entry(4, "2026-01-02T10:00:00Z", "bob", "user.create", "alice")));
        assert!(!f.matches(&entry(5, "2026-01-02T10:00:00Z", "alice", "policy.create", "tax")));
        assert!(Filter::parse(&AuditQuery::default()).unwrap().is_empty());
        let bad = AuditQuery { from: "2026-02-01".into(), to: "2026-01-01".into(), ..Default::default() };
        assert!(Filter::parse(&bad).is_err());
        assert!(Filter::parse(&AuditQuery { to: "yesterday".into(), ..Default::default() }).is_err());
    }

    #[test]
    fn search_pages_back_through_a_bounded_window() {
        let chain = long_chain(12_000);
        let all = Filter::default();
        let first = run(search(&chain, &all, None)).unwrap();
        assert_eq!(first.items.len(), SHOW);
        assert_eq!(first.items[0].seq, 12_000);
        assert_eq!(first.older, Some(11_901));
        let next = run(search(&chain, &all, first.older)).unwrap();
        assert_eq!(next.items[0].seq, 11_900);
        // Rare matches: the window is bounded, and paging goes on from where it stopped.
        let rare = Filter::parse(&AuditQuery { actor: "nobody".into(), ..Default::default() }).unwrap();
        let r = run(search(&chain, &rare, None)).unwrap();
        assert!(r.items.is_empty());
        assert_eq!(r.scanned, SCAN_LIMIT);
        assert_eq!(r.older, Some(12_000 - SCAN_LIMIT + 1));
        // The end of the chain has no older page.
        let r = run(search(&chain, &rare, Some(50))).unwrap();
        assert_eq!((r.scanned, r.older), (49, None));
    }

    #[test]
    fn search_jumps_to_the_dates_asked() {
        let chain = long_chain(12_000);
        // Entry n is on day n-1 after 2026-01-01: 2026-03-01 is entry 60.
        let q = AuditQuery {
            actor: "alice".into(),
            from: "2026-02-27".into(),
            to: "2026-03-01".into(),
            ..Default::default()
        };
        let r = run(search(&chain, &Filter::parse(&q).unwrap(), None)).unwrap();
        let seqs: Vec<u64> = r.items.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [60, 58]);
        assert_eq!(r.older, None, "nothing before the from date is offered");
        assert!(r.scanned < 10, "the scan started at the to date and stopped at the from date");
    }

    #[test]
    fn latest_is_newest_first() {
        let chain = long_chain(25);
        let l = run(latest(&chain, 10)).unwrap();
        assert_eq!(l.iter().map(|e| e.seq).collect::<Vec<_>>(), (16..=25).rev().collect::<Vec<_>>());
        assert!(run(latest(&Chain(Vec::new(), None), 10)).unwrap().is_empty());
    }
}
