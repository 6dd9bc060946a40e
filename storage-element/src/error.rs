//! What can go wrong in the storage element, one variant per case a caller can act on, and
//! how each maps onto the shared error codes.

use crate::element::{ElementMode, Operation};
use crate::sidecar::{DocState, SidecarError};
use artstore_shared::{ApiError, ErrorCode};
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No file with this id on this element.
    #[error("file {0} not found")]
    NotFound(Uuid),
    /// No document with this id on this element.
    #[error("document {0} not found")]
    DocumentNotFound(Uuid),
    /// An upload named a file id (`file_id`) this element already holds.
    #[error("file {0} already exists on this element")]
    Exists(Uuid),
    /// The file was deleted or disposed; only its tombstone remains.
    #[error("file {id} is {}; only its tombstone sidecar remains", state.as_str())]
    Gone { id: Uuid, state: DocState },
    /// The element's mode does not allow the operation.
    #[error("element is in mode {}, which does not allow {}", mode.as_str(), op.describe())]
    Mode { mode: ElementMode, op: Operation },
    /// Content is in the cold tier and no restored copy is readable.
    #[error("file {0} is archived in the cold tier; request a restore with POST /api/v1/files/{0}/restore")]
    Archived(Uuid),
    /// Mode transitions only go forward.
    #[error("mode can only move forward (edit → rw → ro → ar); element is in {} and cannot go to {}", from.as_str(), to.as_str())]
    ModeBackwards { from: ElementMode, to: ElementMode },
    /// Compliance retention forbids this before the date.
    #[error("file {id} is under compliance retention until {until}; nobody can delete it or shorten its term")]
    Compliance { id: Uuid, until: String },
    /// Governance retention forbids this without an explicit, permitted bypass.
    #[error(
        "file {id} is under governance retention until {until}; deleting it early needs the retention:bypass permission and bypass_governance=true"
    )]
    Governance { id: Uuid, until: String },
    /// A bypass was asked for by a caller without the permission.
    #[error("bypassing governance retention needs the retention:bypass permission")]
    BypassDenied,
    /// A legal hold blocks deletion and disposition.
    #[error("file {0} is under legal hold")]
    LegalHold(Uuid),
    /// Retention dates can be extended, never shortened.
    #[error("retain_until can only be extended: current {current}, requested {requested}")]
    Shorten { current: String, requested: String },
    /// Retention mode can be strengthened, never weakened.
    #[error("retention mode can only be strengthened (none → governance → compliance)")]
    Weaken,
    /// A restore is already under way.
    #[error("a restore of file {0} is already under way")]
    RestoreInProgress(Uuid),
    /// The client sent something impossible.
    #[error("{0}")]
    BadRequest(String),
    /// The upload's digest did not match the one the client announced.
    #[error("content digest mismatch: client sent sha-256 {expected}, received content has {actual}")]
    DigestMismatch { expected: String, actual: String },
    /// The upload is larger than the configured limit.
    #[error("upload exceeds the limit of {0} bytes")]
    TooLarge(u64),
    /// A sidecar on disk cannot be read; it is reported, never guessed at.
    #[error(transparent)]
    Corrupt(#[from] SidecarError),
    /// The element cannot take writes now (journal failure, drain timeout, cache outage).
    #[error("{0}")]
    Unavailable(String),
    /// The element's file system has no room for this write (below `min_free_bytes`, or
    /// the OS said so); nothing was stored.
    #[error("{0}")]
    Full(String),
    /// An I/O failure.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// Whether an I/O error means the file system is full (ENOSPC, or EDQUOT: over quota).
pub fn is_full(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull || e.kind() == std::io::ErrorKind::QuotaExceeded
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        use StoreError::*;
        let detail = e.to_string();
        match e {
            NotFound(_) | DocumentNotFound(_) => ApiError::typed(ErrorCode::NotFound, "not-found", detail),
            Gone { state, .. } => ApiError::typed(ErrorCode::Gone, "gone", detail).with("state", state.as_str()),
            Mode { mode, .. } => {
                ApiError::typed(ErrorCode::Conflict, "mode-refused", detail).with("mode", mode.as_str())
            }
            Archived(_) => ApiError::typed(ErrorCode::Forbidden, "archived", detail).with("mode", "ar"),
            ModeBackwards { from, .. } => {
                ApiError::typed(ErrorCode::Conflict, "mode-transition", detail).with("mode", from.as_str())
            }
            Compliance { .. } => ApiError::typed(ErrorCode::Forbidden, "retention-compliance", detail),
            Governance { .. } => ApiError::typed(ErrorCode::Forbidden, "retention-governance", detail),
            BypassDenied => ApiError::typed(ErrorCode::Forbidden, "retention-bypass-denied", detail),
            LegalHold(_) => ApiError::typed(ErrorCode::Conflict, "legal-hold", detail),
            Exists(id) => ApiError::typed(ErrorCode::Conflict, "file-exists", detail).with("file_id", id.to_string()),
            Shorten { .. } => ApiError::typed(ErrorCode::Conflict, "retention-shorten", detail),
            Weaken => ApiError::typed(ErrorCode::Conflict, "retention-weaken", detail),
            RestoreInProgress(_) => ApiError::typed(ErrorCode::Conflict, "restore-in-progress", detail),
            BadRequest(_) => ApiError::typed(ErrorCode::BadRequest, "bad-request", detail),
            DigestMismatch { .. } => ApiError::typed(ErrorCode::BadRequest, "digest-mismatch", detail),
            TooLarge(_) => ApiError::typed(ErrorCode::PayloadTooLarge, "payload-too-large", detail),
            Corrupt(_) => ApiError::typed(ErrorCode::Internal, "corrupt-sidecar", detail),
            Unavailable(_) => ApiError::typed(ErrorCode::Unavailable, "unavailable", detail),
            Full(_) => ApiError::typed(ErrorCode::InsufficientStorage, "insufficient-storage", detail),
            Io(err) if is_full(&err) => {
                tracing::warn!(error = %err, "file system full");
                ApiError::typed(
                    ErrorCode::InsufficientStorage,
                    "insufficient-storage",
                    "the element's disk is full; nothing was stored",
                )
            }
            Io(err) => {
                // The OS text may name server paths: it goes to the log, not the client.
                tracing::error!(error = %err, "i/o error");
                ApiError::typed(
                    ErrorCode::Internal,
                    "internal",
                    "internal i/o error; the element's log has the details",
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_507_and_other_io_errors_stay_internal() {
        for kind in [std::io::ErrorKind::StorageFull, std::io::ErrorKind::QuotaExceeded] {
            let p = ApiError::from(StoreError::Io(std::io::Error::from(kind))).to_problem();
            assert_eq!(p["status"], 507, "{kind:?}");
            assert_eq!(p["type"], "https://artstore.dev/problems/insufficient-storage");
        }
        let p = ApiError::from(StoreError::Full("no room".into())).to_problem();
        assert_eq!((p["status"].as_u64(), p["detail"].as_str()), (Some(507), Some("no room")));
        let p = ApiError::from(StoreError::Io(std::io::Error::other("/secret/path: bad block"))).to_problem();
        assert_eq!(p["status"], 500);
        assert!(!p["detail"].as_str().unwrap().contains("/secret"));
    }
}
