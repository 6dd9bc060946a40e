//! The sections of a document's page (actions, preview, details, versions, edit form, legal hold
//! and retention, archive, audit trail) and the small formatting helpers they share.

use super::content::{PreviewKind, TEXT_PREVIEW_BYTES};
use super::{Draft, Trail, doc_path};
use crate::api::{UiError, enc};
use crate::layout;
use crate::session::{self, Session};
use artstore_shared::auth::Permission;
use artstore_shared::sidecar::{DocState, RestoreState, RetentionMode, Sidecar};
use chrono::Utc;
use maud::{Markup, html};
use serde_json::Value;

pub(super) fn actions(s: &Session, sc: &Sidecar, can_read: bool) -> Markup {
    html! {
        div.actions {
            @if can_read {
                a #download .button href=(format!("{}/download", doc_path(sc))) download { "Download" }
            }
            @if s.can(Permission::Create) && !sc.state.is_tombstone() {
                a #new-version .button.secondary href=(format!("/upload?document_id={}", sc.document_id)) {
                    "Upload a new version"
                }
            }
            a href="/documents" { "Back to the documents" }
        }
    }
}

pub(super) fn preview_section(
    sc: &Sidecar,
    kind: PreviewKind,
    can_read: bool,
    text: Option<Result<(String, bool), UiError>>,
) -> Markup {
    let src = format!("{}/preview", doc_path(sc));
    html! {
        section #preview-section aria-labelledby="preview-heading" {
            h2 #preview-heading { "Preview" }
            @if sc.state.is_tombstone() {
                p.muted { "The content is gone (" (sc.state.as_str()) "); only this record remains." }
            } @else if !can_read {
                @if sc.state == DocState::Archived {
                    p.muted { "The content is archived in the cold tier. Request a restore below to read it." }
                } @else {
                    p.muted { "Your roles do not allow reading the content." }
                }
            } @else {
                @match kind {
                    PreviewKind::Pdf => {
                        iframe #preview .preview src=(src) title=(format!("Preview of {}", sc.original_name)) {}
                    }
                    PreviewKind::Image => {
                        img #preview .preview src=(src) alt=(format!("Preview of {}", sc.original_name));
                    }
                    PreviewKind::Text => {
                        @match text {
                            Some(Ok((t, more))) => {
                                pre #preview .preview-text tabindex="0" aria-label=(format!("First part of {}", sc.original_name)) { (t) }
                                @if more {
                                    p.muted { "The first " (layout::bytes(TEXT_PREVIEW_BYTES as u64)) " of " (layout::bytes(sc.size)) " are shown. Download the document for the rest." }
                                }
                            }
                            Some(Err(e)) => (session::error_box(&e)),
                            None => {}
                        }
                    }
                    PreviewKind::None => {
                        p.muted { "No preview for " code { (sc.content_type) } "; download the document to open it." }
                    }
                }
            }
        }
    }
}

fn json_pretty(v: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

fn when(t: &chrono::DateTime<Utc>) -> Markup {
    let s = t.to_rfc3339();
    html! { time datetime=(s) { (layout::time(&s)) } }
}

fn mode_str(m: RetentionMode) -> &'static str {
    match m {
        RetentionMode::None => "none",
        RetentionMode::Governance => "governance",
        RetentionMode::Compliance => "compliance",
    }
}

