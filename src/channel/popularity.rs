//! Popularity as a channel: the most taken items (with decay), the cold-start fallback.

use std::any::Any;

use super::{
    load_model, model_err, pick, save_model, Allow, Channel, ChannelHits, ChannelSpec, FitInput,
    Request, Retriever,
};
use crate::error::Result;
use crate::models::{Popularity, PopularityParams, ScoreNoise};
use crate::options::{EventWeights, RatingWeight};

pub(crate) const SPEC: ChannelSpec = ChannelSpec {
    channel: Channel::Popularity,
    fit: |i: &FitInput<'_>| {
        let m = match &i.noise {
            None => Popularity::fit(i.data, i.item_categories, &i.opts.popularity),
            Some(n) => {
                let draw = |item: u32, scale: f64| n.draw(u64::from(item), scale);
                let noise = ScoreNoise {
                    epsilon: n.epsilon,
                    clip: largest_event_weight(&i.opts.weights),
                    draw: &draw,
                };
                Popularity::fit_noisy(i.data, i.item_categories, &i.opts.popularity, &noise)
            }
        }
        .map_err(model_err)?;
        // Ranked now rather than by the first recommendation.
        let _ = m.ranked();
        Ok(Box::new(m))
    },
    load: |b: &[u8]| {
        let m = match load_model::<Popularity>(b, "model file: popularity") {
            Ok(m) => m,
            // A model file written before the noise field.
            Err(e) => load_model::<Unnoised>(b, "model file: popularity")
                .map(Unnoised::upgrade)
                .map_err(|_| e)?,
        };
        let _ = m.ranked();
        Ok(Box::new(m))
    },
};

/// The most one event adds to a (user, item) pair's weight before time decay: the largest
/// kind weight, or 1 for an implicit rating. Ratings weighed by their value
/// (`RatingWeight::Value`) have no bound of their own and are clipped to this too.
fn largest_event_weight(w: &EventWeights) -> f64 {
    let rating = match w.rating {
        RatingWeight::Implicit | RatingWeight::AtLeast(_) => 1.0,
        RatingWeight::Value => 0.0,
    };
    let largest = [w.view, w.click, w.cart, w.purchase, rating]
        .into_iter()
        .map(f64::from)
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold(0.0, f64::max);
    if largest > 0.0 {
        largest
    } else {
        1.0
    }
}

/// The popularity model's layout before it recorded its noise (model files of earlier
/// builds): loaded, it carries none.
#[derive(serde::Deserialize)]
struct Unnoised {
    params: PopularityParams,
    scores: Vec<f32>,
    categories: Vec<Vec<u32>>,
    last_ts: Vec<i64>,
    t_max: i64,
}

impl Unnoised {
    fn upgrade(self) -> Popularity {
        Popularity::from_parts(
            self.params,
            self.scores,
            self.categories,
            self.last_ts,
            self.t_max,
        )
    }
}

impl Retriever for Popularity {
    fn channel(&self) -> Channel {
        Channel::Popularity
    }

    fn propose(&self, _req: &Request<'_>, n: usize, ok: &Allow<'_>) -> Result<Option<ChannelHits>> {
        let hits = self.ranked().iter().filter(|&&i| ok(i)).take(n);
        Ok(Some(hits.map(|&i| (i, self.item_score(i))).collect()))
    }

    fn score(&self, _req: &Request<'_>, cands: &[u32]) -> Option<ChannelHits> {
        Some(pick(cands, &|i| self.item_score(i)))
    }

    fn score_all(&self, _req: &Request<'_>, scores: &mut [f32]) {
        let _ = Popularity::score(self, scores);
    }

    fn save(&self) -> Result<Vec<u8>> {
        save_model(self)
    }

    fn as_any(&self) -> Option<&dyn Any> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{Interaction, Interactions};

    fn data() -> Interactions {
        let row = |user, item| Interaction {
            user,
            item,
            weight: 1.0,
            rating: None,
            ts: 0,
        };
        Interactions {
            n_users: 2,
            n_items: 3,
            rows: vec![row(0, 0), row(1, 0), row(1, 1)],
        }
    }

    fn loaded(bytes: &[u8]) -> Popularity {
        let m = (SPEC.load)(bytes).unwrap();
        m.as_any()
            .and_then(|a| a.downcast_ref::<Popularity>())
            .unwrap()
            .clone()
    }

    /// A model saved before the noise field loads, with no noise; a noisy one keeps its.
    #[test]
    fn loads_old_and_noisy_models() {
        #[derive(serde::Serialize)]
        struct Old {
            params: PopularityParams,
            scores: Vec<f32>,
            categories: Vec<Vec<u32>>,
            last_ts: Vec<i64>,
            t_max: i64,
        }
        let old = Old {
            params: PopularityParams::default(),
            scores: vec![2.0, 1.0, 0.0],
            categories: vec![vec![0, 1]],
            last_ts: vec![0, 0, i64::MIN],
            t_max: 0,
        };
        let bytes = crate::codec::encode(&old).unwrap();
        // The current layout cannot read it: the fallback does.
        assert!(load_model::<Popularity>(&bytes, "x").is_err());
        let m = loaded(&bytes);
        assert_eq!(m.ranked(), &[0, 1]);
        assert!(m.noise().is_none());

        let one = |_: u32, _: f64| 1.0;
        let noise = ScoreNoise {
            epsilon: 2.0,
            clip: largest_event_weight(&EventWeights::default()),
            draw: &one,
        };
        let fitted =
            Popularity::fit_noisy(&data(), &[], &PopularityParams::default(), &noise).unwrap();
        let m = loaded(&fitted.save().unwrap());
        let info = m.noise().copied().unwrap();
        assert_eq!((info.sensitivity, info.scale), (8.0, 4.0));
        assert_eq!(m.item_score(2), 1.0);
        assert!(load_model::<Popularity>(&[1, 2, 3], "x").is_err());
    }

    #[test]
    fn largest_event_weight_bounds_one_event() {
        let mut w = EventWeights::default();
        assert_eq!(largest_event_weight(&w), 8.0);
        w.rating = RatingWeight::Value;
        w.purchase = 0.5;
        assert_eq!(largest_event_weight(&w), 4.0);
        w = EventWeights {
            view: 0.0,
            click: 0.0,
            cart: 0.0,
            purchase: 0.0,
            rating: RatingWeight::Value,
        };
        assert_eq!(largest_event_weight(&w), 1.0);
    }
}
