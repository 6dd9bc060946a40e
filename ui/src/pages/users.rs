//! Users and service accounts: create, roles, disable and enable, password reset, removal;
//! a service account's secret is shown once, on the page that answers its creation or
//! rotation. Admins change; auditors may look.

use super::{Fields, done, not_allowed};
use crate::UiState;
use crate::api::{UiError, enc};
use crate::layout::{self, Nav};
use crate::session::{Sess, Session, error_box};
use artstore_shared::auth::{LIFT_HOLD_PERMISSION, RETENTION_BYPASS_PERMISSION, Role};
use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use maud::{Markup, html};
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};

pub fn routes() -> Router<UiState> {
    Router::new()
        .route("/users", get(list).post(create_user))
        .route("/users/{username}", get(user_page))
        .route("/users/{username}/roles", post(user_roles))
        .route("/users/{username}/password", post(user_password))
        .route("/users/{username}/disable", post(user_disable))
        .route("/users/{username}/enable", post(user_enable))
        .route("/users/{username}/delete", post(user_delete))
        .route("/service-accounts", post(create_account))
        .route("/service-accounts/{client_id}", get(account_page).post(account_edit))
        .route("/service-accounts/{client_id}/disable", post(account_disable))
        .route("/service-accounts/{client_id}/enable", post(account_enable))
        .route("/service-accounts/{client_id}/rotate", post(account_rotate))
        .route("/service-accounts/{client_id}/delete", post(account_delete))
}

/// Every role and single permission a token may carry, with what it grants.
pub const ROLES: [(&str, &str); 7] = [
    ("reader", "reads metadata and content"),
    ("writer", "reader, plus uploads, metadata changes, deletes as retention allows, legal holds"),
    ("operator", "reader, plus element modes, restores from the cold tier, legal holds, the audit"),
    ("admin", "everything except the retention bypass"),
    ("auditor", "reads metadata, content and the audit; changes nothing"),
    (RETENTION_BYPASS_PERMISSION, "may delete under governance retention before its date (audited)"),
    (LIFT_HOLD_PERMISSION, "may lift legal holds"),
];

/// The roles a form ticked, in the order of [`ROLES`] (unknown values are passed on, the
/// API refuses them with its own message).
pub fn ticked_roles(f: &Fields) -> Vec<String> {
    let mut given = f.all("roles");
    let mut out: Vec<String> =
        ROLES.iter().map(|(r, _)| *r).filter(|r| given.iter().any(|g| g == r)).map(str::to_owned).collect();
    given.retain(|g| !ROLES.iter().any(|(r, _)| r == g));
    out.extend(given);
    out
}

