//! A document's content: which types are previewed and how, the download header, and the
//! streamed download and inline preview routes.

use super::{fetch_sidecar, parse_id};
use crate::UiState;
use crate::api::{UiError, enc};
use crate::session::{Sess, Session};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use reqwest::Method;
use uuid::Uuid;

/// How much of a text document the page shows.
pub(super) const TEXT_PREVIEW_BYTES: usize = 64 * 1024;

/// How a document's content can be shown on its page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PreviewKind {
    /// In a frame, by the browser's PDF viewer.
    Pdf,
    /// As an `<img>`.
    Image,
    /// The first [`TEXT_PREVIEW_BYTES`], escaped, in a `<pre>`.
    Text,
    /// Not shown.
    None,
}

/// The media type without parameters, lowercase.
fn base_type(content_type: &str) -> String {
    content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

impl PreviewKind {
    /// Only types a browser renders without running anything of the document's own are
    /// served inline (never HTML or SVG); text of any kind is shown escaped.
    pub(super) fn of(content_type: &str) -> PreviewKind {
        let t = base_type(content_type);
        match t.as_str() {
            "application/pdf" => PreviewKind::Pdf,
            "image/png" | "image/jpeg" | "image/gif" | "image/webp" => PreviewKind::Image,
            "application/json"
            | "application/xml"
            | "application/x-ndjson"
            | "application/yaml"
            | "application/x-yaml"
            | "application/csv"
            | "application/javascript"
            | "application/x-sh" => PreviewKind::Text,
            t if t.starts_with("text/") || t.ends_with("+xml") || t.ends_with("+json") => PreviewKind::Text,
            _ => PreviewKind::None,
        }
    }

    /// Whether the preview route serves it inline.
    fn inline(self) -> bool {
        matches!(self, PreviewKind::Pdf | PreviewKind::Image)
    }
}

/// A `Content-Disposition` value with an ASCII fallback name and the exact UTF-8 one.
fn content_disposition(kind: &str, name: &str) -> String {
    let ascii: String = name
        .chars()
        .map(|c| if (c.is_ascii_graphic() || c == ' ') && !matches!(c, '"' | '\\' | '/' | '%') { c } else { '_' })
        .collect();
    let ascii = if ascii.trim().is_empty() { "document".to_owned() } else { ascii };
    format!("{kind}; filename=\"{ascii}\"; filename*=UTF-8''{}", enc(name))
}

/// The longest valid UTF-8 text of a prefix of a document (a character cut at the end of
/// the prefix is dropped; invalid bytes elsewhere become U+FFFD).
pub(super) fn decode_prefix(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(e) if e.error_len().is_none() => String::from_utf8_lossy(&bytes[..e.valid_up_to()]).into_owned(),
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    }
}

/// The content, streamed from the API with the headers a download or a preview needs.
async fn stream_content(
    state: &UiState,
    s: &Session,
    id: Uuid,
    request_headers: &HeaderMap,
) -> Result<reqwest::Response, UiError> {
    let mut rb = state.api.request(&s.token(), Method::GET, &format!("/api/v1/files/{id}/content"));
    for h in [header::RANGE, header::IF_RANGE] {
        if let Some(v) = request_headers.get(&h) {
            rb = rb.header(h, v.clone());
        }
    }
    let resp = rb.send().await?;
    if !resp.status().is_success() {
        return Err(UiError::from_response(resp).await);
    }
    Ok(resp)
}

fn streamed(resp: reqwest::Response, content_type: &str, disposition: &str, extra: &[(&str, &str)]) -> Response {
    let mut b = Response::builder().status(resp.status().as_u16());
    for h in [header::CONTENT_LENGTH, header::CONTENT_RANGE, header::ACCEPT_RANGES, header::ETAG, header::LAST_MODIFIED]
    {
        if let Some(v) = resp.headers().get(&h) {
            b = b.header(h, v.clone());
        }
    }
    b = b
        .header(
            header::CONTENT_TYPE,
            HeaderValue::from_str(content_type).unwrap_or(HeaderValue::from_static("application/octet-stream")),
        )
        .header(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_str(disposition).unwrap_or(HeaderValue::from_static("attachment")),
        );
    for (k, v) in extra {
        b = b.header(*k, *v);
    }
    b.body(Body::from_stream(resp.bytes_stream())).unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
}

