//! Property-based fuzzing of the parsers in `artstore-shared` that read outside input:
//! the `*.attr.json` sidecar, the upload form's fields (and `Content-Digest`), and bearer
//! tokens (JWT header and claims, through the verifier's one entry point).
//!
//! Every property runs `ARTSTORE_FUZZ_CASES` cases (2000 by default, a few seconds in a
//! debug build). A longer campaign
//! (the ignored tests are the regression cases of findings: they fail until fixed, and
//! `--run-ignored only` runs just them):
//!
//! ```text
//! ARTSTORE_FUZZ_CASES=1000000 cargo nextest run -p artstore-shared --test fuzz_parsers --run-ignored default
//! ```
//!
//! Inputs are random bytes and strings, and near-valid inputs: valid examples mutated by
//! truncation, byte flips, inserted huge numbers, unicode, empty values and repeated
//! separators. The properties: nothing panics; garbage is an `Err` (never a silent
//! acceptance where the function validates); what a serialiser writes parses back equal.

use artstore_shared::ManualClock;
use artstore_shared::auth::{AuthError, JwksSource, LocalSigner, TokenVerifier, VerifierConfig};
use artstore_shared::sidecar::{
    ContentLocation, Disposition, DocState, Restore, RestoreState, Retention, RetentionMode, SCHEMA_V1, Sidecar,
    SidecarError, Tier, Tombstone,
};
use artstore_shared::upload::{FORM_FIELDS, UploadFields, check_field, sha256_from_content_digest};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::strategy::ValueTree as _;
use serde_json::{Map, Value, json};
use std::path::Path;
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use uuid::Uuid;

/// Cases per property: `ARTSTORE_FUZZ_CASES`, 2000 by default.
fn cases() -> u32 {
    std::env::var("ARTSTORE_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000)
}

/// The bounded configuration every property runs with. Failures are not written to a
/// `proptest-regressions` file in the source tree; a finding is kept as an ignored test.
fn config() -> ProptestConfig {
    ProptestConfig { failure_persistence: None, ..ProptestConfig::with_cases(cases()) }
}

// ---------------------------------------------------------------------------------------
// Mutations shared by every parser
// ---------------------------------------------------------------------------------------

/// One edit of a valid input.
#[derive(Debug, Clone)]
enum Mutation {
    Truncate(Index),
    FlipBit(Index, u8),
    SetByte(Index, u8),
    Insert(Index, Vec<u8>),
    Delete(Index, usize),
    /// Repeats a stretch of the input in place.
    Duplicate(Index, usize),
    /// Inserts a number that fits no integer type, or a negative, or an exponent.
    HugeNumber(Index, &'static str),
    Unicode(Index, String),
    /// Repeats a separator (`,`, `.`, `:`, a space, `=`, ...).
    Separators(Index, char, usize),
    Empty,
}

const HUGE: &[&str] = &[
    "99999999999999999999999999999999",
    "18446744073709551616",
    "18446744073709551615",
    "9223372036854775808",
    "-9223372036854775809",
    "-1",
    "1e999",
    "-0",
    "0.5",
    "NaN",
    "4294967296",
];

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<Index>().prop_map(Mutation::Truncate),
        (any::<Index>(), 0u8..8).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::SetByte(i, b)),
        (any::<Index>(), prop::collection::vec(any::<u8>(), 1..8)).prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<Index>(), 1usize..16).prop_map(|(i, n)| Mutation::Delete(i, n)),
        (any::<Index>(), 1usize..24).prop_map(|(i, n)| Mutation::Duplicate(i, n)),
        (any::<Index>(), prop::sample::select(HUGE)).prop_map(|(i, s)| Mutation::HugeNumber(i, s)),
        (any::<Index>(), "[\\PC\\x00\u{200b}\u{feff}\u{fffd}é€𝄞]{1,4}").prop_map(|(i, s)| Mutation::Unicode(i, s)),
        (
            any::<Index>(),
            prop::sample::select(vec![',', '.', ':', ' ', '=', ';', '"', '\\', '-', '[', '{']),
            1usize..40
        )
            .prop_map(|(i, c, n)| Mutation::Separators(i, c, n)),
        Just(Mutation::Empty),
    ]
}

fn apply(input: &[u8], ms: &[Mutation]) -> Vec<u8> {
    let mut b = input.to_vec();
    for m in ms {
        // Positions are 0..=len, so an insert may land at the very end.
        let at = |i: &Index, b: &Vec<u8>| i.index(b.len() + 1);
        match m {
            Mutation::Truncate(i) => {
                let n = at(i, &b);
                b.truncate(n);
            }
            Mutation::FlipBit(i, bit) if !b.is_empty() => {
                let n = i.index(b.len());
                b[n] ^= 1 << bit;
            }
            Mutation::SetByte(i, v) if !b.is_empty() => {
                let n = i.index(b.len());
                b[n] = *v;
            }
            Mutation::FlipBit(..) | Mutation::SetByte(..) => {}
            Mutation::Insert(i, v) => {
                let n = at(i, &b);
                b.splice(n..n, v.iter().copied());
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
            Mutation::HugeNumber(i, s) => {
                let n = at(i, &b);
                b.splice(n..n, s.bytes());
            }
            Mutation::Unicode(i, s) => {
                let n = at(i, &b);
                b.splice(n..n, s.bytes());
            }
            Mutation::Separators(i, c, k) => {
                let n = at(i, &b);
                let s = c.to_string().repeat(*k);
                b.splice(n..n, s.bytes());
            }
            Mutation::Empty => b.clear(),
        }
    }
    b
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    prop::collection::vec(mutation(), 1..5)
}

/// Mutates a string; the result is made UTF-8 again (lossily) for `&str` parsers.
fn apply_str(input: &str, ms: &[Mutation]) -> String {
    String::from_utf8_lossy(&apply(input.as_bytes(), ms)).into_owned()
}

// ---------------------------------------------------------------------------------------
// Sidecar
// ---------------------------------------------------------------------------------------

fn arb_time() -> impl Strategy<Value = DateTime<Utc>> {
    // Years 1 to 9999: what RFC 3339 can write.
    (-62_135_596_800i64..=253_402_300_799i64, 0u32..1_000_000_000)
        .prop_map(|(s, n)| DateTime::from_timestamp(s, n).expect("in range"))
}

fn arb_uuid() -> impl Strategy<Value = Uuid> {
    any::<[u8; 16]>().prop_map(Uuid::from_bytes)
}

fn arb_uuid_v7() -> impl Strategy<Value = Uuid> {
    (0u64..(1 << 48), any::<[u8; 10]>())
        .prop_map(|(ms, r)| uuid::Builder::from_unix_timestamp_millis(ms, &r).into_uuid())
}

fn arb_text() -> impl Strategy<Value = String> {
    prop_oneof![".{0,24}", any::<String>(), "[a-z ]{0,12}"]
}

/// Every finite double (JSON has no NaN or infinity), without a filter: a long campaign
/// must not run into proptest's limit on rejected inputs.
fn finite_f64() -> impl Strategy<Value = f64> {
    use proptest::num::f64::{NEGATIVE, NORMAL, POSITIVE, SUBNORMAL, ZERO};
    POSITIVE | NEGATIVE | NORMAL | SUBNORMAL | ZERO
}

/// Arbitrary JSON; with `floats`, numbers with a fraction too.
fn arb_json(floats: bool) -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| Value::Number(n.into())),
        any::<u64>().prop_map(|n| Value::Number(n.into())),
        arb_text().prop_map(Value::String),
        if floats { finite_f64().prop_map(|f| json!(f)).boxed() } else { Just(Value::Null).boxed() },
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
    .boxed()
}

