//! # Recommendations: training, fusion, explanations and offline evaluation
//!
//! Run with `cargo run --example recommendations`. The shop (60 products, 40 shoppers) comes
//! from `shop_example_data.rs`.

#[path = "support/shop.rs"]
mod shop;

use shopdb::{
    Engine, EvalOn, EvalOptions, Event, EventKind, Fusion, Query, SplitKind, TrainOptions,
};

fn main() -> shopdb::Result<()> {
    let dir = std::env::temp_dir().join(format!("shopdb-recs-{}", std::process::id()));
    let engine = Engine::builder().dim(shop::DIM).open(&dir)?;
    engine.upsert_products(shop::products())?;
    engine.append_events(shop::events())?;
    engine.commit()?;

    // # Cold start
    //
    // With no models, a recommendation falls back to what needs no training, and says so.
    let cold = engine.query(&Query::new().user("u00").k(3).explain(true))?;
    if let Some(e) = cold.first().and_then(|h| h.explanation.as_ref()) {
        println!("before training: {:?}", e.notes);
    }

    // # Train
    //
    // Event weights, rating mode and decay are training options; the query path weighs a
    // shopper's live history with the same rule (it is stored with the model generation).
    let options = TrainOptions {
        half_life_days: Some(30.0),
        ..TrainOptions::default()
    };
    let report = engine.train(&options)?;
    println!("{report}");

    // # Recommend
    //
    // A user alone is a recommendation: every model channel (item-CF, user-CF, MF, the
    // knowledge graph, popularity) proposes candidates, and fusion ranks them. `Auto` uses
    // what ranked held-out shoppers best at training.
    let hits = engine.query(&Query::new().user("u00").k(5).explain(true))?;
    for h in &hits {
        println!("  {:<4} {:<40} {:.3}", h.id, h.product.title, h.score);
    }
    if let Some(e) = hits.first().and_then(|h| h.explanation.as_ref()) {
        println!("why {}:\n{e}", hits[0].id);
    }

    // # New events count at once
    //
    // The history is read live from the log: committed events change the next answer
    // without retraining. A shopper the models have never seen gets the popular items;
    // once she has looked at two travel backpacks, the item-CF and knowledge-graph channels
    // find more bags from her history alone.
    let ids = |hits: &[shopdb::Hit]| {
        hits.iter()
            .map(|h| format!("{} {}", h.id, h.product.category))
            .collect::<Vec<_>>()
    };
    let zoe = Query::new().user("zoe").k(4);
    println!("zoe, no history: {:?}", ids(&engine.query(&zoe)?));
    engine.append_event(Event::new("zoe", "p02", EventKind::View, 1_700_100_000))?;
    engine.append_event(Event::new("zoe", "p05", EventKind::Cart, 1_700_100_060))?;
    engine.commit()?;
    println!("zoe, after two backpacks: {:?}", ids(&engine.query(&zoe)?));

    // # Items like this one, and the fusion modes
    let similar = engine.query(&Query::new().similar_to("p00").k(3))?;
    println!(
        "like p00: {:?}",
        similar.iter().map(|h| &h.id).collect::<Vec<_>>()
    );
    for fusion in [
        Fusion::default_linear(),
        Fusion::Rrf { k: 60.0 },
        Fusion::Learned,
    ] {
        let hits = engine.query(&Query::new().user("u02").k(3).fusion(fusion))?;
        println!(
            "{fusion:?}: {:?}",
            hits.iter().map(|h| &h.id).collect::<Vec<_>>()
        );
    }

    // # Offline evaluation
    //
    // Leave-one-out: each shopper's latest interaction is the test item, the one before it
    // validation. Every model and fusion mode ranks the whole catalog.
    let eval = engine.evaluate(&EvalOptions {
        split: SplitKind::LeaveOneOut,
        on: EvalOn::Test,
        ..EvalOptions::default()
    })?;
    println!("{eval}");

    drop(engine);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
