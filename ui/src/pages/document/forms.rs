//! The forms of a document's page (description, tags and metadata; legal hold; retention;
//! restore): each a POST that flashes the API's answer and returns to the page.

use super::{Draft, bad_id, fetch_sidecar, parse_id, render};
use crate::UiState;
use crate::api::enc;
use crate::layout;
use crate::pages::{self, Fields};
use crate::session::{Sess, Session};
use artstore_shared::auth::Permission;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::NaiveDate;
use reqwest::Method;
use serde_json::{Map, Value, json};
use uuid::Uuid;

/// A JSON merge patch (RFC 7386) that turns `old` into `new`: removed keys become `null`,
/// changed nested objects are patched key by key. (A `null` inside `new` cannot be kept: a
/// merge patch reads it as a removal.)
fn merge_diff(old: &Map<String, Value>, new: &Map<String, Value>) -> Map<String, Value> {
    let mut patch = Map::new();
    for k in old.keys() {
        if !new.contains_key(k) {
            patch.insert(k.clone(), Value::Null);
        }
    }
    for (k, v) in new {
        match (old.get(k), v) {
            (Some(o), n) if o == n => {}
            (Some(Value::Object(o)), Value::Object(n)) => {
                patch.insert(k.clone(), Value::Object(merge_diff(o, n)));
            }
            _ => {
                patch.insert(k.clone(), v.clone());
            }
        }
    }
    patch
}

/// Tags as typed: separated by commas or lines, trimmed, without blanks and repeats.
fn split_tags(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for t in text.split([',', '\n']).map(str::trim).filter(|t| !t.is_empty()) {
        if !out.iter().any(|o| o == t) {
            out.push(t.to_owned());
        }
    }
    out
}

/// The metadata field of the edit form as a JSON object, or a sentence saying what is wrong.
fn parse_metadata(text: &str) -> Result<Map<String, Value>, String> {
    if text.trim().is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err("Metadata must be a JSON object, like {\"customer\": \"ACME\"}.".to_owned()),
        Err(e) => Err(format!("Metadata is not valid JSON: {e}. Example: {{\"customer\": \"ACME\", \"year\": 2024}}")),
    }
}

/// The document a form acts on and the page to return to, if the user may do `what`
/// (otherwise the answer that says why not, sent as it is: boxing it would gain nothing).
#[allow(clippy::result_large_err)]
fn target(s: &Session, id: &str, p: Permission, what: &str) -> Result<(Uuid, String), Response> {
    let back = format!("/documents/{}", enc(id));
    if !s.can(p) {
        return Err(pages::not_allowed(s, what, &back));
    }
    let uuid = parse_id(id).map_err(|_| pages::done(s, Err(bad_id(id)), "/documents"))?;
    Ok((uuid, back))
}

/// `POST /documents/{id}/metadata`: `tags`, `description`, `metadata` (JSON), and
/// `metadata_was` (what the form showed) → a merge patch of only what changed.
pub(super) async fn edit_metadata(
    State(state): State<UiState>,
    s: Sess,
    Path(id): Path<String>,
    f: Fields,
) -> Response {
    let (uuid, back) =
        match target(&s, &id, Permission::UpdateMetadata, "change a document's description, tags or metadata") {
            Ok(t) => t,
            Err(r) => return r,
        };
    let metadata_text = f.0.iter().find(|(k, _)| k == "metadata").map(|(_, v)| v.clone()).unwrap_or_default();
    let new_meta = match parse_metadata(&metadata_text) {
        Ok(m) => m,
        Err(error) => {
            let draft = Draft {
                tags: f.text("tags"),
                description: f.0.iter().find(|(k, _)| k == "description").map(|(_, v)| v.clone()).unwrap_or_default(),
                metadata: metadata_text,
                error,
            };
            return render(&state, &s, &id, Some(draft)).await;
        }
    };
    let token = s.token();
    let old_meta = match f.get("metadata_was").and_then(|t| serde_json::from_str::<Map<String, Value>>(t).ok()) {
        Some(m) => m,
        None => match fetch_sidecar(&state, &token, uuid).await {
            Ok((sc, _)) => sc.metadata,
            Err(e) => return pages::done(&s, Err(e), &back),
        },
    };
    let mut patch = Map::new();
    patch.insert("description".into(), f.get("description").map_or(Value::Null, |d| json!(d)));
    patch.insert("tags".into(), json!(split_tags(&f.text("tags"))));
    let diff = merge_diff(&old_meta, &new_meta);
    if !diff.is_empty() {
        patch.insert("metadata".into(), Value::Object(diff));
    }
    let r =
        state.api.send(&token, Method::PATCH, &format!("/api/v1/files/{uuid}"), Some(&Value::Object(patch))).await.map(
            |v| match v["revision"].as_u64() {
                Some(rev) => format!("Saved the description, tags and metadata (revision {rev})."),
                None => "Saved the description, tags and metadata.".to_owned(),
            },
        );
    pages::done(&s, r, &back)
}