/// Fields a newer version might have written: keys no struct field has.
fn arb_extra() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map("x_[a-z]{1,6}", arb_json(false), 0..3).prop_map(|m| m.into_iter().collect())
}

fn arb_stored_name() -> impl Strategy<Value = String> {
    "[^./\\\\\\x00][^/\\\\\\x00]{0,30}"
}

fn arb_retention() -> impl Strategy<Value = Retention> {
    (
        proptest::option::of(arb_text()),
        prop_oneof![Just(RetentionMode::None), Just(RetentionMode::Governance), Just(RetentionMode::Compliance)],
        proptest::option::of(arb_time()),
        any::<bool>(),
        proptest::option::of(arb_text()),
        prop_oneof![Just(Disposition::Dispose), Just(Disposition::Review)],
        arb_extra(),
    )
        .prop_map(|(policy, mode, retain_until, legal_hold, legal_hold_reason, disposition, extra)| Retention {
            policy,
            mode,
            retain_until,
            legal_hold,
            legal_hold_reason,
            disposition,
            extra,
        })
}

fn arb_content() -> impl Strategy<Value = ContentLocation> {
    let restore = (
        prop_oneof![Just(RestoreState::Staging), Just(RestoreState::Ready)],
        arb_time(),
        arb_text(),
        any::<u32>(),
        proptest::option::of(arb_time()),
        proptest::option::of(arb_time()),
        arb_extra(),
    )
        .prop_map(|(state, requested_at, requested_by, days, ready_at, expires_at, extra)| Restore {
            state,
            requested_at,
            requested_by,
            days,
            ready_at,
            expires_at,
            extra,
        });
    (prop_oneof![Just(Tier::Hot), Just(Tier::Cold), Just(Tier::None)], proptest::option::of(restore), arb_extra())
        .prop_map(|(location, restore, extra)| ContentLocation { location, restore, extra })
}

fn arb_tombstone() -> impl Strategy<Value = Tombstone> {
    (arb_time(), arb_text(), arb_text(), any::<bool>(), arb_extra())
        .prop_map(|(at, by, reason, retention_bypassed, extra)| Tombstone { at, by, reason, retention_bypassed, extra })
}

/// A valid sidecar with every field drawn at random (metadata without fractions: see
/// the `metadata_floats_*` finding).
fn arb_sidecar() -> impl Strategy<Value = Sidecar> {
    let ids = (arb_uuid_v7(), arb_uuid(), 1u32.., 1u64..);
    let state = prop_oneof![
        Just(DocState::Active),
        Just(DocState::Archived),
        Just(DocState::Deleted),
        Just(DocState::Disposed)
    ];
    let names = (arb_text(), arb_stored_name(), arb_text(), any::<u64>(), any::<[u8; 32]>());
    let who = (arb_time(), arb_text(), arb_time(), arb_text());
    let user = (
        proptest::option::of(arb_text()),
        prop::collection::vec(arb_text(), 0..4),
        prop::collection::btree_map(".{0,8}", arb_json(false), 0..4),
    );
    let rest = (arb_retention(), arb_content(), proptest::option::of(arb_tombstone()), arb_extra());
    (ids, state, names, who, user, rest).prop_map(
        |(
            (file_id, document_id, version, revision),
            state,
            (original_name, stored_name, content_type, size, sha),
            (created_at, created_by, updated_at, updated_by),
            (description, tags, metadata),
            (retention, content, tombstone, extra),
        )| Sidecar {
            schema: SCHEMA_V1.to_owned(),
            file_id,
            document_id,
            version,
            revision,
            state,
            original_name,
            stored_name,
            content_type,
            size,
            sha256: sha.iter().map(|b| format!("{b:02x}")).collect(),
            created_at,
            created_by,
            updated_at,
            updated_by,
            description,
            tags,
            metadata: metadata.into_iter().collect(),
            retention,
            content,
            tombstone,
            extra,
        },
    )
}

const SIDECAR_PATH: &str = "data/2026/01/02/report_0190.pdf.attr.json";

/// What `Sidecar::parse` promises of every sidecar it returns.
fn assert_sidecar_invariants(sc: &Sidecar) -> Result<(), TestCaseError> {
    prop_assert_eq!(sc.schema.as_str(), SCHEMA_V1);
    prop_assert!(
        sc.sha256.len() == 64 && sc.sha256.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "sha256 {:?}",
        sc.sha256
    );
    prop_assert!(
        !sc.stored_name.is_empty() && !sc.stored_name.contains(['/', '\\', '\0']) && !sc.stored_name.starts_with('.'),
        "stored_name {:?}",
        sc.stored_name
    );
    prop_assert_eq!(sc.file_id.get_version_num(), 7);
    prop_assert!(sc.version >= 1 && sc.revision >= 1);
    Ok(())
}

