//! Running a search: the parsed query and the filters become one tantivy query; hits,
//! facets and highlights come back as the API's JSON.

use crate::doc::stored;
use crate::highlight::{self, Marks};
use crate::index::SearchIndex;
use crate::schema::{self, EXTRA_LANGUAGES, Fields};
use crate::syntax::{self, Node, SyntaxError, Value};
use base64::Engine as _;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, json};
use std::ops::Bound;
use tantivy::collector::{Count, TopDocs};
use tantivy::query::{
    AllQuery, BooleanQuery, BoostQuery, EmptyQuery, FuzzyTermQuery, Occur, PhrasePrefixQuery, PhraseQuery, Query,
    RangeQuery, TermQuery,
};
use tantivy::schema::{Field, IndexRecordOption};
use tantivy::tokenizer::TextAnalyzer;
use tantivy::{DocAddress, Order, Searcher, Term};

/// Most hits one page may ask for.
pub const MAX_LIMIT: usize = 1000;

/// The deepest page a cursor may start at (the search holds offset + limit hits).
pub const MAX_OFFSET: usize = 100_000;
/// Hits per page when none is asked for.
pub const DEFAULT_LIMIT: usize = 20;

/// Result order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Sort {
    #[default]
    #[serde(rename = "relevance")]
    Relevance,
    #[serde(rename = "created")]
    Created,
    #[serde(rename = "-created")]
    CreatedDesc,
    #[serde(rename = "name")]
    Name,
}

impl Sort {
    pub fn parse(s: &str) -> Option<Sort> {
        Some(match s {
            "relevance" => Sort::Relevance,
            "created" => Sort::Created,
            "-created" => Sort::CreatedDesc,
            "name" => Sort::Name,
            _ => return None,
        })
    }
}

/// The facets that can be counted.
pub const FACETS: &[&str] = &["content_type", "tags", "year", "element", "retention", "retention_policy", "state"];

/// The retention filters.
pub const RETENTION_FILTERS: &[&str] = &["under-retention", "on-hold", "review-due", "disposed"];

/// A checked search request.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SearchRequest {
    pub q: String,
    pub limit: usize,
    pub offset: usize,
    pub sort: Sort,
    pub content_type: Option<String>,
    pub tags: Vec<String>,
    pub element: Option<String>,
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
    pub state: Option<String>,
    pub retention: Option<String>,
    /// Only documents whose dates were resolved from this admin policy (exact name).
    pub retention_policy: Option<String>,
    pub document_id: Option<String>,
    pub facets: Vec<String>,
    /// Deleted and disposed documents may be shown (an explicit filter by an auditor).
    pub tombstones: bool,
}

/// Why a search was refused.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// The query does not parse (or names a value that cannot be).
    #[error("{0}")]
    Syntax(#[from] SyntaxError),
    /// A parameter is wrong.
    #[error("{0}")]
    BadParameter(String),
    /// tantivy failed.
    #[error("search failed: {0}")]
    Index(#[from] tantivy::TantivyError),
}

/// The cursor is an opaque token: the offset of the next page.
#[derive(Serialize, Deserialize)]
struct CursorData {
    o: usize,
}

pub fn encode_cursor(offset: usize) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(&CursorData { o: offset }).unwrap_or_default())
}

pub fn decode_cursor(s: &str) -> Result<usize, SearchError> {
    let offset = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .ok()
        .and_then(|b| serde_json::from_slice::<CursorData>(&b).ok())
        .map(|c| c.o)
        .ok_or_else(|| SearchError::BadParameter(format!("cursor {s:?} is not one this service gave")))?;
    // The collector holds offset + limit hits in memory: deep pages are refused, not tried.
    if offset > MAX_OFFSET {
        return Err(SearchError::BadParameter(format!(
            "paging stops after {MAX_OFFSET} results; narrow the search (filters, dates) to reach the rest"
        )));
    }
    Ok(offset)
}

struct Builder<'a> {
    f: &'a Fields,
    multi: TextAnalyzer,
    langs: Vec<TextAnalyzer>,
    marks: Marks,
}

