//! Property-based fuzzing of the HTTP `Range` header (with `If-Range` and
//! `If-None-Match`) where it is parsed: inside `GET|HEAD /api/v1/files/{id}/content` of
//! the storage element (`http_range_header` plus the handler's own arithmetic), driven
//! through the router of an in-process element.
//!
//! Every property runs `ARTSTORE_FUZZ_CASES` cases (2000 by default). A longer campaign
//! (the ignored tests are the regression cases of findings: they fail until fixed, and
//! `--run-ignored only` runs just them):
//!
//! ```text
//! ARTSTORE_FUZZ_CASES=1000000 cargo nextest run -p artstore-storage-element --test fuzz_range --run-ignored default
//! ```

mod common;

use axum::body::Body;
use axum::http::{HeaderValue, Method, Request, StatusCode};
use common::{Harness, Resp};
use proptest::prelude::*;
use proptest::sample::Index;

/// Cases per property: `ARTSTORE_FUZZ_CASES`, 2000 by default.
fn cases() -> u32 {
    std::env::var("ARTSTORE_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000)
}

/// Failures are not written to a `proptest-regressions` file in the source tree; a
/// finding is kept as an ignored test.
fn config() -> ProptestConfig {
    ProptestConfig { failure_persistence: None, ..ProptestConfig::with_cases(cases()) }
}

/// One stored file.
struct Stored {
    id: String,
    content: Vec<u8>,
    etag: String,
}

/// An element with files of a few sizes (none empty: see `empty_file_*`), removed with
/// its folder at the end of the test.
struct World {
    rt: tokio::runtime::Runtime,
    h: Harness,
    files: Vec<Stored>,
    token: String,
}

impl World {
    fn new(sizes: &[usize]) -> World {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
        let h = rt.block_on(Harness::new());
        let files = sizes
            .iter()
            .map(|&n| {
                let content: Vec<u8> = (0..n).map(|i| (i * 7 % 251) as u8).collect();
                let sc = rt.block_on(h.upload(&format!("f{n}.bin"), &content, &[]));
                let sha = sc["sha256"].as_str().expect("sha256");
                Stored { id: sc["file_id"].as_str().expect("id").to_owned(), etag: format!("\"{sha}\""), content }
            })
            .collect();
        let token = h.admin();
        World { rt, h, files, token }
    }

    /// `GET` or `HEAD` of a file's content with extra headers (raw bytes, as a client
    /// could send them; a value `http` cannot carry is left out).
    fn read(&self, f: &Stored, head: bool, headers: &[(&str, Vec<u8>)]) -> Resp {
        let mut b = Request::builder()
            .method(if head { Method::HEAD } else { Method::GET })
            .uri(format!("/api/v1/files/{}/content", f.id))
            .header("authorization", format!("Bearer {}", self.token));
        for (k, v) in headers {
            if let Ok(v) = HeaderValue::from_bytes(v) {
                b = b.header(*k, v);
            }
        }
        self.rt.block_on(self.h.send(b.body(Body::empty()).expect("request")))
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = self.rt.block_on(self.h.store.flush());
    }
}

fn header<'a>(r: &'a Resp, name: &str) -> Option<&'a str> {
    r.headers.get(name).and_then(|v| v.to_str().ok())
}

