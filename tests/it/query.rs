//! The fused query: channels, explanations, filters, cold start, exclusions.

use shopdb::{Channel, Engine, Event, EventKind, Filter, Fusion, Product, Query, TrainOptions};

use crate::support::{tempdir, vector};

fn shop(e: &Engine) {
    let mut products = Vec::new();
    for i in 0..60u64 {
        let (cat, brand, word) = match i % 3 {
            0 => ("shoes/running", "Acme", "running shoe"),
            1 => ("shoes/formal", "Oxford", "leather shoe"),
            _ => ("bags", "Globex", "backpack"),
        };
        products.push(
            Product::new(format!("p{i}"))
                .title(format!("{word} model {i}"))
                .brand(brand)
                .category(cat)
                .price(10.0 + i as f64)
                .embedding(
                    vector(i % 3, 8)
                        .iter()
                        .zip(vector(i + 100, 8))
                        .map(|(a, b)| a + 0.1 * b)
                        .collect(),
                ),
        );
    }
    e.upsert_products(products).unwrap();
    e.commit().unwrap();
    let mut events = Vec::new();
    for u in 0..30u64 {
        for j in 0..8u64 {
            // Users like one category each.
            let item = (u % 3) + 3 * ((u + j * 7) % 20);
            events.push(Event::new(
                format!("u{u}"),
                format!("p{item}"),
                EventKind::Click,
                1_600_000_000 + (u * 10 + j) as i64,
            ));
        }
    }
    e.append_events(events).unwrap();
    e.append_event(Event::new(
        "buyer",
        "p0",
        EventKind::Purchase,
        1_600_000_500,
    ))
    .unwrap();
    e.commit().unwrap();
}

fn channels(h: &shopdb::Hit) -> Vec<Channel> {
    h.explanation
        .as_ref()
        .unwrap()
        .channels
        .iter()
        .map(|c| c.channel)
        .collect()
}

#[test]
fn cold_start_without_models_still_answers() {
    let dir = tempdir();
    let e = Engine::builder().dim(8).open(dir.path()).unwrap();
    shop(&e);
    let hits = e
        .query(&Query::new().text("running").user("nobody").explain(true))
        .unwrap();
    assert!(!hits.is_empty());
    let ex = hits[0].explanation.as_ref().unwrap();
    assert_eq!(channels(&hits[0]), vec![Channel::Text]);
    assert_eq!(ex.matched_terms, vec!["run"]);
    assert!(
        ex.notes.iter().any(|n| n.contains("cold start")),
        "{:?}",
        ex.notes
    );
    // Similar items by vector work before training too.
    let similar = e
        .query(&Query::new().similar_to("p3").explain(true))
        .unwrap();
    assert!(similar.iter().all(|h| h.id != "p3"));
    assert_eq!(similar[0].product.category, "shoes/running");
}

#[test]
fn trained_channels_explain_filter_and_exclude() {
    let dir = tempdir();
    let e = Engine::builder().dim(8).open(dir.path()).unwrap();
    shop(&e);
    e.train(&TrainOptions::default()).unwrap();
    // Recommendation for a user who likes running shoes (u0 clicks items 0 mod 3).
    let recs = e
        .query(&Query::new().user("u0").k(5).explain(true))
        .unwrap();
    assert_eq!(recs.len(), 5);
    let running = recs
        .iter()
        .filter(|h| h.product.category == "shoes/running")
        .count();
    assert!(
        running >= 4,
        "{:?}",
        recs.iter().map(|h| &h.product.category).collect::<Vec<_>>()
    );
    let ex = recs[0].explanation.as_ref().unwrap();
    let chans = channels(&recs[0]);
    assert!(
        chans.contains(&Channel::ItemCf) && chans.contains(&Channel::Mf),
        "{chans:?}"
    );
    let item_cf = ex.channels.iter().find(|c| c.channel == Channel::ItemCf);
    assert!(
        item_cf.is_some_and(|c| c.because_of.is_some()) && ex.because_of.is_some(),
        "item-CF names the history item: {ex}"
    );
    // Filters hold in every channel.
    for fusion in [
        Fusion::default(),
        Fusion::default_linear(),
        Fusion::Rrf { k: 60.0 },
    ] {
        let f = Filter::category("bags");
        let hits = e
            .query(
                &Query::new()
                    .user("u0")
                    .filter(f.clone())
                    .fusion(fusion)
                    .k(10),
            )
            .unwrap();
        assert!(!hits.is_empty());
        assert!(hits.iter().all(|h| f.matches(&h.product)));
    }
    // Purchased items are excluded when asked (the default), included otherwise.
    let with = e
        .query(&Query::new().user("buyer").k(60).exclude_purchased(false))
        .unwrap();
    let without = e.query(&Query::new().user("buyer").k(60)).unwrap();
    assert!(with.iter().any(|h| h.id == "p0"));
    assert!(without.iter().all(|h| h.id != "p0"));
    // Personalised search: the text decides the candidates, CF re-ranks them.
    let hits = e
        .query(&Query::new().text("shoe").user("u1").explain(true).k(5))
        .unwrap();
    assert!(hits.iter().all(|h| h.product.title.contains("shoe")));
    assert!(channels(&hits[0]).contains(&Channel::Text));
    // Brand cap.
    let capped = e
        .query(&Query::new().user("u0").k(10).max_per_brand(2))
        .unwrap();
    let acme = capped.iter().filter(|h| h.product.brand == "Acme").count();
    assert!(acme <= 2);
    // A cold-start item (no events) is still recommended as similar by content.
    e.upsert_product(
        Product::new("new")
            .title("running shoe brand new")
            .category("shoes/running")
            .embedding(vector(0, 8)),
    )
    .unwrap();
    e.commit().unwrap();
    let sim = e.query(&Query::new().similar_to("new").k(3)).unwrap();
    assert_eq!(sim.len(), 3);
    // A new event changes recommendations at once, without retraining.
    let before: Vec<String> = e
        .query(&Query::new().user("fresh").k(3))
        .unwrap()
        .into_iter()
        .map(|h| h.id)
        .collect();
    e.append_event(Event::new(
        "fresh",
        "p2",
        EventKind::Purchase,
        1_600_000_900,
    ))
    .unwrap();
    e.commit().unwrap();
    let after = e
        .query(&Query::new().user("fresh").k(3).explain(true))
        .unwrap();
    assert_ne!(
        before,
        after.iter().map(|h| h.id.clone()).collect::<Vec<_>>()
    );
    assert!(after.iter().all(|h| h.id != "p2"));
}

