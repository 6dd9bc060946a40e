//! (being written)

use crate::UiState;
use axum::Router;

pub fn routes() -> Router<UiState> {
    Router::new()
}
