//! Products, events, graph, reopen and config persistence.

use shopdb::{Engine, Error, Event, EventKind, Filter, Metric, Product};

use crate::support::{open, products, tempdir, vector};

#[test]
fn upsert_get_delete_and_reopen() {
    let dir = tempdir();
    {
        let e = open(dir.path());
        e.upsert_products(products(50, 8)).unwrap();
        // Staged writes are invisible until commit.
        assert_eq!(e.product_count(), 0);
        assert!(e.get_product("p1").unwrap().is_none());
        e.commit().unwrap();
        assert_eq!(e.product_count(), 50);
        let p = e.get_product("p7").unwrap().unwrap();
        assert_eq!(p.title, "tok7 product number 7");
        assert_eq!(p.embedding.as_deref(), Some(vector(7, 8).as_slice()));
        e.delete_product("p7").unwrap();
        e.upsert_product(
            Product::new("p8")
                .title("renamed thing")
                .embedding(vector(1000, 8)),
        )
        .unwrap();
        e.commit().unwrap();
        assert!(e.get_product("p7").unwrap().is_none());
        assert!(e.search_text("tok7", &Filter::All, 5).unwrap().is_empty());
        assert!(e.search_text("tok8", &Filter::All, 5).unwrap().is_empty());
        assert_eq!(
            e.search_text("renamed", &Filter::All, 5).unwrap()[0].id,
            "p8"
        );
        let v = e.search_vector(&vector(1000, 8), &Filter::All, 1).unwrap();
        assert_eq!(v[0].id, "p8");
        // The old vector of p8 is a tombstone.
        let old = e.search_vector(&vector(8, 8), &Filter::All, 3).unwrap();
        assert!(old.iter().all(|h| h.id != "p8" || h.score < 0.99));
    }
    let e = open(dir.path());
    let s = e.stats();
    assert_eq!((s.products, s.text_docs as usize, s.vectors), (49, 49, 49));
    assert_eq!(
        e.search_text("renamed", &Filter::All, 5).unwrap()[0].id,
        "p8"
    );
    assert_eq!(
        e.search_vector(&vector(1000, 8), &Filter::All, 1).unwrap()[0].id,
        "p8"
    );
}

#[test]
fn config_is_persisted_and_checked() {
    let dir = tempdir();
    drop(
        Engine::builder()
            .dim(8)
            .metric(Metric::L2)
            .open(dir.path())
            .unwrap(),
    );
    let err = Engine::builder().dim(16).open(dir.path()).err().unwrap();
    assert!(
        matches!(err, Error::ConfigMismatch { setting: "dim", .. }),
        "{err}"
    );
    let err = Engine::builder()
        .metric(Metric::Cosine)
        .open(dir.path())
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            Error::ConfigMismatch {
                setting: "metric",
                ..
            }
        ),
        "{err}"
    );
    // Unset settings adopt the stored ones.
    let e = Engine::open(dir.path()).unwrap();
    assert_eq!((e.config().dim, e.config().metric), (8, Metric::L2));
}

#[test]
fn second_open_is_locked() {
    let dir = tempdir();
    let _e = open(dir.path());
    let err = Engine::builder().dim(8).open(dir.path()).err().unwrap();
    assert!(matches!(err, Error::Locked(_)), "{err}");
}

#[test]
fn events_history_duplicates_and_forget() {
    let dir = tempdir();
    let e = open(dir.path());
    e.upsert_products(products(5, 8)).unwrap();
    e.commit().unwrap();
    e.append_events(vec![
        Event::new("alice", "p1", EventKind::View, 100),
        Event::new("alice", "p2", EventKind::Purchase, 300),
        Event::new("alice", "p3", EventKind::Rating(4.5), 200),
        Event::new("bob", "p1", EventKind::Click, 150),
    ])
    .unwrap();
    let c = e.commit().unwrap();
    assert_eq!(c.duplicate_events, 0);
    let h = e.user_history("alice", None).unwrap();
    let order: Vec<(&str, i64)> = h.iter().map(|e| (e.item.as_str(), e.ts)).collect();
    assert_eq!(order, vec![("p1", 100), ("p3", 200), ("p2", 300)]);
    assert_eq!(h[1].kind, EventKind::Rating(4.5));
    assert_eq!(e.user_history("alice", Some(1)).unwrap()[0].item, "p2");
    // The same event again stores nothing.
    e.append_event(Event::new("alice", "p1", EventKind::View, 100))
        .unwrap();
    let c = e.commit().unwrap();
    assert_eq!(c.duplicate_events, 1);
    assert_eq!(e.stats().events, 4);
    let users: Vec<String> = e
        .item_events("p1")
        .unwrap()
        .into_iter()
        .map(|(u, _)| u)
        .collect();
    assert_eq!(users, vec!["alice", "bob"]);
    assert_eq!(e.user_ids(), vec!["alice", "bob"]);
    e.forget_user("alice").unwrap();
    e.commit().unwrap();
    assert!(matches!(
        e.user_history("alice", None),
        Err(Error::UnknownUser(_))
    ));
    assert_eq!(e.stats().events, 1);
    assert_eq!(e.stats().users, 1);
    let users: Vec<String> = e
        .item_events("p1")
        .unwrap()
        .into_iter()
        .map(|(u, _)| u)
        .collect();
    assert_eq!(users, vec!["bob"]);
    assert_eq!(e.user_ids(), vec!["bob"]);
}

