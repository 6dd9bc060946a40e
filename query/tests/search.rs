//! The index and the search language end to end, in process: documents go in through the
//! one writer (idempotent by revision), searches come out as the API's JSON.

use artstore_query::doc::{DocInput, Extraction};
use artstore_query::index::{Applied, SearchIndex, layout};
use artstore_query::search::{self, SearchError, SearchRequest, Sort};
use serde_json::{Value, json};
use std::sync::Arc;
use uuid::Uuid;

struct Doc {
    id: Uuid,
    name: &'static str,
    text: Option<&'static str>,
    revision: u64,
    state: &'static str,
    content_type: &'static str,
    tags: Vec<&'static str>,
    created: &'static str,
    metadata: Value,
    description: Option<&'static str>,
    legal_hold: bool,
    policy: Option<&'static str>,
}

impl Doc {
    fn new(name: &'static str, text: &'static str) -> Doc {
        Doc {
            id: Uuid::now_v7(),
            name,
            text: Some(text),
            revision: 1,
            state: "active",
            content_type: "text/plain",
            tags: vec![],
            created: "2025-03-01T10:00:00Z",
            metadata: json!({}),
            description: None,
            legal_hold: false,
            policy: None,
        }
    }

    fn sidecar(&self) -> Value {
        json!({
            "schema": "artstore/sidecar/v1",
            "file_id": self.id, "document_id": self.id, "version": 1, "revision": self.revision,
            "state": self.state, "original_name": self.name, "stored_name": format!("x_{}", self.id),
            "content_type": self.content_type, "size": self.text.map_or(0, str::len),
            "sha256": "3a6eb0790f39ac87c94f3856b2dd2c5d110e6811602261a9a923d3bb23adc8b7",
            "created_at": self.created, "created_by": "alice", "updated_at": self.created, "updated_by": "alice",
            "description": self.description, "tags": self.tags, "metadata": self.metadata,
            "retention": {"policy": self.policy, "mode": "none", "retain_until": null, "legal_hold": self.legal_hold, "disposition": "dispose"},
            "content": {"location": "hot"}
        })
    }

    fn input(&self) -> DocInput {
        let raw = self.sidecar();
        let extraction = match self.text {
            _ if self.state == "deleted" || self.state == "disposed" => {
                Extraction::Skipped { reason: "deleted".into() }
            }
            Some(t) => Extraction::Ok { text: t.to_owned(), format: "text".into(), truncated: false },
            None => Extraction::Failed { reason: "pdf is malformed: no xref".into() },
        };
        DocInput { sidecar: DocInput::parse_sidecar(&raw).unwrap(), raw, element_id: "se-1".into(), extraction }
    }
}

fn index_with(docs: &[&Doc]) -> (tempfile::TempDir, Arc<SearchIndex>) {
    let dir = tempfile::tempdir().unwrap();
    let (index, _) = SearchIndex::open(&dir.path().join("idx")).unwrap();
    let mut w = index.writer(20 << 20).unwrap();
    for d in docs {
        assert_eq!(w.apply(&d.input()), Applied::Indexed);
    }
    w.commit(None).unwrap();
    w.close().unwrap();
    (dir, index)
}

fn req(q: &str) -> SearchRequest {
    SearchRequest { q: q.to_owned(), limit: 20, ..Default::default() }
}

fn run(index: &SearchIndex, r: &SearchRequest) -> Value {
    search::run(index, r, chrono::Utc::now()).unwrap()
}

fn names(v: &Value) -> Vec<String> {
    v["hits"].as_array().unwrap().iter().map(|h| h["name"].as_str().unwrap().to_owned()).collect()
}

fn find(index: &SearchIndex, q: &str) -> Vec<String> {
    names(&run(index, &req(q)))
}