type Q = Box<dyn Query>;

fn term_q(field: Field, text: &str) -> Q {
    Box::new(TermQuery::new(Term::from_field_text(field, text), IndexRecordOption::WithFreqs))
}

fn terms_q(field: Field, terms: &[String]) -> Option<Q> {
    match terms {
        [] => None,
        [t] => Some(term_q(field, t)),
        many => Some(Box::new(PhraseQuery::new(many.iter().map(|t| Term::from_field_text(field, t)).collect()))),
    }
}

/// Every term of `field` that starts with `prefix` (a range over the term dictionary).
pub(crate) fn prefix_term_q(field: Field, prefix: &str) -> Q {
    let mut q = PhrasePrefixQuery::new(vec![Term::from_field_text(field, prefix)]);
    q.set_max_expansions(u32::MAX);
    Box::new(q)
}

fn boost(q: Q, b: f32) -> Q {
    if (b - 1.0).abs() < f32::EPSILON { q } else { Box::new(BoostQuery::new(q, b)) }
}

fn union(qs: Vec<Q>) -> Q {
    match qs.len() {
        0 => Box::new(EmptyQuery),
        1 => qs.into_iter().next().unwrap_or_else(|| Box::new(EmptyQuery)),
        _ => Box::new(BooleanQuery::union(qs)),
    }
}

fn parse_date(s: &str, pos: usize, end_of_day: bool) -> Result<DateTime<Utc>, SyntaxError> {
    let bad = || SyntaxError { position: pos, message: format!("{s:?} is not a date (YYYY-MM-DD)") };
    if let Ok(d) = DateTime::parse_from_rfc3339(s) {
        return Ok(d.with_timezone(&Utc));
    }
    let d = NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| bad())?;
    let t = if end_of_day { d.and_hms_opt(23, 59, 59) } else { d.and_hms_opt(0, 0, 0) };
    Ok(t.ok_or_else(bad)?.and_utc())
}

fn date_term(field: Field, d: DateTime<Utc>) -> Term {
    Term::from_field_date_for_search(
        field,
        tantivy::DateTime::from_timestamp_secs(crate::doc::index_secs(d.timestamp())),
    )
}

fn date_range(field: Field, from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>) -> Q {
    let lo = from.map_or(Bound::Unbounded, |d| Bound::Included(date_term(field, d)));
    let hi = to.map_or(Bound::Unbounded, |d| Bound::Included(date_term(field, d)));
    if matches!((&lo, &hi), (Bound::Unbounded, Bound::Unbounded)) {
        return Box::new(AllQuery);
    }
    Box::new(RangeQuery::new(lo, hi))
}

impl<'a> Builder<'a> {
    fn new(index: &'a SearchIndex) -> Self {
        let t = index.index.tokenizers();
        let multi = t.get(schema::MULTI).unwrap_or_else(schema::multi_analyzer);
        let langs = EXTRA_LANGUAGES
            .iter()
            .map(|(c, l)| t.get(&schema::analyzer_name(c)).unwrap_or_else(|| schema::language_analyzer(*l)))
            .collect();
        Builder { f: &index.fields, multi, langs, marks: Marks::default() }
    }

    /// The text fields a bare word searches, with their analyzer index (None = multi) and boost.
    fn default_fields(&self) -> Vec<(Field, Option<usize>, f32)> {
        let f = self.f;
        let mut v = vec![
            (f.name, None, 3.0),
            (f.tags_text, None, 2.0),
            (f.description, None, 1.5),
            (f.meta_text, None, 1.0),
            (f.content, None, 1.0),
        ];
        v.extend(f.content_lang.iter().enumerate().map(|(i, fl)| (*fl, Some(i), 1.0)));
        v
    }

    fn content_fields(&self) -> Vec<(Field, Option<usize>, f32)> {
        let f = self.f;
        let mut v = vec![(f.content, None, 1.0)];
        v.extend(f.content_lang.iter().enumerate().map(|(i, fl)| (*fl, Some(i), 1.0)));
        v
    }