pub(super) fn fields_section(sc: &Sidecar, element: Option<&str>) -> Markup {
    let r = &sc.retention;
    let now = Utc::now();
    html! {
        section #details aria-labelledby="details-heading" {
            h2 #details-heading { "Details" }
            dl.fields {
                dt { "Name" } dd { (sc.original_name) }
                dt { "State" } dd { span class=(format!("badge state {}", sc.state.as_str())) { (sc.state.as_str()) } }
                dt { "File id" } dd.mono { (sc.file_id) }
                dt { "Document id" } dd {
                    span.mono { (sc.document_id) } " "
                    a href=(format!("/documents?document_id={}", sc.document_id)) { "search its versions" }
                }
                dt { "Version" } dd { (sc.version) }
                dt { "Revision" } dd { (sc.revision) }
                dt { "Content type" } dd { (sc.content_type) }
                dt { "Size" } dd { (layout::bytes(sc.size)) " (" (sc.size) " bytes)" }
                dt { "SHA-256" } dd.mono { (sc.sha256) }
                dt { "Stored name" } dd.mono { (sc.stored_name) }
                dt { "Storage element" } dd { (element.unwrap_or("unknown")) }
                dt { "Content location" } dd {
                    (json_value_str(&serde_json::to_value(sc.content.location).unwrap_or_default()))
                    @if let Some(rs) = &sc.content.restore {
                        " · restore "
                        (json_value_str(&serde_json::to_value(rs.state).unwrap_or_default()))
                        ", requested " (when(&rs.requested_at)) " by " (rs.requested_by)
                        " for " (rs.days) " days"
                        @if let Some(t) = &rs.ready_at { ", ready " (when(t)) }
                        @if let Some(t) = &rs.expires_at { ", readable until " (when(t)) }
                    }
                }
                dt { "Created" } dd { (when(&sc.created_at)) " by " (sc.created_by) }
                dt { "Updated" } dd { (when(&sc.updated_at)) " by " (sc.updated_by) }
                dt { "Description" } dd {
                    @match sc.description.as_deref().filter(|d| !d.is_empty()) {
                        Some(d) => (d),
                        None => span.muted { "none" },
                    }
                }
                dt { "Tags" } dd {
                    @if sc.tags.is_empty() { span.muted { "none" } }
                    @for (i, t) in sc.tags.iter().enumerate() {
                        @if i > 0 { ", " }
                        a href=(format!("/documents?tag={}", enc(t))) { (t) }
                    }
                }
                dt { "Metadata" } dd {
                    @if sc.metadata.is_empty() { span.muted { "none" } }
                    @else { pre.mono { (json_pretty(&sc.metadata)) } }
                }
                dt { "Retention" } dd {
                    span class=(format!("badge {}", mode_str(r.mode))) { (mode_str(r.mode)) }
                    @if let Some(u) = &r.retain_until {
                        " until " (when(u))
                        @if r.is_under_retention(now) { " (term running)" } @else if r.is_expired(now) { " (term ended)" }
                    }
                }
                dt { "Retention policy" } dd { (r.policy.as_deref().unwrap_or("none")) }
                dt { "Disposition" } dd { (json_value_str(&serde_json::to_value(r.disposition).unwrap_or_default())) }
                dt { "Legal hold" } dd {
                    @if r.legal_hold {
                        span.badge.hold { "Legal hold" }
                        @if let Some(why) = &r.legal_hold_reason { " " (why) }
                    } @else { "no" }
                }
                @if let Some(t) = &sc.tombstone {
                    dt { "Removed" } dd {
                        (when(&t.at)) " by " (t.by) " (" (t.reason) ")"
                        @if t.retention_bypassed { ", governance retention bypassed" }
                    }
                }
                dt { "Sidecar schema" } dd.mono { (sc.schema) }
                @for (k, v) in sc.extra.iter().chain(&sc.retention.extra).chain(&sc.content.extra) {
                    dt { (k) } dd.mono { (json_value_str(v)) }
                }
            }
        }
    }
}