/// `POST /documents/{id}/legal-hold`: `enabled` (`true`/`false`) and `reason`.
pub(super) async fn legal_hold(State(state): State<UiState>, s: Sess, Path(id): Path<String>, f: Fields) -> Response {
    let enable = f.get("enabled") == Some("true");
    let (perm, what) = if enable {
        (Permission::Protect, "set a legal hold")
    } else {
        (Permission::LiftLegalHold, "lift a legal hold")
    };
    let (uuid, back) = match target(&s, &id, perm, what) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let reason = f.text("reason");
    if enable && reason.is_empty() {
        s.flash(false, "Give a reason for the legal hold.");
        return Redirect::to(&back).into_response();
    }
    let body = json!({"enabled": enable, "reason": reason});
    let r = state.api.send(&s.token(), Method::PUT, &format!("/api/v1/files/{uuid}/legal-hold"), Some(&body)).await;
    if r.is_ok() {
        tracing::info!(user = %s.user, file = %uuid, enabled = enable, reason = %reason, "legal hold changed from the UI");
    }
    let r = r.map(|_| {
        let said = if reason.is_empty() { String::new() } else { format!(" Reason: {reason}.") };
        if enable { format!("Legal hold set.{said}") } else { format!("Legal hold lifted.{said}") }
    });
    pages::done(&s, r, &back)
}

/// The retention date of the form (a calendar day) as the API's RFC 3339 instant.
fn retain_until_of(day: &str) -> Result<String, String> {
    let d = NaiveDate::parse_from_str(day.trim(), "%Y-%m-%d")
        .map_err(|_| format!("{day:?} is not a date; choose one in the calendar (YYYY-MM-DD)."))?;
    Ok(format!("{}T00:00:00Z", d.format("%Y-%m-%d")))
}

/// `POST /documents/{id}/retention`: `retain_until` (a date) and an optional stronger `mode`.
pub(super) async fn extend_retention(
    State(state): State<UiState>,
    s: Sess,
    Path(id): Path<String>,
    f: Fields,
) -> Response {
    let (uuid, back) = match target(&s, &id, Permission::Protect, "extend a retention") {
        Ok(t) => t,
        Err(r) => return r,
    };
    let until = match retain_until_of(&f.text("retain_until")) {
        Ok(u) => u,
        Err(m) => {
            s.flash(false, m);
            return Redirect::to(&back).into_response();
        }
    };
    let mut body = json!({"retain_until": until});
    if let Some(m) = f.get("mode").filter(|m| matches!(*m, "governance" | "compliance")) {
        body["mode"] = json!(m);
    }
    let r = state
        .api
        .send(&s.token(), Method::PUT, &format!("/api/v1/files/{uuid}/retention"), Some(&body))
        .await
        .map(|_| format!("Retention extended until {}.", layout::time(&until)));
    pages::done(&s, r, &back)
}

/// `POST /documents/{id}/restore`: `days` the staged copy stays readable.
pub(super) async fn restore(State(state): State<UiState>, s: Sess, Path(id): Path<String>, f: Fields) -> Response {
    let (uuid, back) = match target(&s, &id, Permission::Restore, "restore archived content") {
        Ok(t) => t,
        Err(r) => return r,
    };
    let days = match f.get("days").map(str::parse::<u32>) {
        None => 7,
        Some(Ok(d)) if (1..=3650).contains(&d) => d,
        Some(_) => {
            s.flash(false, "The number of days must be a whole number from 1.");
            return Redirect::to(&back).into_response();
        }
    };
    let r = state
        .api
        .send(&s.token(), Method::POST, &format!("/api/v1/files/{uuid}/restore"), Some(&json!({"days": days})))
        .await
        .map(|v| {
            let restore = &v["content"]["restore"];
            match restore["state"].as_str() {
                Some("ready") => match restore["expires_at"].as_str() {
                    Some(t) => format!("The content is readable until {}.", layout::time(t)),
                    None => "The content is readable.".to_owned(),
                },
                _ => format!(
                    "Restore requested: the content is being staged from the cold tier and stays readable for {days} days once ready."
                ),
            }
        });
    pages::done(&s, r, &back)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_merge_patch_removes_what_was_removed() {
        let old = json!({"a": 1, "b": {"x": 1, "y": 2}, "c": "same"});
        let new = json!({"b": {"x": 1, "z": 3}, "c": "same", "d": [1]});
        let patch = merge_diff(old.as_object().unwrap(), new.as_object().unwrap());
        assert_eq!(Value::Object(patch), json!({"a": null, "b": {"y": null, "z": 3}, "d": [1]}));
        assert!(merge_diff(old.as_object().unwrap(), old.as_object().unwrap()).is_empty());
    }

    #[test]
    fn metadata_errors_read_well() {
        assert!(parse_metadata("").unwrap().is_empty());
        assert_eq!(parse_metadata(r#"{"k": 1}"#).unwrap()["k"], 1);
        assert!(parse_metadata("[1]").unwrap_err().contains("JSON object"));
        let e = parse_metadata("{\"k\": }").unwrap_err();
        assert!(e.starts_with("Metadata is not valid JSON") && e.contains("line 1"), "{e}");
    }

    #[test]
    fn tags_and_dates_from_the_form() {
        assert_eq!(split_tags(" a, b,,a\nc "), vec!["a", "b", "c"]);
        assert_eq!(retain_until_of("2031-05-06").unwrap(), "2031-05-06T00:00:00Z");
        assert!(retain_until_of("06.05.2031").is_err());
    }
}
