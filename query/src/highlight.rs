//! Highlights: the passages of a text where the query's terms occur, HTML-escaped, with
//! each match wrapped in `<mark>…</mark>`.
//!
//! Matching works on analysed terms (the same analyzer the field was indexed with), so a
//! stemmed, prefix or fuzzy match is marked exactly where the index found it.

use std::collections::HashSet;
use tantivy::tokenizer::{LowerCaser, SimpleTokenizer, TextAnalyzer};

/// What counts as a match in a text.
#[derive(Debug, Clone, Default)]
pub struct Marks {
    /// Analysed terms (words and phrase words).
    pub exact: HashSet<String>,
    /// Lower-cased prefixes.
    pub prefixes: Vec<String>,
    /// Analysed terms and their allowed typo distance.
    pub fuzzy: Vec<(String, u8)>,
}

impl Marks {
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.prefixes.is_empty() && self.fuzzy.is_empty()
    }

    fn matches(&self, term: &str) -> bool {
        self.exact.contains(term)
            || self.prefixes.iter().any(|p| term.starts_with(p.as_str()))
            || self.fuzzy.iter().any(|(f, d)| edit_distance_within(f, term, *d as usize))
    }
}

/// Optimal-string-alignment distance ≤ `max` (a transposition counts as one edit, as
/// the index's fuzzy search counts it).
pub fn edit_distance_within(a: &str, b: &str, max: usize) -> bool {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    if a.len().abs_diff(b.len()) > max {
        return false;
    }
    let (n, m) = (a.len(), b.len());
    let mut d = vec![vec![0usize; m + 1]; n + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=n {
        for j in 1..=m {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[n][m] <= max
}

/// Escapes `&`, `<`, `>`, `"` and `'`.
pub fn escape_html(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

/// How much of a text is scanned for passages.
pub const SCAN_BYTES: usize = 256 * 1024;

/// Byte ranges of the matches in `text`.
///
/// Stemming every word of a long text was most of a search's time, so words are first
/// compared cheaply: a Snowball stem keeps the first two letters of its word, so only words
/// starting like one of the wanted stems are stemmed. Typo matches need every word stemmed.
pub fn match_ranges(analyzer: &mut TextAnalyzer, marks: &Marks, text: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    if marks.is_empty() {
        return out;
    }
    if !marks.fuzzy.is_empty() {
        let mut ts = analyzer.token_stream(text);
        while ts.advance() {
            let t = ts.token();
            if marks.matches(&t.text) {
                out.push((t.offset_from, t.offset_to));
            }
        }
        return out;
    }
    let heads: HashSet<String> = marks.exact.iter().map(|s| s.chars().take(2).collect()).collect();
    let mut plain = TextAnalyzer::builder(SimpleTokenizer::default()).filter(LowerCaser).build();
    let mut ts = plain.token_stream(text);
    while ts.advance() {
        let t = ts.token();
        let w = t.text.as_str();
        let head = |n: usize| w.chars().take(n).collect::<String>();
        let hit = marks.prefixes.iter().any(|p| w.starts_with(p.as_str()))
            || ((heads.contains(&head(2)) || heads.contains(&head(1)))
                && crate::schema::analyze(analyzer, w).iter().any(|s| marks.exact.contains(s)));
        if hit {
            out.push((t.offset_from, t.offset_to));
        }
    }
    out
}

fn floor_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i += 1;
    }
    i
}

/// Renders `text[start..end]` escaped, with the ranges inside it marked.
fn render(text: &str, start: usize, end: usize, ranges: &[(usize, usize)]) -> String {
    let mut out = String::new();
    let mut at = start;
    for &(a, b) in ranges.iter().filter(|(a, b)| *a >= start && *b <= end) {
        escape_html(&text[at..a], &mut out);
        out.push_str("<mark>");
        escape_html(&text[a..b], &mut out);
        out.push_str("</mark>");
        at = b;
    }
    escape_html(&text[at..end], &mut out);
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Up to `max_fragments` passages of about `fragment_bytes` around the densest matches,
/// in text order. A text without matches gives none.
pub fn fragments(
    analyzer: &mut TextAnalyzer,
    marks: &Marks,
    text: &str,
    fragment_bytes: usize,
    max_fragments: usize,
) -> Vec<String> {
    // Passages come from the start of a long text; the search itself covered all of it.
    let text = &text[..floor_boundary(text, SCAN_BYTES)];
    let ranges = match_ranges(analyzer, marks, text);
    if ranges.is_empty() {
        return Vec::new();
    }
    // Greedy: each fragment starts a little before a match and takes the matches that fit;
    // keep the fragments with the most distinct matches.
    let mut windows: Vec<(usize, usize, usize)> = Vec::new(); // (matches, start, end)
    let mut i = 0;
    while i < ranges.len() {
        let start = floor_boundary(text, ranges[i].0.saturating_sub(fragment_bytes / 4));
        let start =
            text[..start].rfind(char::is_whitespace).map_or(start, |p| if start - p < 20 { p + 1 } else { start });
        let limit = start + fragment_bytes;
        let mut j = i;
        while j < ranges.len() && ranges[j].1 <= limit {
            j += 1;
        }
        let j = j.max(i + 1);
        let end = ceil_boundary(text, limit.max(ranges[j - 1].1));
        let end = text[end..].find(char::is_whitespace).map_or(end, |p| if p < 20 { end + p } else { end });
        windows.push((j - i, start, end));
        i = j;
    }
    windows.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    windows.truncate(max_fragments);
    windows.sort_by_key(|w| w.1);
    windows
        .into_iter()
        .map(|(_, s, e)| {
            let mut f = render(text, s, e, &ranges);
            if s > 0 {
                f.insert(0, '…');
            }
            if e < text.len() {
                f.push('…');
            }
            f
        })
        .collect()
}

/// The whole (short) text with its matches marked, or `None` when nothing matched.
pub fn whole(analyzer: &mut TextAnalyzer, marks: &Marks, text: &str) -> Option<String> {
    let ranges = match_ranges(analyzer, marks, text);
    (!ranges.is_empty()).then(|| render(text, 0, text.len(), &ranges))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::multi_analyzer;

    fn marks(words: &[&str]) -> Marks {
        let mut a = multi_analyzer();
        let mut m = Marks::default();
        for w in words {
            m.exact.extend(crate::schema::analyze(&mut a, w));
        }
        m
    }

    #[test]
    fn marks_stemmed_matches_and_escapes_html() {
        let mut a = multi_analyzer();
        let text = "<script>alert(1)</script> The contracts & договоры were signed.";
        let f = fragments(&mut a, &marks(&["contract", "договор"]), text, 200, 3);
        assert_eq!(f.len(), 1);
        assert_eq!(
            f[0],
            "&lt;script&gt;alert(1)&lt;/script&gt; The <mark>contracts</mark> &amp; <mark>договоры</mark> were signed."
        );
    }

    #[test]
    fn fuzzy_and_prefix_matches_are_marked() {
        let mut a = multi_analyzer();
        let m = Marks { fuzzy: vec![("contract".into(), 1)], prefixes: vec!["invoi".into()], ..Default::default() };
        let h = whole(&mut a, &m, "kontract and invoices").unwrap();
        assert_eq!(h, "<mark>kontract</mark> and <mark>invoices</mark>");
        assert!(whole(&mut a, &m, "nothing here").is_none());
    }

    #[test]
    fn long_texts_give_passages_around_matches() {
        let mut a = multi_analyzer();
        let text =
            format!("{} needle {} needle again {}", "filler ".repeat(200), "more ".repeat(300), "end ".repeat(50));
        let f = fragments(&mut a, &marks(&["needle"]), &text, 120, 3);
        assert_eq!(f.len(), 2, "{f:?}");
        assert!(f.iter().all(|s| s.contains("<mark>needle</mark>") && s.len() < 220), "{f:?}");
        assert!(f[0].starts_with('…'));
    }

    #[test]
    fn edit_distance() {
        assert!(edit_distance_within("contract", "contarct", 1));
        assert!(edit_distance_within("contract", "kontract", 1));
        assert!(!edit_distance_within("contract", "kontrakt", 1));
        assert!(edit_distance_within("contract", "kontrakt", 2));
    }
}
