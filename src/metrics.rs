//! Ranking metrics: nDCG, recall, precision, MRR and hit rate of one ranked list, shared by
//! the recommendation evaluation (`eval`), the BEIR search scorer (`beir`) and the
//! re-ranker's holdout (`rerank`).
//!
//! DCG gives the document at 0-based rank `r` the weight `gain / log2(r + 2)`; nDCG divides
//! by the DCG of the ideal order. Every function keeps the order of its float operations
//! fixed (sums run from rank 0 upwards), so a figure does not depend on who computes it.

/// The DCG discount of the document at 0-based `rank`: `log2(rank + 2)`.
fn discount(rank: usize) -> f64 {
    ((rank + 2) as f64).log2()
}

/// DCG of the ideal order: `gains` sorted best first, the first `k` of them.
fn ideal_dcg(gains: impl Iterator<Item = f64>, k: usize) -> f64 {
    gains
        .take(k)
        .enumerate()
        .map(|(rank, g)| g / discount(rank))
        .sum()
}

/// Binary-relevance metrics of one ranked list at `k`: `(recall, precision, ndcg, mrr, hit)`,
/// with `relevant` the relevant items (sorted, unique). The ideal DCG counts
/// `min(|relevant|, k)` positions. Returns zeros for an empty `relevant` or `k == 0`.
pub(crate) fn binary_at_k(ranked: &[u32], relevant: &[u32], k: usize) -> (f64, f64, f64, f64, f64) {
    if relevant.is_empty() || k == 0 {
        return (0.0, 0.0, 0.0, 0.0, 0.0);
    }
    let mut hits = 0usize;
    let mut dcg = 0f64;
    let mut first: Option<usize> = None;
    for (pos, item) in ranked.iter().take(k).enumerate() {
        if relevant.binary_search(item).is_ok() {
            hits += 1;
            dcg += 1.0 / discount(pos);
            first.get_or_insert(pos + 1);
        }
    }
    let idcg = ideal_dcg(std::iter::repeat_n(1.0, relevant.len()), k);
    let recall = hits as f64 / relevant.len() as f64;
    let precision = hits as f64 / k as f64;
    let ndcg = if idcg > 0.0 { dcg / idcg } else { 0.0 };
    let mrr = first.map_or(0.0, |r| 1.0 / r as f64);
    let hit = if hits > 0 { 1.0 } else { 0.0 };
    (recall, precision, ndcg, mrr, hit)
}

/// Graded metrics of one ranking at `k` as pytrec_eval defines them: `[ndcg, recall, mrr]`.
/// `ranked` is the grade of each ranked document in rank order (0: not relevant), `judged`
/// the grades of every judged document of the query. nDCG uses the grade as gain; recall
/// counts documents of grade > 0 in the top `k` over all of them; MRR is the reciprocal
/// rank of the first one within `k`, else 0.
#[cfg(any(test, feature = "cli"))]
pub(crate) fn graded_at_k(
    ranked: impl Iterator<Item = u32>,
    judged: impl Iterator<Item = u32>,
    k: usize,
) -> [f64; 3] {
    let mut dcg = 0.0;
    let mut found = 0usize;
    let mut rr = 0.0;
    for (i, g) in ranked.take(k).enumerate() {
        if g > 0 {
            dcg += f64::from(g) / discount(i);
            found += 1;
            if rr == 0.0 {
                rr = 1.0 / (i + 1) as f64;
            }
        }
    }
    let mut ideal: Vec<u32> = judged.filter(|g| *g > 0).collect();
    ideal.sort_unstable_by(|a, b| b.cmp(a));
    let idcg = ideal_dcg(ideal.iter().map(|g| f64::from(*g)), k);
    let ndcg = if idcg > 0.0 { dcg / idcg } else { 0.0 };
    let recall = if ideal.is_empty() {
        0.0
    } else {
        found as f64 / ideal.len() as f64
    };
    [ndcg, recall, rr]
}