    fn analyze(&mut self, lang: Option<usize>, text: &str) -> Vec<String> {
        let a = match lang {
            None => &mut self.multi,
            Some(i) => &mut self.langs[i],
        };
        schema::analyze(a, text)
    }

    /// A word or phrase over text fields.
    fn text_q(&mut self, fields: &[(Field, Option<usize>, f32)], text: &str, mark: bool) -> Option<Q> {
        let mut qs = Vec::new();
        for &(field, lang, b) in fields {
            let terms = self.analyze(lang, text);
            if mark {
                self.marks.exact.extend(terms.iter().cloned());
            }
            if let Some(q) = terms_q(field, &terms) {
                qs.push(boost(q, b));
            }
        }
        (!qs.is_empty()).then(|| union(qs))
    }

    fn prefix_q(&mut self, fields: &[(Field, Option<usize>, f32)], prefix: &str, mark: bool) -> Q {
        let p = prefix.to_lowercase();
        if mark {
            self.marks.prefixes.push(p.clone());
        }
        union(fields.iter().map(|&(field, _, b)| boost(prefix_term_q(field, &p), b)).collect())
    }

    fn fuzzy_q(&mut self, fields: &[(Field, Option<usize>, f32)], word: &str, dist: u8, mark: bool) -> Option<Q> {
        let mut qs = Vec::new();
        for &(field, lang, b) in fields {
            let terms = self.analyze(lang, word);
            let [t] = terms.as_slice() else {
                if let Some(q) = terms_q(field, &terms) {
                    qs.push(boost(q, b));
                }
                continue;
            };
            if mark {
                self.marks.fuzzy.push((t.clone(), dist));
            }
            // Exact matches score on top of the fuzzy ones, so they rank first.
            qs.push(boost(term_q(field, t), 2.0 * b));
            qs.push(boost(Box::new(FuzzyTermQuery::new(Term::from_field_text(field, t), dist, true)), 0.5 * b));
        }
        (!qs.is_empty()).then(|| union(qs))
    }

    fn value_over(
        &mut self,
        fields: &[(Field, Option<usize>, f32)],
        v: &Value,
        mark: bool,
        pos: usize,
    ) -> Result<Option<Q>, SyntaxError> {
        Ok(match v {
            Value::Word(w) | Value::Phrase(w) => self.text_q(fields, w, mark),
            Value::Prefix(p) => Some(self.prefix_q(fields, p, mark)),
            Value::Fuzzy(w, d) => self.fuzzy_q(fields, w, *d, mark),
            Value::Range(..) => {
                return Err(SyntaxError {
                    position: pos,
                    message: "a range [… TO …] only works on created and updated".into(),
                });
            }
        })
    }

    fn raw_q(field: Field, v: &Value, pos: usize, lower: bool) -> Result<Q, SyntaxError> {
        let norm = |s: &str| if lower { s.to_lowercase() } else { s.to_owned() };
        Ok(match v {
            Value::Word(w) | Value::Phrase(w) => term_q(field, &norm(w)),
            Value::Prefix(p) => prefix_term_q(field, &norm(p)),
            Value::Fuzzy(w, _) => term_q(field, &norm(w)),
            Value::Range(..) => {
                return Err(SyntaxError {
                    position: pos,
                    message: "a range [… TO …] only works on created and updated".into(),
                });
            }
        })
    }

    fn date_q(field: Field, v: &Value, pos: usize) -> Result<Q, SyntaxError> {
        match v {
            Value::Range(a, b) => {
                let from = a.as_deref().map(|s| parse_date(s, pos, false)).transpose()?;
                let to = b.as_deref().map(|s| parse_date(s, pos, true)).transpose()?;
                Ok(date_range(field, from, to))
            }
            Value::Word(w) if w.len() == 4 && w.chars().all(|c| c.is_ascii_digit()) => {
                let from = parse_date(&format!("{w}-01-01"), pos, false)?;
                let to = parse_date(&format!("{w}-12-31"), pos, true)?;
                Ok(date_range(field, Some(from), Some(to)))
            }
            Value::Word(w) => Ok(date_range(field, Some(parse_date(w, pos, false)?), Some(parse_date(w, pos, true)?))),
            _ => Err(SyntaxError { position: pos, message: "a date field takes a date or [FROM TO UNTIL]".into() }),
        }
    }