/// A JSON value as text: strings without quotes.
fn json_value_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub(super) fn versions_section(sc: &Sidecar, versions: Result<Vec<Sidecar>, UiError>) -> Markup {
    html! {
        section #versions aria-labelledby="versions-heading" {
            h2 #versions-heading { "Versions" }
            @match versions {
                Err(e) => (session::error_box(&e)),
                Ok(vs) => {
                    div.table-wrap {
                        table {
                            caption.vh { "Every version of this document" }
                            thead { tr { th { "Version" } th { "Name" } th { "State" } th { "Size" } th { "Created" } th { "By" } th { "Element" } } }
                            tbody {
                                @for v in &vs {
                                    tr {
                                        td {
                                            @if v.file_id == sc.file_id {
                                                strong aria-current="page" { (v.version) " (this one)" }
                                            } @else {
                                                a href=(doc_path(v)) { "Version " (v.version) }
                                            }
                                        }
                                        td { (v.original_name) }
                                        td { span class=(format!("badge state {}", v.state.as_str())) { (v.state.as_str()) } }
                                        td { (layout::bytes(v.size)) }
                                        td { (when(&v.created_at)) }
                                        td { (v.created_by) }
                                        td { (v.extra.get("element_id").map(json_value_str).unwrap_or_default()) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

pub(super) fn edit_section(s: &Session, sc: &Sidecar, draft: Option<Draft>) -> Markup {
    if !s.can(Permission::UpdateMetadata) || sc.state.is_tombstone() {
        return html! {};
    }
    let metadata_now = if sc.metadata.is_empty() { String::new() } else { json_pretty(&sc.metadata) };
    let d = draft.unwrap_or_else(|| Draft {
        tags: sc.tags.join(", "),
        description: sc.description.clone().unwrap_or_default(),
        metadata: metadata_now,
        error: String::new(),
    });
    html! {
        section #edit aria-labelledby="edit-heading" {
            h2 #edit-heading { "Description, tags and metadata" }
            @if !d.error.is_empty() {
                div #edit-error .msg.err role="alert" { (d.error) }
            }
            form #edit-form .grid-form method="post" action=(format!("{}/metadata", doc_path(sc))) {
                (layout::csrf(s))
                input type="hidden" name="metadata_was" value=(serde_json::to_string(&sc.metadata).unwrap_or_default());
                label for="tags" { "Tags" }
                input #tags name="tags" value=(d.tags) aria-describedby="tags-help";
                small #tags-help .full.muted { "Separated by commas." }
                label for="description" { "Description" }
                textarea #description name="description" rows="3" { (d.description) }
                label for="metadata" { "Metadata (JSON object)" }
                textarea #metadata .mono name="metadata" rows="6" aria-describedby="metadata-help"
                    aria-invalid=[(!d.error.is_empty()).then_some("true")] { (d.metadata) }
                small #metadata-help .full.muted { "For example {\"customer\": \"ACME\", \"year\": 2024}. Keys you remove are removed." }
                div.full { button type="submit" { "Save changes" } }
            }
        }
    }
}

pub(super) fn protection_section(s: &Session, sc: &Sidecar) -> Markup {
    if sc.state.is_tombstone() {
        return html! {};
    }
    let r = &sc.retention;
    let set_hold = !r.legal_hold && s.can(Permission::Protect);
    let lift_hold = r.legal_hold && s.can(Permission::LiftLegalHold);
    let extend = s.can(Permission::Protect);
    if !(set_hold || lift_hold || extend) {
        return html! {};
    }
    let tomorrow = (Utc::now() + chrono::Duration::days(1)).date_naive();
    // The earliest day that extends the term (a date is kept from 00:00 UTC).
    let min = r
        .retain_until
        .map(|u| u.date_naive() + chrono::Duration::days(1))
        .filter(|d| *d > tomorrow)
        .unwrap_or(tomorrow);
    html! {
        section #protection aria-labelledby="protection-heading" {
            h2 #protection-heading { "Legal hold and retention" }
            @if set_hold {
                form #hold-form .inline-form method="post" action=(format!("{}/legal-hold", doc_path(sc))) {
                    (layout::csrf(s))
                    input type="hidden" name="enabled" value="true";
                    label for="hold-reason" { "Reason" }
                    input #hold-reason name="reason" required size="40" placeholder="e.g. litigation 2026-17";
                    button type="submit" { "Set legal hold" }
                }
                p.muted { small { "A hold blocks deletion and disposition until it is lifted. The reason is kept in the document's sidecar while the hold stands, and in the element's journal." } }
            }
            @if lift_hold {
                form #hold-form .inline-form method="post" action=(format!("{}/legal-hold", doc_path(sc)))
                    data-confirm="Lift the legal hold of this document?" {
                    (layout::csrf(s))
                    input type="hidden" name="enabled" value="false";
                    label for="lift-reason" { "Reason" }
                    input #lift-reason name="reason" size="40";
                    button.danger type="submit" { "Lift legal hold" }
                }
            } @else if r.legal_hold {
                p { span.badge.hold { "Legal hold" } " Lifting it needs the admin role or the legal-hold:lift permission." }
            }
            @if extend {
                form #retention-form .inline-form method="post" action=(format!("{}/retention", doc_path(sc))) {
                    (layout::csrf(s))
                    label for="retain-until" { "Keep until" }
                    input #retain-until type="date" name="retain_until" required min=(min.format("%Y-%m-%d").to_string())
                        aria-describedby="retention-help";
                    @if r.mode != RetentionMode::Compliance {
                        label for="retention-mode" { "Mode" }
                        select #retention-mode name="mode" {
                            option value="" { "keep " (mode_str(r.mode)) }
                            @if r.mode == RetentionMode::None { option value="governance" { "governance" } }
                            option value="compliance" { "compliance (cannot be undone)" }
                        }
                    }
                    button type="submit" { "Extend retention" }
                }
                p #retention-help .muted {
                    small {
                        @match r.retain_until {
                            Some(u) => { "Kept until " (when(&u)) " now. " }
                            None => { "No retention date yet. " }
                        }
                        "Retention can only be extended, never shortened; the new date is kept from 00:00 UTC."
                    }
                }
            }
        }
    }
}

pub(super) fn archive_section(s: &Session, sc: &Sidecar) -> Markup {
    if sc.state != DocState::Archived {
        return html! {};
    }
    let restore = sc.content.restore.as_ref();
    html! {
        section #archive aria-labelledby="archive-heading" {
            h2 #archive-heading { "Archive" }
            p #restore-state {
                span.badge.archived { "archived" } " "
                @match restore {
                    None => "The content is in the cold tier; no restore has been requested.",
                    Some(r) if r.state == RestoreState::Staging => {
                        "A restore is under way (requested " (when(&r.requested_at)) " by " (r.requested_by) ")."
                    }
                    Some(r) => {
                        "A staged copy is readable"
                        @if let Some(t) = &r.expires_at { " until " (when(t)) }
                        "."
                    }
                }
            }
            @if s.can(Permission::Restore) {
                form #restore-form .inline-form method="post" action=(format!("{}/restore", doc_path(sc))) {
                    (layout::csrf(s))
                    label for="restore-days" { "Readable for (days)" }
                    input #restore-days type="number" name="days" min="1" max="365" value="7" required;
                    button type="submit" { "Request restore" }
                }
            }
        }
    }
}