/// NDCG@10 of the order `scores` gives to candidates with binary `labels` (`> 0` relevant;
/// both slices cut to the shorter): candidates sorted by descending score with
/// **pessimistic ties**, as the evaluation ranks them (`select_top_k_pessimistic`):
/// at an equal score the negatives come first, then the positives in input order. Ideal DCG
/// over `min(positives, 10)` positions, 0 without a positive. The re-ranker's holdout
/// measure, and what its channel weights are fitted on: with ties broken by input order, a
/// channel that scores nothing kept the candidate list's own order and could win the fit.
pub(crate) fn ndcg_at_10(scores: &[f32], labels: &[f32]) -> f64 {
    let n = scores.len().min(labels.len());
    let (scores, labels) = (&scores[..n], &labels[..n]);
    // Each positive's place in that order without sorting (the fitting of channel weights
    // calls this hundreds of times per user): the candidates scored above it, the negatives
    // scored equal, and the positives scored equal that come before it.
    let mut ranks: Vec<usize> = Vec::new();
    let mut positives = 0;
    for (i, (s, _)) in scores
        .iter()
        .zip(labels)
        .enumerate()
        .filter(|(_, (_, l))| **l > 0.0)
    {
        positives += 1;
        let mut rank = 0;
        for (j, t) in scores.iter().enumerate() {
            match t.total_cmp(s) {
                std::cmp::Ordering::Greater => rank += 1,
                std::cmp::Ordering::Equal if j < i || (j != i && labels[j] <= 0.0) => rank += 1,
                _ => {}
            }
            if rank >= 10 {
                break;
            }
        }
        if rank < 10 {
            ranks.push(rank);
        }
    }
    ranks.sort_unstable();
    let dcg: f64 = ranks.iter().map(|r| 1.0 / discount(*r)).sum();
    let idcg = ideal_dcg(std::iter::repeat_n(1.0, positives), 10);
    if idcg > 0.0 {
        dcg / idcg
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn binary_metrics_hand_computed() {
        // Ranked list 5, 2, 9, 1, 7; relevant {2, 7, 8}: hits at ranks 2 and 5.
        let ranked = [5, 2, 9, 1, 7];
        let relevant = [2, 7, 8];
        let (r, p, n, mrr, h) = binary_at_k(&ranked, &relevant, 5);
        assert!(close(r, 2.0 / 3.0));
        assert!(close(p, 2.0 / 5.0));
        assert!(close(mrr, 0.5));
        assert!(close(h, 1.0));
        // DCG = 1/log2(3) + 1/log2(6) = 0.6309297535714575 + 0.3868528072345416 = 1.0177825608059992
        // IDCG = 1 + 1/log2(3) + 1/log2(4) = 2.1309297535714578
        assert!(close(n, 1.0177825608059992 / 2.1309297535714578), "{n}");
        assert!((n - 0.477_624).abs() < 1e-6, "{n}");

        // k = 2: one hit at rank 2, ideal DCG over min(3, 2) = 2 positions.
        let (r, p, n, mrr, h) = binary_at_k(&ranked, &relevant, 2);
        assert!(close(r, 1.0 / 3.0));
        assert!(close(p, 0.5));
        assert!(close(n, 0.6309297535714575 / 1.6309297535714575), "{n}");
        assert!(close(mrr, 0.5));
        assert!(close(h, 1.0));

        // k = 1: no hit.
        assert_eq!(
            binary_at_k(&ranked, &relevant, 1),
            (0.0, 0.0, 0.0, 0.0, 0.0)
        );

        // Perfect list with one relevant item at rank 1.
        let (r, p, n, mrr, h) = binary_at_k(&[3, 4], &[3], 10);
        assert!(close(r, 1.0) && close(p, 0.1) && close(n, 1.0) && close(mrr, 1.0));
        assert!(close(h, 1.0));
    }

    #[test]
    fn graded_metrics_by_hand() {
        // Grades 2 and 1 judged, plus a judged 0; ranked: 0, 1, 2.
        let [n, r, mrr] = graded_at_k([0, 1, 2].into_iter(), [2, 1, 0].into_iter(), 10);
        let dcg = 1.0 / 3f64.log2() + 2.0 / 4f64.log2();
        let idcg = 2.0 + 1.0 / 3f64.log2();
        assert!(close(n, dcg / idcg) && close(r, 1.0) && close(mrr, 0.5));
        // Nothing relevant retrieved, nothing relevant judged.
        assert_eq!(
            graded_at_k([0].into_iter(), [0].into_iter(), 10),
            [0.0, 0.0, 0.0]
        );
        let [n1, r1, _] = graded_at_k([0, 2].into_iter(), [2].into_iter(), 1);
        assert_eq!((n1, r1), (0.0, 0.0));
    }

    /// The re-ranker's former copy, verbatim, as the reference `ndcg_at_10` must equal bit for
    /// bit.
    fn rerank_reference(scores: &[f32], labels: &[f32]) -> f64 {
        let mut order: Vec<usize> = (0..scores.len().min(labels.len())).collect();
        // Descending score; at equal scores negatives first (a stable sort keeps the rest
        // in input order).
        let positive = |i: usize| labels[i] > 0.0;
        order.sort_by(|a, b| {
            scores[*b]
                .total_cmp(&scores[*a])
                .then(positive(*a).cmp(&positive(*b)))
        });
        let dcg: f64 = order
            .iter()
            .take(10)
            .enumerate()
            .filter(|(_, i)| labels[**i] > 0.0)
            .map(|(r, _)| 1.0 / (r as f64 + 2.0).log2())
            .sum();
        let positives = labels.iter().filter(|v| **v > 0.0).count().min(10);
        let idcg: f64 = (0..positives).map(|r| 1.0 / (r as f64 + 2.0).log2()).sum();
        if idcg > 0.0 {
            dcg / idcg
        } else {
            0.0
        }
    }

    #[test]
    fn ndcg_at_10_equals_the_rerankers() {
        let mut rng = crate::models::SplitMix64::new(3);
        for n in [0usize, 1, 3, 10, 11, 40] {
            for _ in 0..50 {
                // Coarse scores, so that ties occur.
                let scores: Vec<f32> = (0..n).map(|_| rng.below(5) as f32).collect();
                let labels: Vec<f32> = (0..n)
                    .map(|_| if rng.chance(0.3) { 1.0 } else { 0.0 })
                    .collect();
                let (a, b) = (
                    ndcg_at_10(&scores, &labels),
                    rerank_reference(&scores, &labels),
                );
                assert_eq!(a.to_bits(), b.to_bits(), "{scores:?} {labels:?}");
            }
        }
        assert_eq!(ndcg_at_10(&[1.0, 2.0], &[1.0]), 1.0);
        // A positive tied with a negative ranks below it, whatever the input order.
        let second = 1.0 / 3f64.log2();
        assert_eq!(ndcg_at_10(&[0.0, 0.0], &[1.0, 0.0]), second);
        assert_eq!(ndcg_at_10(&[0.0, 0.0], &[0.0, 1.0]), second);
    }
}