#[test]
fn stemming_in_english_and_russian_and_across_both() {
    let en = Doc::new("en.txt", "The supply contracts were signed in March.");
    let ru = Doc::new("ru.txt", "Договор поставки подписан в марте. Высокопроизводительный сервер.");
    let (_d, index) = index_with(&[&en, &ru]);
    assert_eq!(find(&index, "contract"), vec!["en.txt"]);
    assert_eq!(find(&index, "contracts"), vec!["en.txt"]);
    assert_eq!(find(&index, "договоры"), vec!["ru.txt"]);
    assert_eq!(find(&index, "высокопроизводительный"), vec!["ru.txt"]);
    let both = find(&index, "contracts OR договоры");
    assert_eq!(both.len(), 2, "{both:?}");
    let v = run(&index, &req("договоры"));
    assert_eq!(v["hits"][0]["language"], "ru");
}

#[test]
fn phrases_exclusions_prefixes_and_fuzzy() {
    let a = Doc::new("a.txt", "supply contract for steel");
    let b = Doc::new("b.txt", "contract supply of water, draft");
    let c = Doc::new("c.txt", "kontract misspelt once");
    let (_d, index) = index_with(&[&a, &b, &c]);
    assert_eq!(find(&index, "\"supply contract\""), vec!["a.txt"]);
    assert_eq!(find(&index, "contract -draft"), vec!["a.txt"]);
    let mut p = find(&index, "contr*");
    p.sort();
    assert_eq!(p, vec!["a.txt", "b.txt"]);
    // Fuzzy: exact matches rank above the typo, and the typo is highlighted too.
    let v = run(&index, &req("contract~1"));
    let n = names(&v);
    assert_eq!(n.len(), 3, "{n:?}");
    assert_eq!(n[2], "c.txt", "{n:?}");
    let hl = v["hits"][2]["highlights"]["content"][0].as_str().unwrap();
    assert!(hl.contains("<mark>kontract</mark>"), "{hl}");
    // Every word must match by default.
    assert_eq!(find(&index, "steel contract"), vec!["a.txt"]);
    assert!(find(&index, "steel water").is_empty());
}

#[test]
fn fields_metadata_and_dates() {
    let mut a = Doc::new("Annual report.txt", "numbers");
    a.tags = vec!["Finance", "2024"];
    a.metadata = json!({"customer": "ACME Corporation", "pages": 12});
    a.description = Some("filed with the regulator");
    a.created = "2024-05-01T10:00:00Z";
    let mut b = Doc::new("notes.md", "report of the meeting");
    b.content_type = "text/markdown";
    b.created = "2025-02-01T10:00:00Z";
    let (_d, index) = index_with(&[&a, &b]);
    assert_eq!(find(&index, "name:report"), vec!["Annual report.txt"]);
    let mut r = find(&index, "report");
    r.sort();
    assert_eq!(r.len(), 2);
    assert_eq!(find(&index, "tags:finance"), vec!["Annual report.txt"]);
    assert_eq!(find(&index, "customer:acme"), vec!["Annual report.txt"]);
    assert_eq!(find(&index, "customer:\"acme corporation\""), vec!["Annual report.txt"]);
    assert_eq!(find(&index, "pages:12"), vec!["Annual report.txt"]);
    assert_eq!(find(&index, "description:regulator"), vec!["Annual report.txt"]);
    assert_eq!(find(&index, "content_type:text/markdown"), vec!["notes.md"]);
    assert_eq!(find(&index, "created:[2024-01-01 TO 2024-12-31]"), vec!["Annual report.txt"]);
    assert_eq!(find(&index, "created:[2025-01-01 TO *]"), vec!["notes.md"]);
    assert_eq!(find(&index, "created:2025"), vec!["notes.md"]);
    // Free words also search metadata values and tags.
    assert_eq!(find(&index, "acme"), vec!["Annual report.txt"]);
}