/// A JSON value as short text: `key: value` pairs, strings unquoted, nulls left out.
fn compact(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(compact).collect::<Vec<_>>().join(", "),
        Value::Object(o) => o
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| match v {
                Value::Object(_) => format!("{k}: ({})", compact(v)),
                _ => format!("{k}: {}", compact(v)),
            })
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    }
}

/// What a change did, in a few words: the reason of a legal hold, the term of a retention
/// extension, the other details as `key: value`.
fn change_detail(action: &str, detail: &Value) -> String {
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).filter(|t| !t.is_empty()).map(str::to_owned);
    let term = |v: &Value| {
        let mode = text(v, "mode").unwrap_or_else(|| "none".to_owned());
        match text(v, "retain_until") {
            Some(u) => format!("{mode} until {}", layout::time(&u)),
            None => mode,
        }
    };
    match action {
        "legal_hold_set" | "legal_hold_lifted" => {
            let mut out = match text(detail, "reason") {
                Some(r) => format!("reason: {r}"),
                None => "no reason given".to_owned(),
            };
            if action == "legal_hold_lifted"
                && let Some(was) = text(detail, "was_reason")
            {
                out.push_str(&format!(" (held for: {was})"));
            }
            out
        }
        "retention_extended" => format!("{} (was {})", term(&detail["after"]), term(&detail["before"])),
        _ => compact(detail),
    }
}

pub(super) fn audit_section(sc: &Sidecar, element: Option<&str>, trail: Option<Result<Trail, UiError>>) -> Markup {
    let element = element.unwrap_or("that holds it");
    html! {
        section #audit aria-labelledby="audit-heading" {
            h2 #audit-heading { "Audit trail" }
            p {
                "Created " (when(&sc.created_at)) " by " (sc.created_by)
                "; last changed " (when(&sc.updated_at)) " by " (sc.updated_by) " (revision " (sc.revision) ")."
            }
            @match trail {
                None => p.muted { "Your roles do not include reading the audit trail." },
                Some(Err(e)) => (session::error_box(&e)),
                Some(Ok(t)) if t.entries.is_empty() => p.muted {
                    "The audit journal of element " (element) " has no entries for this document."
                },
                Some(Ok(t)) => {
                    div.table-wrap {
                        table #audit-trail {
                            caption.vh { "Every change of this document, newest first" }
                            thead { tr { th { "When" } th { "Who" } th { "Action" } th { "Revision" } th { "Detail" } } }
                            tbody {
                                @for e in &t.entries {
                                    tr {
                                        td { time datetime=(e.at) { (layout::time(&e.at)) } }
                                        td { (e.actor) }
                                        td { (e.action.replace('_', " ")) }
                                        td { @if let Some(r) = e.revision { (r) } }
                                        td { (change_detail(&e.action, &e.detail)) }
                                    }
                                }
                            }
                        }
                    }
                    p.muted {
                        @if !t.complete { "The newest " (t.entries.len()) " changes are shown. " }
                        "From the hash-chained audit journal of element " (element) "."
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_change_reads_in_a_few_words() {
        let hold = json!({"was": false, "now": true, "reason": "case 2026-17", "was_reason": null});
        assert_eq!(change_detail("legal_hold_set", &hold), "reason: case 2026-17");
        let lift = json!({"was": true, "now": false, "reason": null, "was_reason": "case 2026-17"});
        assert_eq!(change_detail("legal_hold_lifted", &lift), "no reason given (held for: case 2026-17)");
        let ext = json!({"before": {"mode": "governance", "retain_until": null},
                         "after": {"mode": "compliance", "retain_until": "2031-05-06T00:00:00Z"}});
        assert_eq!(change_detail("retention_extended", &ext), "compliance until 2031-05-06 00:00 UTC (was governance)");
        assert_eq!(change_detail("update", &json!({"changed": ["description", "tags"]})), "changed: description, tags");
        assert_eq!(change_detail("archive", &Value::Null), "");
    }
}
