//! The pages. Each module serves its own routes; every handler takes the signed-in user
//! ([`crate::session::Sess`]), acts with their token, and checks their roles before it shows
//! a page or an action (the API checks again).

use crate::UiState;
use axum::Router;

pub mod audit;
pub mod dashboard;
pub mod document;
pub mod documents;
pub mod elements;
pub mod keys;
pub mod policies;
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