    fn meta_q(&mut self, key: &str, v: &Value, pos: usize, mark: bool) -> Result<Option<Q>, SyntaxError> {
        let field = self.f.meta_kv;
        Ok(match v {
            Value::Word(w) | Value::Phrase(w) | Value::Fuzzy(w, _) => {
                let terms = self.analyze(None, w);
                if mark {
                    self.marks.exact.extend(terms.iter().cloned());
                }
                let keyed: Vec<String> = terms.iter().map(|t| format!("{key}:{t}")).collect();
                terms_q(field, &keyed)
            }
            Value::Prefix(p) => {
                Some(Self::raw_q(field, &Value::Prefix(format!("{key}:{}", p.to_lowercase())), pos, false)?)
            }
            Value::Range(..) => {
                return Err(SyntaxError {
                    position: pos,
                    message: "a range [… TO …] only works on created and updated".into(),
                });
            }
        })
    }

    /// `None` means "no condition" (a word that analyses to nothing).
    fn node(&mut self, n: &Node, mark: bool) -> Result<Option<Q>, SyntaxError> {
        match n {
            Node::And(parts) => {
                let mut must = Vec::new();
                let mut not = Vec::new();
                for p in parts {
                    match p {
                        Node::Not(inner) => {
                            if let Some(q) = self.node(inner, false)? {
                                not.push(q);
                            }
                        }
                        other => {
                            if let Some(q) = self.node(other, mark)? {
                                must.push(q);
                            }
                        }
                    }
                }
                if must.is_empty() && not.is_empty() {
                    return Ok(None);
                }
                if must.is_empty() {
                    must.push(Box::new(AllQuery));
                }
                let clauses = must
                    .into_iter()
                    .map(|q| (Occur::Must, q))
                    .chain(not.into_iter().map(|q| (Occur::MustNot, q)))
                    .collect();
                Ok(Some(Box::new(BooleanQuery::new(clauses))))
            }
            Node::Or(parts) => {
                let mut qs = Vec::new();
                for p in parts {
                    match self.node(p, mark)? {
                        Some(q) => qs.push(q),
                        None => return Ok(None),
                    }
                }
                Ok(Some(union(qs)))
            }
            Node::Not(inner) => {
                let q = self.node(inner, false)?;
                Ok(q.map(|q| -> Q {
                    Box::new(BooleanQuery::new(vec![(Occur::Must, Box::new(AllQuery)), (Occur::MustNot, q)]))
                }))
            }
            Node::Term { field: None, value, position } => {
                let fields = self.default_fields();
                self.value_over(&fields, value, mark, *position)
            }
            Node::Term { field: Some(name), value, position } => {
                let f = self.f;
                let pos = *position;
                let multi = |field| vec![(field, None, 1.0f32)];
                match name.as_str() {
                    "name" => self.value_over(&multi(f.name), value, mark, pos),
                    "description" => self.value_over(&multi(f.description), value, mark, pos),
                    "content" | "text" => {
                        let fields = self.content_fields();
                        self.value_over(&fields, value, mark, pos)
                    }
                    "tags" | "tag" => {
                        let raw = Self::raw_q(f.tags, value, pos, true)?;
                        let text = self.value_over(&multi(f.tags_text), value, mark, pos)?;
                        Ok(Some(union(std::iter::once(raw).chain(text).collect())))
                    }
                    "content_type" | "type" => Self::raw_q(f.content_type, value, pos, true).map(Some),
                    "state" => Self::raw_q(f.state, value, pos, true).map(Some),
                    "element" | "element_id" => Self::raw_q(f.element_id, value, pos, false).map(Some),
                    "document_id" => Self::raw_q(f.document_id, value, pos, true).map(Some),
                    "file_id" | "id" => Self::raw_q(f.file_id, value, pos, true).map(Some),
                    "language" | "lang" => Self::raw_q(f.language, value, pos, true).map(Some),
                    "extraction" => Self::raw_q(f.extraction, value, pos, true).map(Some),
                    "created" => Self::date_q(f.created, value, pos).map(Some),
                    "updated" => Self::date_q(f.updated, value, pos).map(Some),
                    key => {
                        let key = key.strip_prefix("metadata.").unwrap_or(key).to_owned();
                        self.meta_q(&key, value, pos, mark)
                    }
                }
            }
        }
    }
}

