//! Exposure controls: how a result page is cut from the fused ranking when a shop wants
//! fairer exposure ([`Query::exposure`](crate::Query::exposure)).
//!
//! Three knobs, each off by default, applied after fusion (and MMR) to candidates that
//! already passed the query's filters:
//!
//! - **a brand's share of the page** at most `max_brand_share` (at least one slot per brand),
//!   beside the older count cap `Query::max_per_brand` (neither limits products without a
//!   brand);
//! - **a long-tail share** of at least `min_long_tail_share`: that share of the page's slots
//!   (rounded up) go to long-tail items (outside the top 20% of items by the popularity the
//!   serving model generation counted, the same split the evaluation's long-tail share uses)
//!   when the candidates hold enough of them;
//! - **popularity debiasing**: each candidate's fused score, min-max normalised over the
//!   candidates, is divided by `(1 + popularity)^gamma` before the page is cut (`gamma` 0
//!   is off; the inverse-popularity weighting of the debiasing literature).

use crate::error::{Error, Result};

/// Largest accepted `popularity_gamma`: beyond 2 the popularity term decides every page.
pub const MAX_POPULARITY_GAMMA: f32 = 2.0;

/// The exposure controls of a query; [`Exposure::default`] is every control off.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Exposure {
    max_brand_share: Option<f32>,
    min_long_tail_share: f32,
    popularity_gamma: f32,
}

impl Exposure {
    /// Every control off.
    pub fn new() -> Self {
        Exposure::default()
    }

    /// At most this share of a page from one brand, in `(0, 1]` (at least one item per
    /// brand whatever the page size).
    pub fn max_brand_share(mut self, share: f32) -> Self {
        self.max_brand_share = Some(share);
        self
    }

    /// At least this share of a page (rounded up to whole slots) from long-tail items, in
    /// `[0, 1]`.
    pub fn min_long_tail_share(mut self, share: f32) -> Self {
        self.min_long_tail_share = share;
        self
    }

    /// Divide normalised scores by `(1 + popularity)^gamma`, `gamma` in
    /// `[0, MAX_POPULARITY_GAMMA]`.
    pub fn popularity_gamma(mut self, gamma: f32) -> Self {
        self.popularity_gamma = gamma;
        self
    }

    /// Whether any control is on.
    pub fn is_on(&self) -> bool {
        self.max_brand_share.is_some()
            || self.min_long_tail_share > 0.0
            || self.popularity_gamma > 0.0
    }

    /// Whether a control reads the items' popularity (the long-tail share and debiasing; a
    /// brand cap does not).
    pub(crate) fn reads_popularity(&self) -> bool {
        self.min_long_tail_share > 0.0 || self.popularity_gamma > 0.0
    }

    /// Checks every control's range.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the control and its range.
    pub fn validate(&self) -> Result<()> {
        if let Some(s) = self.max_brand_share {
            if !(s > 0.0 && s <= 1.0) {
                return Err(Error::invalid(
                    "query.exposure.max_brand_share",
                    format!("must be in (0, 1], got {s}"),
                ));
            }
        }
        let t = self.min_long_tail_share;
        if !(0.0..=1.0).contains(&t) {
            return Err(Error::invalid(
                "query.exposure.min_long_tail_share",
                format!("must be in [0, 1], got {t}"),
            ));
        }
        let g = self.popularity_gamma;
        if !(0.0..=MAX_POPULARITY_GAMMA).contains(&g) {
            return Err(Error::invalid(
                "query.exposure.popularity_gamma",
                format!("must be in [0, {MAX_POPULARITY_GAMMA}], got {g}"),
            ));
        }
        Ok(())
    }

    /// One line for explanations, e.g. `exposure: brand share <= 0.3, long tail >= 0.2`.
    pub(crate) fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(s) = self.max_brand_share {
            parts.push(format!("brand share <= {s}"));
        }
        if self.min_long_tail_share > 0.0 {
            parts.push(format!("long tail >= {}", self.min_long_tail_share));
        }
        if self.popularity_gamma > 0.0 {
            parts.push(format!(
                "scores / (1 + popularity)^{}",
                self.popularity_gamma
            ));
        }
        format!("exposure: {}", parts.join(", "))
    }
}