/// What holds of every answer to a content read, whatever the request headers: a known
/// status, and headers and body that agree with each other and with the content.
fn check_answer(f: &Stored, head: bool, r: &Resp) -> Result<Option<(u64, u64)>, TestCaseError> {
    let size = f.content.len() as u64;
    let len: Option<u64> = header(r, "content-length").and_then(|v| v.parse().ok());
    let body_ok = |want: &[u8]| head && r.body.is_empty() || r.body.as_ref() == want;
    match r.status {
        StatusCode::OK => {
            prop_assert_eq!(len, Some(size));
            prop_assert!(body_ok(&f.content), "a 200 without the whole content");
            prop_assert_eq!(header(r, "content-range"), None);
            Ok(None)
        }
        StatusCode::PARTIAL_CONTENT => {
            let cr = header(r, "content-range").unwrap_or_default();
            let parsed = cr.strip_prefix("bytes ").and_then(|x| x.split_once('/')).and_then(|(range, total)| {
                let (a, b) = range.split_once('-')?;
                Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?, total.parse::<u64>().ok()?))
            });
            let Some((a, b, total)) = parsed else {
                return Err(TestCaseError::fail(format!("206 with Content-Range {cr:?}")));
            };
            prop_assert_eq!(total, size);
            prop_assert!(a <= b && b < size, "206 with Content-Range {:?} for {} bytes", cr, size);
            prop_assert_eq!(len, Some(b - a + 1), "Content-Length does not match {:?}", cr);
            prop_assert!(body_ok(&f.content[a as usize..=b as usize]), "the body is not bytes {}-{}", a, b);
            Ok(Some((a, b)))
        }
        StatusCode::RANGE_NOT_SATISFIABLE => {
            let want = format!("bytes */{size}");
            prop_assert_eq!(header(r, "content-range"), Some(want.as_str()));
            Ok(None)
        }
        StatusCode::NOT_MODIFIED => {
            prop_assert!(r.body.is_empty());
            Ok(None)
        }
        other => Err(TestCaseError::fail(format!("status {other}: {}", String::from_utf8_lossy(&r.body)))),
    }
}

/// One byte-range-spec, as RFC 9110 §14.1.1 writes it.
#[derive(Debug, Clone, Copy)]
enum Spec {
    /// `first-last`
    Closed(u64, u64),
    /// `first-`
    From(u64),
    /// `-suffix`
    Suffix(u64),
}

impl Spec {
    fn write(self) -> String {
        match self {
            Spec::Closed(a, b) => format!("{a}-{b}"),
            Spec::From(a) => format!("{a}-"),
            Spec::Suffix(n) => format!("-{n}"),
        }
    }

    /// The bytes RFC 9110 says this spec selects from `size` bytes (§14.1.2), or `None`
    /// when it is unsatisfiable or invalid (416).
    fn select(self, size: u64) -> Option<(u64, u64)> {
        match self {
            Spec::Closed(a, b) if a <= b && a < size => Some((a, b.min(size - 1))),
            Spec::Closed(..) => None,
            Spec::From(a) if a < size => Some((a, size - 1)),
            Spec::From(_) => None,
            // A suffix longer than the representation selects all of it.
            Spec::Suffix(n) if n > 0 && size > 0 => Some((size.saturating_sub(n), size - 1)),
            Spec::Suffix(_) => None,
        }
    }
}

/// Positions around the file's size (the edges), and anywhere.
fn position(size: u64) -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 0..=size + 1,
        1 => prop::sample::select(vec![0, 1, size.saturating_sub(1), size, size + 1, u64::MAX - 1, u64::MAX]),
        1 => any::<u64>(),
    ]
}

fn spec(size: u64) -> impl Strategy<Value = Spec> {
    prop_oneof![
        3 => (position(size), position(size)).prop_map(|(a, b)| Spec::Closed(a.min(b), a.max(b))),
        1 => (position(size), position(size)).prop_map(|(a, b)| Spec::Closed(a, b)),
        2 => position(size).prop_map(Spec::From),
        // Suffixes no longer than the file (longer ones: `long_suffix_*`).
        2 => (0..=size).prop_map(Spec::Suffix),
    ]
}

#[derive(Debug, Clone)]
enum Mutation {
    Truncate(Index),
    FlipBit(Index, u8),
    Insert(Index, String),
    Delete(Index, usize),
    Duplicate(Index, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<Index>().prop_map(Mutation::Truncate),
        (any::<Index>(), 0u8..7).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        (
            any::<Index>(),
            prop_oneof![
                "[ -~]{1,3}",
                prop::sample::select(vec!["99999999999999999999999", "-", ",", ", ", " ", "=", "bytes=", "0", "+"])
                    .prop_map(str::to_owned),
            ]
        )
            .prop_map(|(i, s)| Mutation::Insert(i, s)),
        (any::<Index>(), 1usize..6).prop_map(|(i, n)| Mutation::Delete(i, n)),
        (any::<Index>(), 1usize..12).prop_map(|(i, n)| Mutation::Duplicate(i, n)),
    ]
}

