//! Limits are checked before any work is done, and the per-query time budget stops a query
//! between stages. No test here measures time: a zero budget is spent before the first stage
//! whatever the machine's speed.

use std::time::Duration;

use shopdb::{Engine, Error, Filter, Limits, Query};

use crate::support::{open, products, tempdir, vector};

fn shop(dir: &std::path::Path) -> Engine {
    let e = open(dir);
    e.upsert_products(products(20, 8)).unwrap();
    e.commit().unwrap();
    e
}

fn nested(depth: usize) -> Filter {
    (1..depth).fold(Filter::brand("Acme"), |f, _| Filter::Not(Box::new(f)))
}

/// Over-limit requests, each with the limit it breaks.
fn over_limit() -> Vec<(Query, &'static str)> {
    let q = || Query::new().text("tok1");
    vec![
        (q().k(0), "k"),
        (q().k(1001), "k"),
        (q().candidates(0), "candidates per channel"),
        (q().candidates(10_001), "candidates per channel"),
        (Query::new().text("a".repeat(4097)), "query text bytes"),
        (
            Query::new().text((0..65).map(|i| format!("w{i} ")).collect::<String>()),
            "query terms",
        ),
        (q().filter(nested(33)), "filter nesting depth"),
    ]
}

#[test]
fn every_query_limit_is_checked_before_any_work() {
    let dir = tempdir();
    let e = shop(dir.path());
    for (query, what) in over_limit() {
        // A zero budget would stop the first stage: the limit error shows the check came first.
        let query = query.time_budget(Duration::ZERO);
        match e.query(&query) {
            Err(Error::LimitExceeded { what: got, .. }) => assert_eq!(got, what),
            other => panic!("{what}: {other:?}"),
        }
    }
    let wrong_dim = Query::new()
        .vector(vector(1, 9))
        .time_budget(Duration::ZERO);
    assert!(matches!(
        e.query(&wrong_dim),
        Err(Error::DimensionMismatch {
            expected: 8,
            got: 9
        })
    ));
    // Rejected before the hot-query cache was even consulted.
    assert_eq!(e.query_cache_stats(), (0, 0));
}

#[test]
fn values_at_each_limit_are_accepted() {
    let dir = tempdir();
    let e = shop(dir.path());
    let at_limit = [
        Query::new().text("tok1").k(1000),
        Query::new().text("tok1").candidates(10_000),
        Query::new().text("a".repeat(4096)),
        Query::new().text((0..64).map(|i| format!("w{i} ")).collect::<String>()),
        Query::new().text("tok1").filter(nested(32)),
    ];
    for q in at_limit {
        assert!(e.query(&q).is_ok(), "{q:?}");
    }
    let hits = e.query(&Query::new().text("tok1").k(1000)).unwrap();
    assert_eq!(hits[0].id, "p1");
}

#[test]
fn the_single_channel_searches_check_the_same_limits() {
    let dir = tempdir();
    let e = shop(dir.path());
    let limit =
        |r: shopdb::Result<Vec<shopdb::Scored>>| matches!(r, Err(Error::LimitExceeded { .. }));
    assert!(limit(e.search_text("tok1", &Filter::All, 1001)));
    assert!(limit(e.search_text("tok1", &nested(33), 5)));
    assert!(limit(e.search_text(&"a".repeat(4097), &Filter::All, 5)));
    assert!(limit(e.search_vector(&vector(1, 8), &Filter::All, 0)));
    assert!(limit(e.search_vector(&vector(1, 8), &nested(33), 5)));
    assert!(limit(e.search_vector_exact(&vector(1, 8), 1001)));
}

#[test]
fn a_zero_time_budget_stops_the_query_before_its_first_stage() {
    let dir = tempdir();
    let e = shop(dir.path());
    let q = Query::new().text("tok1").time_budget(Duration::ZERO);
    match e.query(&q) {
        Err(Error::TimedOut { stage, budget }) => {
            assert_eq!(stage, "the user's history");
            assert_eq!(budget, Duration::ZERO);
        }
        other => panic!("{other:?}"),
    }
    // The same request with time to spare answers.
    let hits = e
        .query(
            &Query::new()
                .text("tok1")
                .time_budget(Duration::from_secs(3600)),
        )
        .unwrap();
    assert_eq!(hits[0].id, "p1");
}

#[test]
fn the_limit_caps_a_query_that_asks_for_more_time() {
    let dir = tempdir();
    {
        shop(dir.path());
    }
    let limits = Limits {
        max_query_time: Duration::ZERO,
        ..Limits::default()
    };
    let e = Engine::builder()
        .dim(8)
        .limits(limits)
        .open(dir.path())
        .unwrap();
    let q = Query::new()
        .text("tok1")
        .time_budget(Duration::from_secs(3600));
    assert!(matches!(
        e.query(&q),
        Err(Error::TimedOut {
            budget: Duration::ZERO,
            ..
        })
    ));
    // Single-channel searches have no pipeline to stop and are not budgeted.
    assert_eq!(e.search_text("tok1", &Filter::All, 1).unwrap()[0].id, "p1");
}