/// The conditions of the request's filters (not the query text).
fn filters(f: &Fields, r: &SearchRequest, now: DateTime<Utc>) -> Result<Vec<(Occur, Q)>, SearchError> {
    let mut v: Vec<(Occur, Q)> = Vec::new();
    if let Some(ct) = &r.content_type {
        v.push((Occur::Must, term_q(f.content_type, &ct.to_lowercase())));
    }
    for t in &r.tags {
        v.push((Occur::Must, term_q(f.tags, &t.to_lowercase())));
    }
    if let Some(e) = &r.element {
        v.push((Occur::Must, term_q(f.element_id, e)));
    }
    if r.from.is_some() || r.to.is_some() {
        let from = r.from.and_then(|d| d.and_hms_opt(0, 0, 0)).map(|d| d.and_utc());
        let to = r.to.and_then(|d| d.and_hms_opt(23, 59, 59)).map(|d| d.and_utc());
        v.push((Occur::Must, date_range(f.created, from, to)));
    }
    if let Some(s) = &r.state {
        v.push((Occur::Must, term_q(f.state, s)));
    }
    if let Some(d) = &r.document_id {
        v.push((Occur::Must, term_q(f.document_id, &d.to_lowercase())));
    }
    if let Some(p) = &r.retention_policy {
        v.push((Occur::Must, term_q(f.retention_policy, p)));
    }
    if let Some(ret) = &r.retention {
        v.push((Occur::Must, retention_q(f, ret, now)?));
    }
    let explicit_tombstones = r.state.as_deref().is_some_and(|s| s == "deleted" || s == "disposed")
        || r.retention.as_deref() == Some("disposed");
    if !(r.tombstones && explicit_tombstones) {
        v.push((Occur::MustNot, term_q(f.state, "deleted")));
        v.push((Occur::MustNot, term_q(f.state, "disposed")));
    }
    Ok(v)
}

/// The condition of one retention filter.
pub fn retention_q(f: &Fields, which: &str, now: DateTime<Utc>) -> Result<Q, SearchError> {
    let live = || -> Q { union(vec![term_q(f.state, "active"), term_q(f.state, "archived")]) };
    let next_sec = now + chrono::Duration::seconds(1);
    Ok(match which {
        "under-retention" => Box::new(BooleanQuery::new(vec![
            (Occur::Must, live()),
            (
                Occur::Must,
                Box::new(RangeQuery::new(Bound::Included(date_term(f.retain_until, next_sec)), Bound::Unbounded)),
            ),
        ])),
        "on-hold" => Box::new(TermQuery::new(Term::from_field_u64(f.legal_hold, 1), IndexRecordOption::Basic)),
        "review-due" => Box::new(BooleanQuery::new(vec![
            (Occur::Must, live()),
            (Occur::Must, term_q(f.disposition, "review")),
            (Occur::Must, Box::new(RangeQuery::new(Bound::Unbounded, Bound::Included(date_term(f.retain_until, now))))),
        ])),
        "disposed" => term_q(f.state, "disposed"),
        other => {
            return Err(SearchError::BadParameter(format!(
                "retention filter {other:?} is not one of {}",
                RETENTION_FILTERS.join(", ")
            )));
        }
    })
}

