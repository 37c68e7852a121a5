//! # Hybrid personalised search
//!
//! One call fuses BM25 text search, vector recall and the shopper's own history. Run with
//! `cargo run --example personalised_search`.
//!
//! The shop (60 products, 40 shoppers) comes from `support/shop.rs`; the database lives in
//! a temporary directory.

#[path = "support/shop.rs"]
mod shop;

use shopdb::{Engine, Filter, Query, TrainOptions};

fn main() -> shopdb::Result<()> {
    let dir = std::env::temp_dir().join(format!("shopdb-search-{}", std::process::id()));
    let engine = Engine::builder().dim(shop::DIM).open(&dir)?;

    // # Load the shop
    //
    // Writes are staged and become durable and visible together at `commit()`.
    engine.upsert_products(shop::products())?;
    engine.append_events(shop::events())?;
    engine.commit()?;

    // # Keyword search alone
    //
    // Before any training a query is a plain search: BM25 over title, description, brand and
    // category, and the nearest embeddings when a vector is given.
    let show = |title: &str, hits: &[shopdb::Hit]| {
        println!("{title}");
        for h in hits {
            println!("  {:<4} {:<40} {:.3}", h.id, h.product.title, h.score);
        }
    };
    let plain = engine.query(&Query::new().text("shoe").k(5))?;
    show("'shoe', anyone:", &plain);

    // # Train
    //
    // Training reads the interaction log, tunes each model on the shop's own held-out
    // interactions, fits them, and swaps the new generation in. Readers keep serving the
    // previous one meanwhile.
    let report = engine.train(&TrainOptions::default())?;
    println!("\n{report}");

    // # The same words, two shoppers
    //
    // u00 leans to running shoes, u01 to formal shoes: every shoe matches "shoe" equally, and
    // the collaborative channels re-rank the text candidates by each one's history. (Each
    // channel's scores are min-max normalised over its candidates, so a small difference in
    // BM25 between titles of different lengths would weigh as much as the whole text channel.)
    for user in ["u00", "u01"] {
        let hits = engine.query(&Query::new().text("shoe").user(user).k(5))?;
        show(&format!("'shoe' for {user}:"), &hits);
    }

    // # Text, a vector and a filter
    //
    // A query vector adds the vector channel; the filter applies inside every channel (in
    // tantivy for text, during the graph walk for vectors). At most two hits per brand.
    let hits = engine.query(
        &Query::new()
            .text("shoe")
            .vector(vec![0.9, 0.1, 0.1, 0.05])
            .user("u00")
            .filter(Filter::price(None, Some(80.0)))
            .max_per_brand(2)
            .k(5)
            .explain(true),
    )?;
    show(
        "\n'shoe' + a running-shoe vector, under 80, for u00:",
        &hits,
    );

    // # Why
    //
    // Each hit says what every channel scored it (raw, normalised, rank) and what that added
    // to the fused score; the text channel names the matched terms.
    if let Some(e) = hits.first().and_then(|h| h.explanation.as_ref()) {
        println!("\nwhy {}:\n{e}", hits[0].id);
    }

    drop(engine);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
