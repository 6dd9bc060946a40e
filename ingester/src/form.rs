//! Reading a client's multipart upload: the text fields (checked as the element checks
//! them), the file part, and the digests a client may send to prove an intact upload.

use artstore_shared::ApiError;
use artstore_shared::ErrorCode;
use http::HeaderValue;

/// A 400 with the `bad-request` type.
pub fn bad(detail: impl Into<String>) -> ApiError {
    ApiError::typed(ErrorCode::BadRequest, "bad-request", detail)
}

/// Parses an RFC 9530 `Content-Digest` value; the sha-256 as hex if it names one (other
/// algorithms are ignored, as the RFC allows).
pub fn sha256_from_digest_header(v: &HeaderValue) -> Result<Option<String>, ApiError> {
    let s = v.to_str().map_err(|_| bad("Content-Digest is not ASCII"))?;
    artstore_shared::upload::sha256_from_content_digest(s).map_err(bad)
}

/// Lower-case hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The 400 for content that does not match the digest the client sent.
pub fn digest_mismatch(expected: &str, actual: &str) -> ApiError {
    ApiError::typed(
        ErrorCode::BadRequest,
        "digest-mismatch",
        format!("the content's sha-256 is {actual}, the client said {expected}; nothing was stored"),
    )
}

/// Reads one text field whole.
pub async fn text_field(field: multer::Field<'_>, name: &str) -> Result<String, ApiError> {
    artstore_shared::upload::read_text_field(field, name).await.map_err(bad)
}
