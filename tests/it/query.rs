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

/// The cold-start hits of `user` on a trained shop, checked against popularity's own scores:
/// non-zero, non-increasing, each hit's score its popularity score (the whole score), and the
/// explanation names the fallback, not the re-ranker. Returns the ids and scores.
fn cold_start_list(e: &Engine, user: &str, fusion: Fusion) -> Vec<(String, f32)> {
    let hits = e
        .query(&Query::new().user(user).k(5).fusion(fusion).explain(true))
        .unwrap();
    assert_eq!(hits.len(), 5, "{user} {fusion:?}");
    for w in hits.windows(2) {
        assert!(w[0].score >= w[1].score, "{user} {fusion:?}: not ordered");
    }
    for h in &hits {
        assert!(h.score > 0.0, "{user} {fusion:?}: score {}", h.score);
        let ex = h.explanation.as_ref().unwrap();
        assert_eq!(channels(h), vec![Channel::Popularity], "{ex}");
        let pop = &ex.channels[0];
        assert_eq!(pop.raw, h.score, "the score is popularity's own: {ex}");
        assert_eq!(pop.contribution, h.score, "{ex}");
        assert!(
            ex.notes
                .iter()
                .any(|n| n.contains("cold-start fallback (no history)") && n.contains("popularity")),
            "{ex}"
        );
        for n in &ex.notes {
            assert!(
                !n.contains("MLP") && !n.contains("re-ranker") && !n.contains("learned"),
                "{user} {fusion:?}: {n}"
            );
        }
    }
    hits.into_iter().map(|h| (h.id, h.score)).collect()
}

#[test]
fn cold_start_is_ranked_by_popularity_with_its_own_scores() {
    let dir = tempdir();
    let e = Engine::builder().dim(8).open(dir.path()).unwrap();
    shop(&e);
    // Two products only "gone" touches, deleted after training: the models know the user,
    // the live history has nothing left.
    e.upsert_products(vec![
        Product::new("d0")
            .title("discontinued one")
            .category("bags"),
        Product::new("d1")
            .title("discontinued two")
            .category("bags"),
    ])
    .unwrap();
    e.append_events(
        (0..4)
            .map(|j| {
                Event::new(
                    "gone",
                    format!("d{}", j % 2),
                    EventKind::Purchase,
                    1_600_000_600 + j,
                )
            })
            .collect(),
    )
    .unwrap();
    e.commit().unwrap();
    e.train(&TrainOptions::default()).unwrap();
    e.delete_product("d0").unwrap();
    e.delete_product("d1").unwrap();
    e.commit().unwrap();

    let cold = cold_start_list(&e, "nobody", Fusion::default());
    // Whatever fusion is asked for: with nothing to fuse, popularity ranks.
    for fusion in [
        Fusion::Mlp,
        Fusion::Learned,
        Fusion::default_linear(),
        Fusion::Rrf { k: 60.0 },
    ] {
        assert_eq!(cold_start_list(&e, "nobody", fusion), cold, "{fusion:?}");
    }
    // A user whose only events are on deleted products is a cold start too.
    assert_eq!(cold_start_list(&e, "gone", Fusion::default()), cold);
    assert_eq!(cold_start_list(&e, "gone", Fusion::Mlp), cold);
    let gone = e
        .query(&Query::new().user("gone").k(1).explain(true))
        .unwrap();
    let notes = &gone[0].explanation.as_ref().unwrap().notes;
    assert!(
        notes.iter().any(|n| n.contains("\"gone\" has no history")),
        "{notes:?}"
    );

    // Popularity's scores, counted here: every event of the shop is a click but the buyer's
    // purchase of p0 (left out), so an item's score is its click count times the click
    // weight, and the list is the most clicked items, most first.
    let mut clicks = std::collections::HashMap::<String, f32>::new();
    for u in 0..30u64 {
        for j in 0..8u64 {
            *clicks
                .entry(format!("p{}", (u % 3) + 3 * ((u + j * 7) % 20)))
                .or_default() += 1.0;
        }
    }
    clicks.remove("p0");
    let counted: Vec<(&String, f32)> = cold
        .iter()
        .filter(|(id, _)| id != "p0")
        .map(|(id, score)| (id, *score))
        .collect();
    let weight = counted[0].1 / clicks[counted[0].0];
    for (id, score) in &counted {
        assert!(
            (score - weight * clicks[*id]).abs() < 1e-4 * score,
            "{id}: {score} against {} clicks",
            clicks[*id]
        );
    }
    let mut counts: Vec<f32> = clicks.values().copied().collect();
    counts.sort_by(|a, b| b.total_cmp(a));
    assert_eq!(
        counted
            .iter()
            .map(|(id, _)| clicks[*id])
            .collect::<Vec<_>>(),
        counts[..counted.len()].to_vec()
    );
    // The same scores as popularity gives those items beside the other channels for a
    // shopper with a history.
    let warm = e
        .query(
            &Query::new()
                .user("u0")
                .k(60)
                .exclude_purchased(false)
                .explain(true),
        )
        .unwrap();
    for (id, score) in &cold {
        if let Some(h) = warm.iter().find(|h| &h.id == id) {
            let ex = h.explanation.as_ref().unwrap();
            if let Some(p) = ex
                .channels
                .iter()
                .find(|c| c.channel == Channel::Popularity)
            {
                assert_eq!(p.raw, *score, "{id}");
            }
        }
    }
    // A shopper with a history is not a cold start.
    let ex = warm[0].explanation.as_ref().unwrap();
    assert!(ex.notes.iter().all(|n| !n.contains("cold")), "{ex}");
}