fn apply(input: &str, ms: &[Mutation]) -> Vec<u8> {
    let mut b = input.as_bytes().to_vec();
    for m in ms {
        let at = |i: &Index, b: &Vec<u8>| i.index(b.len() + 1);
        match m {
            Mutation::Truncate(i) => {
                let n = at(i, &b);
                b.truncate(n);
            }
            Mutation::FlipBit(i, bit) => {
                if !b.is_empty() {
                    let n = i.index(b.len());
                    b[n] ^= 1 << bit;
                }
            }
            Mutation::Insert(i, s) => {
                let n = at(i, &b);
                b.splice(n..n, s.bytes());
            }
            Mutation::Delete(i, len) => {
                let n = at(i, &b);
                let end = (n + len).min(b.len());
                b.drain(n..end);
            }
            Mutation::Duplicate(i, len) => {
                let n = at(i, &b);
                let end = (n + len).min(b.len());
                let seg = b[n..end].to_vec();
                b.splice(n..n, seg);
            }
        }
    }
    b
}

const SIZES: &[usize] = &[1, 2, 37, 1000];

/// One well-formed `bytes=` range: the answer is the one RFC 9110 gives.
#[test]
fn single_range_as_the_rfc_says() {
    let w = World::new(SIZES);
    let strategy = (any::<Index>(), any::<bool>()).prop_flat_map(|(i, head)| {
        let size = SIZES[i.index(SIZES.len())] as u64;
        (Just(i), Just(head), spec(size))
    });
    proptest!(config(), |((i, head, s) in strategy)| {
        let f = &w.files[i.index(w.files.len())];
        let r = w.read(f, head, &[("range", format!("bytes={}", s.write()).into_bytes())]);
        let got = check_answer(f, head, &r)?;
        match s.select(f.content.len() as u64) {
            Some(want) => {
                prop_assert_eq!(r.status, StatusCode::PARTIAL_CONTENT, "{:?} of {} bytes", s, f.content.len());
                prop_assert_eq!(got, Some(want));
            }
            None => prop_assert_eq!(r.status, StatusCode::RANGE_NOT_SATISFIABLE, "{:?} of {} bytes", s, f.content.len()),
        }
    });
}

/// Several ranges: the element answers the whole file (a valid answer) or 416; never a
/// part it did not check.
#[test]
fn several_ranges() {
    let w = World::new(SIZES);
    let strategy = (any::<Index>(), any::<bool>(), "(, ?|,)").prop_flat_map(|(i, head, sep)| {
        let size = SIZES[i.index(SIZES.len())] as u64;
        (Just(i), Just(head), Just(sep), prop::collection::vec(spec(size), 2..5))
    });
    proptest!(config(), |((i, head, sep, specs) in strategy)| {
        let f = &w.files[i.index(w.files.len())];
        let v = format!("bytes={}", specs.iter().map(|s| s.write()).collect::<Vec<_>>().join(&sep));
        let r = w.read(f, head, &[("range", v.clone().into_bytes())]);
        check_answer(f, head, &r)?;
        prop_assert!(matches!(r.status, StatusCode::OK | StatusCode::RANGE_NOT_SATISFIABLE), "{:?}: {}", v, r.status);
    });
}