/// Parses, and checks what holds of any answer: no panic; an `Ok` keeps the invariants
/// and survives a rewrite unchanged; an `Err` names the file.
fn check_sidecar_bytes(bytes: &[u8]) -> Result<Option<Sidecar>, TestCaseError> {
    let path = Path::new(SIDECAR_PATH);
    match Sidecar::parse(bytes, path) {
        Ok(sc) => {
            assert_sidecar_invariants(&sc)?;
            let again = Sidecar::parse(&sc.to_bytes(), path);
            prop_assert!(again.is_ok(), "a parsed sidecar does not parse after a rewrite: {:?}", again.err());
            let again = again.ok();
            if again.as_ref() != Some(&sc) {
                // Only fractions may move, by one ULP: that is the `metadata_floats_*`
                // finding, kept apart so this property stays about everything else.
                let (a, b) = (serde_json::to_value(&again).expect("json"), serde_json::to_value(&sc).expect("json"));
                prop_assert!(json_close(&a, &b), "a rewrite changed the sidecar: {} became {}", b, a);
            }
            Ok(Some(sc))
        }
        Err(e) => {
            prop_assert_eq!(e.path(), path);
            prop_assert!(e.to_string().starts_with(SIDECAR_PATH), "error does not name the file: {}", e);
            prop_assert!(!matches!(e, SidecarError::Io { .. }), "parse from bytes answered an I/O error: {}", e);
            Ok(None)
        }
    }
}

/// Equal JSON, except that doubles may differ in their last bit.
fn json_close(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => match (x.as_f64(), y.as_f64()) {
            (Some(p), Some(q)) => p == q || p.to_bits().abs_diff(q.to_bits()) <= 1,
            _ => false,
        },
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_close(p, q)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| json_close(v, w)))
        }
        _ => a == b,
    }
}

/// The keys a sidecar cannot lack (no `serde(default)`).
const REQUIRED: &[&str] = &[
    "schema",
    "file_id",
    "document_id",
    "version",
    "revision",
    "state",
    "original_name",
    "stored_name",
    "content_type",
    "size",
    "sha256",
    "created_at",
    "created_by",
    "updated_at",
    "updated_by",
    "retention",
    "content",
];
const OPTIONAL: &[&str] = &["description", "tags", "metadata", "tombstone"];

