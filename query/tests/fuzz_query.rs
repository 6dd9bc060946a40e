//! Property-based fuzzing of the search query language (`syntax::parse`), of the whole
//! search it feeds (`search::run` over a small real index: query building, fuzzy and
//! prefix expansion, highlights), of the opaque page cursor and of suggestions.
//!
//! Every property runs `ARTSTORE_FUZZ_CASES` cases (2000 by default). A longer campaign
//! (the ignored tests are the regression cases of findings: they fail until fixed, and
//! `--run-ignored only` runs just them):
//!
//! ```text
//! ARTSTORE_FUZZ_CASES=1000000 cargo nextest run -p artstore-query --test fuzz_query --run-ignored default
//! ```

use artstore_query::doc::{DocInput, Extraction};
use artstore_query::index::{Applied, SearchIndex};
use artstore_query::search::{self, MAX_LIMIT, SearchError, SearchRequest, Sort};
use artstore_query::suggest;
use artstore_query::syntax::{self, MAX_FUZZY, Node, Value};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::json;
use std::sync::Arc;
use uuid::Uuid;

/// Cases per property: `ARTSTORE_FUZZ_CASES`, 2000 by default.
fn cases() -> u32 {
    std::env::var("ARTSTORE_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000)
}

/// Failures are not written to a `proptest-regressions` file in the source tree; a
/// finding is kept as an ignored test.
fn config() -> ProptestConfig {
    ProptestConfig { failure_persistence: None, ..ProptestConfig::with_cases(cases()) }
}

// ---------------------------------------------------------------------------------------
// Mutations
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Mutation {
    Truncate(Index),
    FlipBit(Index, u8),
    Insert(Index, String),
    Delete(Index, usize),
    Duplicate(Index, usize),
    Separators(Index, char, usize),
    Empty,
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<Index>().prop_map(Mutation::Truncate),
        (any::<Index>(), 0u8..8).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        (
            any::<Index>(),
            prop_oneof![
                "[\\PC\\x00\u{200b}\u{feff}\u{3000}é€𝄞]{1,4}",
                prop::sample::select(vec![
                    "99999999999999999999999",
                    "~",
                    "~256",
                    "~-1",
                    "*",
                    "**",
                    ":",
                    "[",
                    "]",
                    " TO ",
                    "OR",
                    " OR ",
                    " AND ",
                    "NOT ",
                    "-",
                    "\"",
                    "\\\"",
                    "(",
                    ")",
                    "[2024-01-01 TO *]",
                    "created:",
                ])
                .prop_map(str::to_owned),
            ]
        )
            .prop_map(|(i, s)| Mutation::Insert(i, s)),
        (any::<Index>(), 1usize..8).prop_map(|(i, n)| Mutation::Delete(i, n)),
        (any::<Index>(), 1usize..16).prop_map(|(i, n)| Mutation::Duplicate(i, n)),
        (any::<Index>(), prop::sample::select(vec!['(', ')', '"', ' ', ':', '-', '~', '*', '[', ']']), 1usize..64)
            .prop_map(|(i, c, n)| Mutation::Separators(i, c, n)),
        Just(Mutation::Empty),
    ]
}

fn apply(input: &str, ms: &[Mutation]) -> String {
    let mut b = input.as_bytes().to_vec();
    for m in ms {
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
            Mutation::FlipBit(..) => {}
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
            Mutation::Separators(i, c, k) => {
                let n = at(i, &b);
                b.splice(n..n, c.to_string().repeat(*k).bytes());
            }
            Mutation::Empty => b.clear(),
        }
    }
    String::from_utf8_lossy(&b).into_owned()
}

// ---------------------------------------------------------------------------------------
// A generator of valid queries, with the tree each must parse to
// ---------------------------------------------------------------------------------------

/// A query tree and how to write it.
#[derive(Debug, Clone)]
enum G {
    /// Two or more clauses; `true` writes `AND` between them.
    And(Vec<G>, bool),
    Or(Vec<G>),
    /// `true` writes `NOT x`, else `-x`.
    Not(Box<G>, bool),
    /// Field as written (any case), value.
    Term(Option<String>, Value),
}

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec!["contract", "supply", "steel", "report", "договор", "Übersicht", "2024", "a"])
            .prop_map(str::to_owned),
        "[a-zA-Z0-9äöüßа-яё€_.]{1,8}".prop_map(|w| {
            // The operators are words of the language; everything else is a plain word.
            if matches!(w.as_str(), "OR" | "AND" | "NOT") { format!("{w}x") } else { w }
        }),
    ]
}

