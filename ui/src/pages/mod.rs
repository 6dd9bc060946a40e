//! The pages. Each module serves its own routes; every handler takes the signed-in user
//! ([`crate::session::Sess`]), acts with their token, and checks their roles before it shows
//! a page or an action (the API checks again).

use crate::UiState;
use crate::api::UiError;
use crate::session::Session;
use axum::Router;
use axum::extract::{FromRequest, Request};
use axum::response::{IntoResponse, Redirect, Response};

pub mod audit;
pub mod dashboard;
pub mod document;
pub mod documents;
pub mod elements;
pub mod keys;
pub mod policies;
#[cfg(test)]
mod testkit;
pub mod upload;
pub mod users;

pub fn routes() -> Router<UiState> {
    Router::new()
        .merge(dashboard::routes())
        .merge(documents::routes())
        .merge(document::routes())
        .merge(upload::routes())
        .merge(elements::routes())
        .merge(users::routes())
        .merge(policies::routes())
        .merge(audit::routes())
        .merge(keys::routes())
}

/// The fields of a submitted form, repeated names kept (checkbox groups send one pair per
/// ticked box, which a struct cannot hold).
#[derive(Debug, Default)]
pub struct Fields(pub Vec<(String, String)>);

impl Fields {
    /// The first value of `name`, trimmed; `None` when missing or blank.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.trim()).filter(|v| !v.is_empty())
    }

    /// The first value of `name` as typed (passwords keep their spaces).
    pub fn raw(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The first value of `name`, trimmed, or an empty string.
    pub fn text(&self, name: &str) -> String {
        self.get(name).unwrap_or_default().to_owned()
    }

    /// Every non-blank value of `name`, in form order.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.0.iter().filter(|(k, v)| k == name && !v.trim().is_empty()).map(|(_, v)| v.trim().to_owned()).collect()
    }
}

impl<S: Send + Sync> FromRequest<S> for Fields {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Fields, Response> {
        let axum::Form(kv) =
            axum::Form::<Vec<(String, String)>>::from_request(req, state).await.map_err(IntoResponse::into_response)?;
        Ok(Fields(kv))
    }
}

/// Shows the outcome of a form's API call on the next page and sends the browser there
/// (303, so a reload does not send the form again).
pub fn done(s: &Session, outcome: Result<String, UiError>, to: &str) -> Response {
    match outcome {
        Ok(text) => s.flash(true, text),
        Err(e) => s.flash(false, e.message()),
    }
    Redirect::to(to).into_response()
}

/// Refuses a form the user's roles do not allow (the API would refuse it too).
pub fn not_allowed(s: &Session, what: &str, to: &str) -> Response {
    s.flash(false, format!("Your roles ({}) do not allow you to {what}.", s.roles.join(", ")));
    Redirect::to(to).into_response()
}