#[test]
fn knowledge_graph_links_products_automatically() {
    let dir = tempdir();
    let e = open(dir.path());
    e.upsert_products(products(6, 8)).unwrap();
    e.commit().unwrap();
    let n = e.neighbors("item:p0", None).unwrap();
    assert!(
        n.contains(&("brand".to_string(), "brand:acme".to_string())),
        "{n:?}"
    );
    assert!(n.contains(&("category".to_string(), "category:shoes".to_string())));
    assert!(n.contains(&("category".to_string(), "category:shoes/running".to_string())));
    let of_brand = e.neighbors("brand:acme", Some("~brand")).unwrap();
    let ids: Vec<&str> = of_brand.iter().map(|(_, x)| x.as_str()).collect();
    assert_eq!(ids, vec!["item:p0", "item:p3"]);
    // A brand change moves the edge.
    e.upsert_product(Product::new("p0").brand("Globex"))
        .unwrap();
    e.add_triples(vec![(
        "brand:globex".into(),
        "founded_in".into(),
        "place:springfield".into(),
    )])
    .unwrap();
    e.link_items(vec![("p1".into(), "m.01".into())]).unwrap();
    e.commit().unwrap();
    assert!(e
        .neighbors("brand:acme", Some("~brand"))
        .unwrap()
        .iter()
        .all(|(_, x)| x != "item:p0"));
    assert_eq!(
        e.neighbors("brand:globex", Some("founded_in")).unwrap()[0].1,
        "place:springfield"
    );
    assert_eq!(e.neighbors("item:p1", Some("link")).unwrap()[0].1, "m.01");
}

#[test]
fn filters_hold_in_text_and_vector_channels() {
    let dir = tempdir();
    let e = open(dir.path());
    e.upsert_products(products(300, 8)).unwrap();
    e.commit().unwrap();
    let filters = [
        Filter::brand("acme"),
        Filter::category("shoes"),
        Filter::category("shoes/formal"),
        Filter::price(Some(50.0), Some(60.0)),
        Filter::attribute("color", "red"),
        Filter::brand("Globex").and(Filter::price(None, Some(100.0))),
        Filter::brand("Acme").or(Filter::category("bags")),
        Filter::category("shoes").not(),
    ];
    for f in &filters {
        let expected: usize = (0..300u64)
            .filter(|i| {
                let p = &products(300, 8)[*i as usize];
                f.matches(p)
            })
            .count();
        let text = e.search_text("product", f, 1000).unwrap();
        assert_eq!(text.len(), expected, "text channel, filter {f:?}");
        let vec = e.search_vector(&vector(3, 8), f, 1000).unwrap();
        assert!(!vec.is_empty(), "vector channel empty under {f:?}");
        for h in text.iter().chain(&vec) {
            let p = e.get_product(&h.id).unwrap().unwrap();
            assert!(f.matches(&p), "{} does not pass {f:?}", h.id);
        }
    }
}

#[test]
fn metrics_cosine_dot_l2_find_the_nearest() {
    for metric in [Metric::Cosine, Metric::Dot, Metric::L2] {
        let dir = tempdir();
        let e = Engine::builder()
            .dim(8)
            .metric(metric)
            .open(dir.path())
            .unwrap();
        e.upsert_products(products(400, 8)).unwrap();
        e.commit().unwrap();
        for i in [3u64, 77, 201] {
            let q = vector(i, 8);
            let ann: Vec<String> = e
                .search_vector(&q, &Filter::All, 10)
                .unwrap()
                .into_iter()
                .map(|h| h.id)
                .collect();
            let exact: Vec<String> = e
                .search_vector_exact(&q, 10)
                .unwrap()
                .into_iter()
                .map(|h| h.id)
                .collect();
            let overlap = ann.iter().filter(|id| exact.contains(id)).count();
            assert!(overlap >= 9, "{metric:?}: ANN {ann:?} vs exact {exact:?}");
        }
    }
}

#[test]
fn engine_is_shared_across_threads_and_readers_see_only_commits() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Engine>();
    let dir = tempdir();
    let e = std::sync::Arc::new(open(dir.path()));
    e.upsert_products(products(10, 8)).unwrap();
    e.commit().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (e, stop) = (e.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut reads = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    // Batches of 10 are committed whole: a reader sees a multiple of 10.
                    let n = e.search_text("product", &Filter::All, 1000).unwrap().len();
                    assert_eq!(n % 10, 0, "saw a half-applied batch: {n}");
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    for b in 1..20u64 {
        let batch = (b * 10..b * 10 + 10)
            .map(|i| {
                Product::new(format!("p{i}"))
                    .title(format!("product {i}"))
                    .embedding(vector(i, 8))
            })
            .collect();
        e.upsert_products(batch).unwrap();
        e.commit().unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
    assert_eq!(e.product_count(), 200);
}