fn phrase() -> impl Strategy<Value = String> {
    // Anything but a backslash (the language has no way to end a phrase in one);
    // quotes are written escaped, operators and brackets are plain text inside.
    "[a-zä \"()\\-:*~\\[\\]OR]{1,14}".prop_map(|p| if p.trim().is_empty() { format!("{p}p") } else { p })
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => word().prop_map(Value::Word),
        2 => phrase().prop_map(Value::Phrase),
        1 => word().prop_map(Value::Prefix),
        1 => (word(), 0..=MAX_FUZZY).prop_map(|(w, d)| Value::Fuzzy(w, d)),
    ]
}

fn bound() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        "(19|20)[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9])".prop_map(Some),
        "(19|20)[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9])T[0-2][0-9]:[0-5][0-9]:[0-5][0-9](Z|[+-]0[0-9]:00)"
            .prop_map(Some),
        "[0-9]{4}-[0-9]{2}-[0-9]{2}".prop_map(Some),
        "[a-z0-9:.-]{1,10}".prop_map(Some),
    ]
}

fn field() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "name",
            "Description",
            "tags",
            "content_type",
            "content",
            "state",
            "element",
            "document_id",
            "file_id",
            "language",
            "created",
            "UPDATED",
            "metadata.customer",
            "customer",
        ])
        .prop_map(str::to_owned),
        "[a-zA-Z_ä][a-zA-Z0-9_.ä-]{0,8}",
    ]
}

fn leaf() -> impl Strategy<Value = G> {
    prop_oneof![
        3 => value().prop_map(|v| G::Term(None, v)),
        2 => (field(), value()).prop_map(|(f, v)| G::Term(Some(f), v)),
        1 => (field(), bound(), bound()).prop_map(|(f, a, b)| G::Term(Some(f), Value::Range(a, b))),
    ]
}

fn tree() -> impl Strategy<Value = G> {
    leaf().prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            (prop::collection::vec(inner.clone(), 2..4), any::<bool>()).prop_map(|(v, a)| G::And(v, a)),
            prop::collection::vec(inner.clone(), 2..4).prop_map(G::Or),
            (inner, any::<bool>()).prop_map(|(g, k)| G::Not(Box::new(g), k)),
        ]
    })
}

#[derive(Clone, Copy, PartialEq)]
enum Ctx {
    /// The whole query.
    Top,
    /// An item of a sequence (inside parentheses, or after another item).
    Item,
    /// An operand of `OR`.
    OrOperand,
    /// What `-` or `NOT` applies to.
    NotOperand,
}

fn render_value(v: &Value) -> String {
    match v {
        Value::Word(w) => w.clone(),
        Value::Phrase(p) => format!("\"{}\"", p.replace('"', "\\\"")),
        Value::Prefix(p) => format!("{p}*"),
        Value::Fuzzy(w, d) => format!("{w}~{d}"),
        Value::Range(a, b) => {
            format!("[{} TO {}]", a.as_deref().unwrap_or("*"), b.as_deref().unwrap_or("*"))
        }
    }
}

/// Writes `g` where `ctx` says, with parentheses only where the grammar needs them;
/// `sep` is the white space between tokens.
fn render(g: &G, ctx: Ctx, sep: &str) -> String {
    let group = |s: String| format!("({s})");
    match g {
        G::Term(None, v) => render_value(v),
        G::Term(Some(f), v) => format!("{f}:{}", render_value(v)),
        G::And(parts, and) => {
            let joiner = if *and { format!("{sep}AND{sep}") } else { sep.to_owned() };
            let s = parts.iter().map(|p| render(p, Ctx::Item, sep)).collect::<Vec<_>>().join(&joiner);
            if ctx == Ctx::Top { s } else { group(s) }
        }
        G::Or(parts) => {
            let joiner = format!("{sep}OR{sep}");
            let s = parts.iter().map(|p| render(p, Ctx::OrOperand, sep)).collect::<Vec<_>>().join(&joiner);
            if matches!(ctx, Ctx::Top | Ctx::Item) { s } else { group(s) }
        }
        G::Not(inner, kw) => {
            let s = render(inner, Ctx::NotOperand, sep);
            let s = if *kw { format!("NOT{sep}{s}") } else { format!("-{s}") };
            if ctx == Ctx::NotOperand { group(s) } else { s }
        }
    }
}

