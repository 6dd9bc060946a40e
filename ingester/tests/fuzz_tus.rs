//! Property-based fuzzing of the tus headers the handlers parse themselves
//! (`Upload-Length`, `Upload-Offset`, `Upload-Defer-Length`) and of every tus header
//! end to end (`Tus-Resumable`, `Upload-Metadata`, `Upload-Checksum`), over HTTP to an
//! in-process ingester (no element: an upload is never completed). The private parsers
//! themselves are fuzzed in `src/tus.rs` (`tus::fuzz`).
//!
//! Every property runs `ARTSTORE_FUZZ_CASES` cases (2000 by default). A longer campaign
//! (the ignored tests are the regression cases of findings: they fail until fixed, and
//! `--run-ignored only` runs just them):
//!
//! ```text
//! ARTSTORE_FUZZ_CASES=1000000 cargo nextest run -p artstore-ingester --test fuzz_tus --run-ignored default
//! ```

use artstore_ingester::config::IngesterConfig;
use artstore_ingester::server::IngesterServer;
use artstore_shared::ManualClock;
use artstore_shared::auth::{JWKS_FILE, JwksSource, LocalSigner, TokenVerifier, VerifierConfig};
use artstore_shared::upload::{FORM_FIELDS, check_field};
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use http_body_util::BodyExt as _;
use proptest::prelude::*;
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt as _;

/// Cases per property: `ARTSTORE_FUZZ_CASES`, 2000 by default.
fn cases() -> u32 {
    std::env::var("ARTSTORE_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000)
}

/// Failures are not written to a `proptest-regressions` file in the source tree; a
/// finding is kept as an ignored test.
fn config() -> ProptestConfig {
    ProptestConfig { failure_persistence: None, ..ProptestConfig::with_cases(cases()) }
}

/// `Tus-Max-Size` of the default configuration.
const MAX_SIZE: u64 = 64 << 30;

struct World {
    rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
    router: axum::Router,
    token: String,
}

impl World {
    /// An ingester in a temporary folder, removed when the world is dropped (one per
    /// test, so no run leaves sessions or keys behind).
    fn new() -> World {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
        // Sessions fsync several files each: a memory file system keeps the cases cheap.
        let shm = std::path::Path::new("/dev/shm");
        let dir = if std::fs::metadata(shm).is_ok_and(|m| m.is_dir()) {
            tempfile::tempdir_in(shm).expect("tempdir")
        } else {
            tempfile::tempdir().expect("tempdir")
        };
        let signer = LocalSigner::load_or_create(&dir.path().join("keys")).expect("signer");
        let token = signer
            .issue("fuzzer", &["writer".to_owned()], Duration::from_secs(86_400), chrono::Utc::now())
            .expect("token");
        let verifier = Arc::new(TokenVerifier::new(
            JwksSource::File(dir.path().join("keys").join(JWKS_FILE)),
            VerifierConfig::default(),
            Arc::new(ManualClock::new(chrono::Utc::now())),
        ));
        let cfg = IngesterConfig { data: Some(dir.path().join("ing")), ..Default::default() };
        let server = rt.block_on(IngesterServer::build(cfg, verifier)).expect("ingester");
        World { rt, _dir: dir, router: server.router, token }
    }

    /// One request to the ingester; `headers` are raw bytes (a value a client could send).
    fn send(&self, method: Method, uri: &str, headers: &[(&str, Vec<u8>)], body: Vec<u8>) -> Resp {
        let mut req =
            Request::builder().method(method).uri(uri).header("authorization", format!("Bearer {}", self.token));
        for (k, v) in headers {
            if let Ok(v) = HeaderValue::from_bytes(v) {
                req = req.header(*k, v);
            }
        }
        let req = req.body(Body::from(body)).expect("request");
        self.rt.block_on(async {
            let r = self.router.clone().oneshot(req).await.expect("infallible");
            let status = r.status();
            let headers = r.headers().clone();
            let body = r.into_body().collect().await.expect("body").to_bytes();
            Resp { status, headers, body }
        })
    }

    /// Creates a session of `length` bytes; answers its path.
    fn create(&self, length: u64) -> String {
        let h = [tus("1.0.0"), ("upload-length", length.to_string().into_bytes())];
        let r = self.send(Method::POST, "/api/v1/uploads", &h, vec![]);
        assert_eq!(r.status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&r.body));
        r.header("location").expect("location").to_owned()
    }

    /// Ends a session, so a long campaign does not pile them up.
    fn terminate(&self, path: &str) {
        let r = self.send(Method::DELETE, path, &[tus("1.0.0")], vec![]);
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", String::from_utf8_lossy(&r.body));
    }
}

struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

fn tus(v: &str) -> (&'static str, Vec<u8>) {
    ("tus-resumable", v.as_bytes().to_vec())
}

/// An `Upload-Length` or `Upload-Offset` value: numbers, with white space, and garbage.
fn number_header(valid: impl Strategy<Value = u64>) -> impl Strategy<Value = String> {
    prop_oneof![
        6 => valid.prop_map(|n| n.to_string()),
        1 => (0u64..1000, "[ \t]{1,2}").prop_map(|(n, ws)| format!("{ws}{n}{ws}")),
        2 => prop::sample::select(vec![
            "", " ", "-1", "-0", "+5", "0x10", "1e3", "5 5", "05", "1_000", "18446744073709551615",
            "18446744073709551616", "99999999999999999999999", "68719476737", "68719476736", "NaN", "0.5",
        ])
        .prop_map(str::to_owned),
        1 => "[ -~]{0,12}",
    ]
}

/// A header built from key and value pairs (the tus encoding).
fn metadata_header(pairs: &[(String, Option<String>)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| match v {
            Some(v) => format!("{k} {}", B64.encode(v)),
            None => k.clone(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The file name and type an accepted `Upload-Metadata` names, or `None` if it must be
/// refused (the creation extension and the upload form's checks).
fn metadata_model(pairs: &[(String, Option<String>)]) -> Option<(String, String)> {
    let mut filename = "file".to_owned();
    let mut content_type = "application/octet-stream".to_owned();
    let mut seen: Vec<&str> = Vec::new();
    for (k, v) in pairs {
        let v = v.clone().unwrap_or_default();
        match k.as_str() {
            "filename" | "name" => filename = v,
            "content_type" | "filetype" | "type" if !v.is_empty() => content_type = v,
            "content_type" | "filetype" | "type" => {}
            k if FORM_FIELDS.contains(&k) => {
                if check_field(k, &v).is_err() || seen.contains(&k) {
                    return None;
                }
                seen.push(k);
            }
            _ => {}
        }
    }
    Some((filename, content_type))
}

fn pairs() -> impl Strategy<Value = Vec<(String, Option<String>)>> {
    let key = prop_oneof![
        prop::sample::select(vec!["filename", "name", "content_type", "filetype", "type", "relativePath"]),
        prop::sample::select(FORM_FIELDS),
    ]
    .prop_map(str::to_owned);
    let value = prop_oneof![
        1 => Just(None),
        4 => "[a-zA-Z0-9 ._/-]{0,16}".prop_map(Some),
        2 => prop::sample::select(vec![
            "compliance", "governance", "none", "", "true", "false", "dispose", "review", "{}", "[1]",
            "2030-01-01T00:00:00Z", "0190c1f4-8a6e-7bbb-9c5e-0123456789ab", "tomorrow",
        ])
        .prop_map(|s| Some(s.to_owned())),
        1 => any::<String>().prop_map(Some),
    ];
    prop::collection::vec((key, value), 0..6)
}

#[derive(Debug, Clone)]
enum Meta {
    None,
    Pairs(Vec<(String, Option<String>)>),
    /// Any visible ASCII: only "no 5xx, 201 or 400" is checked.
    Text(String),
}

fn meta() -> impl Strategy<Value = Meta> {
    prop_oneof![
        1 => Just(Meta::None),
        4 => pairs().prop_map(Meta::Pairs),
        1 => "[ -~]{0,40}".prop_map(Meta::Text),
    ]
}

/// `POST /api/v1/uploads`: the session is created exactly when every header is right,
/// with the length and metadata given; otherwise 400, 412 or 413, never a 5xx.
#[test]
fn create_with_fuzzed_headers() {
    let w = World::new();
    proptest!(config(), |(
        resumable in prop_oneof![4 => Just(Some("1.0.0")), 1 => prop::option::of(prop::sample::select(vec!["1.0", "0.2.2", "", " 1.0.0", "1.0.0,0.2.2", "1.0.0 "]))],
        length in number_header(prop_oneof![0u64..1 << 20, MAX_SIZE - 2..MAX_SIZE + 2, any::<u64>()]),
        defer in prop::sample::select(vec![None, None, None, None, Some("1"), Some("")]),
        meta in meta(),
    )| {
        let mut h: Vec<(&str, Vec<u8>)> = vec![("upload-length", length.clone().into_bytes())];
        if let Some(v) = resumable {
            h.push(tus(v));
        }
        if let Some(d) = defer {
            h.push(("upload-defer-length", d.as_bytes().to_vec()));
        }
        let raw_meta = match &meta {
            Meta::None => None,
            Meta::Pairs(p) => Some(metadata_header(p)),
            Meta::Text(t) => Some(t.clone()),
        };
        if let Some(m) = &raw_meta {
            h.push(("upload-metadata", m.clone().into_bytes()));
        }
        let r = w.send(Method::POST, "/api/v1/uploads", &h, vec![]);
        prop_assert!(!r.status.is_server_error(), "{}: {}", r.status, String::from_utf8_lossy(&r.body));
        prop_assert_eq!(r.header("tus-resumable"), Some("1.0.0"), "every answer speaks tus");
        let parsed = length.trim().parse::<u64>().ok();
        let want_meta = match &meta {
            Meta::None => Some(Some(("file".to_owned(), "application/octet-stream".to_owned()))),
            Meta::Pairs(p) => Some(metadata_model(p)),
            Meta::Text(_) => None,
        };
        let want = if resumable != Some("1.0.0") {
            Some(StatusCode::PRECONDITION_FAILED)
        } else if defer.is_some() || parsed.is_none() {
            Some(StatusCode::BAD_REQUEST)
        } else if parsed.is_some_and(|n| n > MAX_SIZE) {
            Some(StatusCode::PAYLOAD_TOO_LARGE)
        } else {
            match &want_meta {
                Some(None) => Some(StatusCode::BAD_REQUEST),
                Some(Some(_)) => Some(StatusCode::CREATED),
                None => None,
            }
        };
        match want {
            Some(s) => prop_assert_eq!(r.status, s, "{:?} {:?}: {}", length, raw_meta, String::from_utf8_lossy(&r.body)),
            None => prop_assert!(matches!(r.status, StatusCode::CREATED | StatusCode::BAD_REQUEST), "{}", r.status),
        }
        if r.status == StatusCode::CREATED {
            let path = r.header("location").expect("location").to_owned();
            let head = w.send(Method::HEAD, &path, &[tus("1.0.0")], vec![]);
            prop_assert_eq!(head.status, StatusCode::OK);
            prop_assert_eq!(head.header("upload-length").and_then(|v| v.parse::<u64>().ok()), parsed);
            prop_assert_eq!(head.header("upload-offset"), Some("0"));
            prop_assert_eq!(head.header("upload-metadata"), raw_meta.as_deref());
            if let Some(Some((filename, content_type))) = want_meta {
                let got = w.send(Method::GET, &path, &[], vec![]);
                let v: serde_json::Value = serde_json::from_slice(&got.body).expect("json");
                prop_assert_eq!(v["filename"].as_str(), Some(filename.as_str()));
                prop_assert_eq!(v["content_type"].as_str(), Some(content_type.as_str()));
            }
            w.terminate(&path);
        }
    });
}

/// `Upload-Checksum` values: right, wrong, malformed.
#[derive(Debug, Clone)]
enum Sum {
    None,
    Right(bool),
    WrongDigest(bool),
    /// Base64 of a digest of the wrong length.
    WrongLength(bool, usize),
    Algorithm(&'static str),
    NotBase64,
    Text(String),
}

fn sum() -> impl Strategy<Value = Sum> {
    prop_oneof![
        3 => Just(Sum::None),
        3 => any::<bool>().prop_map(Sum::Right),
        1 => any::<bool>().prop_map(Sum::WrongDigest),
        1 => (any::<bool>(), 0usize..40).prop_map(|(s, n)| Sum::WrongLength(s, n)),
        1 => prop::sample::select(vec!["md5", "SHA256", "sha512", "crc32", ""]).prop_map(Sum::Algorithm),
        1 => Just(Sum::NotBase64),
        1 => "[ -~]{0,30}".prop_map(Sum::Text),
    ]
}

fn digest(sha1: bool, data: &[u8]) -> Vec<u8> {
    let alg = if sha1 { &ring::digest::SHA1_FOR_LEGACY_USE_ONLY } else { &ring::digest::SHA256 };
    ring::digest::digest(alg, data).as_ref().to_vec()
}

fn alg(sha1: bool) -> &'static str {
    if sha1 { "sha1" } else { "sha256" }
}

impl Sum {
    /// The header value, and whether the chunk passes it: `Err` for a malformed header
    /// (400), `Ok(false)` for a well-formed one that does not match (460).
    fn header(&self, body: &[u8]) -> Option<(String, Result<bool, ()>)> {
        Some(match self {
            Sum::None => return None,
            Sum::Right(s) => (format!("{} {}", alg(*s), B64.encode(digest(*s, body))), Ok(true)),
            Sum::WrongDigest(s) => {
                let mut d = digest(*s, body);
                d[0] ^= 1;
                (format!("{} {}", alg(*s), B64.encode(d)), Ok(false))
            }
            Sum::WrongLength(s, n) => {
                let d = digest(*s, body);
                let mut v = d.clone();
                v.resize(*n, 0);
                // A digest of another length than the algorithm's is malformed (400).
                (format!("{} {}", alg(*s), B64.encode(&v)), if v.len() != d.len() { Err(()) } else { Ok(v == d) })
            }
            Sum::Algorithm(a) => (format!("{a} {}", B64.encode(digest(false, body))), Err(())),
            Sum::NotBase64 => ("sha256 not*base64".to_owned(), Err(())),
            Sum::Text(t) => {
                let well_formed = t.trim().split_once(' ').is_some_and(|(a, v)| {
                    let len = B64.decode(v.trim()).map(|d| d.len());
                    (a == "sha1" && len == Ok(20)) || (a == "sha256" && len == Ok(32))
                });
                // A well-formed digest of random text does not match.
                (t.clone(), if well_formed { Ok(false) } else { Err(()) })
            }
        })
    }
}

/// `PATCH`: a chunk is taken exactly at the session's offset, within its length, with a
/// matching checksum when one is sent; each wrong header has its own answer.
#[test]
fn patch_with_fuzzed_headers() {
    let w = World::new();
    proptest!(config(), |(
        body in prop::collection::vec(any::<u8>(), 0..48),
        room in prop_oneof![3 => (1u64..64).prop_map(Some), 1 => Just(None)],
        offset in number_header(prop_oneof![Just(0u64), Just(0u64), 1u64..100, any::<u64>()]),
        sum in sum(),
        content_type in prop_oneof![6 => Just("application/offset+octet-stream"), 1 => Just("application/octet-stream"), 1 => Just("")],
        resumable in prop_oneof![8 => Just("1.0.0"), 1 => Just("1.0")],
    )| {
        // With room the chunk never completes the upload (which would need an element);
        // without, the session is one byte shorter than the chunk.
        let length = match room {
            None if !body.is_empty() => body.len() as u64 - 1,
            extra => body.len() as u64 + extra.unwrap_or(1),
        };
        let path = w.create(length);
        let mut h: Vec<(&str, Vec<u8>)> = vec![
            tus(resumable),
            ("content-type", content_type.as_bytes().to_vec()),
            ("upload-offset", offset.clone().into_bytes()),
        ];
        let checksum = sum.header(&body);
        if let Some((v, _)) = &checksum {
            h.push(("upload-checksum", v.clone().into_bytes()));
        }
        let r = w.send(Method::PATCH, &path, &h, body.clone());
        let parsed = offset.trim().parse::<u64>().ok();
        let want = if resumable != "1.0.0" {
            StatusCode::PRECONDITION_FAILED
        } else if content_type != "application/offset+octet-stream" {
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        } else if parsed.is_none() || matches!(&checksum, Some((_, Err(())))) {
            StatusCode::BAD_REQUEST
        } else if parsed != Some(0) {
            StatusCode::CONFLICT
        } else if body.len() as u64 > length {
            StatusCode::PAYLOAD_TOO_LARGE
        } else if matches!(&checksum, Some((_, Ok(false)))) {
            StatusCode::from_u16(460).expect("status")
        } else {
            StatusCode::NO_CONTENT
        };
        prop_assert_eq!(r.status, want, "offset {:?} checksum {:?}: {}", offset, checksum, String::from_utf8_lossy(&r.body));
        let head = w.send(Method::HEAD, &path, &[tus("1.0.0")], vec![]);
        let taken = if want == StatusCode::NO_CONTENT { body.len() } else { 0 }.to_string();
        prop_assert_eq!(head.header("upload-offset"), Some(taken.as_str()), "a refused chunk left bytes behind");
        if want == StatusCode::NO_CONTENT {
            prop_assert_eq!(r.header("upload-offset"), Some(taken.as_str()));
        }
        w.terminate(&path);
    });
}

/// A client sending a raw (not base64) file name in `Upload-Metadata` is refused when
/// the name is ASCII, but when it has a non-ASCII byte the whole header is silently
/// dropped (`to_str().ok()` in `create_session`): the session is created with the
/// default name and without the form fields, here `retention_mode compliance`, so the
/// document would be stored with no retention at all.
#[test]
fn non_ascii_metadata_is_refused_regression() {
    let w = World::new();
    let retention = format!("retention_mode {}", B64.encode("compliance"));
    let ascii = w.send(
        Method::POST,
        "/api/v1/uploads",
        &[
            tus("1.0.0"),
            ("upload-length", b"5".to_vec()),
            ("upload-metadata", format!("filename report.pdf,{retention}").into_bytes()),
        ],
        vec![],
    );
    assert_eq!(ascii.status, StatusCode::BAD_REQUEST, "the ASCII raw name is refused");
    let raw = [b"filename \xc3\x9cbersicht.pdf,".as_slice(), retention.as_bytes()].concat();
    let r = w.send(
        Method::POST,
        "/api/v1/uploads",
        &[tus("1.0.0"), ("upload-length", b"5".to_vec()), ("upload-metadata", raw)],
        vec![],
    );
    if let Some(path) = r.header("location") {
        w.terminate(path);
    }
    assert_eq!(
        r.status,
        StatusCode::BAD_REQUEST,
        "a malformed Upload-Metadata was taken (the retention field with it)"
    );
}

/// An `Upload-Checksum` with one non-ASCII byte is silently ignored (`to_str().ok()` in
/// `patch` and `create_session`): a chunk whose digest does not match is taken (204).
#[test]
fn non_ascii_checksum_is_refused_regression() {
    let w = World::new();
    let body = b"0123456789".to_vec();
    let path = w.create(body.len() as u64 + 1);
    let mut wrong = digest(false, &body);
    wrong[0] ^= 1;
    let checksum = [format!("sha256 {}", B64.encode(wrong)).as_bytes(), b"\xff"].concat();
    let r = w.send(
        Method::PATCH,
        &path,
        &[
            tus("1.0.0"),
            ("content-type", b"application/offset+octet-stream".to_vec()),
            ("upload-offset", b"0".to_vec()),
            ("upload-checksum", checksum),
        ],
        body,
    );
    w.terminate(&path);
    assert_ne!(r.status, StatusCode::NO_CONTENT, "a chunk with a mismatching (non-ASCII) Upload-Checksum was taken");
}
