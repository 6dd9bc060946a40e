//! The index's schema and analyzers, and the version that names them both.
//!
//! An index records [`SCHEMA_VERSION`] in `artstore-index.json` beside tantivy's own
//! files; an index of another version is not read, it is rebuilt.

use tantivy::schema::{
    DateOptions, DateTimePrecision, FAST, Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing,
    TextOptions,
};
use tantivy::tokenizer::{Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, TextAnalyzer};

/// Bumped whenever a field, an analyzer or what goes into a field changes.
pub const SCHEMA_VERSION: u32 = 3;

/// The analyzer of names, descriptions, tags, metadata values and content in English,
/// Russian or an undetected language: lower case, then English and Russian stemming (each
/// stemmer leaves the other's script alone, so one field serves both and mixed texts).
pub const MULTI: &str = "artstore_multi";

/// Tokens longer than this many bytes are dropped (tantivy's default of 40 would lose
/// long Russian words: `высокопроизводительный` is 44 bytes).
pub const MAX_TOKEN_BYTES: usize = 255;

/// Content languages that get a field of their own with their own stemmer (chosen per
/// document by detection). English, Russian and anything else go to `content`.
pub const EXTRA_LANGUAGES: &[(&str, Language)] =
    &[("de", Language::German), ("fr", Language::French), ("es", Language::Spanish)];

/// Every field, by name.
#[derive(Debug, Clone)]
pub struct Fields {
    pub file_id: Field,
    /// The file id's high and low 64 bits: the tie-break of every sort order.
    pub id_hi: Field,
    pub id_lo: Field,
    pub document_id: Field,
    pub version: Field,
    pub revision: Field,
    pub element_id: Field,
    pub name: Field,
    pub name_sort: Field,
    pub description: Field,
    pub tags: Field,
    pub tags_text: Field,
    pub content_type: Field,
    pub meta_kv: Field,
    pub meta_text: Field,
    pub created: Field,
    pub updated: Field,
    pub year: Field,
    pub size: Field,
    pub sha256: Field,
    pub state: Field,
    pub retention_mode: Field,
    /// The admin retention policy the document's dates were resolved from (absent when none).
    pub retention_policy: Field,
    pub retain_until: Field,
    pub legal_hold: Field,
    pub disposition: Field,
    /// Content in English, Russian or undetected languages.
    pub content: Field,
    /// Content in each of [`EXTRA_LANGUAGES`], same order.
    pub content_lang: Vec<Field>,
    /// The extracted text, stored for highlights (not indexed).
    pub text: Field,
    pub language: Field,
    /// `ok`, `failed`, `skipped` or `none`.
    pub extraction: Field,
    pub extraction_reason: Field,
    pub truncated: Field,
    /// The whole sidecar as JSON.
    pub sidecar: Field,
}

fn text_options(analyzer: &str, stored: bool) -> TextOptions {
    let o = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default().set_tokenizer(analyzer).set_index_option(IndexRecordOption::WithFreqsAndPositions),
    );
    if stored { o.set_stored() } else { o }
}

/// Builds the schema.
pub fn build() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let date = DateOptions::default().set_indexed().set_fast().set_stored().set_precision(DateTimePrecision::Seconds);
    let fields = Fields {
        file_id: b.add_text_field("file_id", STRING | STORED | FAST),
        id_hi: b.add_u64_field("id_hi", FAST),
        id_lo: b.add_u64_field("id_lo", FAST),
        document_id: b.add_text_field("document_id", STRING | STORED | FAST),
        version: b.add_u64_field("version", INDEXED | STORED | FAST),
        revision: b.add_u64_field("revision", STORED | FAST),
        element_id: b.add_text_field("element_id", STRING | STORED | FAST),
        name: b.add_text_field("name", text_options(MULTI, true)),
        name_sort: b.add_text_field("name_sort", STRING | FAST),
        description: b.add_text_field("description", text_options(MULTI, false)),
        tags: b.add_text_field("tags", STRING | FAST),
        tags_text: b.add_text_field("tags_text", text_options(MULTI, false)),
        content_type: b.add_text_field("content_type", STRING | FAST),
        meta_kv: b.add_text_field("meta_kv", text_options("raw", false)),
        meta_text: b.add_text_field("meta_text", text_options(MULTI, false)),
        created: b.add_date_field("created", date.clone()),
        updated: b.add_date_field("updated", date.clone()),
        year: b.add_u64_field("year", INDEXED | FAST),
        size: b.add_u64_field("size", STORED | FAST),
        sha256: b.add_text_field("sha256", STRING | STORED),
        state: b.add_text_field("state", STRING | STORED | FAST),
        retention_mode: b.add_text_field("retention_mode", STRING | FAST),
        retention_policy: b.add_text_field("retention_policy", STRING | FAST),
        retain_until: b.add_date_field("retain_until", date),
        legal_hold: b.add_u64_field("legal_hold", INDEXED | FAST),
        disposition: b.add_text_field("disposition", STRING | FAST),
        content: b.add_text_field("content", text_options(MULTI, false)),
        content_lang: EXTRA_LANGUAGES
            .iter()
            .map(|(code, _)| b.add_text_field(&format!("content_{code}"), text_options(&analyzer_name(code), false)))
            .collect(),
        text: b.add_text_field("text", STORED),
        language: b.add_text_field("language", STRING | STORED | FAST),
        extraction: b.add_text_field("extraction", STRING | STORED | FAST),
        extraction_reason: b.add_text_field("extraction_reason", STORED),
        truncated: b.add_u64_field("truncated", STORED),
        sidecar: b.add_text_field("sidecar", STORED),
    };
    (b.build(), fields)
}

/// The analyzer name of one of [`EXTRA_LANGUAGES`].
pub fn analyzer_name(code: &str) -> String {
    format!("artstore_{code}")
}

