//! The page frame and small view helpers shared by every page.

use crate::session::{CSRF_FIELD, Session};
use artstore_shared::auth::{Permission, Role};
use maud::{DOCTYPE, Markup, html};

/// The sections of the navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Dashboard,
    Documents,
    Upload,
    Elements,
    Users,
    Policies,
    Audit,
    Keys,
}

impl Nav {
    /// Every section with its link and label.
    pub const ALL: [(Nav, &'static str, &'static str); 8] = [
        (Nav::Dashboard, "/", "Dashboard"),
        (Nav::Documents, "/documents", "Documents"),
        (Nav::Upload, "/upload", "Upload"),
        (Nav::Elements, "/elements", "Storage elements"),
        (Nav::Users, "/users", "Users"),
        (Nav::Policies, "/policies", "Retention policies"),
        (Nav::Audit, "/audit", "Audit"),
        (Nav::Keys, "/keys", "Keys"),
    ];

    /// Whether the user may open this section (the server checks again on every page).
    pub fn allowed(self, s: &Session) -> bool {
        match self {
            Nav::Dashboard | Nav::Documents | Nav::Policies => s.can(Permission::ReadMetadata),
            Nav::Upload => s.can(Permission::Create),
            Nav::Elements => s.is(Role::Admin) || s.can(Permission::ManageElement),
            // The admin API lets auditors read users, service accounts and keys; only
            // admins change them.
            Nav::Users | Nav::Keys => s.is(Role::Admin) || s.is(Role::Auditor),
            Nav::Audit => s.can(Permission::ReadAudit),
        }
    }
}

/// A page without navigation (login, refusals).
pub fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head { (head(title)) }
            body { (body) }
        }
    }
}

fn head(title: &str) -> Markup {
    html! {
        meta charset="utf-8";
        meta name="viewport" content="width=device-width, initial-scale=1";
        meta name="htmx-config" content=r#"{"includeIndicatorStyles":false,"allowEval":false}"#;
        title { (title) " · ArtStore" }
        link rel="stylesheet" href="/static/app.css";
        script src="/static/htmx.min.js" defer {}
        script src="/static/app.js" defer {}
    }
}

/// A full page: navigation for the user's roles, the queued messages, then `body`.
pub fn page(s: &Session, title: &str, active: Nav, body: Markup) -> Markup {
    let flash = s.take_flash();
    html! {
        (DOCTYPE)
        html lang="en" {
            head { (head(title)) }
            body data-csrf=(s.csrf) {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/" { "ArtStore" }
                    nav aria-label="Main" {
                        ul {
                            @for (n, href, label) in Nav::ALL {
                                @if n.allowed(s) {
                                    li { a href=(href) aria-current=[(n == active).then_some("page")] { (label) } }
                                }
                            }
                        }
                    }
                    form.logout method="post" action="/logout" {
                        (csrf(s))
                        span.who { (s.user) " · " (s.roles.join(", ")) }
                        button type="submit" { "Sign out" }
                    }
                }
                main #main {
                    h1 { (title) }
                    @for f in &flash {
                        div class=(if f.ok { "msg ok" } else { "msg err" }) role=(if f.ok { "status" } else { "alert" }) { (f.text) }
                    }
                    (body)
                }
            }
        }
    }
}

/// The hidden CSRF field of a form.
pub fn csrf(s: &Session) -> Markup {
    html! { input type="hidden" name=(CSRF_FIELD) value=(s.csrf); }
}

/// A page region saying the user may not see this (the API would refuse it too).
pub fn forbidden(s: &Session, title: &str, active: Nav) -> axum::response::Response {
    use axum::response::IntoResponse;
    let body = html! { div.msg.err role="alert" { "Your roles (" (s.roles.join(", ")) ") do not allow this page." } };
    (axum::http::StatusCode::FORBIDDEN, page(s, title, active, body)).into_response()
}

/// Bytes in binary units.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

/// An RFC 3339 time as `YYYY-MM-DD HH:MM` UTC (or as given when it does not parse).
pub fn time(s: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&chrono::Utc).format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|_| s.to_owned())
}

/// A usage bar with its text.
pub fn bar(used: u64, total: u64) -> Markup {
    let pct = used.saturating_mul(100).checked_div(total).unwrap_or(0).min(100);
    html! {
        div.bar role="meter" aria-valuemin="0" aria-valuemax="100" aria-valuenow=(pct) aria-label="used space" {
            span class=(format!("fill w{}", pct / 5 * 5)) {}
        }
        small { (bytes(used)) " used of " (bytes(total)) " (" (pct) "%)" }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_well() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(5 * 1024 * 1024 * 1024), "5.0 GiB");
    }

    #[test]
    fn times_are_utc() {
        assert_eq!(time("2026-01-02T03:04:05+01:00"), "2026-01-02 02:04 UTC");
        assert_eq!(time("soon"), "soon");
    }
}
