//! Retention policies: the list with how many documents each one governs (counted by the
//! search index), creating a policy, changing one (a compliance term only grows: the API
//! refuses the rest, and the page shows its refusal), and deleting an unused one.

use super::{Fields, done, not_allowed};
use crate::UiState;
use crate::api::{UiError, enc};
use crate::layout::{self, Nav};
use crate::session::{Sess, error_box};
use artstore_shared::auth::Role;
use artstore_shared::retention::Term;
use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use maud::{Markup, html};
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::collections::HashMap;

pub fn routes() -> Router<UiState> {
    Router::new()
        .route("/policies", get(list).post(create))
        .route("/policies/{name}", get(edit_page).post(edit))
        .route("/policies/{name}/delete", post(delete))
}

/// One policy as `GET /api/v1/retention-policies` answers it.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Policy {
    name: String,
    term: String,
    mode: String,
    disposition: String,
    description: String,
    in_use: bool,
    created_at: String,
    updated_at: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Policies {
    items: Vec<Policy>,
}

/// Documents per policy, from the search index: its `retention_policy` facet.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Usage {
    facets: UsageFacets,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct UsageFacets {
    retention_policy: Vec<FacetCount>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct FacetCount {
    value: String,
    count: u64,
}

/// Every live document (an empty query lists everything; the API's smallest page is one
/// hit), counted per policy. Deleted and disposed documents are not counted.
const USAGE_SEARCH: &str = "/api/v1/search?facets=retention_policy&limit=1";

/// How many documents each policy governs (a policy no document names is absent).
async fn usage(state: &UiState, token: &str) -> Result<HashMap<String, u64>, UiError> {
    let u = state.api.get::<Usage>(token, USAGE_SEARCH).await?;
    Ok(u.facets.retention_policy.into_iter().map(|c| (c.value, c.count)).collect())
}

fn plural(n: u64, one: &str) -> String {
    if n == 1 { format!("1 {one}") } else { format!("{n} {one}s") }
}

/// An ISO 8601 term in words (`P18M` → `1 year 6 months`), or `None` when it does not parse.
pub fn term_words(term: &str) -> Option<String> {
    let t = Term::parse(term).ok()?;
    let (years, months) = (t.months / 12, t.months % 12);
    let parts: Vec<String> = [(years, "year"), (months, "month"), (t.days, "day")]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| plural(n.into(), unit))
        .collect();
    Some(parts.join(" "))
}

fn term_cell(term: &str) -> Markup {
    html! {
        code { (term) }
        @if let Some(w) = term_words(term) { " " span.muted { "(" (w) ")" } }
    }
}

/// The usage of one policy: its documents (a link to them), or, when the index could not
/// be asked, only whether documents were ever stored under it (the admin's answer).
fn usage_cell(p: &Policy, counts: Option<&HashMap<String, u64>>) -> Markup {
    let Some(counts) = counts else {
        return html! { @if p.in_use { "in use by stored documents" } @else { span.muted { "unused" } } };
    };
    match counts.get(&p.name).copied().unwrap_or(0) {
        0 => html! {
            span.muted { "no documents" }
            // The admin keeps a policy once documents were stored under it, even when they
            // are gone (deleted, disposed) or not in the index yet.
            @if p.in_use { br; small.muted { "used before: it cannot be deleted" } }
        },
        n => html! {
            a href=(format!("/documents?retention_policy={}", enc(&p.name))) {
                (plural(n, "document")) span.vh { " under " (p.name) }
            }
        },
    }
}

fn mode_text(mode: &str) -> &'static str {
    match mode {
        "compliance" => "nobody, administrators included, can delete early or shorten the term",
        "governance" => "only a holder of the retention bypass can delete early (audited)",
        _ => "",
    }
}

fn disposition_text(d: &str) -> &'static str {
    match d {
        "dispose" => "content removed after the term; a tombstone keeps the digest and dates",
        "review" => "listed for a person to decide after the term",
        _ => "",
    }
}