/// The multi-script analyzer (see [`MULTI`]).
pub fn multi_analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(MAX_TOKEN_BYTES))
        .filter(LowerCaser)
        .filter(ScriptStemmer)
        .build()
}

/// English stemming for words without Cyrillic letters, Russian stemming for words with
/// them. The same stems as running both stemmers on every word (each leaves the other's
/// script alone), at half the cost.
#[derive(Clone, Copy, Debug)]
pub struct ScriptStemmer;

impl tantivy::tokenizer::TokenFilter for ScriptStemmer {
    type Tokenizer<T: tantivy::tokenizer::Tokenizer> = ScriptStemmerFilter<T>;

    fn transform<T: tantivy::tokenizer::Tokenizer>(self, tokenizer: T) -> ScriptStemmerFilter<T> {
        ScriptStemmerFilter { inner: tokenizer }
    }
}

/// See [`ScriptStemmer`].
#[derive(Clone, Debug)]
pub struct ScriptStemmerFilter<T> {
    inner: T,
}

impl<T: tantivy::tokenizer::Tokenizer> tantivy::tokenizer::Tokenizer for ScriptStemmerFilter<T> {
    type TokenStream<'a> = ScriptStemmerStream<T::TokenStream<'a>>;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> Self::TokenStream<'a> {
        ScriptStemmerStream {
            tail: self.inner.token_stream(text),
            english: frostem::Stemmer::new(frostem::Algorithm::English),
            russian: frostem::Stemmer::new(frostem::Algorithm::Russian),
        }
    }
}

/// See [`ScriptStemmer`].
pub struct ScriptStemmerStream<T> {
    tail: T,
    english: frostem::Stemmer,
    russian: frostem::Stemmer,
}

fn is_cyrillic(c: char) -> bool {
    matches!(c, '\u{0400}'..='\u{052F}')
}

impl<T: tantivy::tokenizer::TokenStream> tantivy::tokenizer::TokenStream for ScriptStemmerStream<T> {
    fn advance(&mut self) -> bool {
        if !self.tail.advance() {
            return false;
        }
        let token = self.tail.token_mut();
        let stemmer = if token.text.chars().any(is_cyrillic) { &self.russian } else { &self.english };
        match stemmer.stem(&token.text) {
            std::borrow::Cow::Owned(stemmed) => token.text = stemmed,
            // A borrowed stem may still be shorter than the word (a cut suffix).
            std::borrow::Cow::Borrowed(stem) if stem.len() != token.text.len() => {
                let stem = stem.to_owned();
                token.text = stem;
            }
            std::borrow::Cow::Borrowed(_) => {}
        }
        true
    }

    fn token(&self) -> &tantivy::tokenizer::Token {
        self.tail.token()
    }

    fn token_mut(&mut self) -> &mut tantivy::tokenizer::Token {
        self.tail.token_mut()
    }
}

/// The analyzer of one extra language: its own stemmer, then Russian for Cyrillic words.
pub fn language_analyzer(lang: Language) -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(MAX_TOKEN_BYTES))
        .filter(LowerCaser)
        .filter(Stemmer::new(lang))
        .filter(Stemmer::new(Language::Russian))
        .build()
}

/// Registers every analyzer the schema names on `index`.
pub fn register_analyzers(index: &tantivy::Index) {
    let t = index.tokenizers();
    t.register(MULTI, multi_analyzer());
    for (code, lang) in EXTRA_LANGUAGES {
        t.register(&analyzer_name(code), language_analyzer(*lang));
    }
}

/// The field and analyzer that content in `lang` (an ISO 639-1 code) is indexed with.
pub fn content_field_for(fields: &Fields, lang: &str) -> Field {
    EXTRA_LANGUAGES.iter().position(|(c, _)| *c == lang).map_or(fields.content, |i| fields.content_lang[i])
}

/// Terms of `text` as the named analyzer makes them.
pub fn analyze(analyzer: &mut TextAnalyzer, text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut ts = analyzer.token_stream(text);
    while ts.advance() {
        out.push(ts.token().text.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stemming_serves_russian_and_english_in_one_field() {
        let mut a = multi_analyzer();
        assert_eq!(analyze(&mut a, "договоры"), analyze(&mut a, "договор"));
        assert_eq!(analyze(&mut a, "Contracts"), analyze(&mut a, "contract"));
        assert_eq!(analyze(&mut a, "договорами contracts"), vec!["договор".to_owned(), "contract".to_owned()]);
    }

    #[test]
    fn one_stemmer_per_script_gives_the_stems_of_both() {
        let mut both = TextAnalyzer::builder(SimpleTokenizer::default())
            .filter(LowerCaser)
            .filter(Stemmer::new(Language::English))
            .filter(Stemmer::new(Language::Russian))
            .build();
        let mut one = multi_analyzer();
        let text = "Contracts running happily; договоры поставки подписаны; Ёлка naïve café x-ray МГУ2024 e-mail";
        assert_eq!(analyze(&mut one, text), analyze(&mut both, text));
    }

    #[test]
    fn long_words_stay() {
        let mut a = multi_analyzer();
        let w = "высокопроизводительный";
        assert_eq!(w.len(), 44);
        let t = analyze(&mut a, w);
        assert_eq!(t.len(), 1, "{t:?}");
        assert!(t[0].starts_with("высокопроизводительн"), "{t:?}");
    }

    #[test]
    fn extra_languages_stem_their_own_words() {
        let mut fr = language_analyzer(Language::French);
        assert_eq!(analyze(&mut fr, "contrats"), analyze(&mut fr, "contrat"));
        assert_eq!(analyze(&mut fr, "договоры"), analyze(&mut fr, "договор"));
    }
}