fn render_query(g: &G, sep: &str) -> String {
    render(g, Ctx::Top, sep)
}

/// The tree `parse` must answer (positions zeroed).
fn expected(g: &G) -> Node {
    match g {
        G::And(parts, _) => Node::And(parts.iter().map(expected).collect()),
        G::Or(parts) => Node::Or(parts.iter().map(expected).collect()),
        G::Not(inner, _) => Node::Not(Box::new(expected(inner))),
        G::Term(f, v) => Node::Term { field: f.as_ref().map(|f| f.to_lowercase()), value: v.clone(), position: 0 },
    }
}

fn zero_positions(n: Node) -> Node {
    match n {
        Node::And(v) => Node::And(v.into_iter().map(zero_positions).collect()),
        Node::Or(v) => Node::Or(v.into_iter().map(zero_positions).collect()),
        Node::Not(b) => Node::Not(Box::new(zero_positions(*b))),
        Node::Term { field, value, .. } => Node::Term { field, value, position: 0 },
    }
}

/// Every term's position points into the query, at the term's first character.
fn check_positions(n: &Node, chars: &[char]) -> Result<(), TestCaseError> {
    match n {
        Node::And(v) | Node::Or(v) => v.iter().try_for_each(|c| check_positions(c, chars)),
        Node::Not(b) => check_positions(b, chars),
        Node::Term { field, value, position } => {
            prop_assert!(*position < chars.len(), "term position {} past the end {}", position, chars.len());
            // A bounded look (a whole-suffix copy per term made long queries quadratic).
            let rest: String = chars[*position..].iter().take(64).collect();
            let head: String = match (field, value) {
                (Some(f), _) => f.clone(),
                (None, Value::Phrase(_)) => "\"".to_owned(),
                (None, Value::Word(w) | Value::Prefix(w) | Value::Fuzzy(w, _)) => w.clone(),
                (None, Value::Range(..)) => String::new(),
            }
            .chars()
            .take(32)
            .collect();
            prop_assert!(
                rest.to_lowercase().starts_with(&head.to_lowercase()),
                "term {:?} at {} but the query there is {:?}",
                head,
                position,
                rest
            );
            Ok(())
        }
    }
}

/// What holds of any answer of `parse`.
fn check_parse(q: &str) -> Result<Option<Node>, TestCaseError> {
    let chars: Vec<char> = q.chars().collect();
    match syntax::parse(q) {
        Ok(n) => {
            check_positions(&n, &chars)?;
            Ok(Some(n))
        }
        Err(e) => {
            prop_assert!(
                e.position <= chars.len(),
                "error position {} past the end {} of {:?}",
                e.position,
                chars.len(),
                q
            );
            prop_assert!(!e.message.is_empty());
            let shown = e.to_string();
            prop_assert!(shown.ends_with(&format!("at character {}", e.position)), "{}", shown);
            Ok(None)
        }
    }
}

fn ws() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![" ", " ", "  ", "\t", "\n", " \u{3000} "])
}

