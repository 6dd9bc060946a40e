//! The document search: a query box with suggestions, facets as filter links, a date range,
//! sorting and cursor paging, all over `GET /api/v1/search`. Every state of the page is a
//! plain URL, so it works without JavaScript and can be bookmarked.

use crate::UiState;
use crate::api::{UiError, enc};
use crate::layout::{self, Nav};
use crate::session::{self, Sess};
use artstore_shared::auth::Permission;
use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use maud::{Markup, PreEscaped, html};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

pub fn routes() -> Router<UiState> {
    Router::new().route("/documents", get(search_page)).route("/documents/suggest", get(suggest))
}

/// Hits per page unless the address asks for another number.
const PAGE: usize = 20;
/// Most hits per page the address may ask for.
const MAX_PAGE: usize = 100;

/// The filters a facet entry can set: (query key, label). `tag` repeats; the others hold
/// one value each.
const FILTERS: &[(&str, &str)] = &[
    ("content_type", "Content type"),
    ("tag", "Tag"),
    ("element", "Storage element"),
    ("retention", "Retention"),
    ("retention_policy", "Retention policy"),
    ("state", "Archive state"),
    ("document_id", "Document"),
];

/// The facets the sidebar shows: (facet name in the API, filter key it sets, heading).
/// `year` sets the date range instead of a filter.
const FACETS: &[(&str, &str, &str)] = &[
    ("content_type", "content_type", "Content type"),
    ("tags", "tag", "Tags"),
    ("year", "year", "Year"),
    ("retention", "retention", "Retention"),
    ("state", "state", "Archive state"),
    ("element", "element", "Storage element"),
];

/// The orders offered: (API value, label).
const SORTS: &[(&str, &str)] =
    &[("relevance", "Relevance"), ("-created", "Newest first"), ("created", "Oldest first"), ("name", "Name")];

/// What the search page shows, as it stands in the address: the query, the filters, the
/// date range, the order and the page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchParams {
    pub q: String,
    /// (key, value) of the active filters, keys from [`FILTERS`].
    pub filters: Vec<(String, String)>,
    /// `YYYY-MM-DD`.
    pub from: Option<String>,
    pub to: Option<String>,
    pub sort: Option<String>,
    pub limit: Option<usize>,
    pub cursor: Option<String>,
}

impl SearchParams {
    /// Reads the page's query string; unknown keys and blank values are ignored.
    pub fn parse(qs: &str) -> SearchParams {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(qs).unwrap_or_default();
        let mut p = SearchParams::default();
        for (k, v) in pairs {
            let v = v.trim().to_owned();
            if v.is_empty() {
                continue;
            }
            match k.as_str() {
                "q" => p.q = v,
                "from" => p.from = Some(v),
                "to" => p.to = Some(v),
                "sort" if SORTS.iter().any(|(s, _)| *s == v) => p.sort = Some(v),
                "limit" => p.limit = v.parse::<usize>().ok().map(|n| n.clamp(1, MAX_PAGE)),
                "cursor" => p.cursor = Some(v),
                "tags" => p.add_filter("tag", &v),
                key if FILTERS.iter().any(|(f, _)| *f == key) => p.add_filter(key, &v),
                _ => {}
            }
        }
        p
    }

    /// The pairs of the address, in a fixed order.
    fn pairs(&self) -> Vec<(&str, &str)> {
        let mut out = Vec::new();
        if !self.q.is_empty() {
            out.push(("q", self.q.as_str()));
        }
        for (k, _) in FILTERS {
            for (fk, v) in &self.filters {
                if fk == k {
                    out.push((*k, v.as_str()));
                }
            }
        }
        if let Some(f) = &self.from {
            out.push(("from", f.as_str()));
        }
        if let Some(t) = &self.to {
            out.push(("to", t.as_str()));
        }
        if let Some(s) = &self.sort {
            out.push(("sort", s.as_str()));
        }
        out
    }

