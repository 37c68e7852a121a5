//! Laplace noise on the counts the engine shows ([`EngineBuilder::count_noise`]): the one
//! place noise is drawn.
//!
//! What it protects: whether one shopper interacted with one item, at ε per released count,
//! for the counts the engine shows: popularity scores (cold-start lists, explanations,
//! `SHOW MODELS`, the popularity features) and [`Engine::trending`] counts. A count `c` is
//! released as `max(0, c + Laplace(Δ/ε))`, where Δ is the most one shopper's interactions
//! with one item can move it (derived where each count is made: the popularity model, and
//! `Engine::trending`, where Δ = 1).
//!
//! What it does not protect: the raw event log (the operator holds it; SQL over `events`,
//! [`Engine::user_history`], [`Engine::item_events`] and access exports read it as it is), the
//! other models (item-CF, user-CF, MF, the sequence model and the re-ranker are fitted on
//! raw data and can reveal it), and composition: each release spends ε again. A popularity
//! release is one model generation; a trending release is one `since` at one committed
//! state of the log. Asking again within a release returns the same value (the draw is
//! deterministic per seed, release and item), so repeated reads cannot be averaged, but
//! each new release is another ε.
//!
//! The seed is a random `u64` made when the database is created with the option and kept
//! in the store (meta record `noise_seed`). It is not secret from someone who can read the
//! directory, who can read the raw events anyway.
//!
//! [`EngineBuilder::count_noise`]: crate::EngineBuilder::count_noise
//! [`Engine::trending`]: crate::Engine::trending
//! [`Engine::user_history`]: crate::Engine::user_history
//! [`Engine::item_events`]: crate::Engine::item_events

use crate::error::{Error, Result};
use crate::models::SplitMix64;
use crate::store::{meta_key, meta_value, Batch, Store};

/// The largest ε accepted. Laplace noise of scale Δ/ε above 10 is a tenth of one shopper's
/// contribution: the released count tells whether they interacted about as well as the
/// count itself does (the likelihood ratio bound e^10 ≈ 22,000 promises nothing).
pub(crate) const MAX_EPSILON: f64 = 10.0;

/// The meta record holding the seed.
const SEED_KEY: &str = "noise_seed";

/// The release domains: popularity (one per model generation) and trending (one per `since`
/// and committed state), kept apart so their draws never coincide.
pub(crate) const POPULARITY: u64 = 1;
pub(crate) const TRENDING: u64 = 2;

/// A counted item with its (possibly noisy) count, from [`Engine::trending`](crate::Engine::trending).
#[derive(Clone, Debug, PartialEq)]
pub struct Count {
    /// External product id.
    pub id: String,
    /// Distinct shoppers counted; with `count_noise` set, the count plus Laplace noise,
    /// clamped at 0 (so not a whole number).
    pub count: f64,
}

/// Checks an ε for [`EngineBuilder::count_noise`](crate::EngineBuilder::count_noise).
///
/// # Errors
/// [`Error::Invalid`] unless `epsilon` is finite and in (0, [`MAX_EPSILON`]].
pub(crate) fn validate_epsilon(epsilon: f64) -> Result<f64> {
    if epsilon.is_finite() && epsilon > 0.0 && epsilon <= MAX_EPSILON {
        Ok(epsilon)
    } else {
        Err(Error::invalid(
            "config.count_noise",
            format!(
                "epsilon {epsilon} is not in (0, {MAX_EPSILON}]: 0, negative and non-finite values mean no noise or no protection, and above {MAX_EPSILON} the noise protects nothing"
            ),
        ))
    }
}

/// The setting in force after comparing the stored one with a request: an unset request
/// adopts the stored value; an explicit one must equal it.
///
/// # Errors
/// [`Error::ConfigMismatch`] for an explicit value that differs from the stored one (set or
/// not: the option is fixed when the database is created).
pub(crate) fn reconcile(
    stored: Option<f64>,
    requested: Option<f64>,
    explicit: bool,
) -> Result<Option<f64>> {
    if explicit && stored != requested {
        let show = |v: Option<f64>| v.map_or_else(|| "off".to_string(), |e| e.to_string());
        return Err(Error::ConfigMismatch {
            setting: "count_noise",
            stored: show(stored),
            requested: show(requested),
        });
    }
    match stored {
        Some(e) => validate_epsilon(e).map(Some),
        None => Ok(None),
    }
}

/// A Laplace draw of scale `scale` from a uniform `u` in (0, 1), by the inverse CDF:
/// `-scale · sign(u - ½) · ln(1 - 2|u - ½|)`. Its mean is 0 and its mean absolute value
/// `scale`.
pub(crate) fn laplace(scale: f64, u: f64) -> f64 {
    let d = u - 0.5;
    let tail = (1.0 - 2.0 * d.abs()).max(f64::MIN_POSITIVE);
    -scale * d.signum() * tail.ln()
}

/// A uniform in the open interval (0, 1) from the generator (53 bits, never 0 or 1).
pub(crate) fn open_uniform(rng: &mut SplitMix64) -> f64 {
    ((rng.next_u64() >> 11) as f64 + 0.5) * (1.0 / (1u64 << 53) as f64)
}

/// The noise of one count: a function of the seed, the release and the item only, so the
/// same count of the same release always gets the same noise.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct CountNoise {
    /// ε per released count.
    pub epsilon: f64,
    /// The database's seed.
    pub seed: u64,
    /// Which release (domain and key parts).
    pub release: [u64; 3],
}