proptest! {
    #![proptest_config(config())]

    /// A query written from a tree parses back to that tree.
    #[test]
    fn parse_round_trip(g in tree(), sep in ws(), pad in ws()) {
        let q = format!("{pad}{}{pad}", render_query(&g, sep));
        let parsed = check_parse(&q)?;
        prop_assert!(parsed.is_some(), "{:?} does not parse: {:?}", q, syntax::parse(&q).err());
        prop_assert_eq!(parsed.map(zero_positions), Some(expected(&g)), "query {:?}", q);
        // The same tree as an item of a longer query.
        let q2 = format!("x{sep}{}", render(&g, Ctx::Item, sep));
        let parsed = check_parse(&q2)?.map(zero_positions);
        let want = Node::And(vec![expected(&G::Term(None, Value::Word("x".to_owned()))), expected(&g)]);
        prop_assert_eq!(parsed, Some(want), "query {:?}", q2);
    }

    /// Valid queries, mutated: never a panic; errors point into the query.
    #[test]
    fn parse_mutated(g in tree(), sep in ws(), ms in prop::collection::vec(mutation(), 1..5)) {
        check_parse(&apply(&render_query(&g, sep), &ms))?;
    }

    /// Any string: never a panic; errors point into the query.
    #[test]
    fn parse_random(q in prop_oneof![any::<String>(), "[a-z \"()\\-:*~\\[\\]ORANDT0-9\\\\]{0,40}"]) {
        check_parse(&q)?;
    }

    /// Deep nesting is refused, not a stack overflow.
    #[test]
    fn parse_deep_nesting(n in prop_oneof![0usize..64, 64usize..2_000], open in prop::sample::select(vec!["(", "-(", "NOT (", "a OR (", "x:("]), closed in any::<bool>()) {
        let q = format!("{}a{}", open.repeat(n), if closed { ")".repeat(n) } else { String::new() });
        let r = check_parse(&q)?;
        if n > 32 && open != "x:(" {
            prop_assert!(r.is_none(), "{} nested groups were taken", n);
        }
        // As many groups side by side are no nesting at all.
        let siblings = "(a) ".repeat(n.min(500));
        prop_assert!(check_parse(&siblings)?.is_some(), "{} groups side by side were refused", n.min(500));
    }
}

// ---------------------------------------------------------------------------------------
// The search the query feeds, over a small real index
// ---------------------------------------------------------------------------------------

struct Fixture {
    _dir: tempfile::TempDir,
    index: Arc<SearchIndex>,
}

fn doc(name: &str, text: &str, tags: &[&str], meta: serde_json::Value, created: &str) -> DocInput {
    let id = Uuid::now_v7();
    let raw = json!({
        "schema": "artstore/sidecar/v1",
        "file_id": id, "document_id": id, "version": 1, "revision": 1,
        "state": "active", "original_name": name, "stored_name": format!("x_{id}"),
        "content_type": "text/plain", "size": text.len(),
        "sha256": "3a6eb0790f39ac87c94f3856b2dd2c5d110e6811602261a9a923d3bb23adc8b7",
        "created_at": created, "created_by": "alice", "updated_at": created, "updated_by": "alice",
        "description": format!("about {name}"), "tags": tags, "metadata": meta,
        "retention": {"mode": "none", "legal_hold": false, "disposition": "dispose"},
        "content": {"location": "hot"}
    });
    DocInput {
        sidecar: DocInput::parse_sidecar(&raw).expect("sidecar"),
        raw,
        element_id: "se-1".to_owned(),
        extraction: Extraction::Ok { text: text.to_owned(), format: "text".to_owned(), truncated: false },
    }
}

/// A small real index in a temporary folder, removed when the fixture is dropped (one
/// per test, so no run leaves an index behind).
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let (index, _) = SearchIndex::open(&dir.path().join("idx")).expect("index");
    let mut w = index.writer(20 << 20).expect("writer");
    for d in [
        doc(
            "supply contract.txt",
            "The supply contract for steel was signed in March.",
            &["Finance", "2024"],
            json!({"customer": "ACME Corp", "n": 7}),
            "2024-03-01T10:00:00Z",
        ),
        doc(
            "Договор.txt",
            "Договор поставки подписан в марте. Высокопроизводительный сервер.",
            &["legal"],
            json!({}),
            "2025-01-15T08:30:00Z",
        ),
        doc(
            "Übersicht 2024.md",
            "Übersicht der Berichte; report a b c (draft) \"quoted\" contr* ~1",
            &[],
            json!({"customer": "Müller"}),
            "2023-12-31T23:59:59Z",
        ),
    ] {
        assert_eq!(w.apply(&d), Applied::Indexed);
    }
    w.commit(None).expect("commit");
    w.close().expect("close");
    Fixture { _dir: dir, index }
}

fn sort() -> impl Strategy<Value = Sort> {
    prop::sample::select(vec![Sort::Relevance, Sort::Created, Sort::CreatedDesc, Sort::Name])
}

