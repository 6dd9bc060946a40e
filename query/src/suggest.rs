//! Completions for a search box (`/api/v1/search/suggest`) and "more like this"
//! (`/api/v1/files/{id}/similar`).

use crate::doc::stored;
use crate::index::SearchIndex;
use crate::schema::content_field_for;
use crate::search::{SearchError, prefix_term_q};
use serde_json::{Value, json};
use std::collections::HashMap;
use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, MoreLikeThisQuery, Occur, Query, TermQuery};
use tantivy::schema::{Field, IndexRecordOption, OwnedValue};
use tantivy::{Searcher, Term};
use uuid::Uuid;

/// Terms of `field` that start with `prefix`, with the number of documents holding each.
fn terms_with_prefix(searcher: &Searcher, field: Field, prefix: &str, cap: usize) -> HashMap<String, u64> {
    let mut out: HashMap<String, u64> = HashMap::new();
    for seg in searcher.segment_readers() {
        let Ok(inv) = seg.inverted_index(field) else { continue };
        let Ok(mut stream) = inv.terms().range().ge(prefix.as_bytes()).into_stream() else { continue };
        let mut n = 0;
        while stream.advance() && n < cap {
            let Ok(k) = std::str::from_utf8(stream.key()) else { continue };
            if !k.starts_with(prefix) {
                break;
            }
            *out.entry(k.to_owned()).or_default() += u64::from(stream.value().doc_freq);
            n += 1;
        }
    }
    out
}

fn live_only(f: &crate::schema::Fields, q: Box<dyn Query>) -> BooleanQuery {
    BooleanQuery::new(vec![
        (Occur::Must, q),
        (Occur::MustNot, Box::new(TermQuery::new(Term::from_field_text(f.state, "deleted"), IndexRecordOption::Basic))),
        (
            Occur::MustNot,
            Box::new(TermQuery::new(Term::from_field_text(f.state, "disposed"), IndexRecordOption::Basic)),
        ),
    ])
}

/// Up to `limit` completions of `prefix`: names first, then tags, then frequent words of
/// the content.
pub fn suggest(index: &SearchIndex, prefix: &str, limit: usize) -> Result<Value, SearchError> {
    let p = prefix.trim().to_lowercase();
    let mut out: Vec<Value> = Vec::new();
    if p.is_empty() {
        return Ok(json!({"q": prefix, "suggestions": out}));
    }
    let f = &index.fields;
    let searcher = index.reader.searcher();
    let mut seen = std::collections::HashSet::new();
    // Names with a word starting with the prefix.
    {
        let q = live_only(f, prefix_term_q(f.name, &p));
        for (_, addr) in searcher.search(&q, &TopDocs::with_limit(limit).order_by_score())? {
            let doc: tantivy::TantivyDocument = searcher.doc(addr)?;
            let s = stored(f, &doc);
            if let Some(name) = s.sidecar["original_name"].as_str()
                && seen.insert(name.to_lowercase())
            {
                out.push(json!({"text": name, "kind": "name"}));
            }
        }
    }
    let mut tags: Vec<(String, u64)> = terms_with_prefix(&searcher, f.tags, &p, 1000).into_iter().collect();
    tags.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    for (t, n) in tags {
        if seen.insert(t.clone()) {
            out.push(json!({"text": t, "kind": "tag", "count": n}));
        }
    }
    let mut words: HashMap<String, u64> = HashMap::new();
    for field in std::iter::once(f.content).chain(f.content_lang.iter().copied()) {
        for (k, v) in terms_with_prefix(&searcher, field, &p, 5000) {
            *words.entry(k).or_default() += v;
        }
    }
    let mut words: Vec<(String, u64)> = words.into_iter().collect();
    words.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    for (stem, n) in words {
        if out.len() >= limit {
            break;
        }
        // The index holds stems (`compani`); show a word as written in a document.
        let word = surface_form(index, &searcher, &stem).unwrap_or(stem);
        if seen.insert(word.clone()) {
            out.push(json!({"text": word, "kind": "term", "count": n}));
        }
    }
    out.truncate(limit);
    Ok(json!({"q": prefix, "suggestions": out}))
}

/// A word of some document's text whose stem is `stem`, lower-cased.
fn surface_form(index: &SearchIndex, searcher: &Searcher, stem: &str) -> Option<String> {
    let f = &index.fields;
    let fields = std::iter::once(f.content).chain(f.content_lang.iter().copied());
    let clauses: Vec<(Occur, Box<dyn Query>)> = fields
        .map(|field| -> (Occur, Box<dyn Query>) {
            (Occur::Should, Box::new(TermQuery::new(Term::from_field_text(field, stem), IndexRecordOption::Basic)))
        })
        .collect();
    let top = searcher.search(&BooleanQuery::new(clauses), &TopDocs::with_limit(1).order_by_score()).ok()?;
    let doc: tantivy::TantivyDocument = searcher.doc(top.first()?.1).ok()?;
    let s = stored(f, &doc);
    let text = s.text?;
    let lang = s.language.unwrap_or_default();
    let mut analyzer = crate::schema::EXTRA_LANGUAGES
        .iter()
        .find(|(c, _)| *c == lang)
        .map_or_else(crate::schema::multi_analyzer, |(_, l)| crate::schema::language_analyzer(*l));
    let mut ts = analyzer.token_stream(&text);
    while ts.advance() {
        let t = ts.token();
        if t.text == stem {
            return text.get(t.offset_from..t.offset_to).map(str::to_lowercase);
        }
    }
    None
}

/// Documents whose text and name are most like the file's.
pub fn similar(index: &SearchIndex, id: Uuid, limit: usize) -> Result<Value, artstore_shared::ApiError> {
    let internal = |e: tantivy::TantivyError| artstore_shared::ApiError::internal(format!("similar: {e}"));
    let Some(doc) = index.get(id) else {
        return Err(artstore_shared::ApiError::not_found(format!("no file {id} in the index")));
    };
    let f = &index.fields;
    let mut fields: Vec<(Field, Vec<OwnedValue>)> = Vec::new();
    if let Some(text) = &doc.text {
        let field = content_field_for(f, doc.language.as_deref().unwrap_or("und"));
        fields.push((field, vec![OwnedValue::Str(text.chars().take(100_000).collect())]));
    }
    if let Some(name) = doc.sidecar["original_name"].as_str() {
        fields.push((f.name, vec![OwnedValue::Str(name.to_owned())]));
    }
    let mlt = MoreLikeThisQuery::builder()
        .with_min_doc_frequency(1)
        .with_min_term_frequency(1)
        .with_max_query_terms(30)
        .with_min_word_length(2)
        .with_document_fields(fields);
    let q = BooleanQuery::new(vec![
        (Occur::Must, Box::new(live_only(f, Box::new(mlt)))),
        (
            Occur::MustNot,
            Box::new(TermQuery::new(Term::from_field_text(f.file_id, &id.to_string()), IndexRecordOption::Basic)),
        ),
    ]);
    let searcher = index.reader.searcher();
    let top = searcher.search(&q, &TopDocs::with_limit(limit).order_by_score()).map_err(internal)?;
    let mut hits = Vec::new();
    for (score, addr) in top {
        let d: tantivy::TantivyDocument = searcher.doc(addr).map_err(internal)?;
        let mut hit = stored(f, &d).hit();
        hit["score"] = json!(score);
        hits.push(hit);
    }
    Ok(json!({"file_id": id, "hits": hits}))
}