fn select(id: &str, name: &str, options: &[&str], current: &str) -> Markup {
    html! {
        select id=(id) name=(name) {
            @for o in options { option value=(o) selected[*o == current] { (o) } }
        }
    }
}

async fn list(State(state): State<UiState>, s: Sess) -> Response {
    let title = "Retention policies";
    if !Nav::Policies.allowed(&s) {
        return layout::forbidden(&s, title, Nav::Policies);
    }
    let token = s.token();
    let (policies, counts) =
        tokio::join!(state.api.get::<Policies>(&token, "/api/v1/retention-policies"), usage(&state, &token));
    let admin = s.is(Role::Admin);
    let body = html! {
        p {
            "A policy is resolved into dates at ingest and written into each document's sidecar: "
            "changing a policy affects documents stored afterwards only."
        }
        @if let (Ok(p), Err(e)) = (&policies, &counts) && !p.items.is_empty() {
            div.msg.warn role="status" {
                "Document counts are unavailable: " (e.message().trim_end_matches('.'))
                ". Usage shows only whether documents were ever stored under each policy."
            }
        }
        @match &policies {
            Err(e) => (error_box(e)),
            Ok(p) if p.items.is_empty() => p.muted { "No retention policy yet." },
            Ok(p) => div.table-wrap { table {
                caption.vh { "Retention policies" }
                thead { tr {
                    th scope="col" { "Policy" } th scope="col" { "Term" } th scope="col" { "Mode" }
                    th scope="col" { "Disposition" } th scope="col" { "Usage" } th scope="col" { "Description" }
                    @if admin { th scope="col" { "Actions" } }
                } }
                tbody { @for p in &p.items { tr {
                    th scope="row" { (p.name) }
                    td { (term_cell(&p.term)) }
                    td { span class=(format!("badge {}", p.mode)) title=(mode_text(&p.mode)) { (p.mode) } }
                    td { span title=(disposition_text(&p.disposition)) { (p.disposition) } }
                    td { (usage_cell(p, counts.as_ref().ok())) }
                    td { (p.description) }
                    @if admin { td { div.cell-actions {
                        a href=(format!("/policies/{}", enc(&p.name))) { "Change" span.vh { " " (p.name) } }
                        @if !p.in_use {
                            form.inline-form method="post" action=(format!("/policies/{}/delete", enc(&p.name)))
                                data-confirm=(format!("Delete the retention policy {}? No document uses it yet.", p.name)) {
                                (layout::csrf(&s))
                                button.danger type="submit" { "Delete" span.vh { " " (p.name) } }
                            }
                        }
                    } } }
                } } }
            } },
        }
        @if admin {
            h2 { "Create a policy" }
            form.grid-form method="post" action="/policies" {
                (layout::csrf(&s))
                label for="p-name" { "Name" }
                input #p-name name="name" required pattern="[A-Za-z0-9._@-]{1,64}" placeholder="tax-records";
                label for="p-term" { "Term" }
                input #p-term name="term" required placeholder="P7Y" aria-describedby="p-term-hint";
                div.full { small #p-term-hint .muted { "ISO 8601: years, months, weeks, days — P7Y, P18M, P30D, P1Y6M." } }
                label for="p-mode" { "Mode" }
                (select("p-mode", "mode", &["governance", "compliance"], "governance"))
                label for="p-disp" { "After the term" }
                (select("p-disp", "disposition", &["review", "dispose"], "review"))
                label for="p-desc" { "Description" }
                input #p-desc name="description";
                div.full {
                    small.muted {
                        "compliance: " (mode_text("compliance")) ". governance: " (mode_text("governance"))
                        ". review: " (disposition_text("review")) ". dispose: " (disposition_text("dispose")) "."
                    }
                }
                div.full { button type="submit" { "Create policy" } }
            }
        }
    };
    layout::page(&s, title, Nav::Policies, body).into_response()
}

async fn create(State(state): State<UiState>, s: Sess, f: Fields) -> Response {
    if !s.is(Role::Admin) {
        return not_allowed(&s, "create retention policies", "/policies");
    }
    let name = f.text("name");
    let body = json!({
        "name": name, "term": f.text("term").to_uppercase(), "mode": f.text("mode"),
        "disposition": f.text("disposition"), "description": f.text("description"),
    });
    let outcome = state
        .api
        .send(&s.token(), Method::POST, "/api/v1/retention-policies", Some(&body))
        .await
        .map(|_| format!("Retention policy {name} is created."));
    done(&s, outcome, "/policies")
}

async fn edit_page(State(state): State<UiState>, s: Sess, Path(name): Path<String>) -> Response {
    let title = format!("Retention policy {name}");
    if !Nav::Policies.allowed(&s) {
        return layout::forbidden(&s, &title, Nav::Policies);
    }
    let p = state.api.get::<Policy>(&s.token(), &format!("/api/v1/retention-policies/{}", enc(&name))).await;
    let admin = s.is(Role::Admin);
    let body = html! {
        p { a href="/policies" { "← All retention policies" } }
        @match &p {
            Err(e) => (error_box(e)),
            Ok(p) => {
                dl.fields {
                    dt { "Term" } dd { (term_cell(&p.term)) }
                    dt { "Mode" } dd { (p.mode) " — " (mode_text(&p.mode)) }
                    dt { "After the term" } dd { (p.disposition) " — " (disposition_text(&p.disposition)) }
                    dt { "Usage" } dd { @if p.in_use { "in use by stored documents (it cannot be deleted)" } @else { "unused" } }
                    dt { "Description" } dd { (p.description) }
                    dt { "Created" } dd { (layout::time(&p.created_at)) }
                    dt { "Last changed" } dd { (layout::time(&p.updated_at)) }
                }
                @if admin {
                    h2 { "Change" }
                    p.muted {
                        @if p.mode == "compliance" {
                            "A compliance policy's term can be lengthened, never shortened, and its mode cannot be weakened. "
                        } @else {
                            "Switching a governance policy to compliance cannot be undone. "
                        }
                        "Documents already stored keep the dates written into their sidecars."
                    }
                    form.grid-form method="post" action=(format!("/policies/{}", enc(&p.name))) {
                        (layout::csrf(&s))
                        label for="p-term" { "Term" }
                        input #p-term name="term" required value=(p.term);
                        @if p.mode == "compliance" {
                            input type="hidden" name="mode" value="compliance";
                        } @else {
                            label for="p-mode" { "Mode" }
                            (select("p-mode", "mode", &["governance", "compliance"], &p.mode))
                        }
                        label for="p-disp" { "After the term" }
                        (select("p-disp", "disposition", &["review", "dispose"], &p.disposition))
                        label for="p-desc" { "Description" }
                        input #p-desc name="description" value=(p.description);
                        div.full { button type="submit" { "Save policy" } }
                    }
                    @if !p.in_use {
                        h2 { "Delete" }
                        form method="post" action=(format!("/policies/{}/delete", enc(&p.name)))
                            data-confirm=(format!("Delete the retention policy {}? No document uses it yet.", p.name)) {
                            (layout::csrf(&s))
                            button.danger type="submit" { "Delete " (p.name) }
                        }
                    }
                }
            }
        }
    };
    layout::page(&s, &title, Nav::Policies, body).into_response()
}

/// The fields of the change form that differ from the policy as it is.
fn policy_changes(cur: &Policy, f: &Fields) -> Map<String, Value> {
    let mut patch = Map::new();
    let term = f.text("term").to_uppercase();
    for (key, new, old) in [
        ("term", term.as_str(), cur.term.as_str()),
        ("mode", f.get("mode").unwrap_or(&cur.mode), cur.mode.as_str()),
        ("disposition", f.get("disposition").unwrap_or(&cur.disposition), cur.disposition.as_str()),
    ] {
        if !new.is_empty() && new != old {
            patch.insert(key.into(), json!(new));
        }
    }
    let desc = f.text("description");
    if desc != cur.description {
        patch.insert("description".into(), json!(desc));
    }
    patch
}

async fn edit(State(state): State<UiState>, s: Sess, Path(name): Path<String>, f: Fields) -> Response {
    let back = format!("/policies/{}", enc(&name));
    if !s.is(Role::Admin) {
        return not_allowed(&s, "change retention policies", &back);
    }
    let outcome = async {
        let path = format!("/api/v1/retention-policies/{}", enc(&name));
        let cur = state.api.get::<Policy>(&s.token(), &path).await?;
        let patch = policy_changes(&cur, &f);
        if patch.is_empty() {
            return Ok("Nothing changed.".to_owned());
        }
        let what = patch.keys().cloned().collect::<Vec<_>>().join(", ");
        state
            .api
            .send(&s.token(), Method::PATCH, &path, Some(&Value::Object(patch)))
            .await
            .map_err(|e| UiError { title: format!("Policy {name} was not changed. {}", e.title), ..e })?;
        Ok(format!("Retention policy {name} saved ({what})."))
    }
    .await;
    done(&s, outcome, &back)
}

async fn delete(State(state): State<UiState>, s: Sess, Path(name): Path<String>) -> Response {
    if !s.is(Role::Admin) {
        return not_allowed(&s, "delete retention policies", "/policies");
    }
    let path = format!("/api/v1/retention-policies/{}", enc(&name));
    let outcome = match state.api.send(&s.token(), Method::DELETE, &path, None).await {
        Ok(_) => Ok(format!("Retention policy {name} is deleted.")),
        Err(e) if e.status == 409 => Err(UiError {
            detail: format!(
                "{}. A policy that documents were stored under stays: their sidecars name it, and it explains their dates",
                e.detail
            ),
            title: format!("Policy {name} was not deleted. {}", e.title),
            ..e
        }),
        Err(e) => Err(e),
    };
    done(&s, outcome, "/policies")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_read_as_words() {
        assert_eq!(term_words("P7Y").as_deref(), Some("7 years"));
        assert_eq!(term_words("P18M").as_deref(), Some("1 year 6 months"));
        assert_eq!(term_words("P1Y2W").as_deref(), Some("1 year 14 days"));
        assert_eq!(term_words("P1D").as_deref(), Some("1 day"));
        assert_eq!(term_words("seven years"), None);
    }

    #[test]
    fn only_changes_are_patched() {
        let cur = Policy {
            name: "tax".into(),
            term: "P7Y".into(),
            mode: "compliance".into(),
            disposition: "dispose".into(),
            ..Default::default()
        };
        let f = Fields(vec![
            ("term".into(), "p10y".into()),
            ("mode".into(), "compliance".into()),
            ("disposition".into(), "dispose".into()),
            ("description".into(), "".into()),
        ]);
        assert_eq!(Value::Object(policy_changes(&cur, &f)), json!({"term": "P10Y"}));
        let same = Fields(vec![("term".into(), "P7Y".into())]);
        assert!(policy_changes(&cur, &same).is_empty());
    }

    /// What the fake search saw: its query string and `Authorization`.
    type Seen = std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>;

    /// A fake API with four policies, three of them used; `search` is the search answer
    /// (`None`: the query role is down).
    fn fake_api(search: Option<Value>, seen: Seen) -> Router {
        use axum::extract::RawQuery;
        use axum::http::{HeaderMap, StatusCode, header};
        let list = || async {
            axum::Json(json!({"items": [
                {"name": "tax-records", "term": "P7Y", "mode": "compliance", "disposition": "dispose", "in_use": true},
                {"name": "hr@corp", "term": "P1Y", "mode": "governance", "disposition": "review", "in_use": true},
                {"name": "emptied", "term": "P1M", "mode": "governance", "disposition": "dispose", "in_use": true},
                {"name": "draft", "term": "P1M", "mode": "governance", "disposition": "review", "in_use": false},
            ]}))
        };
        let search = move |RawQuery(q): RawQuery, h: HeaderMap| {
            let (answer, seen) = (search.clone(), seen.clone());
            async move {
                let auth = h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or_default();
                seen.lock().unwrap().push((q.unwrap_or_default(), auth.to_owned()));
                match answer {
                    Some(v) => axum::Json(v).into_response(),
                    None => {
                        let p = json!({"title": "Service Unavailable", "detail": "no query node is reachable"});
                        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(p)).into_response()
                    }
                }
            }
        };
        Router::new().route("/api/v1/retention-policies", get(list)).route("/api/v1/search", get(search))
    }

    async fn policies_page(search: Option<Value>) -> (String, Vec<(String, String)>) {
        let seen = Seen::default();
        let api = crate::pages::testkit::fake_api(fake_api(search, seen.clone()), "admin").await;
        let mut c = crate::pages::testkit::Client::signed_in(&api).await;
        seen.lock().unwrap().clear();
        let page = c.get("/policies").await;
        assert_eq!(page.status, 200, "{}", page.body);
        let seen = seen.lock().unwrap().clone();
        (page.body, seen)
    }

    #[tokio::test]
    async fn usage_is_counted_in_documents_with_a_link_to_them() {
        let counts = json!({"total": 3, "hits": [], "facets": {"retention_policy": [
            {"value": "tax-records", "count": 2}, {"value": "hr@corp", "count": 1},
        ]}});
        let (body, seen) = policies_page(Some(counts)).await;
        assert_eq!(seen, vec![("facets=retention_policy&limit=1".to_owned(), "Bearer t".to_owned())], "one search");
        assert!(body.contains(r#"<a href="/documents?retention_policy=tax-records">2 documents<"#), "{body}");
        assert!(body.contains(r#"<a href="/documents?retention_policy=hr%40corp">1 document<"#), "{body}");
        // The documents page searches by the policy the link names.
        let target = super::super::documents::SearchParams::parse("retention_policy=hr%40corp");
        assert!(target.api_query().starts_with("retention_policy=hr%40corp&"), "{}", target.api_query());
        assert_eq!(body.matches("no documents").count(), 2, "{body}");
        assert_eq!(body.matches("used before: it cannot be deleted").count(), 1, "only the emptied policy");
        assert!(!body.contains("unavailable") && !body.contains("in use by stored documents"), "{body}");
        // Deleting stays the admin's call: only the never-used policy offers it.
        assert!(body.contains(r#"action="/policies/draft/delete""#), "{body}");
        for used in ["tax-records", "hr%40corp", "emptied"] {
            assert!(!body.contains(&format!(r#"action="/policies/{used}/delete""#)), "{used}: {body}");
        }
    }

    #[tokio::test]
    async fn without_the_index_usage_falls_back_to_in_use() {
        let (body, seen) = policies_page(None).await;
        assert_eq!(seen.len(), 1);
        assert!(
            body.contains(
                "Document counts are unavailable: Service Unavailable: no query node is reachable. \
                 Usage shows only whether documents were ever stored under each policy."
            ),
            "{body}"
        );
        assert_eq!(body.matches("in use by stored documents").count(), 3, "{body}");
        assert!(body.contains("unused"), "{body}");
        assert!(!body.contains("/documents?retention_policy=") && !body.contains("no documents"), "{body}");
        assert!(body.contains(r#"action="/policies/draft/delete""#), "{body}");
        assert!(!body.contains(r#"action="/policies/emptied/delete""#), "{body}");
    }
}