/// The dates tantivy can hold (nanoseconds in an i64): 1677-09-21 to 2262-04-11.
fn tantivy_can_hold(d: chrono::DateTime<chrono::Utc>) -> bool {
    d.timestamp().checked_mul(1_000_000_000).is_some()
}

/// Reads a date as `search.rs` does (RFC 3339, or `YYYY-MM-DD` at either end of the day).
fn query_date(s: &str, end_of_day: bool) -> Option<chrono::DateTime<chrono::Utc>> {
    if let Ok(d) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(d.with_timezone(&chrono::Utc));
    }
    let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    let t = if end_of_day { d.and_hms_opt(23, 59, 59) } else { d.and_hms_opt(0, 0, 0) };
    Some(t?.and_utc())
}

/// Whether the query names a `created`/`updated` date tantivy cannot hold: the finding
/// `date_out_of_range_*`, kept apart so the search properties stay about the rest.
fn names_unholdable_date(n: &Node) -> bool {
    match n {
        Node::And(v) | Node::Or(v) => v.iter().any(names_unholdable_date),
        Node::Not(b) => names_unholdable_date(b),
        Node::Term { field: Some(f), value, .. } if f == "created" || f == "updated" => {
            let dates: Vec<Option<chrono::DateTime<chrono::Utc>>> = match value {
                Value::Range(a, b) => vec![
                    a.as_deref().and_then(|s| query_date(s, false)),
                    b.as_deref().and_then(|s| query_date(s, true)),
                ],
                Value::Word(w) if w.len() == 4 && w.chars().all(|c| c.is_ascii_digit()) => {
                    vec![query_date(&format!("{w}-01-01"), false), query_date(&format!("{w}-12-31"), true)]
                }
                Value::Word(w) => vec![query_date(w, false), query_date(w, true)],
                _ => vec![],
            };
            dates.into_iter().flatten().any(|d| !tantivy_can_hold(d))
        }
        Node::Term { .. } => false,
    }
}

/// The message of tantivy's failed debug assertion in `PhraseScorer::seek_danger`, the
/// only place it is written (finding `phrase_exclusion_*`).
const KNOWN_TANTIVY_ASSERT: &str = ") should be greater than or equal to doc (";

/// Keeps the default panic report for every panic but the known tantivy assertion,
/// which the search properties tolerate (and `phrase_exclusion_regression` pins).
fn quiet_known_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let msg = info.payload().downcast_ref::<String>().map(String::as_str).unwrap_or_default();
            if !msg.contains(KNOWN_TANTIVY_ASSERT) {
                default(info);
            }
        }));
    });
}

/// Runs a search; what holds of any answer: no panic, no index error (a 500) for a
/// user's query, a page no longer than the limit.
fn check_search(fx: &Fixture, q: &str, sort: Sort, limit: usize, offset: usize) -> Result<(), TestCaseError> {
    if syntax::parse(q).is_ok_and(|n| names_unholdable_date(&n)) {
        return Ok(());
    }
    quiet_known_panics();
    let r = SearchRequest { q: q.to_owned(), limit, offset, sort, ..Default::default() };
    // The index is only read: a panic cannot leave it half changed.
    let run = std::panic::AssertUnwindSafe(|| search::run(&fx.index, &r, chrono::Utc::now()));
    let answer = std::panic::catch_unwind(run);
    let answer = match answer {
        Ok(a) => a,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            if msg.contains(KNOWN_TANTIVY_ASSERT) {
                return Ok(());
            }
            return Err(TestCaseError::fail(format!("query {q:?} panicked: {msg}")));
        }
    };
    match answer {
        Ok(v) => {
            let hits = v["hits"].as_array().map_or(0, Vec::len);
            prop_assert!(hits <= limit);
            let total = v["total"].as_u64().unwrap_or(0) as usize;
            prop_assert!(hits == 0 || total >= offset + hits, "{} hits at offset {} of {}", hits, offset, total);
        }
        Err(SearchError::Index(e)) => {
            return Err(TestCaseError::fail(format!("query {q:?} failed inside the index: {e}")));
        }
        Err(SearchError::Syntax(e)) => {
            prop_assert!(e.position <= q.chars().count(), "{:?}: {}", q, e);
        }
        Err(SearchError::BadParameter(_)) => {}
    }
    Ok(())
}