/// A structural edit of a sidecar's JSON, with what `parse` must answer.
#[derive(Debug, Clone)]
enum Edit {
    Remove(&'static str),
    SetSha(String),
    SetStoredName(String),
    SetFileId(Uuid),
    SetVersion(Value),
    SetRevision(Value),
    SetSchema(Value),
    /// Any key to any value: only "no panic" is checked.
    Set(&'static str, Value),
    /// A newer version's field: must be kept.
    Unknown(String, Value),
}

fn edit() -> impl Strategy<Value = Edit> {
    let all: Vec<&'static str> = REQUIRED.iter().chain(OPTIONAL).copied().collect();
    let numbers = || {
        prop_oneof![
            Just(json!(0)),
            Just(json!(1)),
            Just(json!(-1)),
            Just(json!(4_294_967_295u64)),
            Just(json!(4_294_967_296u64)),
            Just(json!(u64::MAX)),
            Just(json!(1.5)),
            Just(json!("1")),
            Just(Value::Null),
            any::<u64>().prop_map(|n| json!(n)),
        ]
    };
    prop_oneof![
        prop::sample::select(all.clone()).prop_map(Edit::Remove),
        prop_oneof!["[0-9a-f]{64}", "[0-9a-fA-F]{62,66}", ".{0,70}", "[0-9a-f]{63}[g-zA-Z \u{e9}]"]
            .prop_map(Edit::SetSha),
        prop_oneof![
            arb_stored_name(),
            ".{0,12}",
            "\\.[a-z]{0,4}",
            "[a-z]{0,3}[/\\\\\\x00][a-z]{0,3}",
            Just(String::new())
        ]
        .prop_map(Edit::SetStoredName),
        arb_uuid().prop_map(Edit::SetFileId),
        numbers().prop_map(Edit::SetVersion),
        numbers().prop_map(Edit::SetRevision),
        prop_oneof![
            Just(json!(SCHEMA_V1)),
            Just(json!("artstore/sidecar/v2")),
            Just(json!("ARTSTORE/SIDECAR/V1")),
            Just(json!("artstore/sidecar/v1 ")),
            Just(json!(1)),
            Just(Value::Null),
            ".{0,20}".prop_map(Value::String),
        ]
        .prop_map(Edit::SetSchema),
        (prop::sample::select(all), arb_json(false)).prop_map(|(k, v)| Edit::Set(k, v)),
        ("y_[a-z]{1,8}", arb_json(false)).prop_map(|(k, v)| Edit::Unknown(k, v)),
    ]
}

fn valid_sha(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn valid_stored_name(s: &str) -> bool {
    !s.is_empty() && !s.contains(['/', '\\', '\0']) && !s.starts_with('.')
}

fn valid_counter(v: &Value, max: u64) -> bool {
    v.as_u64().is_some_and(|n| n >= 1 && n <= max)
}

proptest! {
    #![proptest_config(config())]

    /// What `to_bytes` writes parses back equal, and so does compact JSON.
    #[test]
    fn sidecar_round_trips(sc in arb_sidecar()) {
        let path = Path::new(SIDECAR_PATH);
        let parsed = Sidecar::parse(&sc.to_bytes(), path);
        prop_assert!(parsed.is_ok(), "{:?}", parsed.err());
        let parsed = parsed.ok();
        prop_assert_eq!(parsed.as_ref(), Some(&sc));
        let compact = serde_json::to_vec(&sc).expect("serialises");
        let parsed = Sidecar::parse(&compact, path).ok();
        prop_assert_eq!(parsed.as_ref(), Some(&sc));
    }

    /// Random bytes: never a panic, never an `Ok` (a random byte string is no sidecar).
    #[test]
    fn sidecar_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        prop_assert!(check_sidecar_bytes(&bytes)?.is_none());
    }

    /// Random JSON documents: never a panic; an `Ok` only with the invariants.
    #[test]
    fn sidecar_random_json(v in arb_json(true), schema in any::<bool>()) {
        let mut v = v;
        if schema && let Value::Object(o) = &mut v {
            o.insert("schema".to_owned(), json!(SCHEMA_V1));
        }
        check_sidecar_bytes(&serde_json::to_vec(&v).expect("serialises"))?;
    }

    /// A valid sidecar's bytes, mutated: never a panic; what parses keeps the invariants
    /// and survives a rewrite.
    #[test]
    fn sidecar_mutated_bytes(sc in arb_sidecar(), pretty in any::<bool>(), ms in mutations()) {
        let bytes = if pretty { sc.to_bytes() } else { serde_json::to_vec(&sc).expect("serialises") };
        check_sidecar_bytes(&apply(&bytes, &ms))?;
    }

    /// Structural edits of a valid sidecar: each checked field is refused exactly when it
    /// is wrong, a missing required key is refused, unknown keys are kept.
    #[test]
    fn sidecar_edited_fields(sc in arb_sidecar(), e in edit()) {
        let mut v = serde_json::to_value(&sc).expect("serialises");
        let o = v.as_object_mut().expect("an object");
        let expect_ok: Option<bool> = match &e {
            Edit::Remove(k) => {
                o.remove(*k);
                Some(!REQUIRED.contains(k))
            }
            Edit::SetSha(s) => {
                o.insert("sha256".to_owned(), json!(s));
                Some(valid_sha(s))
            }
            Edit::SetStoredName(s) => {
                o.insert("stored_name".to_owned(), json!(s));
                Some(valid_stored_name(s))
            }
            Edit::SetFileId(id) => {
                o.insert("file_id".to_owned(), json!(id));
                Some(id.get_version_num() == 7)
            }
            Edit::SetVersion(n) => {
                o.insert("version".to_owned(), n.clone());
                Some(valid_counter(n, u64::from(u32::MAX)))
            }
            Edit::SetRevision(n) => {
                o.insert("revision".to_owned(), n.clone());
                Some(valid_counter(n, u64::MAX))
            }
            Edit::SetSchema(s) => {
                o.insert("schema".to_owned(), s.clone());
                Some(s.as_str() == Some(SCHEMA_V1))
            }
            Edit::Set(k, x) => {
                o.insert((*k).to_owned(), x.clone());
                None
            }
            Edit::Unknown(k, x) => {
                o.insert(k.clone(), x.clone());
                Some(true)
            }
        };
        let bytes = serde_json::to_vec(&v).expect("serialises");
        let got = check_sidecar_bytes(&bytes)?;
        if let Some(ok) = expect_ok {
            prop_assert_eq!(got.is_some(), ok, "edit {:?}: {:?}", e, Sidecar::parse(&bytes, Path::new("x")).err());
        }
        if let (Edit::SetSchema(s), None) = (&e, &got)
            && let Some(s) = s.as_str().filter(|s| *s != SCHEMA_V1)
        {
            let err = Sidecar::parse(&bytes, Path::new("x")).expect_err("refused");
            prop_assert!(
                matches!(&err, SidecarError::UnsupportedSchema { schema, .. } if schema == s),
                "schema {:?} answered {}", s, err
            );
        }
        if let (Edit::Unknown(k, x), Some(parsed)) = (&e, &got) {
            let written: Value = serde_json::from_slice(&parsed.to_bytes()).expect("json");
            prop_assert_eq!(&written[k.as_str()], x, "unknown field {} was not kept", k);
        }
    }
}

/// JSON numbers with a fraction in user metadata (or in a newer version's fields) must
/// survive a rewrite unchanged. `sidecar_round_trips` leaves them out; this is the
/// property for them (it failed before serde_json's `float_roundtrip` was enabled).
#[test]
fn metadata_floats_survive_a_rewrite() {
    let mut runner = proptest::test_runner::TestRunner::new(config());
    let floats = prop::collection::vec(prop_oneof![finite_f64(), -1e6..1e6f64], 1..16);
    runner
        .run(&floats, |fs| {
            let mut sc = sample_sidecar();
            sc.metadata = fs.iter().enumerate().map(|(i, f)| (format!("k{i}"), json!(f))).collect();
            let parsed = Sidecar::parse(&sc.to_bytes(), Path::new(SIDECAR_PATH)).expect("parses");
            prop_assert_eq!(parsed.metadata, sc.metadata);
            Ok(())
        })
        .unwrap();
}

/// Inputs the property above found: `-944964.9219869801` is written by `to_bytes` and
/// read back by `Sidecar::parse` as `-944964.92198698` (another double); likewise
/// `8.13796046293762e-128` comes back as `8.137960462937619e-128`.
#[test]
fn metadata_floats_regression() {
    let mut sc = sample_sidecar();
    sc.metadata = Map::new();
    for (k, f) in [("amount", -944_964.921_986_980_1), ("tiny", 8.137_960_462_937_62e-128)] {
        sc.metadata.insert(k.to_owned(), json!(f));
    }
    let parsed = Sidecar::parse(&sc.to_bytes(), Path::new(SIDECAR_PATH)).expect("parses");
    assert_eq!(parsed.metadata, sc.metadata);
}

fn sample_sidecar() -> Sidecar {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    arb_sidecar().new_tree(&mut runner).expect("a sidecar").current()
}

// ---------------------------------------------------------------------------------------
// Upload form fields and Content-Digest
// ---------------------------------------------------------------------------------------

/// Valid examples of every field, to be mutated.
fn valid_field() -> impl Strategy<Value = (&'static str, String)> {
    prop_oneof![
        arb_text().prop_map(|v| ("description", v)),
        "[a-z, ]{0,20}".prop_map(|v| ("tags", v)),
        arb_text().prop_map(|v| ("retention_policy", v)),
        arb_json(true).prop_map(|v| ("metadata", json!({ "k": v }).to_string())),
        arb_uuid().prop_map(|u| ("document_id", u.to_string())),
        prop::sample::select(vec!["compliance", "governance", "none", ""])
            .prop_map(|v| ("retention_mode", v.to_owned())),
        arb_time().prop_map(|t| ("retain_until", t.to_rfc3339())),
        prop::sample::select(vec!["true", "false", ""]).prop_map(|v| ("legal_hold", v.to_owned())),
        prop::sample::select(vec!["dispose", "review"]).prop_map(|v| ("disposition", v.to_owned())),
    ]
}

fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(FORM_FIELDS).prop_map(str::to_owned),
        prop::sample::select(FORM_FIELDS).prop_map(|f| f.to_uppercase()),
        prop::sample::select(FORM_FIELDS).prop_map(|f| format!(" {f}")),
        Just("file".to_owned()),
        Just("after_version".to_owned()),
        Just(String::new()),
        ".{0,16}",
    ]
}