#[test]
fn cache_facets_and_mmr() {
    let dir = tempdir();
    let e = Engine::builder().dim(8).open(dir.path()).unwrap();
    shop(&e);
    // The hot-query cache answers a repeated query and is invalidated by a commit.
    let q = Query::new().text("shoe").k(50);
    let first = e.query(&q).unwrap();
    let again = e.query(&q).unwrap();
    assert_eq!(e.query_cache_stats(), (1, 1));
    assert_eq!(
        first.iter().map(|h| &h.id).collect::<Vec<_>>(),
        again.iter().map(|h| &h.id).collect::<Vec<_>>()
    );
    e.upsert_product(
        Product::new("fresh")
            .title("shoe shoe shoe")
            .category("shoes/running"),
    )
    .unwrap();
    e.commit().unwrap();
    let after = e.query(&q).unwrap();
    assert_eq!(e.query_cache_stats(), (1, 2));
    assert!(after.iter().any(|h| h.id == "fresh"));
    // Facets count every match under the filter.
    let f = e.facets("shoe", &Filter::All).unwrap();
    assert_eq!(
        f.categories.iter().find(|(c, _)| c == "shoes").map(|x| x.1),
        Some(41)
    );
    assert_eq!(
        f.brands.iter().find(|(b, _)| b == "Oxford").map(|x| x.1),
        Some(20)
    );
    let f = e.facets("shoe", &Filter::brand("Acme")).unwrap();
    assert_eq!(f.brands, vec![("Acme".to_string(), 20)]);
    assert_eq!(
        f.categories,
        vec![("shoes".to_string(), 20), ("shoes/running".to_string(), 20)]
    );
    // MMR trades relevance for variety: with a low lambda the top 3 span more categories.
    let plain = e.query(&Query::new().similar_to("p0").k(3)).unwrap();
    let diverse = e
        .query(&Query::new().similar_to("p0").k(3).mmr(0.1))
        .unwrap();
    let cats = |h: &[shopdb::Hit]| {
        h.iter()
            .map(|x| x.product.category.clone())
            .collect::<std::collections::HashSet<_>>()
            .len()
    };
    assert!(
        cats(&diverse) > cats(&plain),
        "plain {:?} diverse {:?}",
        plain
            .iter()
            .map(|h| &h.product.category)
            .collect::<Vec<_>>(),
        diverse
            .iter()
            .map(|h| &h.product.category)
            .collect::<Vec<_>>()
    );
}

/// The content channel recommends a product nobody has bought yet from the shopper's recent
/// item, and its explanation names that item.
#[test]
fn content_channel_reaches_new_products_and_says_why() {
    let dir = tempdir();
    let e = Engine::builder().dim(8).open(dir.path()).unwrap();
    shop(&e);
    // No one has interacted with this one: only content can link it to a history.
    e.upsert_product(
        Product::new("fresh")
            .title("leather shoe model deluxe")
            .brand("Oxford")
            .category("shoes/formal")
            .embedding(vector(1, 8)),
    )
    .unwrap();
    e.commit().unwrap();
    e.train(&TrainOptions::default()).unwrap();
    // A new shopper's first click, after training: served from the live history.
    e.append_event(Event::new(
        "newcomer",
        "p1",
        EventKind::Click,
        1_600_001_000,
    ))
    .unwrap();
    e.commit().unwrap();
    let recs = e
        .query(&Query::new().user("newcomer").k(61).explain(true))
        .unwrap();
    let hit = recs
        .iter()
        .find(|h| h.id == "fresh")
        .expect("the new product is recommended");
    let ex = hit.explanation.as_ref().unwrap();
    let part = ex
        .channels
        .iter()
        .find(|c| c.channel == Channel::Content)
        .unwrap_or_else(|| panic!("content scored it: {ex}"));
    assert!(part.raw > 0.0, "{ex}");
    assert!(!channels(hit).contains(&Channel::ItemCf), "{ex}");
    assert_eq!(part.because_of.as_deref(), Some("p1"), "{ex}");
    assert_eq!(ex.because_of.as_deref(), Some("p1"), "{ex}");
}