/// Generated queries run, on every field, with every sort.
#[test]
fn search_generated() {
    let fx = fixture();
    proptest!(config(), |(g in tree(), sep in ws(), s in sort(), limit in 1..=MAX_LIMIT, offset in 0usize..8)| {
        check_search(&fx, &render_query(&g, sep), s, limit, offset)?;
    });
}

/// Mutated and random queries run or are refused with a position.
#[test]
fn search_mutated() {
    let fx = fixture();
    proptest!(config(), |(
        g in tree(),
        ms in prop::collection::vec(mutation(), 1..4),
        random in prop_oneof![Just(None), any::<String>().prop_map(Some)],
        s in sort(),
    )| {
        let q = random.unwrap_or_else(|| apply(&render_query(&g, " "), &ms));
        check_search(&fx, &q, s, 20, 0)?;
    });
}

/// Suggestions for any prefix.
#[test]
fn suggest_any_prefix() {
    let fx = fixture();
    proptest!(config(), |(prefix in prop_oneof![any::<String>(), "[a-zа-яü]{0,4}"], limit in 1usize..=50)| {
        match suggest::suggest(&fx.index, &prefix, limit) {
            Ok(_) | Err(SearchError::Syntax(_) | SearchError::BadParameter(_)) => {}
            Err(SearchError::Index(e)) => return Err(TestCaseError::fail(format!("{prefix:?}: {e}"))),
        }
    });
}

proptest! {
    #![proptest_config(config())]

    /// The cursor this service hands out decodes to its offset, up to the deepest page;
    /// beyond it the cursor is refused.
    #[test]
    fn cursor_round_trip(o in any::<usize>()) {
        let want = (o <= search::MAX_OFFSET).then_some(o);
        prop_assert_eq!(search::decode_cursor(&search::encode_cursor(o)).ok(), want);
        let small = o % (search::MAX_OFFSET + 1);
        prop_assert_eq!(search::decode_cursor(&search::encode_cursor(small)).ok(), Some(small));
    }

    /// Any other string is refused or decodes to some offset; never a panic.
    #[test]
    fn cursor_random(
        s in prop_oneof![
            any::<String>(),
            "[A-Za-z0-9_=+/-]{0,40}",
            any::<usize>().prop_map(search::encode_cursor),
            ".{0,20}".prop_map(|j| URL_SAFE_NO_PAD.encode(j)),
        ],
        ms in prop::collection::vec(mutation(), 0..3),
    ) {
        let s = apply(&s, &ms);
        if let Err(e) = search::decode_cursor(&s) {
            prop_assert!(matches!(e, SearchError::BadParameter(_)), "{}", e);
        }
    }

    /// `sort` takes its four names, nothing else.
    #[test]
    fn sort_names(s in prop_oneof![any::<String>(), prop::sample::select(vec!["relevance", "created", "-created", "name", "Name", " name"]).prop_map(str::to_owned)]) {
        prop_assert_eq!(Sort::parse(&s).is_some(), matches!(s.as_str(), "relevance" | "created" | "-created" | "name"));
    }
}