/// The element's own reading of each field (storage-element `create_file`), to hold
/// `check_field` to: what the ingester lets through, the element must take.
fn element_takes(name: &str, value: &str) -> bool {
    let v = value.trim();
    match name {
        "description" | "tags" | "retention_policy" => true,
        "metadata" => matches!(serde_json::from_str::<Value>(value), Ok(Value::Object(_))),
        "document_id" => Uuid::parse_str(v).is_ok(),
        "retention_mode" => matches!(v, "compliance" | "governance" | "none" | ""),
        "retain_until" => DateTime::parse_from_rfc3339(v).is_ok(),
        "legal_hold" => matches!(v, "true" | "false" | ""),
        "disposition" => matches!(v, "dispose" | "review"),
        _ => false,
    }
}

/// Checks `check_field`'s answer against the element and `UploadFields`' accessors.
fn check_one_field(name: &str, value: &str) -> Result<(), TestCaseError> {
    let r = check_field(name, value);
    prop_assert_eq!(r.is_ok(), element_takes(name, value), "{:?}={:?}: {:?}", name, value, r);
    if let Err(msg) = &r {
        prop_assert!(!msg.is_empty());
        if FORM_FIELDS.contains(&name) {
            prop_assert!(msg.contains(name), "the error does not name the field {:?}: {}", name, msg);
        } else {
            prop_assert!(msg.contains("unknown field"), "{}", msg);
        }
    }
    let mut f = UploadFields::default();
    let pushed = f.push(name, value.to_owned());
    prop_assert_eq!(pushed.is_ok(), r.is_ok());
    if pushed.is_ok() {
        prop_assert_eq!(f.get(name), Some(value));
        prop_assert!(f.push(name, value.to_owned()).unwrap_err().contains("twice"));
        match name {
            "document_id" => prop_assert!(f.document_id().is_some()),
            "retain_until" => prop_assert!(f.retain_until().is_some()),
            "retention_policy" => prop_assert_eq!(f.policy(), Some(value.trim()).filter(|p| !p.is_empty())),
            "disposition" => prop_assert_eq!(f.disposes(), value.trim() == "dispose"),
            _ => {}
        }
        let asks = match name {
            "retention_mode" => !matches!(value.trim(), "" | "none"),
            "retain_until" => true,
            "legal_hold" => value.trim() == "true",
            _ => false,
        };
        prop_assert_eq!(f.explicit_retention(), asks, "{:?}={:?}", name, value);
    } else {
        prop_assert!(f.0.is_empty(), "a refused field was kept");
    }
    Ok(())
}

fn sha256_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

proptest! {
    #![proptest_config(config())]

    /// Any name and value: refused unless the element would take it too.
    #[test]
    fn form_field_random(name in field_name(), value in any::<String>()) {
        check_one_field(&name, &value)?;
    }

    /// Valid values, mutated (case, whitespace, unicode, truncation, huge numbers).
    #[test]
    fn form_field_mutated((name, value) in valid_field(), ms in mutations(), pad in "[ \t\u{a0}\u{3000}\n]{0,2}") {
        check_one_field(name, &value)?;
        check_one_field(name, &format!("{pad}{value}{pad}"))?;
        check_one_field(name, &apply_str(&value, &ms))?;
        check_one_field(name, &value.to_uppercase())?;
    }

    /// A form built from valid fields keeps them in order; a second copy of any is refused.
    #[test]
    fn form_fields_in_order(fields in prop::collection::vec(valid_field(), 0..12)) {
        let mut f = UploadFields::default();
        let mut want: Vec<(String, String)> = Vec::new();
        for (name, value) in fields {
            let dup = want.iter().any(|(n, _)| n == name);
            let r = f.push(name, value.clone());
            prop_assert_eq!(r.is_err(), dup, "{:?}={:?}: {:?}", name, value, r);
            if !dup {
                want.push((name.to_owned(), value));
            }
        }
        prop_assert_eq!(f.0, want);
    }

    /// `Content-Digest`: a sha-256 between colons gives its hex; random text never panics
    /// and gives either nothing, an error, or 64 lowercase hex digits.
    #[test]
    fn content_digest_round_trip(
        digest in any::<[u8; 32]>(),
        before in prop::collection::vec(("[a-z0-9-]{1,10}", "[A-Za-z0-9+/=]{0,12}"), 0..3),
        ws in "[ \t]{0,2}",
        upper in any::<bool>(),
    ) {
        let others: Vec<String> = before
            .iter()
            .filter(|(alg, _)| !alg.eq_ignore_ascii_case("sha-256"))
            .map(|(alg, v)| format!("{alg}=:{v}:"))
            .collect();
        let alg = if upper { "SHA-256" } else { "sha-256" };
        let mut items = others;
        items.push(format!("{alg}={ws}:{}:", STANDARD.encode(digest)));
        let header = items.join(&format!(",{ws}"));
        let got = sha256_from_content_digest(&header);
        prop_assert_eq!(got, Ok(Some(sha256_hex(&digest))), "{}", header);
    }

    #[test]
    fn content_digest_random(value in prop_oneof![any::<String>(), "(sha-256|SHA-256|md5)=:[A-Za-z0-9+/=:]{0,60}:?"]) {
        check_digest(&value)?;
    }

    #[test]
    fn content_digest_mutated(digest in any::<[u8; 32]>(), ms in mutations()) {
        let valid = format!("sha-512=:AAAA:, sha-256=:{}:", STANDARD.encode(digest));
        check_digest(&apply_str(&valid, &ms))?;
    }
}