/// Any `Range`, `If-Range` and `If-None-Match` values (random, or valid ones mutated):
/// a known status with headers and body that agree; the range applies only when
/// `If-Range` is absent or the strong ETag; 304 only for a matching `If-None-Match`.
#[test]
fn any_range_headers() {
    let w = World::new(SIZES);
    let range = prop_oneof![
        "[ -~]{0,30}".prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>(), 0..24),
        (prop::collection::vec(spec(1000).prop_map(Spec::write), 1..4), prop::collection::vec(mutation(), 0..4))
            .prop_map(|(s, ms)| apply(&format!("bytes={}", s.join(",")), &ms)),
    ];
    let strategy = (
        any::<Index>(),
        any::<bool>(),
        prop::option::of(range),
        0u8..6,
        prop_oneof![3 => Just(None), 1 => Just(Some(0u8)), 1 => Just(Some(1u8)), 1 => Just(Some(2u8))],
    );
    proptest!(config(), |((i, head, range, if_range, if_none) in strategy)| {
        let f = &w.files[i.index(w.files.len())];
        let mut h: Vec<(&str, Vec<u8>)> = Vec::new();
        if let Some(r) = &range {
            h.push(("range", r.clone()));
        }
        let if_range = match if_range {
            0 => Some(f.etag.clone()),
            1 => Some(format!("W/{}", f.etag)),
            2 => Some("\"other\"".to_owned()),
            3 => Some("Wed, 21 Oct 2015 07:28:00 GMT".to_owned()),
            _ => None,
        };
        if let Some(v) = &if_range {
            h.push(("if-range", v.clone().into_bytes()));
        }
        let if_none = match if_none {
            Some(0) => Some(f.etag.clone()),
            Some(1) => Some(format!("\"x\", W/{}", f.etag)),
            Some(_) => Some("\"x\", \"y\"".to_owned()),
            None => None,
        };
        if let Some(v) = &if_none {
            h.push(("if-none-match", v.clone().into_bytes()));
        }
        let r = w.read(f, head, &h);
        check_answer(f, head, &r)?;
        prop_assert_eq!(r.status == StatusCode::NOT_MODIFIED, if_none.as_ref().is_some_and(|v| v.contains(&f.etag)));
        let range_sent = range.as_deref().is_some_and(|r| HeaderValue::from_bytes(r).is_ok_and(|v| v.to_str().is_ok()));
        let range_applies = range_sent && if_range.as_ref().is_none_or(|v| *v == f.etag);
        if r.status != StatusCode::NOT_MODIFIED && !range_applies {
            prop_assert_eq!(r.status, StatusCode::OK, "a Range that does not apply changed the answer");
        }
    });
}

/// An empty file has no byte any range could name. The element answered `bytes=0-` with
/// 206, `Content-Range: bytes 0-0/0` and `Content-Length: 1`, then sent no byte (a real
/// HTTP client then waits for the byte or breaks the connection). It now ignores the
/// Range (RFC 9110 §14.2 allows it) and answers the whole, empty representation.
#[test]
fn empty_file_range_regression() {
    let w = World::new(&[0]);
    let f = &w.files[0];
    for v in ["bytes=0-", "bytes=0-0", "bytes=0-100", "bytes=-5"] {
        let r = w.read(f, false, &[("range", v.as_bytes().to_vec())]);
        assert_eq!(r.status, StatusCode::OK, "{v}: {:?} {:?}", r.headers, r.body);
        assert!(r.body.is_empty() && r.headers.get("content-range").is_none(), "{v}: {:?}", r.headers);
        assert_eq!(r.headers["content-length"], "0", "{v}");
    }
}

/// `bytes=-500` on a 37-byte file: RFC 9110 §14.1.2 says a suffix longer than the
/// representation selects all of it (206, bytes 0-36/37); the element answers 416
/// (`http_range_header` refuses it as `FileSuffixOutOfBounds`).
#[test]
fn long_suffix_regression() {
    let w = World::new(&[37]);
    let f = &w.files[0];
    let r = w.read(f, false, &[("range", b"bytes=-500".to_vec())]);
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(header(&r, "content-range"), Some("bytes 0-36/37"));
    assert_eq!(r.body.as_ref(), f.content.as_slice());
}

/// RFC 9110 §14.2: a server MUST ignore a `Range` with a range unit it does not
/// understand (answer 200 with the whole content), and range unit names are
/// case-insensitive (§14.1). The element answers `items=0-4` with 416, and `Bytes=0-4`
/// with 416 instead of 206.
#[test]
fn range_unit_regression() {
    let w = World::new(&[37]);
    let f = &w.files[0];
    let r = w.read(f, false, &[("range", b"items=0-4".to_vec())]);
    assert_eq!(r.status, StatusCode::OK, "an unknown range unit must be ignored");
    let r = w.read(f, false, &[("range", b"Bytes=0-4".to_vec())]);
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT, "range units are case-insensitive");
}