/// A forged cursor names any offset: `{"o":1000000000000}`. The search asks tantivy for
/// the top `offset + limit` documents, and tantivy reserves twice that many slots up
/// front: the allocation fails and the process aborts (a release build too). The API's
/// `check` takes the offset from the cursor without a bound. (The abort runs no
/// destructor: this test leaves its temporary index folder behind.)
#[test]
fn forged_cursor_huge_offset_regression() {
    let cursor = URL_SAFE_NO_PAD.encode(br#"{"o":1000000000000}"#);
    assert!(search::decode_cursor(&cursor).is_err(), "a cursor past the deepest page is refused");
    let r = SearchRequest { q: "contract".to_owned(), limit: 20, offset: 1_000_000_000_000, ..Default::default() };
    assert!(search::run(&fixture().index, &r, chrono::Utc::now()).is_err(), "and so is such a request");
}

/// `{"o":18446744073709551615}`: `offset + limit` overflowed (a panic in debug builds, in
/// tantivy's `TopDocs::doc_range` and in `search::run`'s `next`); now refused.
#[test]
fn forged_cursor_max_offset_regression() {
    let cursor = URL_SAFE_NO_PAD.encode(br#"{"o":18446744073709551615}"#);
    assert!(search::decode_cursor(&cursor).is_err());
    let r = SearchRequest { q: "contract".to_owned(), limit: 20, offset: usize::MAX, ..Default::default() };
    assert!(search::run(&fixture().index, &r, chrono::Utc::now()).is_err());
    // The deepest allowed page still answers (empty past the end).
    let cursor = URL_SAFE_NO_PAD.encode(br#"{"o":100000}"#);
    let offset = search::decode_cursor(&cursor).expect("the deepest page");
    let r = SearchRequest { q: "contract".to_owned(), limit: 20, offset, ..Default::default() };
    let v = search::run(&fixture().index, &r, chrono::Utc::now()).expect("a page past the end is empty");
    assert_eq!(v["hits"].as_array().map(Vec::len), Some(0));
}

/// `created:[1500-01-01 TO *]`: every document was created after 1500. The date becomes
/// `tantivy::DateTime::from_timestamp_secs(secs)`, which multiplies by 10^9 in an i64:
/// any date before 1677-09-21 or after 2262-04-11 overflows (a panic in debug builds; a
/// wrapped, wrong date in release builds, so the filter matches the wrong documents).
#[test]
fn date_out_of_range_regression() {
    let fx = fixture();
    for (q, want) in [("created:[1500-01-01 TO *]", 3), ("created:2300", 0), ("updated:[* TO 9999-12-31]", 3)] {
        let r = SearchRequest { q: q.to_owned(), limit: 20, ..Default::default() };
        let v = search::run(&fx.index, &r, chrono::Utc::now()).expect("runs");
        assert_eq!(v["total"], want, "{q}");
    }
}

/// The same conversion when indexing (`doc.rs` `tdate`): a document kept until
/// 9999-12-31 (a "permanent" retention date the upload form accepts) is indexed with an
/// overflowed date (a panic in debug builds; in release the date wraps to 1816-03-29,
/// so `retention=under-retention` misses it).
#[test]
fn far_retention_date_is_indexed_regression() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (index, _) = SearchIndex::open(&dir.path().join("idx")).expect("index");
    let mut d = doc("kept.txt", "kept forever", &[], json!({}), "2025-01-01T00:00:00Z");
    d.raw["retention"] = json!({"mode": "compliance", "retain_until": "9999-12-31T00:00:00Z", "legal_hold": false, "disposition": "review"});
    d.sidecar = DocInput::parse_sidecar(&d.raw).expect("sidecar");
    let mut w = index.writer(20 << 20).expect("writer");
    assert_eq!(w.apply(&d), Applied::Indexed);
    w.commit(None).expect("commit");
    w.close().expect("close");
    let r = SearchRequest { retention: Some("under-retention".to_owned()), limit: 20, ..Default::default() };
    let v = search::run(&index, &r, chrono::Utc::now()).expect("runs");
    assert_eq!(v["total"], 1);
}

/// `-"contract steel" OR contract` on an index where both words occur but not side by
/// side, or `-("ä b" OR 2)`: tantivy 0.27.0's `Exclude::new` calls `seek_danger(0)` on a
/// phrase scorer already past 0 (exhausted, or on doc 2), and its
/// `debug_assert!(target >= self.doc())` fails (debug builds only; the assertion is
/// compiled out of release builds). Upstream code, reached by a user's query.
#[test]
#[ignore = "finding: tantivy 0.27.0 PhraseScorer::seek_danger debug assertion fails for -\"contract steel\" OR contract"]
fn phrase_exclusion_regression() {
    let fx = fixture();
    for (q, want) in [("-\"contract steel\" OR contract", Some(3)), ("-(\"ä b\" OR 2)", None)] {
        let r = SearchRequest { q: q.to_owned(), limit: 20, ..Default::default() };
        let v = search::run(&fx.index, &r, chrono::Utc::now()).expect("runs");
        if let Some(n) = want {
            assert_eq!(v["total"], n, "{q}");
        }
    }
}