/// The new password from a form with a confirmation field (untrimmed: spaces count).
fn new_password(f: &Fields) -> Result<String, UiError> {
    let p = f.raw("password").unwrap_or_default();
    if p.is_empty() {
        return Err(UiError::new(400, "Password missing", "type the new password twice"));
    }
    if f.raw("password2") != Some(p) {
        return Err(UiError::new(400, "Passwords differ", "the two passwords typed are not the same"));
    }
    Ok(p.to_owned())
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct User {
    username: String,
    roles: Vec<String>,
    disabled: bool,
    created_at: String,
    updated_at: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Account {
    client_id: String,
    roles: Vec<String>,
    description: String,
    disabled: bool,
    created_at: String,
    updated_at: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Items<T> {
    items: Vec<T>,
}

fn roles_fieldset(prefix: &str, current: &[String]) -> Markup {
    html! {
        fieldset.full.checks {
            legend { "Roles" }
            @for (r, what) in ROLES {
                @let id = format!("{prefix}-{}", r.replace(':', "-"));
                div {
                    input type="checkbox" id=(id) name="roles" value=(r) checked[current.iter().any(|c| c == r)];
                    " "
                    label for=(id) { (r) } " " small.muted { "— " (what) }
                }
            }
        }
    }
}

fn roles_text(roles: &[String]) -> Markup {
    html! {
        @if roles.is_empty() { span.muted { "none" } }
        @else { @for r in roles { span.badge { (r) } " " } }
    }
}

fn status_badge(disabled: bool) -> Markup {
    html! {
        @if disabled { span.badge.down { "disabled" } } @else { span.badge.ok { "enabled" } }
    }
}

/// A one-button form that changes something about `subject`.
fn action(s: &Session, path: String, text: &str, subject: &str, danger: bool, confirm: Option<String>) -> Markup {
    html! {
        form.inline-form method="post" action=(path) data-confirm=[confirm] {
            (layout::csrf(s))
            button.danger[danger].secondary[!danger] type="submit" { (text) span.vh { " " (subject) } }
        }
    }
}

async fn list(State(state): State<UiState>, s: Sess) -> Response {
    let title = "Users and service accounts";
    if !Nav::Users.allowed(&s) {
        return layout::forbidden(&s, title, Nav::Users);
    }
    let token = s.token();
    let (users, accounts) = tokio::join!(
        state.api.get::<Items<User>>(&token, "/api/v1/users"),
        state.api.get::<Items<Account>>(&token, "/api/v1/service-accounts"),
    );
    let admin = s.is(Role::Admin);
    let body = html! {
        h2 { "Users" }
        @match &users {
            Err(e) => (error_box(e)),
            Ok(u) => div.table-wrap { table {
                caption.vh { "Users" }
                thead { tr {
                    th scope="col" { "User" } th scope="col" { "Roles" } th scope="col" { "Status" }
                    th scope="col" { "Created" } @if admin { th scope="col" { "Actions" } }
                } }
                tbody { @for u in &u.items { tr {
                    th scope="row" { a href=(format!("/users/{}", enc(&u.username))) { (u.username) } }
                    td { (roles_text(&u.roles)) }
                    td { (status_badge(u.disabled)) }
                    td { (layout::time(&u.created_at)) }
                    @if admin { td { div.cell-actions {
                        a href=(format!("/users/{}", enc(&u.username))) { "Manage" span.vh { " " (u.username) } }
                        @if u.disabled {
                            (action(&s, format!("/users/{}/enable", enc(&u.username)), "Enable", &u.username, false, None))
                        } @else {
                            (action(&s, format!("/users/{}/disable", enc(&u.username)), "Disable", &u.username, false,
                                Some(format!("Disable {}? They can no longer sign in; tokens already issued stay valid until they expire.", u.username))))
                        }
                    } } }
                } } }
            } },
        }
        @if admin {
            details {
                summary { "Create a user" }
                form.grid-form method="post" action="/users" {
                    (layout::csrf(&s))
                    label for="u-name" { "User name" }
                    input #u-name name="username" required pattern="[A-Za-z0-9._@-]{1,64}" autocomplete="off";
                    label for="u-pass" { "Password" }
                    input #u-pass name="password" type="password" required minlength="8" autocomplete="new-password";
                    label for="u-pass2" { "Password again" }
                    input #u-pass2 name="password2" type="password" required minlength="8" autocomplete="new-password";
                    (roles_fieldset("new-user", &["reader".to_owned()]))
                    div.full { button type="submit" { "Create user" } }
                }
            }
        }
        h2 { "Service accounts" }
        p.muted { "Programs sign in with a client id and secret (client credentials) and act with the account's roles." }
        @match &accounts {
            Err(e) => (error_box(e)),
            Ok(a) if a.items.is_empty() => p.muted { "No service account." },
            Ok(a) => div.table-wrap { table {
                caption.vh { "Service accounts" }
                thead { tr {
                    th scope="col" { "Client id" } th scope="col" { "Description" } th scope="col" { "Roles" }
                    th scope="col" { "Status" } th scope="col" { "Created" }
                } }
                tbody { @for a in &a.items { tr {
                    th scope="row" { a href=(format!("/service-accounts/{}", enc(&a.client_id))) { (a.client_id) } }
                    td { (a.description) }
                    td { (roles_text(&a.roles)) }
                    td { (status_badge(a.disabled)) }
                    td { (layout::time(&a.created_at)) }
                } } }
            } },
        }
        @if admin {
            details {
                summary { "Create a service account" }
                form.grid-form method="post" action="/service-accounts" {
                    (layout::csrf(&s))
                    label for="sa-id" { "Client id" }
                    input #sa-id name="client_id" pattern="[A-Za-z0-9._@-]{1,64}" placeholder="optional: sa-… is generated" aria-describedby="sa-id-hint";
                    label for="sa-desc" { "Description" }
                    input #sa-desc name="description" placeholder="what the program is";
                    (roles_fieldset("new-sa", &[]))
                    div.full {
                        small #sa-id-hint .muted { "The secret is shown once, on the next page." }
                    }
                    div.full { button type="submit" { "Create service account" } }
                }
            }
        }
    };
    layout::page(&s, title, Nav::Users, body).into_response()
}

async fn create_user(State(state): State<UiState>, s: Sess, f: Fields) -> Response {
    if !s.is(Role::Admin) {
        return not_allowed(&s, "create users", "/users");
    }
    let outcome = async {
        let name = f.text("username");
        let password = new_password(&f)?;
        let body = json!({ "username": name, "password": password, "roles": ticked_roles(&f) });
        state.api.send(&s.token(), Method::POST, "/api/v1/users", Some(&body)).await?;
        Ok(format!("User {name} is created."))
    }
    .await;
    done(&s, outcome, "/users")
}

async fn user_page(State(state): State<UiState>, s: Sess, Path(name): Path<String>) -> Response {
    let title = format!("User {name}");
    if !Nav::Users.allowed(&s) {
        return layout::forbidden(&s, &title, Nav::Users);
    }
    let u = state.api.get::<User>(&s.token(), &format!("/api/v1/users/{}", enc(&name))).await;
    let admin = s.is(Role::Admin);
    let base = format!("/users/{}", enc(&name));
    let body = html! {
        p { a href="/users" { "← Users and service accounts" } }
        @match &u {
            Err(e) => (error_box(e)),
            Ok(u) => {
                dl.fields {
                    dt { "Roles" } dd { (roles_text(&u.roles)) }
                    dt { "Status" } dd { (status_badge(u.disabled)) }
                    dt { "Created" } dd { (layout::time(&u.created_at)) }
                    dt { "Last changed" } dd { (layout::time(&u.updated_at)) }
                }
                @if admin {
                    h2 { "Roles" }
                    form.grid-form method="post" action=(format!("{base}/roles")) {
                        (layout::csrf(&s))
                        (roles_fieldset("user", &u.roles))
                        div.full { button type="submit" { "Save roles" } }
                    }
                    h2 { "Reset the password" }
                    form.grid-form method="post" action=(format!("{base}/password")) {
                        (layout::csrf(&s))
                        label for="p1" { "New password" }
                        input #p1 name="password" type="password" required minlength="8" autocomplete="new-password";
                        label for="p2" { "New password again" }
                        input #p2 name="password2" type="password" required minlength="8" autocomplete="new-password";
                        div.full { button type="submit" { "Set password" } }
                    }
                    h2 { "Access" }
                    div.actions {
                        @if u.disabled {
                            (action(&s, format!("{base}/enable"), "Enable", &u.username, false, None))
                        } @else {
                            (action(&s, format!("{base}/disable"), "Disable", &u.username, false,
                                Some(format!("Disable {}? They can no longer sign in; tokens already issued stay valid until they expire.", u.username))))
                        }
                        (action(&s, format!("{base}/delete"), "Delete", &u.username, true,
                            Some(format!("Delete user {}? This cannot be undone; the audit chain keeps what they did.", u.username))))
                    }
                }
            }
        }
    };
    layout::page(&s, &title, Nav::Users, body).into_response()
}

/// PATCHes a user and flashes the outcome.
async fn patch_user(state: &UiState, s: &Session, name: &str, body: Value, ok: String) -> Result<String, UiError> {
    state.api.send(&s.token(), Method::PATCH, &format!("/api/v1/users/{}", enc(name)), Some(&body)).await?;
    Ok(ok)
}

async fn user_roles(State(state): State<UiState>, s: Sess, Path(name): Path<String>, f: Fields) -> Response {
    let back = format!("/users/{}", enc(&name));
    if !s.is(Role::Admin) {
        return not_allowed(&s, "change roles", &back);
    }
    let roles = ticked_roles(&f);
    let ok =
        format!("{name} now has the roles: {}.", if roles.is_empty() { "none".to_owned() } else { roles.join(", ") });
    let outcome = patch_user(&state, &s, &name, json!({ "roles": roles }), ok).await;
    done(&s, outcome, &back)
}

async fn user_password(State(state): State<UiState>, s: Sess, Path(name): Path<String>, f: Fields) -> Response {
    let back = format!("/users/{}", enc(&name));
    if !s.is(Role::Admin) {
        return not_allowed(&s, "reset passwords", &back);
    }
    let outcome = match new_password(&f) {
        Ok(p) => {
            patch_user(&state, &s, &name, json!({ "password": p }), format!("The password of {name} is changed.")).await
        }
        Err(e) => Err(e),
    };
    done(&s, outcome, &back)
}

async fn set_user_disabled(state: UiState, s: Sess, name: String, disabled: bool) -> Response {
    if !s.is(Role::Admin) {
        return not_allowed(&s, "disable or enable users", "/users");
    }
    let ok = format!("{name} is {}.", if disabled { "disabled" } else { "enabled" });
    let outcome = patch_user(&state, &s, &name, json!({ "disabled": disabled }), ok).await;
    done(&s, outcome, &format!("/users/{}", enc(&name)))
}

async fn user_disable(State(state): State<UiState>, s: Sess, Path(name): Path<String>) -> Response {
    set_user_disabled(state, s, name, true).await
}

async fn user_enable(State(state): State<UiState>, s: Sess, Path(name): Path<String>) -> Response {
    set_user_disabled(state, s, name, false).await
}

async fn user_delete(State(state): State<UiState>, s: Sess, Path(name): Path<String>) -> Response {
    if !s.is(Role::Admin) {
        return not_allowed(&s, "delete users", "/users");
    }
    let path = format!("/api/v1/users/{}", enc(&name));
    let outcome =
        state.api.send(&s.token(), Method::DELETE, &path, None).await.map(|_| format!("User {name} is deleted."));
    let to = if outcome.is_ok() { "/users".to_owned() } else { format!("/users/{}", enc(&name)) };
    done(&s, outcome, &to)
}

/// The page that shows a service account's secret, once.
fn secret_page(state: &UiState, s: &Session, v: &Value, created: bool) -> Response {
    let id = v.get("client_id").and_then(Value::as_str).unwrap_or_default();
    let secret = v.get("client_secret").and_then(Value::as_str).unwrap_or_default();
    let roles: Vec<String> = v
        .get("roles")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default();
    let title = if created { "Service account created" } else { "New secret" };
    let body = html! {
        div.msg.warn role="alert" {
            strong { "Copy the secret now. " }
            "It is shown only this once: ArtStore keeps only its hash and cannot show it again. "
            "If it is lost, rotate the secret."
        }
        dl.fields {
            dt { "Client id" } dd.mono { (id) }
            dt { "Client secret" } dd { code.secret { (secret) } }
            dt { "Roles" } dd { (roles_text(&roles)) }
        }
        @if !created { p { "The previous secret no longer works." } }
        p {
            "A program gets a token with: " br;
            code { "curl -d grant_type=client_credentials -d client_id=" (id) " -d client_secret=… " (state.api.url("/api/v1/auth/token")) }
        }
        p { a href=(format!("/service-accounts/{}", enc(id))) { "Continue to " (id) } }
    };
    layout::page(s, title, Nav::Users, body).into_response()
}

async fn create_account(State(state): State<UiState>, s: Sess, f: Fields) -> Response {
    if !s.is(Role::Admin) {
        return not_allowed(&s, "create service accounts", "/users");
    }
    let mut body = json!({ "roles": ticked_roles(&f), "description": f.text("description") });
    if let Some(id) = f.get("client_id") {
        body["client_id"] = json!(id);
    }
    match state.api.send(&s.token(), Method::POST, "/api/v1/service-accounts", Some(&body)).await {
        Ok(v) => secret_page(&state, &s, &v, true),
        Err(e) => done(&s, Err(e), "/users"),
    }
}

async fn account_page(State(state): State<UiState>, s: Sess, Path(id): Path<String>) -> Response {
    let title = format!("Service account {id}");
    if !Nav::Users.allowed(&s) {
        return layout::forbidden(&s, &title, Nav::Users);
    }
    let a = state.api.get::<Account>(&s.token(), &format!("/api/v1/service-accounts/{}", enc(&id))).await;
    let admin = s.is(Role::Admin);
    let base = format!("/service-accounts/{}", enc(&id));
    let body = html! {
        p { a href="/users" { "← Users and service accounts" } }
        @match &a {
            Err(e) => (error_box(e)),
            Ok(a) => {
                dl.fields {
                    dt { "Description" } dd { (a.description) }
                    dt { "Roles" } dd { (roles_text(&a.roles)) }
                    dt { "Status" } dd { (status_badge(a.disabled)) }
                    dt { "Created" } dd { (layout::time(&a.created_at)) }
                    dt { "Last changed" } dd { (layout::time(&a.updated_at)) }
                }
                @if admin {
                    h2 { "Roles and description" }
                    form.grid-form method="post" action=(base) {
                        (layout::csrf(&s))
                        label for="sa-desc" { "Description" }
                        input #sa-desc name="description" value=(a.description);
                        (roles_fieldset("sa", &a.roles))
                        div.full { button type="submit" { "Save" } }
                    }
                    h2 { "Secret and access" }
                    div.actions {
                        (action(&s, format!("{base}/rotate"), "Rotate secret", &a.client_id, false,
                            Some(format!("Rotate the secret of {}? The current secret stops working at once; the new one is shown once.", a.client_id))))
                        @if a.disabled {
                            (action(&s, format!("{base}/enable"), "Enable", &a.client_id, false, None))
                        } @else {
                            (action(&s, format!("{base}/disable"), "Disable", &a.client_id, false,
                                Some(format!("Disable {}? It can no longer get tokens; tokens already issued stay valid until they expire.", a.client_id))))
                        }
                        (action(&s, format!("{base}/delete"), "Delete", &a.client_id, true,
                            Some(format!("Delete service account {}? This cannot be undone.", a.client_id))))
                    }
                }
            }
        }
    };
    layout::page(&s, &title, Nav::Users, body).into_response()
}

async fn patch_account(state: &UiState, s: &Session, id: &str, body: Value) -> Result<Value, UiError> {
    state.api.send(&s.token(), Method::PATCH, &format!("/api/v1/service-accounts/{}", enc(id)), Some(&body)).await
}

async fn account_edit(State(state): State<UiState>, s: Sess, Path(id): Path<String>, f: Fields) -> Response {
    let back = format!("/service-accounts/{}", enc(&id));
    if !s.is(Role::Admin) {
        return not_allowed(&s, "change service accounts", &back);
    }
    let body = json!({ "roles": ticked_roles(&f), "description": f.text("description") });
    let outcome = patch_account(&state, &s, &id, body).await.map(|_| format!("Service account {id} saved."));
    done(&s, outcome, &back)
}

async fn set_account_disabled(state: UiState, s: Sess, id: String, disabled: bool) -> Response {
    let back = format!("/service-accounts/{}", enc(&id));
    if !s.is(Role::Admin) {
        return not_allowed(&s, "disable or enable service accounts", &back);
    }
    let outcome = patch_account(&state, &s, &id, json!({ "disabled": disabled }))
        .await
        .map(|_| format!("{id} is {}.", if disabled { "disabled" } else { "enabled" }));
    done(&s, outcome, &back)
}

async fn account_disable(State(state): State<UiState>, s: Sess, Path(id): Path<String>) -> Response {
    set_account_disabled(state, s, id, true).await
}

async fn account_enable(State(state): State<UiState>, s: Sess, Path(id): Path<String>) -> Response {
    set_account_disabled(state, s, id, false).await
}

async fn account_rotate(State(state): State<UiState>, s: Sess, Path(id): Path<String>) -> Response {
    let back = format!("/service-accounts/{}", enc(&id));
    if !s.is(Role::Admin) {
        return not_allowed(&s, "rotate secrets", &back);
    }
    match patch_account(&state, &s, &id, json!({ "rotate_secret": true })).await {
        Ok(v) if v.get("client_secret").is_some() => secret_page(&state, &s, &v, false),
        Ok(_) => done(&s, Err(UiError::new(502, "No secret", "the API did not answer a new secret")), &back),
        Err(e) => done(&s, Err(e), &back),
    }
}

async fn account_delete(State(state): State<UiState>, s: Sess, Path(id): Path<String>) -> Response {
    if !s.is(Role::Admin) {
        return not_allowed(&s, "delete service accounts", "/users");
    }
    let path = format!("/api/v1/service-accounts/{}", enc(&id));
    let outcome = state
        .api
        .send(&s.token(), Method::DELETE, &path, None)
        .await
        .map(|_| format!("Service account {id} is deleted."));
    let to = if outcome.is_ok() { "/users".to_owned() } else { format!("/service-accounts/{}", enc(&id)) };
    done(&s, outcome, &to)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(kv: &[(&str, &str)]) -> Fields {
        Fields(kv.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect())
    }

    #[test]
    fn roles_keep_a_stable_order() {
        let f = form(&[("roles", "auditor"), ("_csrf", "x"), ("roles", "reader"), ("roles", "retention:bypass")]);
        assert_eq!(ticked_roles(&f), ["reader", "auditor", "retention:bypass"]);
        assert!(ticked_roles(&form(&[])).is_empty());
        assert_eq!(ticked_roles(&form(&[("roles", "root")])), ["root"], "the API explains unknown roles");
    }

    #[test]
    fn passwords_must_match() {
        assert_eq!(new_password(&form(&[("password", "secret123"), ("password2", "secret123")])).unwrap(), "secret123");
        assert!(new_password(&form(&[("password", "secret123"), ("password2", "secret124")])).is_err());
        assert!(new_password(&form(&[("password", "secret123"), ("password2", "")])).is_err());
        assert!(new_password(&form(&[("password", ""), ("password2", "")])).is_err());
        // Spaces are part of a password.
        assert_eq!(
            new_password(&form(&[("password", " pass word "), ("password2", " pass word ")])).unwrap(),
            " pass word "
        );
    }

    #[tokio::test]
    async fn a_new_secret_is_shown_once_with_a_warning() {
        use std::sync::{Arc, Mutex};
        let seen = Arc::new(Mutex::new(Value::Null));
        let got = seen.clone();
        let create = move |axum::Json(b): axum::Json<Value>| {
            let got = got.clone();
            async move {
                *got.lock().unwrap() = b.clone();
                let mut v = b;
                v["client_secret"] = json!("s3cr3t-value");
                axum::Json(v)
            }
        };
        let api = Router::new().route("/api/v1/service-accounts", post(create));
        let api = crate::pages::testkit::fake_api(api, "admin").await;
        let mut c = crate::pages::testkit::Client::signed_in(&api).await;
        let page = c
            .post("/service-accounts", &[("client_id", "scanner"), ("description", "the scanner"), ("roles", "writer")])
            .await;
        assert_eq!(page.status, 200);
        assert!(page.body.contains("s3cr3t-value"));
        assert!(page.body.contains("shown only this once"));
        assert_eq!(
            *seen.lock().unwrap(),
            json!({"roles": ["writer"], "description": "the scanner", "client_id": "scanner"})
        );
    }
}
