//! The public routing table: which role answers each public request. `artstore standalone`
//! serves every role on one port with it ([`one_port`]), a cluster's front proxy routes by
//! the same rules (docs/routing.md), and a test checks that every route a role serves is
//! routed to that role.
//!
//! Storage elements are not in the table: their API stays on internal listeners, reached
//! through the ingester (writes) and the query role (reads).

use axum::Router;
use axum::extract::Request;
use axum::http::Method;
use axum::response::IntoResponse;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use tower::ServiceExt;

/// The role that answers a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// Users, service accounts, policies, elements registry, keys, audit, cluster, tokens.
    Admin,
    /// Uploads and every write on an existing document.
    Ingester,
    /// Search and every read of files, content, versions and a file's audit trail.
    Query,
    /// The web UI: everything else.
    Ui,
}

impl Target {
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Admin => "admin",
            Target::Ingester => "ingester",
            Target::Query => "query",
            Target::Ui => "ui",
        }
    }
}

/// Which methods a rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Methods {
    Any,
    /// GET and HEAD.
    Read,
    /// Anything but GET and HEAD.
    Write,
}

impl Methods {
    fn matches(self, m: &Method) -> bool {
        let read = *m == Method::GET || *m == Method::HEAD;
        match self {
            Methods::Any => true,
            Methods::Read => read,
            Methods::Write => !read,
        }
    }
}

/// How a rule's path matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathMatch {
    /// Exactly this path.
    Exact(&'static str),
    /// This path, or anything below it (`/api/v1/users` matches `/api/v1/users/ann`).
    Tree(&'static str),
    /// `/api/v1/files/{id}` followed by exactly this (`""`, `"/content"`, …).
    FileSub(&'static str),
}

impl PathMatch {
    fn matches(self, path: &str) -> bool {
        match self {
            PathMatch::Exact(p) => path == p,
            PathMatch::Tree(p) => path == p || path.strip_prefix(p).is_some_and(|rest| rest.starts_with('/')),
            PathMatch::FileSub(sub) => path
                .strip_prefix("/api/v1/files/")
                .and_then(|rest| rest.split_once('/').map_or(Some((rest, "")), |(id, s)| Some((id, s))))
                .is_some_and(|(id, s)| {
                    !id.is_empty() && (s.is_empty() && sub.is_empty() || !sub.is_empty() && s == &sub[1..])
                }),
        }
    }

    /// The rule as text for documentation and front proxies.
    pub fn describe(self) -> String {
        match self {
            PathMatch::Exact(p) => p.to_owned(),
            PathMatch::Tree(p) => format!("{p}, {p}/…"),
            PathMatch::FileSub(s) => format!("/api/v1/files/{{id}}{s}"),
        }
    }
}

/// One rule of the table.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub methods: Methods,
    pub path: PathMatch,
    pub target: Target,
}

const fn rule(methods: Methods, path: PathMatch, target: Target) -> Rule {
    Rule { methods, path, target }
}

use Methods::{Any, Read, Write};
use PathMatch::{Exact, FileSub, Tree};
use Target::{Admin, Ingester, Query};

/// The table, first match wins; a request no rule matches goes to the UI.
pub const TABLE: &[Rule] = &[
    rule(Any, Exact("/.well-known/jwks.json"), Admin),
    rule(Any, Tree("/api/v1/auth"), Admin),
    rule(Any, Tree("/api/v1/users"), Admin),
    rule(Any, Tree("/api/v1/service-accounts"), Admin),
    rule(Any, Tree("/api/v1/retention-policies"), Admin),
    rule(Any, Tree("/api/v1/elements"), Admin),
    rule(Any, Tree("/api/v1/keys"), Admin),
    rule(Any, Tree("/api/v1/audit"), Admin),
    rule(Any, Tree("/api/v1/cluster"), Admin),
    rule(Any, Exact("/api/v1/openapi.json"), Admin),
    rule(Write, Exact("/api/v1/files"), Ingester),
    rule(Any, Tree("/api/v1/uploads"), Ingester),
    rule(Write, FileSub(""), Ingester),
    rule(Any, FileSub("/legal-hold"), Ingester),
    rule(Any, FileSub("/retention"), Ingester),
    rule(Any, FileSub("/restore"), Ingester),
    rule(Read, FileSub(""), Query),
    rule(Any, FileSub("/content"), Query),
    rule(Any, FileSub("/similar"), Query),
    rule(Any, FileSub("/audit"), Query),
    rule(Any, Tree("/api/v1/documents"), Query),
    rule(Any, Tree("/api/v1/search"), Query),
    rule(Any, Tree("/api/v1/index"), Query),
    rule(Any, Tree("/health"), Admin),
    rule(Any, Exact("/metrics"), Admin),
];

/// The role that answers `method path`; `None` for an API path no role serves (a 404
/// problem, never a UI page).
pub fn target(method: &Method, path: &str) -> Option<Target> {
    match TABLE.iter().find(|r| r.methods.matches(method) && r.path.matches(path)) {
        Some(r) => Some(r.target),
        None if path == "/api" || path.starts_with("/api/") => None,
        None => Some(Target::Ui),
    }
}

/// The routers of the roles served on one listener; a role may be added after the
/// listener started (standalone serves the admin before the element that reads its keys).
#[derive(Clone, Default)]
pub struct Routes(Arc<RwLock<HashMap<Target, Router>>>);

impl std::fmt::Debug for Routes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let roles: Vec<_> = self.read().keys().map(|t| t.as_str()).collect();
        f.debug_tuple("Routes").field(&roles).finish()
    }
}