/// What cutting a page needs to know of one candidate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Candidate {
    /// Fused score (the candidates come best first).
    pub score: f32,
    /// Popularity as the serving generation counted it (0 when unknown).
    pub popularity: f32,
    /// Outside the popular head.
    pub long_tail: bool,
    /// The brand, as a hash; 0 is no brand, which no brand cap limits.
    pub brand: u64,
}

/// What [`page`] did, for explanations.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct PageNotes {
    /// Long-tail slots asked for and filled.
    pub long_tail: Option<(usize, usize)>,
}

/// The page of at most `k` candidates: indices into `cands` (sorted best first), in page
/// order. `per_brand` is a count cap from the query (`max_per_brand`); `e` adds its share
/// cap, long-tail quota and debiasing. With every control off and no cap this is the first
/// `k`.
pub(crate) fn page(
    cands: &[Candidate],
    k: usize,
    per_brand: Option<usize>,
    e: &Exposure,
) -> (Vec<usize>, PageNotes) {
    let mut order: Vec<usize> = (0..cands.len()).collect();
    if e.popularity_gamma > 0.0 && !cands.is_empty() {
        let (lo, hi) = cands.iter().fold((f32::MAX, f32::MIN), |(lo, hi), c| {
            (lo.min(c.score), hi.max(c.score))
        });
        let span = hi - lo;
        let adjusted: Vec<f32> = cands
            .iter()
            .map(|c| {
                let norm = if span > 0.0 {
                    (c.score - lo) / span
                } else {
                    1.0
                };
                norm / (1.0 + c.popularity.max(0.0)).powf(e.popularity_gamma)
            })
            .collect();
        order.sort_by(|&a, &b| adjusted[b].total_cmp(&adjusted[a]).then(a.cmp(&b)));
    }
    let share_cap = e
        .max_brand_share
        .map(|s| ((s * k as f32).floor() as usize).max(1));
    let cap = match (per_brand, share_cap) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let quota = (e.min_long_tail_share * k as f32).ceil() as usize;
    let quota = quota.min(k);
    let mut per: std::collections::HashMap<u64, usize> = Default::default();
    let full = |per: &std::collections::HashMap<u64, usize>, c: &Candidate| {
        c.brand != 0 && cap.is_some_and(|cap| per.get(&c.brand).copied().unwrap_or(0) >= cap)
    };
    let mut out = Vec::with_capacity(k);
    let mut tail = 0usize;
    let mut skipped = Vec::new();
    // The first pass holds head items back once the quota needs every remaining slot; the
    // second lets them fill the page when too few long-tail candidates came.
    for &i in &order {
        if out.len() >= k {
            break;
        }
        let c = &cands[i];
        if full(&per, c) {
            continue;
        }
        if !c.long_tail && quota.saturating_sub(tail) >= k - out.len() {
            skipped.push(i);
            continue;
        }
        *per.entry(c.brand).or_default() += 1;
        tail += usize::from(c.long_tail);
        out.push(i);
    }
    for i in skipped {
        if out.len() >= k {
            break;
        }
        if full(&per, &cands[i]) {
            continue;
        }
        *per.entry(cands[i].brand).or_default() += 1;
        out.push(i);
    }
    let notes = PageNotes {
        long_tail: (quota > 0).then_some((quota, tail.min(quota))),
    };
    (out, notes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn cand(score: f32, popularity: f32, long_tail: bool, brand: u64) -> Candidate {
        Candidate {
            score,
            popularity,
            long_tail,
            brand,
        }
    }

    /// Ten popular items of brand 1, then five long-tail items (never taken) of brands 2..=6.
    fn pool() -> Vec<Candidate> {
        let mut v: Vec<Candidate> = (0..10)
            .map(|i| cand(10.0 - i as f32 * 0.1, 100.0, false, 1))
            .collect();
        v.extend((0..5).map(|i| cand(5.0 - i as f32 * 0.1, 0.0, true, 2 + i as u64)));
        v
    }

    #[test]
    fn off_is_the_top_k() {
        let (p, notes) = page(&pool(), 4, None, &Exposure::new());
        assert_eq!(p, vec![0, 1, 2, 3]);
        assert_eq!(notes, PageNotes::default());
    }

    #[test]
    fn brand_share_caps_each_brand() {
        let e = Exposure::new().max_brand_share(0.3);
        let (p, _) = page(&pool(), 10, None, &e);
        // floor(0.3 * 10) = 3 of brand 1, then every other brand.
        assert_eq!(p, vec![0, 1, 2, 10, 11, 12, 13, 14]);
        // The count cap and the share cap: the tighter wins.
        let (p, _) = page(&pool(), 10, Some(2), &e);
        assert_eq!(&p[..2], &[0, 1]);
        assert_eq!(p.len(), 7);
        // Products without a brand are never capped.
        let unbranded: Vec<Candidate> = (0..5)
            .map(|i| cand(5.0 - i as f32, 1.0, false, 0))
            .collect();
        let (p, _) = page(&unbranded, 5, Some(1), &e);
        assert_eq!(p, vec![0, 1, 2, 3, 4]);
        // At least one slot per brand on a small page.
        let (p, _) = page(&pool(), 2, None, &Exposure::new().max_brand_share(0.1));
        assert_eq!(p, vec![0, 10]);
    }

    #[test]
    fn long_tail_quota_takes_the_last_slots_and_falls_back_when_short() {
        let e = Exposure::new().min_long_tail_share(0.25);
        let (p, notes) = page(&pool(), 8, None, &e);
        // ceil(0.25 * 8) = 2 long-tail items, in the last two slots, the best of them.
        assert_eq!(p, vec![0, 1, 2, 3, 4, 5, 10, 11]);
        assert_eq!(notes.long_tail, Some((2, 2)));
        // Asking for more than the candidates hold: every long-tail item, then head items.
        let e = Exposure::new().min_long_tail_share(1.0);
        let (p, notes) = page(&pool(), 8, None, &e);
        assert_eq!(p, vec![10, 11, 12, 13, 14, 0, 1, 2]);
        assert_eq!(notes.long_tail, Some((8, 5)));
    }

    #[test]
    fn debiasing_moves_less_popular_items_up_by_gamma() {
        let none = page(&pool(), 5, None, &Exposure::new()).0;
        let mild = page(&pool(), 5, None, &Exposure::new().popularity_gamma(0.1)).0;
        let strong = page(&pool(), 5, None, &Exposure::new().popularity_gamma(1.0)).0;
        let tail = |p: &[usize]| p.iter().filter(|&&i| i >= 10).count();
        assert_eq!(tail(&none), 0);
        assert!(tail(&mild) <= tail(&strong));
        // Four of the five long-tail items come first; the fifth is the lowest-scored
        // candidate, normalised to 0, and stays below every head item.
        assert_eq!(tail(&strong), 4, "{strong:?}");
        assert_eq!(&strong[..4], &[10, 11, 12, 13]);
        // Equal popularity changes nothing.
        let flat: Vec<Candidate> = (0..6)
            .map(|i| cand(6.0 - i as f32, 3.0, false, i))
            .collect();
        let e = Exposure::new().popularity_gamma(2.0);
        assert_eq!(page(&flat, 4, None, &e).0, vec![0, 1, 2, 3]);
    }

    #[test]
    fn out_of_range_controls_are_typed_errors() {
        for e in [
            Exposure::new().max_brand_share(0.0),
            Exposure::new().max_brand_share(-0.5),
            Exposure::new().max_brand_share(1.5),
            Exposure::new().max_brand_share(f32::NAN),
            Exposure::new().min_long_tail_share(-0.1),
            Exposure::new().min_long_tail_share(1.01),
            Exposure::new().min_long_tail_share(f32::NAN),
            Exposure::new().popularity_gamma(-1.0),
            Exposure::new().popularity_gamma(2.5),
            Exposure::new().popularity_gamma(f32::INFINITY),
        ] {
            assert!(matches!(e.validate(), Err(Error::Invalid { .. })), "{e:?}");
        }
        assert!(Exposure::new()
            .max_brand_share(1.0)
            .min_long_tail_share(1.0)
            .popularity_gamma(2.0)
            .validate()
            .is_ok());
        assert!(!Exposure::new().is_on());
    }
}