/// The full query for a request, and what its highlights mark.
pub fn build_query(index: &SearchIndex, r: &SearchRequest, now: DateTime<Utc>) -> Result<(Q, Marks), SearchError> {
    let node = syntax::parse(&r.q)?;
    let mut b = Builder::new(index);
    let text = b.node(&node, true)?;
    let mut clauses = filters(&index.fields, r, now)?;
    clauses.push((Occur::Must, text.unwrap_or_else(|| Box::new(AllQuery))));
    Ok((Box::new(BooleanQuery::new(clauses)), b.marks))
}

type Hits = Vec<(Option<f32>, DocAddress)>;
type Aggs = Option<tantivy::aggregation::agg_result::AggregationResults>;

/// One pass over the matching documents: the page of hits in the asked order, the total,
/// and the term facets.
fn collect(
    searcher: &Searcher,
    q: &dyn Query,
    r: &SearchRequest,
    aggs: Option<tantivy::aggregation::AggregationCollector>,
) -> tantivy::Result<(Hits, usize, Aggs)> {
    use tantivy::collector::sort_key::{SortBySimilarityScore, SortByStaticFastValue, SortByString};
    let td = TopDocs::with_limit(r.limit.max(1)).and_offset(r.offset);
    // Ties are broken by file id (UUIDv7: creation order, as two numbers), so every index
    // holding the same documents answers in the same order, however its segments were built.
    let hi = || (SortByStaticFastValue::<u64>::for_field("id_hi"), Order::Asc);
    let lo = || (SortByStaticFastValue::<u64>::for_field("id_lo"), Order::Asc);
    Ok(match r.sort {
        Sort::Relevance => {
            let c = td.order_by(((SortBySimilarityScore, Order::Desc), hi(), lo()));
            let (top, n, a) = searcher.search(q, &(c, Count, aggs))?;
            (top.into_iter().map(|((s, _, _), a)| (Some(s), a)).collect(), n, a)
        }
        Sort::Created | Sort::CreatedDesc => {
            let order = if r.sort == Sort::Created { Order::Asc } else { Order::Desc };
            let c =
                td.order_by(((SortByStaticFastValue::<tantivy::DateTime>::for_field("created"), order), hi(), lo()));
            let (top, n, a) = searcher.search(q, &(c, Count, aggs))?;
            (top.into_iter().map(|(_, a)| (None, a)).collect(), n, a)
        }
        Sort::Name => {
            let c = td.order_by(((SortByString::for_field("name_sort"), Order::Asc), hi(), lo()));
            let (top, n, a) = searcher.search(q, &(c, Count, aggs))?;
            (top.into_iter().map(|(_, a)| (None, a)).collect(), n, a)
        }
    })
}

fn facet_field(name: &str) -> &str {
    match name {
        "element" => "element_id",
        other => other,
    }
}

/// The aggregation that counts the term facets asked for, if any.
fn facet_collector(r: &SearchRequest) -> Result<Option<tantivy::aggregation::AggregationCollector>, SearchError> {
    let mut req = Map::new();
    for name in r.facets.iter().filter(|f| f.as_str() != "retention") {
        // Policies are few, and the policies page reads a missing one as "no documents":
        // count them all.
        let size = match name.as_str() {
            "year" => 200,
            "retention_policy" => 1000,
            _ => 50,
        };
        req.insert(name.clone(), json!({"terms": {"field": facet_field(name), "size": size}}));
    }
    if req.is_empty() {
        return Ok(None);
    }
    let aggs: tantivy::aggregation::agg_req::Aggregations =
        serde_json::from_value(serde_json::Value::Object(req)).map_err(|e| SearchError::BadParameter(e.to_string()))?;
    Ok(Some(tantivy::aggregation::AggregationCollector::from_aggs(aggs, Default::default())))
}