impl Routes {
    /// Serves `target`'s requests with `router` from now on.
    pub fn set(&self, target: Target, router: Router) {
        self.0.write().unwrap_or_else(|p| p.into_inner()).insert(target, router);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Target, Router>> {
        self.0.read().unwrap_or_else(|p| p.into_inner())
    }
}

/// One router that sends each request to its role's router by [`TABLE`]. A role not (yet)
/// on this listener answers 503 problem+json; an API path no role serves, 404.
pub fn one_port(routes: Routes) -> Router {
    Router::new().fallback(move |req: Request| {
        let to = target(req.method(), req.uri().path());
        let router = to.and_then(|t| routes.read().get(&t).cloned());
        async move {
            match (to, router) {
                (Some(_), Some(r)) => r.oneshot(req).await.unwrap_or_else(|e| match e {}),
                (Some(t), None) => crate::ApiError::new(
                    crate::ErrorCode::Unavailable,
                    format!("the {} role is not serving on this listener (starting, or not part of it)", t.as_str()),
                )
                .into_response(),
                (None, _) => crate::ApiError::not_found("no such route").into_response(),
            }
        }
    })
}

/// The table as a Markdown table (docs/routing.md is checked against it).
pub fn markdown() -> String {
    let mut out = String::from("| methods | path | role |\n|---|---|---|\n");
    for r in TABLE {
        let m = match r.methods {
            Methods::Any => "any",
            Methods::Read => "GET, HEAD",
            Methods::Write => "POST, PUT, PATCH, DELETE",
        };
        out.push_str(&format!("| {m} | `{}` | {} |\n", r.path.describe(), r.target.as_str()));
    }
    out.push_str("| any | any other `/api/…` path | none: 404 problem+json |\n");
    out.push_str("| any | everything else | ui |\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_public_route_goes_to_its_role() {
        let g = Method::GET;
        let p = Method::POST;
        let cases: &[(&Method, &str, Option<Target>)] = &[
            (&p, "/api/v1/auth/token", Some(Admin)),
            (&g, "/.well-known/jwks.json", Some(Admin)),
            (&g, "/api/v1/users/ann", Some(Admin)),
            (&Method::PATCH, "/api/v1/elements/e1", Some(Admin)),
            (&p, "/api/v1/elements/e1/mode", Some(Admin)),
            (&p, "/api/v1/keys/rotate", Some(Admin)),
            (&g, "/api/v1/audit", Some(Admin)),
            (&p, "/api/v1/files", Some(Ingester)),
            (&p, "/api/v1/uploads", Some(Ingester)),
            (&Method::PATCH, "/api/v1/uploads/abc", Some(Ingester)),
            (&Method::HEAD, "/api/v1/uploads/abc", Some(Ingester)),
            (&Method::PATCH, "/api/v1/files/f1", Some(Ingester)),
            (&Method::DELETE, "/api/v1/files/f1", Some(Ingester)),
            (&Method::PUT, "/api/v1/files/f1/legal-hold", Some(Ingester)),
            (&Method::PUT, "/api/v1/files/f1/retention", Some(Ingester)),
            (&p, "/api/v1/files/f1/restore", Some(Ingester)),
            (&g, "/api/v1/files/f1", Some(Query)),
            (&Method::HEAD, "/api/v1/files/f1/content", Some(Query)),
            (&g, "/api/v1/files/f1/similar", Some(Query)),
            (&g, "/api/v1/files/f1/audit", Some(Query)),
            (&g, "/api/v1/documents/d1/versions", Some(Query)),
            (&g, "/api/v1/search", Some(Query)),
            (&g, "/api/v1/search/suggest", Some(Query)),
            (&p, "/api/v1/index/rebuild", Some(Query)),
            (&g, "/", Some(Target::Ui)),
            (&g, "/documents/f1", Some(Target::Ui)),
            (&g, "/static/app.css", Some(Target::Ui)),
            (&g, "/api/v1/usersx", None),
            (&g, "/api/v1/files//content", None),
            (&g, "/api/v2/anything", None),
        ];
        for (m, path, want) in cases {
            assert_eq!(target(m, path), *want, "{m} {path}");
        }
    }

    #[test]
    fn docs_show_the_table() {
        let doc = include_str!("../../docs/routing.md");
        assert!(doc.contains(&markdown()), "docs/routing.md is out of date; put this table in it:\n{}", markdown());
    }

    #[test]
    fn markdown_names_every_rule() {
        let md = markdown();
        assert_eq!(md.lines().count(), TABLE.len() + 4);
        assert!(md.contains("| POST, PUT, PATCH, DELETE | `/api/v1/files` | ingester |"));
    }
}