#[test]
fn syntax_errors_name_the_position() {
    let (_d, index) = index_with(&[]);
    for (q, pos) in [("contract \"open", 9), ("(a OR b", 0), ("created:[2024-13-45 TO *]", 0)] {
        match search::run(&index, &req(q), chrono::Utc::now()) {
            Err(SearchError::Syntax(e)) => assert_eq!(e.position, pos, "{q}: {e}"),
            other => panic!("{q}: {other:?}"),
        }
    }
}

#[test]
fn filters_facets_sorting_and_paging() {
    let mut docs = Vec::new();
    for i in 0..25 {
        let mut d = Doc::new(["b.txt", "a.txt", "c.pdf"][i % 3], "common words here");
        d.content_type = if i % 3 == 2 { "application/pdf" } else { "text/plain" };
        d.created = ["2023-01-01T00:00:00Z", "2024-06-01T00:00:00Z", "2025-09-01T00:00:00Z"][i % 3];
        d.tags = if i % 2 == 0 { vec!["even"] } else { vec!["odd"] };
        d.legal_hold = i == 0;
        docs.push(d);
    }
    let refs: Vec<&Doc> = docs.iter().collect();
    let (_d, index) = index_with(&refs);
    let mut r = req("common");
    r.facets =
        vec!["content_type".into(), "tags".into(), "year".into(), "retention".into(), "element".into(), "state".into()];
    let v = run(&index, &r);
    assert_eq!(v["total"], 25);
    assert_eq!(v["hits"].as_array().unwrap().len(), 20);
    let ct = &v["facets"]["content_type"];
    assert!(ct.as_array().unwrap().contains(&json!({"value": "text/plain", "count": 17})), "{ct}");
    assert!(ct.as_array().unwrap().contains(&json!({"value": "application/pdf", "count": 8})), "{ct}");
    assert!(
        v["facets"]["year"].as_array().unwrap().contains(&json!({"value": 2024, "count": 8})),
        "{}",
        v["facets"]["year"]
    );
    assert!(v["facets"]["tags"].as_array().unwrap().contains(&json!({"value": "even", "count": 13})));
    assert!(v["facets"]["retention"].as_array().unwrap().contains(&json!({"value": "on-hold", "count": 1})));
    assert_eq!(v["facets"]["element"][0], json!({"value": "se-1", "count": 25}));
    // Paging with the cursor covers everything exactly once.
    let cursor = v["next_cursor"].as_str().unwrap().to_owned();
    let mut r2 = req("common");
    r2.offset = search::decode_cursor(&cursor).unwrap();
    let v2 = run(&index, &r2);
    assert_eq!(v2["hits"].as_array().unwrap().len(), 5);
    assert!(v2["next_cursor"].is_null());
    // Filters.
    let mut f = req("common");
    f.content_type = Some("application/pdf".into());
    f.tags = vec!["even".into()];
    assert_eq!(run(&index, &f)["total"], 4);
    let mut f = req("");
    f.from = chrono::NaiveDate::from_ymd_opt(2024, 1, 1);
    f.to = chrono::NaiveDate::from_ymd_opt(2024, 12, 31);
    assert_eq!(run(&index, &f)["total"], 8);
    let mut f = req("");
    f.retention = Some("on-hold".into());
    assert_eq!(run(&index, &f)["total"], 1);
    // Sorting.
    let mut s = req("");
    s.sort = Sort::Name;
    s.limit = 25;
    let n = names(&run(&index, &s));
    assert_eq!(&n[..9], &["a.txt"; 8].iter().chain(["b.txt"].iter()).copied().collect::<Vec<_>>()[..]);
    let mut s = req("");
    s.sort = Sort::CreatedDesc;
    let v = run(&index, &s);
    assert_eq!(v["hits"][0]["created_at"], "2025-09-01T00:00:00Z");
    let mut s = req("");
    s.sort = Sort::Created;
    assert_eq!(run(&index, &s)["hits"][0]["created_at"], "2023-01-01T00:00:00Z");
}