/// `GET /documents/{id}/download`: the content as an attachment, streamed (ranges pass).
pub(super) async fn download(
    State(state): State<UiState>,
    s: Sess,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let back = format!("/documents/{}", enc(&id));
    let r = async {
        let id = parse_id(&id)?;
        let (sc, _) = fetch_sidecar(&state, &s.token(), id).await?;
        let resp = stream_content(&state, &s, id, &headers).await?;
        let ct = if sc.content_type.is_empty() { "application/octet-stream" } else { sc.content_type.as_str() };
        Ok::<_, UiError>(streamed(resp, ct, &content_disposition("attachment", &sc.original_name), &[]))
    };
    match r.await {
        Ok(resp) => resp,
        Err(e) => {
            s.flash(false, format!("The download failed. {}", e.message()));
            Redirect::to(&back).into_response()
        }
    }
}

/// `GET /documents/{id}/preview`: PDF and raster images inline, under a policy that lets
/// nothing run; every other type is refused.
pub(super) async fn preview(
    State(state): State<UiState>,
    s: Sess,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let r = async {
        let id = parse_id(&id)?;
        let (sc, _) = fetch_sidecar(&state, &s.token(), id).await?;
        let kind = PreviewKind::of(&sc.content_type);
        if !kind.inline() {
            return Err(UiError::new(415, "No inline preview", format!("{} is not shown inline", sc.content_type)));
        }
        let resp = stream_content(&state, &s, id, &headers).await?;
        Ok(streamed(
            resp,
            &base_type(&sc.content_type),
            &content_disposition("inline", &sc.original_name),
            &[(header::CONTENT_SECURITY_POLICY.as_str(), crate::PREVIEW_CSP), ("cache-control", "private, no-store")],
        ))
    };
    match r.await {
        Ok(resp) => resp,
        Err(e) => {
            let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_GATEWAY);
            (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], e.message()).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_harmless_types_are_inline() {
        assert_eq!(PreviewKind::of("application/pdf"), PreviewKind::Pdf);
        assert_eq!(PreviewKind::of("IMAGE/PNG"), PreviewKind::Image);
        assert_eq!(PreviewKind::of("image/svg+xml"), PreviewKind::Text, "SVG source is shown escaped, never run");
        assert_eq!(PreviewKind::of("text/html; charset=utf-8"), PreviewKind::Text);
        assert_eq!(PreviewKind::of("application/octet-stream"), PreviewKind::None);
        assert!(!PreviewKind::of("text/html").inline());
        assert!(!PreviewKind::of("image/svg+xml").inline());
        assert!(PreviewKind::of("image/webp").inline());
    }

    #[test]
    fn file_names_survive_the_header() {
        assert_eq!(
            content_disposition("attachment", "Отчёт \"2024\".pdf"),
            "attachment; filename=\"_____ _2024_.pdf\"; filename*=UTF-8''%D0%9E%D1%82%D1%87%D1%91%D1%82%20%222024%22.pdf"
        );
        assert!(HeaderValue::from_str(&content_disposition("inline", "a\r\nb")).is_ok());
        assert_eq!(content_disposition("inline", "€"), "inline; filename=\"_\"; filename*=UTF-8''%E2%82%AC");
    }

    #[test]
    fn a_cut_character_is_dropped() {
        let s = "aé".as_bytes();
        assert_eq!(decode_prefix(&s[..2]), "a");
        assert_eq!(decode_prefix(s), "aé");
        assert_eq!(decode_prefix(b"a\xffb"), "a\u{fffd}b");
    }
}