impl CountNoise {
    /// The noise added to `item`'s count under sensitivity `delta`: Laplace(`delta`/ε).
    pub fn draw(&self, item: u64, delta: f64) -> f64 {
        let mut h = self.seed;
        for part in self.release.iter().chain(std::iter::once(&item)) {
            h = SplitMix64::new(h ^ part).next_u64();
        }
        laplace(delta / self.epsilon, open_uniform(&mut SplitMix64::new(h)))
    }

    /// A released count: `count` plus its noise, clamped at 0.
    pub fn release(&self, item: u64, count: f64, delta: f64) -> f64 {
        (count + self.draw(item, delta)).max(0.0)
    }
}

/// The database's seed (0 when none was made: the option is off).
///
/// # Errors
/// The store's.
pub(crate) fn seed(store: &Store) -> Result<u64> {
    store.meta_u64(SEED_KEY)
}

/// Makes the seed when the option is on and there is none yet (a new database, or one whose
/// creation stopped between `config.json` and the first store write), durably.
///
/// # Errors
/// The store's.
pub(crate) fn ensure_seed(store: &Store) -> Result<u64> {
    let old = seed(store)?;
    if old != 0 {
        return Ok(old);
    }
    let new = fresh_seed();
    let mut batch = Batch::default();
    batch.put(meta_key(SEED_KEY), meta_value(new));
    store.apply(batch)?;
    store.flush()?;
    Ok(new)
}

/// A seed from the clock, the process id and a stack address, mixed through SplitMix64
/// (never 0, which means "no seed"). Unpredictable enough for noise whose seed an
/// attacker who can read the directory could read anyway.
fn fresh_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let local = 0u8;
    let addr = std::ptr::addr_of!(local) as u64;
    let mut rng = SplitMix64::new(nanos ^ u64::from(std::process::id()).rotate_left(32));
    let s = SplitMix64::new(rng.next_u64() ^ addr).next_u64();
    s.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epsilon_bounds() {
        for bad in [
            f64::NAN,
            0.0,
            -1.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
            10.5,
            11.0,
        ] {
            assert!(
                matches!(validate_epsilon(bad), Err(Error::Invalid { .. })),
                "{bad}"
            );
        }
        for good in [1e-6, 0.1, 1.0, 10.0] {
            assert_eq!(validate_epsilon(good).unwrap(), good);
        }
    }

    #[test]
    fn reconcile_adopts_and_refuses() {
        assert_eq!(reconcile(Some(1.0), None, false).unwrap(), Some(1.0));
        assert_eq!(reconcile(None, None, false).unwrap(), None);
        assert_eq!(reconcile(Some(0.5), Some(0.5), true).unwrap(), Some(0.5));
        for (stored, wanted) in [(Some(1.0), Some(2.0)), (None, Some(1.0))] {
            assert!(matches!(
                reconcile(stored, wanted, true),
                Err(Error::ConfigMismatch {
                    setting: "count_noise",
                    ..
                })
            ));
        }
    }

    #[test]
    fn laplace_inverse_cdf() {
        assert_eq!(laplace(2.0, 0.5), 0.0);
        // P(X <= -s ln 2) = 1/4 for Laplace(s): the quartiles are ±s ln 2.
        assert!((laplace(2.0, 0.25) + 2.0 * std::f64::consts::LN_2).abs() < 1e-12);
        assert!((laplace(2.0, 0.75) - 2.0 * std::f64::consts::LN_2).abs() < 1e-12);
        let mut rng = SplitMix64::new(7);
        for _ in 0..10_000 {
            let u = open_uniform(&mut rng);
            assert!(u > 0.0 && u < 1.0);
            assert!(laplace(1.0, u).is_finite());
        }
        assert!(laplace(1.0, 1e-300).is_finite() && laplace(1.0, 1.0).is_finite());
    }

    /// The noise scale: 20,000 releases of one count at ε = 0.5 (scale 2). The mean absolute
    /// deviation of Laplace(b) is b with standard deviation b (so its sample mean has a
    /// standard error of b/√n = 0.7% of b): checked within 3% (over 4 standard errors).
    /// The mean's standard error is b·√2/√n = 0.02: checked within 0.1 (5 standard errors).
    /// Counts far from 0 so the clamp never acts.
    #[test]
    fn noise_scale() {
        let n = 20_000u64;
        let (count, epsilon) = (100.0, 0.5);
        let (mut sum, mut abs) = (0.0, 0.0);
        for release in 0..n {
            let noise = CountNoise {
                epsilon,
                seed: 0x5eed,
                release: [TRENDING, release, 0],
            };
            let v = noise.release(3, count, 1.0);
            sum += v;
            abs += (v - count).abs();
        }
        let (mean, mad) = (sum / n as f64, abs / n as f64);
        let scale = 1.0 / epsilon;
        eprintln!("{n} releases: mean {mean:.4} (true {count}), mean |deviation| {mad:.4} (scale {scale})");
        assert!((mad - scale).abs() < 0.03 * scale, "mad {mad}");
        assert!((mean - count).abs() < 0.1, "mean {mean}");
        // One release asked again: the same value.
        let noise = CountNoise {
            epsilon,
            seed: 0x5eed,
            release: [POPULARITY, 4, 9],
        };
        assert_eq!(noise.release(3, count, 1.0), noise.release(3, count, 1.0));
        assert_ne!(noise.draw(3, 1.0), noise.draw(4, 1.0));
    }

    #[test]
    fn seeds_differ() {
        assert_ne!(fresh_seed(), 0);
        let a = fresh_seed();
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert_ne!(a, fresh_seed());
    }
}
