//! Types every ArtStore role shares: the error model and RFC 9457 responses, token
//! verification, the clock, telemetry, and the health and metrics endpoints.

pub mod audit_chain;
pub mod auth;
pub mod client_addr;
pub mod clients;
pub mod clock;
pub mod discovery;
pub mod error;
pub mod events;
pub mod front_proxy;
pub mod health;
pub mod limits;
pub mod retention;
pub mod routing;
pub mod sidecar;
pub mod telemetry;
pub mod tls;
pub mod upload;
pub mod workers;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{ApiError, ErrorCode};