fn facets(
    searcher: &Searcher,
    index: &SearchIndex,
    q: &dyn Query,
    r: &SearchRequest,
    aggs: Aggs,
    now: DateTime<Utc>,
) -> Result<Map<String, serde_json::Value>, SearchError> {
    let mut out = Map::new();
    if let Some(res) = aggs {
        let res = serde_json::to_value(&res).unwrap_or_default();
        for name in r.facets.iter().filter(|f| f.as_str() != "retention") {
            let buckets = res[name.as_str()]["buckets"].as_array().cloned().unwrap_or_default();
            let mut vals: Vec<serde_json::Value> = buckets
                .iter()
                .map(|b| {
                    let key = match &b["key"] {
                        serde_json::Value::Number(n) if name == "year" => json!(n.as_f64().unwrap_or(0.0) as u64),
                        other => other.clone(),
                    };
                    json!({"value": key, "count": b["doc_count"]})
                })
                .collect();
            if name == "year" {
                vals.sort_by(|a, b| b["value"].as_u64().cmp(&a["value"].as_u64()));
            }
            out.insert(name.clone(), serde_json::Value::Array(vals));
        }
    }
    if r.facets.iter().any(|f| f == "retention") {
        let mut vals = Vec::new();
        for which in RETENTION_FILTERS {
            if *which == "disposed" && !r.tombstones {
                continue;
            }
            let cond = retention_q(&index.fields, which, now)?;
            let both = BooleanQuery::new(vec![(Occur::Must, q.box_clone()), (Occur::Must, cond)]);
            let n = searcher.search(&both, &Count)?;
            vals.push(json!({"value": which, "count": n}));
        }
        out.insert("retention".into(), serde_json::Value::Array(vals));
    }
    Ok(out)
}

/// Runs a search and renders the answer.
pub fn run(index: &SearchIndex, r: &SearchRequest, now: DateTime<Utc>) -> Result<serde_json::Value, SearchError> {
    if r.offset > MAX_OFFSET || r.limit > MAX_LIMIT {
        return Err(SearchError::BadParameter(format!(
            "a page starts at most at {MAX_OFFSET} and holds at most {MAX_LIMIT} results"
        )));
    }
    let started = std::time::Instant::now();
    let (q, marks) = build_query(index, r, now)?;
    let searcher = index.reader.searcher();
    let (hits, total, aggs) = collect(&searcher, &*q, r, facet_collector(r)?)?;
    let mut multi = schema::multi_analyzer();
    let mut out_hits = Vec::with_capacity(hits.len());
    for (score, addr) in hits {
        let doc: tantivy::TantivyDocument = searcher.doc(addr)?;
        let s = stored(&index.fields, &doc);
        let mut hit = s.hit();
        hit["score"] = json!(score);
        let mut hl = Map::new();
        if let Some(text) = &s.text {
            let lang = s.language.as_deref().unwrap_or("und");
            let mut analyzer = EXTRA_LANGUAGES
                .iter()
                .find(|(c, _)| *c == lang)
                .map_or_else(schema::multi_analyzer, |(_, l)| schema::language_analyzer(*l));
            let frags = highlight::fragments(&mut analyzer, &marks, text, 160, 3);
            if !frags.is_empty() {
                hl.insert("content".into(), json!(frags));
            }
        }
        if let Some(name) = s.sidecar["original_name"].as_str()
            && let Some(h) = highlight::whole(&mut multi, &marks, name)
        {
            hl.insert("name".into(), json!([h]));
        }
        if let Some(desc) = s.sidecar["description"].as_str()
            && let Some(h) = highlight::fragments(&mut multi, &marks, desc, 160, 1).pop()
        {
            hl.insert("description".into(), json!([h]));
        }
        hit["highlights"] = serde_json::Value::Object(hl);
        out_hits.push(hit);
    }
    let facets = facets(&searcher, index, &*q, r, aggs, now)?;
    let next = r.offset.saturating_add(r.limit);
    Ok(json!({
        "total": total,
        "hits": out_hits,
        "facets": facets,
        "next_cursor": (next < total && next <= MAX_OFFSET).then(|| encode_cursor(next)),
        "took_ms": started.elapsed().as_secs_f64() * 1000.0,
    }))
}