#[test]
fn documents_are_counted_and_filtered_by_retention_policy() {
    let mut docs = Vec::new();
    for (i, policy) in [Some("tax-records"), Some("tax-records"), Some("HR"), None, Some("")].into_iter().enumerate() {
        let mut d = Doc::new(["a.txt", "b.txt", "c.txt", "d.txt", "e.txt"][i], "common words");
        d.policy = policy;
        docs.push(d);
    }
    let mut gone = Doc::new("gone.txt", "common words");
    gone.policy = Some("tax-records");
    gone.state = "deleted";
    docs.push(gone);
    let refs: Vec<&Doc> = docs.iter().collect();
    let (_d, index) = index_with(&refs);
    let mut r = req("");
    r.facets = vec!["retention_policy".into()];
    let v = run(&index, &r);
    assert_eq!(v["total"], 5);
    // Names are exact (not lower-cased); no policy and an empty one are not counted, and
    // neither is a deleted document.
    assert_eq!(
        v["facets"]["retention_policy"],
        json!([{"value": "tax-records", "count": 2}, {"value": "HR", "count": 1}])
    );
    let mut f = req("");
    f.retention_policy = Some("tax-records".into());
    let mut n = names(&run(&index, &f));
    n.sort();
    assert_eq!(n, vec!["a.txt", "b.txt"]);
    f.retention_policy = Some("hr".into());
    assert_eq!(run(&index, &f)["total"], 0, "policy names are exact");
    f.retention_policy = Some("HR".into());
    f.facets = vec!["retention_policy".into(), "state".into()];
    let v = run(&index, &f);
    assert_eq!(names(&v), vec!["c.txt"]);
    assert_eq!(v["facets"]["retention_policy"], json!([{"value": "HR", "count": 1}]));
    assert_eq!(v["hits"][0]["retention"]["policy"], "HR");
}

#[test]
fn highlights_escape_html_and_mark_names() {
    let d = Doc::new("<b>contract</b>.html", "<script>alert('x')</script> the contract & more");
    let (_d, index) = index_with(&[&d]);
    let v = run(&index, &req("contract"));
    let hl = &v["hits"][0]["highlights"];
    assert_eq!(
        hl["content"][0],
        "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; the <mark>contract</mark> &amp; more"
    );
    assert_eq!(hl["name"][0], "&lt;b&gt;<mark>contract</mark>&lt;/b&gt;.html");
}

#[test]
fn failed_extraction_is_indexed_by_metadata_with_the_reason() {
    let mut d = Doc::new("broken scan.pdf", "");
    d.text = None;
    d.content_type = "application/pdf";
    let (_d, index) = index_with(&[&d]);
    let v = run(&index, &req("broken"));
    assert_eq!(v["total"], 1);
    assert_eq!(v["hits"][0]["extraction"], "failed");
    assert_eq!(v["hits"][0]["extraction_reason"], "pdf is malformed: no xref");
}

#[test]
fn revisions_are_idempotent_and_tombstones_only_for_auditors() {
    let dir = tempfile::tempdir().unwrap();
    let (index, _) = SearchIndex::open(&dir.path().join("idx")).unwrap();
    let mut w = index.writer(20 << 20).unwrap();
    let mut d = Doc::new("x.txt", "first words");
    d.revision = 2;
    assert_eq!(w.apply(&d.input()), Applied::Indexed);
    // The same event again, and an older revision: nothing changes.
    assert_eq!(w.apply(&d.input()), Applied::UpToDate);
    let mut older = Doc { text: Some("older words"), revision: 1, ..Doc::new("x.txt", "") };
    older.id = d.id;
    assert_eq!(w.apply(&older.input()), Applied::UpToDate);
    w.commit(None).unwrap();
    assert_eq!(find(&index, "first"), vec!["x.txt"]);
    assert!(find(&index, "older").is_empty());
    // Deleted at revision 3; a late update at revision 2 must not bring it back.
    let mut del = Doc::new("x.txt", "");
    del.id = d.id;
    del.revision = 3;
    del.state = "deleted";
    assert_eq!(w.apply(&del.input()), Applied::Indexed);
    let mut late = Doc::new("x.txt", "late words");
    late.id = d.id;
    late.revision = 2;
    assert_eq!(w.apply(&late.input()), Applied::UpToDate);
    w.commit(None).unwrap();
    assert!(find(&index, "x").is_empty(), "tombstones are hidden by default");
    assert!(find(&index, "first").is_empty(), "content left the index");
    let mut audit = req("name:x");
    audit.state = Some("deleted".into());
    audit.tombstones = true;
    assert_eq!(names(&run(&index, &audit)), vec!["x.txt"]);
    audit.tombstones = false;
    assert_eq!(run(&index, &audit)["total"], 0);
    assert_eq!(index.num_docs(), 1);
    w.close().unwrap();
    drop(index);
    // Reopened: the revision map is read back from the index.
    let (index, opened) = SearchIndex::open(&dir.path().join("idx")).unwrap();
    assert_eq!(opened, artstore_query::index::Opened::Existing);
    assert_eq!(index.revision_of(d.id), Some(3));
}

