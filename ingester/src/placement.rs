//! Where an upload goes: writable elements (`edit`, `rw`) that are up and have room,
//! temporary documents to `edit` first and everything else to `rw` first, each group in a
//! random order weighted by weight × free space.

use artstore_shared::discovery::ElementView;
use chrono::{DateTime, Utc};
use rand::Rng as _;

/// What kind of element a document belongs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// No retention, or meant to be disposed of within the temporary horizon: `edit`
    /// elements (where it may be deleted), `rw` if none.
    Temporary,
    /// Everything else: `rw` elements, `edit` if none.
    Permanent,
}

impl Class {
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Temporary => "temporary",
            Class::Permanent => "permanent",
        }
    }
}

/// The retention an upload asks for, as far as placement needs it.
#[derive(Debug, Clone, Default)]
pub struct RetentionAsked {
    /// Any retention at all (a policy, a mode, a date or a hold).
    pub any: bool,
    /// When it ends (a date, or now + the policy's term).
    pub until: Option<DateTime<Utc>>,
    /// The disposition is `dispose`.
    pub dispose: bool,
}

/// Temporary or permanent, given the horizon's end (now + `temporary_horizon`).
pub fn classify(r: &RetentionAsked, horizon_end: DateTime<Utc>) -> Class {
    if !r.any {
        return Class::Temporary;
    }
    match r.until {
        Some(until) if r.dispose && until < horizon_end => Class::Temporary,
        _ => Class::Permanent,
    }
}

/// The candidates in the order to try them.
pub fn candidates(views: &[ElementView], class: Class, need_bytes: u64) -> Vec<ElementView> {
    let fits = |e: &&ElementView| e.up && e.free_bytes.is_some_and(|f| f >= need_bytes);
    let group = |mode: &str| -> Vec<ElementView> {
        weighted_order(views.iter().filter(|e| e.mode == mode).filter(fits).cloned().collect())
    };
    let (first, second) = match class {
        Class::Temporary => ("edit", "rw"),
        Class::Permanent => ("rw", "edit"),
    };
    let mut out = group(first);
    out.extend(group(second));
    out
}

/// A random order where each element comes first with a chance proportional to
/// weight × free space.
fn weighted_order(mut pool: Vec<ElementView>) -> Vec<ElementView> {
    let mut rng = rand::rng();
    let mut out = Vec::with_capacity(pool.len());
    while !pool.is_empty() {
        let w: Vec<f64> =
            pool.iter().map(|e| (e.weight.max(1) as f64) * (e.free_bytes.unwrap_or(0).max(1) as f64)).collect();
        let total: f64 = w.iter().sum();
        let mut pick = rng.random::<f64>() * total;
        let mut i = 0;
        while i + 1 < w.len() && pick >= w[i] {
            pick -= w[i];
            i += 1;
        }
        out.push(pool.swap_remove(i));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn el(id: &str, mode: &str, up: bool, free: u64, weight: u32) -> ElementView {
        ElementView {
            id: id.into(),
            url: format!("http://{id}"),
            mode: mode.into(),
            capacity_bytes: 0,
            weight,
            dc: String::new(),
            free_bytes: Some(free),
            total_bytes: Some(free * 2),
            seen_at: Some(Utc::now()),
            up,
        }
    }

    fn ids(v: &[ElementView]) -> Vec<&str> {
        v.iter().map(|e| e.id.as_str()).collect()
    }

    #[test]
    fn only_writable_up_elements_with_room() {
        let v = [
            el("edit", "edit", true, 100, 1),
            el("rw", "rw", true, 100, 1),
            el("ro", "ro", true, 100, 1),
            el("ar", "ar", true, 100, 1),
            el("down", "rw", false, 100, 1),
            el("full", "rw", true, 5, 1),
        ];
        assert_eq!(ids(&candidates(&v, Class::Permanent, 10)), ["rw", "edit"]);
        assert_eq!(ids(&candidates(&v, Class::Temporary, 10)), ["edit", "rw"]);
        assert!(candidates(&v, Class::Permanent, 1000).is_empty());
    }

    #[test]
    fn classes() {
        let now = Utc::now();
        let horizon = now + chrono::Duration::days(365);
        assert_eq!(classify(&RetentionAsked::default(), horizon), Class::Temporary);
        let short = RetentionAsked { any: true, until: Some(now + chrono::Duration::days(30)), dispose: true };
        assert_eq!(classify(&short, horizon), Class::Temporary);
        let review = RetentionAsked { dispose: false, ..short.clone() };
        assert_eq!(classify(&review, horizon), Class::Permanent);
        let long = RetentionAsked { any: true, until: Some(now + chrono::Duration::days(3650)), dispose: true };
        assert_eq!(classify(&long, horizon), Class::Permanent);
        let hold = RetentionAsked { any: true, until: None, dispose: false };
        assert_eq!(classify(&hold, horizon), Class::Permanent);
    }

    #[test]
    fn weight_and_free_space_bias_the_order() {
        let v = [el("big", "rw", true, 9_000, 1), el("small", "rw", true, 1_000, 1)];
        let firsts = (0..2000).filter(|_| candidates(&v, Class::Permanent, 1)[0].id == "big").count();
        assert!((1600..1990).contains(&firsts), "big first {firsts}/2000 times (expected ~1800)");
        let w = [el("heavy", "rw", true, 1_000, 9), el("light", "rw", true, 1_000, 1)];
        let firsts = (0..2000).filter(|_| candidates(&w, Class::Permanent, 1)[0].id == "heavy").count();
        assert!((1600..1990).contains(&firsts), "heavy first {firsts}/2000 times");
    }
}