    /// The query string (without `?`) of this page.
    pub fn query_string(&self) -> String {
        let mut pairs = self.pairs();
        let limit = self.limit.map(|l| l.to_string());
        if let Some(l) = &limit {
            pairs.push(("limit", l.as_str()));
        }
        if let Some(c) = &self.cursor {
            pairs.push(("cursor", c.as_str()));
        }
        serde_urlencoded::to_string(pairs).unwrap_or_default()
    }

    /// The address of this page.
    pub fn href(&self) -> String {
        let qs = self.query_string();
        if qs.is_empty() { "/documents".to_owned() } else { format!("/documents?{qs}") }
    }

    /// The query string of the API search for this page, with every facet asked for.
    pub fn api_query(&self) -> String {
        let mut pairs = self.pairs();
        let limit = self.limit.unwrap_or(PAGE).to_string();
        pairs.push(("limit", &limit));
        if let Some(c) = &self.cursor {
            pairs.push(("cursor", c.as_str()));
        }
        let facets = FACETS.iter().map(|(f, _, _)| *f).collect::<Vec<_>>().join(",");
        pairs.push(("facets", &facets));
        serde_urlencoded::to_string(pairs).unwrap_or_default()
    }

    /// Whether the filter `key=value` is active.
    pub fn has_filter(&self, key: &str, value: &str) -> bool {
        self.filters.iter().any(|(k, v)| k == key && v == value)
    }

    /// This search with the filter `key=value` added (a tag adds to the tags, any other key
    /// replaces its value), from the first page.
    pub fn with_filter(&self, key: &str, value: &str) -> SearchParams {
        let mut p = self.first_page();
        p.add_filter(key, value);
        p
    }

    fn add_filter(&mut self, key: &str, value: &str) {
        if key != "tag" {
            self.filters.retain(|(k, _)| k != key);
        }
        if !self.has_filter(key, value) {
            self.filters.push((key.to_owned(), value.to_owned()));
        }
        // One order for every address of the same search.
        self.filters.sort_by_key(|(k, _)| FILTERS.iter().position(|(f, _)| f == k));
    }

    /// This search without the filter `key=value`, from the first page.
    pub fn without_filter(&self, key: &str, value: &str) -> SearchParams {
        let mut p = self.first_page();
        p.filters.retain(|(k, v)| !(k == key && v == value));
        p
    }

    /// This search limited to documents created in `year`, from the first page.
    pub fn with_year(&self, year: &str) -> SearchParams {
        let mut p = self.first_page();
        p.from = Some(format!("{year}-01-01"));
        p.to = Some(format!("{year}-12-31"));
        p
    }

    /// The year the date range covers exactly, if it does.
    pub fn year(&self) -> Option<&str> {
        let from = self.from.as_deref()?.strip_suffix("-01-01")?;
        let to = self.to.as_deref()?.strip_suffix("-12-31")?;
        (from == to && from.len() == 4 && from.bytes().all(|b| b.is_ascii_digit())).then_some(from)
    }

    /// This search without its date range (`which`: `from`, `to` or both with `year`).
    pub fn without_date(&self, which: &str) -> SearchParams {
        let mut p = self.first_page();
        if which != "to" {
            p.from = None;
        }
        if which != "from" {
            p.to = None;
        }
        p
    }

    /// This search from its first page.
    pub fn first_page(&self) -> SearchParams {
        SearchParams { cursor: None, ..self.clone() }
    }

    /// This search at the page `cursor` names.
    pub fn page(&self, cursor: &str) -> SearchParams {
        SearchParams { cursor: Some(cursor.to_owned()), ..self.clone() }
    }

    /// Whether the page shows everything (no query, filter or date).
    fn is_everything(&self) -> bool {
        self.q.is_empty() && self.filters.is_empty() && self.from.is_none() && self.to.is_none()
    }
}

/// The label of a filter key.
fn filter_label(key: &str) -> &'static str {
    FILTERS.iter().find(|(k, _)| *k == key).map_or("Filter", |(_, l)| l)
}