fn check_digest(value: &str) -> Result<(), TestCaseError> {
    match sha256_from_content_digest(value) {
        Ok(Some(h)) => prop_assert!(valid_sha(&h), "{:?} gave {:?}", value, h),
        Ok(None) => prop_assert!(
            !value
                .split(',')
                .any(|i| i.trim().split_once('=').is_some_and(|(a, _)| a.trim().eq_ignore_ascii_case("sha-256"))),
            "{:?} names a sha-256 but none was read",
            value
        ),
        Err(e) => prop_assert!(e.contains("sha-256"), "{}", e),
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// JWT: header and claims, through `TokenVerifier::verify`
// ---------------------------------------------------------------------------------------

/// The verifier's clock stands here; claims are drawn around it.
const NOW: i64 = 1_900_000_000;
const LEEWAY: i64 = 30;

struct Keys {
    rt: tokio::runtime::Runtime,
    /// The trusted key: in the verifier's key set.
    signer: LocalSigner,
    /// The same key, for signing arbitrary headers.
    raw: aws_lc_rs::signature::RsaKeyPair,
    /// A key nobody published.
    stranger: aws_lc_rs::signature::RsaKeyPair,
    verifier: TokenVerifier,
    /// Valid tokens (accepted as they are), to be mutated.
    valid: Vec<String>,
}

fn rsa_key() -> (Vec<u8>, aws_lc_rs::signature::RsaKeyPair) {
    let kp = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("rsa key");
    let der = aws_lc_rs::encoding::AsDer::<aws_lc_rs::encoding::Pkcs8V1Der<'static>>::as_der(&kp).expect("der");
    let der = der.as_ref().to_vec();
    let raw = aws_lc_rs::signature::RsaKeyPair::from_pkcs8(&der).expect("pkcs8");
    (der, raw)
}

static KEYS: LazyLock<Keys> = LazyLock::new(|| {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let (der, raw) = rsa_key();
    let signer = LocalSigner::from_pkcs8(&der).expect("signer");
    let (_, stranger) = rsa_key();
    let jwks = serde_json::to_vec(&signer.jwks()).expect("jwks");
    let source = JwksSource::Provider(Arc::new(move || jwks.clone()));
    // Unknown kids refresh the (in-memory) key set at once instead of waiting.
    let cfg = VerifierConfig { min_refresh_interval: Duration::ZERO, ..Default::default() };
    let clock = Arc::new(ManualClock::new(DateTime::from_timestamp(NOW, 0).expect("time")));
    let verifier = TokenVerifier::new(source, cfg, clock);
    let valid = vec![
        signer
            .sign_claims(&json!({"iss":"artstore","aud":"artstore","sub":"alice","exp":NOW+60,"iat":NOW,"roles":["admin"]}))
            .expect("sign"),
        signer
            .sign_claims(&json!({"iss":"artstore","aud":["x","artstore"],"sub":"svc","exp":NOW+3600,"iat":NOW,"nbf":NOW-10,"jti":"j1","roles":["reader","retention:bypass"]}))
            .expect("sign"),
        signer.sign_claims(&json!({"iss":"artstore","aud":"artstore","sub":"","exp":NOW,"iat":0})).expect("sign"),
    ];
    for t in &valid {
        rt.block_on(verifier.verify(t)).expect("the valid tokens are valid");
    }
    Keys { rt, signer, raw, stranger, verifier, valid }
});

fn verify(token: &str) -> Result<artstore_shared::auth::Caller, AuthError> {
    let k = &*KEYS;
    k.rt.block_on(k.verifier.verify(token))
}

fn sign_raw(key: &aws_lc_rs::signature::RsaKeyPair, header: &[u8], claims: &[u8]) -> String {
    let input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(claims));
    let mut sig = vec![0u8; key.public_modulus_len()];
    key.sign(
        &aws_lc_rs::signature::RSA_PKCS1_SHA256,
        &aws_lc_rs::rand::SystemRandom::new(),
        input.as_bytes(),
        &mut sig,
    )
    .expect("sign");
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

/// A claim's value, or `None` for a missing key.
type Claim = Option<Value>;

fn pick(v: Vec<Claim>) -> impl Strategy<Value = Claim> {
    prop::sample::select(v)
}

fn around_now() -> impl Strategy<Value = Claim> {
    prop_oneof![
        3 => (-200i64..200).prop_map(|d| Some(json!(NOW + d))),
        1 => (-LEEWAY - 2..-LEEWAY + 2).prop_map(|d| Some(json!(NOW + d))),
        1 => (LEEWAY - 2..LEEWAY + 2).prop_map(|d| Some(json!(NOW + d))),
    ]
}

/// `exp`: times around now, and wrong types; never so large that `exp + leeway`
/// overflows (that is the finding `far_future_exp_*`).
fn arb_exp() -> impl Strategy<Value = Claim> {
    prop_oneof![
        4 => around_now(),
        1 => pick(vec![
            None,
            Some(Value::Null),
            Some(json!(0)),
            Some(json!(-5)),
            Some(json!(1.9e9)),
            Some(json!("1900000100")),
            Some(json!(i64::MAX - LEEWAY)),
            Some(json!(u64::MAX)),
            Some(json!(true)),
        ]),
    ]
}

/// `nbf`: likewise, never so small that `nbf - leeway` overflows (`far_past_nbf_*`).
fn arb_nbf() -> impl Strategy<Value = Claim> {
    prop_oneof![
        2 => Just(None),
        3 => around_now(),
        1 => pick(vec![Some(Value::Null), Some(json!(-1)), Some(json!(i64::MIN + LEEWAY)), Some(json!("x")), Some(json!(1.5))]),
    ]
}

#[derive(Debug, Clone)]
struct ClaimSet {
    iss: Claim,
    aud: Claim,
    sub: Claim,
    exp: Claim,
    nbf: Claim,
    iat: Claim,
    roles: Claim,
    jti: Claim,
    extra: Claim,
}

fn arb_claims() -> impl Strategy<Value = ClaimSet> {
    let s = |v: Value| Some(v);
    (
        pick(vec![
            s(json!("artstore")),
            s(json!("artstore")),
            s(json!("Artstore")),
            s(json!("artstore ")),
            s(json!(["artstore"])),
            s(json!(5)),
            s(Value::Null),
            None,
            s(json!("")),
        ]),
        pick(vec![
            s(json!("artstore")),
            s(json!("artstore")),
            s(json!(["other", "artstore"])),
            s(json!(["other"])),
            s(json!([])),
            s(json!("other")),
            s(json!(7)),
            s(Value::Null),
            None,
            s(json!(["artstore", 5])),
        ]),
        pick(vec![
            s(json!("alice")),
            s(json!("alice")),
            s(json!("")),
            s(json!("ü\u{0}\n")),
            s(json!(3)),
            s(Value::Null),
            None,
        ]),
        arb_exp(),
        arb_nbf(),
        pick(vec![s(json!(NOW)), s(json!(NOW)), s(json!(-1)), None, s(json!("x")), s(json!(1.5)), s(Value::Null)]),
        pick(vec![
            None,
            s(json!([])),
            s(json!(["admin"])),
            s(json!(["reader", "retention:bypass"])),
            s(json!("admin")),
            s(json!([1])),
            s(Value::Null),
        ]),
        pick(vec![None, s(Value::Null), s(json!("id-1")), s(json!(5))]),
        pick(vec![None, s(json!({"nested": [1, 2]})), s(json!("x"))]),
    )
        .prop_map(|(iss, aud, sub, exp, nbf, iat, roles, jti, extra)| ClaimSet {
            iss,
            aud,
            sub,
            exp,
            nbf,
            iat,
            roles,
            jti,
            extra,
        })
}

impl ClaimSet {
    fn json(&self) -> Value {
        let mut m = Map::new();
        for (k, v) in [
            ("iss", &self.iss),
            ("aud", &self.aud),
            ("sub", &self.sub),
            ("exp", &self.exp),
            ("nbf", &self.nbf),
            ("iat", &self.iat),
            ("roles", &self.roles),
            ("jti", &self.jti),
            ("x_extra", &self.extra),
        ] {
            if let Some(v) = v {
                m.insert(k.to_owned(), v.clone());
            }
        }
        Value::Object(m)
    }

    /// Whether a correctly signed token with these claims must be accepted: the standard
    /// checks (issuer, audience, subject, expiry and not-before with the leeway) and the
    /// types of `Claims`.
    fn acceptable(&self) -> bool {
        let int = |v: &Claim| v.as_ref().and_then(Value::as_i64);
        let iss = self.iss.as_ref().and_then(Value::as_str) == Some("artstore");
        let aud = match &self.aud {
            Some(Value::String(a)) => a == "artstore",
            Some(Value::Array(a)) => a.iter().all(Value::is_string) && a.iter().any(|x| x.as_str() == Some("artstore")),
            _ => false,
        };
        let sub = self.sub.as_ref().is_some_and(Value::is_string);
        // `exp` must be a non-negative integer that fits an i64.
        let exp = int(&self.exp).filter(|e| *e >= 0).is_some_and(|e| e + LEEWAY >= NOW);
        let iat = int(&self.iat).is_some();
        let nbf = match &self.nbf {
            None | Some(Value::Null) => true,
            Some(_) => int(&self.nbf).is_some_and(|n| n - LEEWAY <= NOW),
        };
        let roles = match &self.roles {
            None => true,
            Some(Value::Array(r)) => r.iter().all(Value::is_string),
            _ => false,
        };
        let jti = matches!(&self.jti, None | Some(Value::Null | Value::String(_)));
        iss && aud && sub && exp && iat && nbf && roles && jti
    }
}

/// The header fields a token may carry.
#[derive(Debug, Clone)]
struct HeaderSet {
    alg: Claim,
    kid: Claim,
    typ: Claim,
    extra: Option<(&'static str, Value)>,
}

fn arb_header() -> impl Strategy<Value = HeaderSet> {
    let s = |v: Value| Some(v);
    (
        pick(vec![
            s(json!("RS256")),
            s(json!("RS256")),
            s(json!("RS256")),
            s(json!("none")),
            s(json!("None")),
            s(json!("HS256")),
            s(json!("RS384")),
            s(json!("PS256")),
            s(json!("ES256")),
            s(json!("rs256")),
            s(json!("EdDSA")),
            s(json!("")),
            s(json!(5)),
            None,
        ]),
        prop_oneof![
            3 => Just(Some(json!("TRUSTED"))),
            1 => pick(vec![None, s(json!("")), s(json!("other")), s(json!(5)), s(Value::Null), s(json!(["TRUSTED"]))]),
        ],
        pick(vec![None, s(json!("JWT")), s(json!("jwt")), s(json!(7))]),
        prop::sample::select(vec![
            None,
            Some(("jku", json!("http://127.0.0.1:1/evil.json"))),
            Some(("x5u", json!("http://127.0.0.1:1/evil.pem"))),
            Some(("cty", json!("JWT"))),
            Some(("unknown", json!({"a": [1]}))),
        ]),
    )
        .prop_map(|(alg, kid, typ, extra)| HeaderSet { alg, kid, typ, extra })
}

impl HeaderSet {
    fn json(&self, kid: &str) -> Value {
        let mut m = Map::new();
        if let Some(a) = &self.alg {
            m.insert("alg".to_owned(), a.clone());
        }
        match &self.kid {
            Some(Value::String(k)) if k == "TRUSTED" => {
                m.insert("kid".to_owned(), json!(kid));
            }
            Some(k) => {
                m.insert("kid".to_owned(), k.clone());
            }
            None => {}
        }
        if let Some(t) = &self.typ {
            m.insert("typ".to_owned(), t.clone());
        }
        if let Some((k, v)) = &self.extra {
            m.insert((*k).to_owned(), v.clone());
        }
        Value::Object(m)
    }

    fn acceptable(&self) -> bool {
        self.alg.as_ref().and_then(Value::as_str) == Some("RS256")
            && matches!(&self.kid, Some(Value::String(k)) if k == "TRUSTED")
            && matches!(&self.typ, None | Some(Value::String(_)))
    }
}

/// Checks one verification of a token that must be refused.
fn refused(token: &str) -> Result<(), TestCaseError> {
    match verify(token) {
        Ok(c) => Err(TestCaseError::fail(format!("token {token:?} was accepted as {c:?}"))),
        Err(AuthError::KeySet(e)) => Err(TestCaseError::fail(format!("the in-memory key set failed: {e}"))),
        Err(_) => Ok(()),
    }
}

/// Compact-JWS-looking strings: segments of base64url, some of them real JSON.
fn jws_like() -> impl Strategy<Value = String> {
    let seg = prop_oneof![
        "[A-Za-z0-9_-]{0,60}",
        "[A-Za-z0-9_=+/-]{0,20}",
        arb_json(false).prop_map(|v| URL_SAFE_NO_PAD.encode(v.to_string())),
        prop::sample::select(vec![
            r#"{"alg":"RS256","kid":"x"}"#,
            r#"{"alg":"none"}"#,
            r#"{"alg":"HS256","typ":"JWT"}"#,
            r#"{"alg":"RS256"}"#,
            r#"{"alg":"RS256","kid":"x","alg":"none"}"#,
            r#"{"iss":"artstore","aud":"artstore","sub":"a","exp":9999999999,"iat":0,"roles":["admin"]}"#,
        ])
        .prop_map(|s| URL_SAFE_NO_PAD.encode(s)),
    ];
    prop::collection::vec(seg, 0..6).prop_map(|s| s.join("."))
}

proptest! {
    #![proptest_config(config())]

    /// Random strings are refused, never a panic.
    #[test]
    fn jwt_random_strings(token in prop_oneof![any::<String>(), jws_like()]) {
        refused(&token)?;
    }

    /// Valid tokens, mutated anywhere (header, claims or signature): refused unless the
    /// mutation gave back the very same token.
    #[test]
    fn jwt_mutated_tokens(i in any::<Index>(), ms in mutations()) {
        let valid = &KEYS.valid[i.index(KEYS.valid.len())];
        let t = apply_str(valid, &ms);
        if t != *valid {
            refused(&t)?;
        }
    }

    /// A valid token with a segment swapped for another valid token's, or re-encoded
    /// with padding or the standard alphabet: refused.
    #[test]
    fn jwt_spliced_tokens(a in any::<Index>(), b in any::<Index>(), seg in 0usize..3, how in 0u8..4) {
        let ta: Vec<&str> = KEYS.valid[a.index(KEYS.valid.len())].split('.').collect();
        let tb: Vec<&str> = KEYS.valid[b.index(KEYS.valid.len())].split('.').collect();
        let mut parts: Vec<String> = ta.iter().map(|s| (*s).to_owned()).collect();
        match how {
            0 => parts[seg] = tb[seg].to_owned(),
            1 => parts[seg].push_str("=="),
            2 => parts[seg] = STANDARD.encode(URL_SAFE_NO_PAD.decode(ta[seg]).expect("b64")),
            _ => parts.push(tb[seg].to_owned()),
        }
        let t = parts.join(".");
        if !KEYS.valid.contains(&t) {
            refused(&t)?;
        }
    }

    /// Claims signed by the trusted key: accepted exactly when they pass every check,
    /// and then the caller is the one the claims name.
    #[test]
    fn jwt_signed_claims(c in arb_claims()) {
        let token = KEYS.signer.sign_claims(&c.json()).expect("sign");
        match verify(&token) {
            Ok(caller) => {
                prop_assert!(c.acceptable(), "accepted claims that must be refused: {}", c.json());
                prop_assert_eq!(Some(caller.subject.as_str()), c.sub.as_ref().and_then(Value::as_str));
                let roles: Vec<String> = c.roles.as_ref().and_then(|r| serde_json::from_value(r.clone()).ok()).unwrap_or_default();
                prop_assert_eq!(caller.roles, roles);
                prop_assert_eq!(caller.token_id.as_deref(), c.jti.as_ref().and_then(Value::as_str));
            }
            Err(e) => {
                prop_assert!(!c.acceptable(), "refused valid claims {}: {}", c.json(), e);
                prop_assert!(matches!(e, AuthError::Invalid(_)), "claims refused as {:?}", e);
            }
        }
    }

    /// Arbitrary headers over valid claims, signed by the trusted key or by a stranger:
    /// only RS256 with the trusted kid and the trusted signature is accepted.
    #[test]
    fn jwt_signed_headers(h in arb_header(), stranger in any::<bool>(), ci in any::<Index>()) {
        let k = &*KEYS;
        let valid = &k.valid[ci.index(k.valid.len())];
        let claims = URL_SAFE_NO_PAD.decode(valid.split('.').nth(1).expect("claims")).expect("b64");
        let header = h.json(k.signer.kid()).to_string();
        let key = if stranger { &k.stranger } else { &k.raw };
        let token = sign_raw(key, header.as_bytes(), &claims);
        let r = verify(&token);
        let want = h.acceptable() && !stranger;
        prop_assert_eq!(r.is_ok(), want, "header {} (stranger: {}): {:?}", header, stranger, r);
        if let Err(e) = r {
            prop_assert!(!matches!(e, AuthError::KeySet(_)), "{}", e);
            if let Some(alg) = h.alg.as_ref().and_then(Value::as_str).filter(|a| *a != "RS256") {
                prop_assert!(matches!(e, AuthError::Algorithm(_)), "alg {:?} refused as {:?}", alg, e);
            }
        }
    }

    /// A stranger's token for the trusted kid, with an `alg` of `none` (empty signature)
    /// or HS256 keyed with the trusted public key (algorithm confusion): refused.
    #[test]
    fn jwt_algorithm_confusion(ci in any::<Index>(), empty_sig in any::<bool>()) {
        let k = &*KEYS;
        let valid = &k.valid[ci.index(k.valid.len())];
        let claims = valid.split('.').nth(1).expect("claims");
        let none = URL_SAFE_NO_PAD.encode(json!({"alg": "none", "kid": k.signer.kid()}).to_string());
        refused(&format!("{none}.{claims}.{}", if empty_sig { "" } else { "AAAA" }))?;
        let hs = URL_SAFE_NO_PAD.encode(json!({"alg": "HS256", "typ": "JWT", "kid": k.signer.kid()}).to_string());
        let input = format!("{hs}.{claims}");
        let secret = serde_json::to_vec(&k.signer.jwks()).expect("jwks");
        let mac = aws_lc_rs::hmac::sign(&aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &secret), input.as_bytes());
        refused(&format!("{input}.{}", URL_SAFE_NO_PAD.encode(mac.as_ref())))?;
    }
}

/// A token from the trusted issuer whose `exp` is near `i64::MAX` ("never expires"):
/// `exp + leeway` overflows. A debug build panics in `verify`; a release build wraps
/// and refuses the token as expired.
#[test]
fn far_future_exp_regression() {
    let k = &*KEYS;
    let exp = i64::MAX - LEEWAY + 1;
    let t = k
        .signer
        .sign_claims(&json!({"iss":"artstore","aud":"artstore","sub":"alice","exp":exp,"iat":NOW}))
        .expect("sign");
    let r = std::panic::catch_unwind(|| verify(&t).map(|c| c.subject));
    assert!(matches!(r, Ok(Ok(_))), "a validly signed token with exp {exp} was not accepted: {r:?}");
}

/// Likewise `nbf - leeway` for an `nbf` near `i64::MIN`.
#[test]
fn far_past_nbf_regression() {
    let k = &*KEYS;
    let nbf = i64::MIN + LEEWAY - 1;
    let t = k
        .signer
        .sign_claims(&json!({"iss":"artstore","aud":"artstore","sub":"alice","exp":NOW+60,"iat":NOW,"nbf":nbf}))
        .expect("sign");
    let r = std::panic::catch_unwind(|| verify(&t).map(|c| c.subject));
    assert!(matches!(r, Ok(Ok(_))), "a validly signed token with nbf {nbf} was not accepted: {r:?}");
}