#[test]
fn an_index_of_another_schema_version_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idx");
    let d = Doc::new("x.txt", "words");
    {
        let (index, _) = SearchIndex::open(&path).unwrap();
        let mut w = index.writer(20 << 20).unwrap();
        w.apply(&d.input());
        w.commit(None).unwrap();
        w.close().unwrap();
    }
    let meta = path.join(artstore_query::index::META_FILE);
    // Written by the previous release: its documents lack the fields added since.
    let previous = artstore_query::schema::SCHEMA_VERSION - 1;
    std::fs::write(&meta, format!(r#"{{"schema_version": {previous}, "created_at": "2020-01-01T00:00:00Z"}}"#))
        .unwrap();
    let (index, opened) = SearchIndex::open(&path).unwrap();
    assert_eq!(opened, artstore_query::index::Opened::Replaced { found: previous });
    assert_eq!(index.num_docs(), 0);
    drop(index);
    // The new index is the current version: the next start keeps it.
    let (_, opened) = SearchIndex::open(&path).unwrap();
    assert_eq!(opened, artstore_query::index::Opened::Existing);
}

#[test]
fn swap_finishes_after_a_crash_between_the_renames() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let d = Doc::new("next.txt", "fresh words");
    {
        let (live, _) = layout::open_live(root).unwrap();
        drop(live);
        let next = layout::create_next(root).unwrap();
        let mut w = next.writer(20 << 20).unwrap();
        w.apply(&d.input());
        w.commit(None).unwrap();
        w.close().unwrap();
    }
    // Killed after the first rename: live is gone, old and next are there.
    std::fs::rename(layout::live(root), root.join("old")).unwrap();
    let (index, _) = layout::open_live(root).unwrap();
    assert_eq!(find(&index, "fresh"), vec!["next.txt"]);
    assert!(!std::fs::exists(root.join("old")).unwrap() && !std::fs::exists(layout::next(root)).unwrap());
}

#[test]
fn suggestions_complete_names_tags_and_words_as_written() {
    let mut a = Doc::new("Company register.txt", "Several companies signed; the companies agreed.");
    a.tags = vec!["compliance"];
    let b = Doc::new("other.txt", "nothing to see");
    let (_d, index) = index_with(&[&a, &b]);
    let v = artstore_query::suggest::suggest(&index, "comp", 10).unwrap();
    let got: Vec<(String, String)> = v["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["kind"].as_str().unwrap().to_owned(), s["text"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(got[0], ("name".to_owned(), "Company register.txt".to_owned()), "{got:?}");
    assert!(got.contains(&("tag".to_owned(), "compliance".to_owned())), "{got:?}");
    assert!(got.contains(&("term".to_owned(), "companies".to_owned())), "{got:?}");
    assert!(!got.iter().any(|(_, t)| t == "compani"), "stems are shown as written: {got:?}");
}