/// The search API's answer.
#[derive(Debug, Deserialize)]
struct SearchAnswer {
    total: u64,
    #[serde(default)]
    hits: Vec<Hit>,
    #[serde(default)]
    facets: BTreeMap<String, Vec<FacetValue>>,
    #[serde(default)]
    next_cursor: Option<String>,
    #[serde(default)]
    took_ms: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct FacetValue {
    value: Value,
    count: u64,
}

impl FacetValue {
    fn text(&self) -> String {
        match &self.value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct HitRetention {
    mode: Option<String>,
    retain_until: Option<String>,
    legal_hold: Option<bool>,
    policy: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Hit {
    file_id: String,
    version: Option<u64>,
    name: Option<String>,
    content_type: Option<String>,
    size: Option<u64>,
    created_at: Option<String>,
    element_id: Option<String>,
    state: Option<String>,
    tags: Option<Vec<String>>,
    description: Option<String>,
    #[serde(default)]
    retention: Option<HitRetention>,
    /// Already HTML-escaped by the API, with `<mark>` around the matches.
    #[serde(default)]
    highlights: Option<BTreeMap<String, Vec<String>>>,
}

async fn search_page(State(state): State<UiState>, s: Sess, RawQuery(qs): RawQuery) -> Response {
    if !s.can(Permission::ReadMetadata) {
        return layout::forbidden(&s, "Documents", Nav::Documents);
    }
    let params = SearchParams::parse(qs.as_deref().unwrap_or(""));
    let answer = state.api.get::<SearchAnswer>(&s.token(), &format!("/api/v1/search?{}", params.api_query())).await;
    let status = match &answer {
        Ok(_) => StatusCode::OK,
        Err(e) => StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_GATEWAY),
    };
    let body = html! {
        (search_form(&params))
        div.search-layout {
            aside.facets aria-label="Filters" {
                (active_filters(&params))
                @if let Ok(a) = &answer { (facet_sidebar(&params, a)) }
            }
            section aria-labelledby="results-heading" {
                h2 #results-heading .vh { "Results" }
                @match &answer {
                    Ok(a) => (results(&params, a)),
                    Err(e) => (session::error_box(e)),
                }
            }
        }
    };
    (status, layout::page(&s, "Documents", Nav::Documents, body)).into_response()
}

fn search_form(p: &SearchParams) -> Markup {
    let sort = p.sort.as_deref().unwrap_or("relevance");
    html! {
        form.searchbar role="search" method="get" action="/documents" {
            div.q {
                label for="q" { "Search" }
                input #q type="search" name="q" value=(p.q) autocomplete="off"
                    placeholder="words, \"a phrase\", tags:finance, contr*"
                    aria-describedby="q-help" aria-controls="suggestions"
                    hx-get="/documents/suggest" hx-trigger="input changed delay:250ms"
                    hx-target="#suggestions" hx-swap="innerHTML";
                ul #suggestions .suggest aria-label="Suggestions" aria-live="polite" {}
                small #q-help .muted { "Leave empty to list every document." }
            }
            div {
                label for="from" { "Created from" }
                br;
                input #from type="date" name="from" value=[p.from.as_deref()];
            }
            div {
                label for="to" { "to" }
                br;
                input #to type="date" name="to" value=[p.to.as_deref()];
            }
            div {
                label for="sort" { "Sort by" }
                br;
                select #sort name="sort" {
                    @for (v, label) in SORTS {
                        option value=(v) selected[*v == sort] { (label) }
                    }
                }
            }
            @for (k, v) in &p.filters {
                input type="hidden" name=(k) value=(v);
            }
            @if let Some(l) = p.limit {
                input type="hidden" name="limit" value=(l);
            }
            div { button type="submit" { "Search" } }
        }
    }
}

fn active_filters(p: &SearchParams) -> Markup {
    let any = !p.filters.is_empty() || p.from.is_some() || p.to.is_some();
    html! {
        @if any {
            h2 { "Active filters" }
            ul.active-filters {
                @for (k, v) in &p.filters {
                    li {
                        span.muted { (filter_label(k)) ": " } (v) " "
                        a href=(p.without_filter(k, v).href()) aria-label=(format!("Remove filter {}: {v}", filter_label(k))) { "remove" }
                    }
                }
                @if let Some(y) = p.year() {
                    li {
                        span.muted { "Year: " } (y) " "
                        a href=(p.without_date("year").href()) aria-label=(format!("Remove filter year {y}")) { "remove" }
                    }
                } @else {
                    @if let Some(f) = &p.from {
                        li {
                            span.muted { "Created from: " } (f) " "
                            a href=(p.without_date("from").href()) aria-label=(format!("Remove filter created from {f}")) { "remove" }
                        }
                    }
                    @if let Some(t) = &p.to {
                        li {
                            span.muted { "Created to: " } (t) " "
                            a href=(p.without_date("to").href()) aria-label=(format!("Remove filter created to {t}")) { "remove" }
                        }
                    }
                }
            }
            p { a href="/documents" { "Clear all filters" } }
        }
    }
}

fn facet_sidebar(p: &SearchParams, a: &SearchAnswer) -> Markup {
    html! {
        @for (name, key, heading) in FACETS {
            @if let Some(values) = a.facets.get(*name).filter(|v| v.iter().any(|f| f.count > 0)) {
                h2 { (heading) }
                ul {
                    @for f in values.iter().filter(|f| f.count > 0) {
                        @let value = f.text();
                        @let active = if *key == "year" { p.year() == Some(value.as_str()) } else { p.has_filter(key, &value) };
                        @let href = match (*key, active) {
                            ("year", true) => p.without_date("year").href(),
                            ("year", false) => p.with_year(&value).href(),
                            (_, true) => p.without_filter(key, &value).href(),
                            (_, false) => p.with_filter(key, &value).href(),
                        };
                        li {
                            @if active {
                                a.active href=(href) aria-current="true" title="Remove this filter" {
                                    (value) " " span.muted { "(" (f.count) ")" }
                                }
                            } @else {
                                a href=(href) { (value) " " span.muted { "(" (f.count) ")" } }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn results(p: &SearchParams, a: &SearchAnswer) -> Markup {
    html! {
        p.total role="status" {
            @if a.total == 1 { "1 document" } @else { (a.total) " documents" }
            @if p.is_everything() { " in the archive" }
            @if let Some(ms) = a.took_ms { span.muted { " (" (format!("{ms:.0}")) " ms)" } }
        }
        @if a.hits.is_empty() {
            p.muted { "Nothing matches. Try fewer words, a prefix like " code { "contr*" } ", or remove a filter." }
        }
        @for h in &a.hits { (hit(h)) }
        nav.pager aria-label="Pages" {
            @if p.cursor.is_some() {
                a href=(p.first_page().href()) { "First page" }
            }
            @if let Some(c) = &a.next_cursor {
                a href=(p.page(c).href()) rel="next" { "Next page" }
            }
        }
    }
}

/// Joined highlight fragments; they come HTML-escaped from the API, with `<mark>` only.
fn marked(fragments: &[String]) -> PreEscaped<String> {
    PreEscaped(fragments.join(" … "))
}

fn hit(h: &Hit) -> Markup {
    let hl = h.highlights.as_ref();
    let get_hl = |k: &str| hl.and_then(|m| m.get(k)).filter(|v| !v.is_empty());
    let name = h.name.as_deref().unwrap_or("(no name)");
    let r = h.retention.as_ref();
    let mode = r.and_then(|r| r.mode.as_deref()).filter(|m| *m != "none");
    html! {
        article.hit {
            h3 {
                a href=(format!("/documents/{}", enc(&h.file_id))) {
                    @if let Some(n) = get_hl("name") { (marked(n)) } @else { (name) }
                }
            }
            p.meta {
                @if let Some(st) = &h.state {
                    span class=(format!("badge state {st}")) { (st) } " "
                }
                @if let Some(m) = mode {
                    span class=(format!("badge {m}")) title="Retention" {
                        (m)
                        @if let Some(u) = r.and_then(|r| r.retain_until.as_deref()) { " until " (layout::time(u)) }
                    } " "
                } @else {
                    span.badge { "no retention" } " "
                }
                @if r.and_then(|r| r.legal_hold) == Some(true) {
                    span.badge.hold { "Legal hold" } " "
                }
                @if let Some(pol) = r.and_then(|r| r.policy.as_deref()) {
                    span.muted { "policy " (pol) " · " }
                }
                @if let Some(ct) = &h.content_type { span { (ct) } " · " }
                @if let Some(sz) = h.size { span { (layout::bytes(sz)) } " · " }
                @if let Some(c) = &h.created_at { span { time datetime=(c) { (layout::time(c)) } } " · " }
                @if let Some(v) = h.version { span { "version " (v) } " · " }
                @if let Some(e) = &h.element_id { span { "element " (e) } }
            }
            @if let Some(c) = get_hl("content") {
                p.snippet { (marked(c)) }
            } @else if let Some(d) = get_hl("description") {
                p.snippet { (marked(d)) }
            } @else if let Some(d) = h.description.as_deref().filter(|d| !d.is_empty()) {
                p.snippet { (d) }
            }
            @if let Some(tags) = h.tags.as_ref().filter(|t| !t.is_empty()) {
                p.tags { span.muted { "Tags: " } (tags.join(", ")) }
            }
        }
    }
}

#[derive(Debug, Deserialize)]
struct SuggestAnswer {
    #[serde(default)]
    suggestions: Vec<Suggestion>,
}

#[derive(Debug, Deserialize)]
struct Suggestion {
    text: String,
    #[serde(default)]
    kind: String,
}

/// Where a suggestion leads: a name as a phrase, a tag as a filter, a word as the query.
pub fn suggestion_href(text: &str, kind: &str) -> String {
    let p = match kind {
        "tag" => SearchParams::default().with_filter("tag", text),
        "name" => SearchParams { q: format!("\"{}\"", text.replace('"', " ").trim()), ..Default::default() },
        _ => SearchParams { q: text.to_owned(), ..Default::default() },
    };
    p.href()
}

#[derive(Debug, Deserialize)]
struct SuggestQuery {
    #[serde(default)]
    q: String,
}

/// `GET /documents/suggest?q=contr`: the completions as list items (an htmx fragment).
async fn suggest(State(state): State<UiState>, s: Sess, RawQuery(qs): RawQuery) -> Markup {
    let q = serde_urlencoded::from_str::<SuggestQuery>(qs.as_deref().unwrap_or("")).map(|q| q.q).unwrap_or_default();
    let q = q.trim();
    if q.is_empty() || !s.can(Permission::ReadMetadata) {
        return html! {};
    }
    let answer: Result<SuggestAnswer, UiError> =
        state.api.get(&s.token(), &format!("/api/v1/search/suggest?q={}&limit=8", enc(q))).await;
    match answer {
        Ok(a) => html! {
            @for sg in &a.suggestions {
                li {
                    a href=(suggestion_href(&sg.text, &sg.kind)) {
                        (sg.text)
                        @match sg.kind.as_str() {
                            "tag" => { " " span.muted { "tag" } }
                            "name" => { " " span.muted { "name" } }
                            _ => {}
                        }
                    }
                }
            }
        },
        Err(e) => html! { li.muted { (e.message()) } },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_round_trips() {
        let p = SearchParams::parse(
            "cursor=abc&q=supply+contract&tag=finance&tag=tax&content_type=application%2Fpdf&from=2024-01-01&sort=name&bogus=1&element=",
        );
        assert_eq!(p.q, "supply contract");
        assert_eq!(p.filters.len(), 3);
        assert_eq!(p.from.as_deref(), Some("2024-01-01"));
        assert_eq!(p.cursor.as_deref(), Some("abc"));
        assert_eq!(
            p.href(),
            "/documents?q=supply+contract&content_type=application%2Fpdf&tag=finance&tag=tax&from=2024-01-01&sort=name&cursor=abc"
        );
        assert_eq!(SearchParams::parse(&p.query_string()), p);
        assert_eq!(SearchParams::default().href(), "/documents");
        assert_eq!(SearchParams::parse("sort=sideways").sort, None);
        assert_eq!(SearchParams::parse("limit=5000").limit, Some(MAX_PAGE));
        let versions = SearchParams::parse("document_id=0190f6d2-8c1e-7a4b-9b5e-2f1a3c4d5e6f");
        assert!(versions.api_query().starts_with("document_id=0190f6d2-8c1e-7a4b-9b5e-2f1a3c4d5e6f&limit=20"));
    }

    #[test]
    fn facet_links_add_and_remove_filters_from_the_first_page() {
        let p = SearchParams::parse("q=x&tag=a&cursor=abc");
        let more = p.with_filter("tag", "b");
        assert_eq!(more.href(), "/documents?q=x&tag=a&tag=b");
        assert_eq!(p.with_filter("tag", "a").href(), "/documents?q=x&tag=a", "a tag is not added twice");
        let pdf = p.with_filter("content_type", "application/pdf").with_filter("content_type", "text/plain");
        assert_eq!(pdf.href(), "/documents?q=x&content_type=text%2Fplain&tag=a", "one content type at a time");
        assert_eq!(more.without_filter("tag", "a").href(), "/documents?q=x&tag=b");
        let y = p.with_year("2024");
        assert_eq!(y.href(), "/documents?q=x&tag=a&from=2024-01-01&to=2024-12-31");
        assert_eq!(y.year(), Some("2024"));
        assert_eq!(y.without_date("year").href(), "/documents?q=x&tag=a");
        assert_eq!(y.without_date("from").href(), "/documents?q=x&tag=a&to=2024-12-31");
        assert_eq!(SearchParams::parse("from=2024-01-01&to=2025-12-31").year(), None);
    }

    #[test]
    fn paging_keeps_the_search() {
        let p = SearchParams::parse("q=x&sort=-created&limit=5");
        assert_eq!(p.page("c2").href(), "/documents?q=x&sort=-created&limit=5&cursor=c2");
        assert_eq!(p.page("c2").first_page().href(), "/documents?q=x&sort=-created&limit=5");
    }

    #[test]
    fn the_api_is_asked_for_every_facet() {
        let p = SearchParams::parse("tag=a&cursor=c");
        assert_eq!(
            p.api_query(),
            "tag=a&limit=20&cursor=c&facets=content_type%2Ctags%2Cyear%2Cretention%2Cstate%2Celement"
        );
        assert!(SearchParams::default().api_query().starts_with("limit=20&"), "an empty query lists everything");
    }

    #[test]
    fn suggestions_lead_somewhere_sensible() {
        assert_eq!(suggestion_href("finance", "tag"), "/documents?tag=finance");
        assert_eq!(suggestion_href("a \"b\".pdf", "name"), "/documents?q=%22a++b+.pdf%22");
        assert_eq!(suggestion_href("contract", "term"), "/documents?q=contract");
    }

    #[test]
    fn highlights_are_the_only_raw_html() {
        let h: Hit = serde_json::from_value(serde_json::json!({
            "file_id": "f1", "name": "<b>x</b>", "state": "archived",
            "retention": {"mode": "compliance", "retain_until": "2030-01-01T00:00:00Z", "legal_hold": true},
            "highlights": {"content": ["a <mark>b</mark> &lt;c&gt;"]},
            "description": "<script>",
        }))
        .unwrap();
        let html = hit(&h).into_string();
        assert!(html.contains("&lt;b&gt;x&lt;/b&gt;"), "{html}");
        assert!(html.contains("a <mark>b</mark> &lt;c&gt;"), "{html}");
        assert!(
            html.contains("Legal hold") && html.contains("badge compliance") && html.contains("badge state archived")
        );
        assert!(!html.contains("<script>"));
    }
}
