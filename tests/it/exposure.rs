//! Exposure controls on the trained demo shop: a brand's share of the page, a long-tail
//! share and popularity debiasing change the page as asked, honour the query's filter, say
//! so in the explanation, and reject out-of-range settings with typed (and, in SQL,
//! positioned) errors.

use shopdb::{Engine, Error, Exposure, Filter, Query};

use super::cli::{demo_shop, shopdb};

/// Mean number of logged events of the page's products: how popular the page is.
fn mean_events(engine: &Engine, ids: &[String]) -> f64 {
    let total: usize = ids
        .iter()
        .map(|id| engine.item_events(id).unwrap().len())
        .sum();
    total as f64 / ids.len().max(1) as f64
}

fn page(engine: &Engine, q: Query) -> Vec<shopdb::Hit> {
    engine.query(&q).unwrap()
}

#[test]
fn exposure_controls_reshape_the_page_within_the_filter_and_say_so() {
    let tmp = demo_shop();
    // The binary's checks first (it needs the directory unlocked).
    for (bad, says) in [
        (
            "SELECT id FROM recommend('u0001', max_brand_share => 0) LIMIT 5",
            "1:54: expected max_brand_share => a share in (0, 1]",
        ),
        (
            "SELECT id FROM recommend('u0001', min_long_tail => 1.5) LIMIT 5",
            "1:52: expected min_long_tail => a share in [0, 1]",
        ),
        (
            "SELECT id FROM recommend('u0001', popularity_gamma => 3) LIMIT 5",
            "1:55: expected popularity_gamma => a number in [0, 2]",
        ),
        (
            "SELECT id FROM recommend('u0001', popularity_gamma => 'x') LIMIT 5",
            "expected popularity_gamma as a finite number",
        ),
    ] {
        let out = shopdb(tmp.path(), &["shop", "-c", bad], None);
        assert_ne!(out.code, 0, "{bad}");
        assert!(out.stderr.contains(says), "{bad}: {}", out.stderr);
    }
    let sql = shopdb(
        tmp.path(),
        &[
            "shop",
            "-c",
            "EXPLAIN SELECT id, brand FROM recommend('u0001', max_brand_share => 0.2, min_long_tail => 0.3) LIMIT 10",
        ],
        None,
    )
    .ok()
    .stdout;
    assert!(
        sql.contains("exposure: brand share <= 0.2, long tail >= 0.3"),
        "{sql}"
    );

    let engine = Engine::open(tmp.path().join("shop")).unwrap();
    let user = "u0001";
    let base = page(&engine, Query::new().user(user).k(10));
    assert_eq!(base.len(), 10);
    let ids = |hits: &[shopdb::Hit]| hits.iter().map(|h| h.id.clone()).collect::<Vec<_>>();

    // A brand's share: at most 2 of 10 from any brand.
    let capped = page(
        &engine,
        Query::new()
            .user(user)
            .k(10)
            .explain(true)
            .exposure(Exposure::new().max_brand_share(0.2)),
    );
    assert_eq!(capped.len(), 10);
    let mut per_brand = std::collections::HashMap::new();
    for h in &capped {
        *per_brand.entry(h.product.brand.to_lowercase()).or_insert(0) += 1;
    }
    assert!(per_brand.values().all(|&n| n <= 2), "{per_brand:?}");
    let notes = &capped[0].explanation.as_ref().unwrap().notes;
    assert!(
        notes.iter().any(|n| n == "exposure: brand share <= 0.2"),
        "{notes:?}"
    );

    // A long-tail share and debiasing both lower the page's popularity.
    let popular = mean_events(&engine, &ids(&base));
    let tail = page(
        &engine,
        Query::new()
            .user(user)
            .k(10)
            .exposure(Exposure::new().min_long_tail_share(0.6)),
    );
    let debiased = page(
        &engine,
        Query::new()
            .user(user)
            .k(10)
            .exposure(Exposure::new().popularity_gamma(1.0)),
    );
    assert_eq!(tail.len(), 10);
    assert_eq!(debiased.len(), 10);
    assert!(mean_events(&engine, &ids(&tail)) < popular, "long tail");
    assert!(mean_events(&engine, &ids(&debiased)) < popular, "debiased");
    assert_ne!(ids(&tail), ids(&base));

    // Within the filter, whatever the controls.
    let sports = page(
        &engine,
        Query::new()
            .user(user)
            .k(10)
            .filter(Filter::category("sports"))
            .exposure(
                Exposure::new()
                    .max_brand_share(0.1)
                    .min_long_tail_share(1.0)
                    .popularity_gamma(2.0),
            ),
    );
    assert!(!sports.is_empty());
    assert!(sports
        .iter()
        .all(|h| h.product.category.starts_with("sports")));

    // Out of range: typed errors, checked before any work.
    for e in [
        Exposure::new().max_brand_share(1.5),
        Exposure::new().min_long_tail_share(-0.1),
        Exposure::new().popularity_gamma(f32::NAN),
    ] {
        let err = engine
            .query(&Query::new().user(user).exposure(e))
            .unwrap_err();
        assert!(matches!(err, Error::Invalid { .. }), "{err}");
    }
}
