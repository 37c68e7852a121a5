//! # Quickstart: store products and events, search by text and by vector
//!
//! Run with `cargo run --example quickstart`. The database lives in a temporary directory.

use shopdb::{Engine, Event, EventKind, Filter, Product};

fn main() -> shopdb::Result<()> {
    // # Open
    //
    // One engine per directory. The vector dimension is fixed when the directory is created
    // and checked on every reopen.
    let dir = std::env::temp_dir().join(format!("shopdb-quickstart-{}", std::process::id()));
    let engine = Engine::builder().dim(4).open(&dir)?;

    // # Write
    //
    // Writes are staged and become durable and visible together at `commit()`.
    engine.upsert_products(vec![
        Product::new("p1")
            .title("Trail running shoe 男士轻便跑步鞋")
            .brand("Acme")
            .category("shoes/running")
            .price(59.9)
            .attribute("color", "red")
            .embedding(vec![0.9, 0.1, 0.0, 0.0]),
        Product::new("p2")
            .title("Leather office shoe")
            .brand("Oxford")
            .category("shoes/formal")
            .price(120.0)
            .embedding(vec![0.0, 0.2, 0.9, 0.1]),
    ])?;
    engine.append_event(Event::new(
        "alice",
        "p1",
        EventKind::Purchase,
        1_700_000_000,
    ))?;
    engine.commit()?;

    // # Search
    //
    // BM25 with English stemming and Chinese word segmentation; filters apply inside the
    // search.
    for query in ["runs", "跑步鞋", "shoe"] {
        let hits = engine.search_text(query, &Filter::category("shoes"), 10)?;
        println!(
            "{query:>6}: {:?}",
            hits.iter().map(|h| &h.id).collect::<Vec<_>>()
        );
    }

    // # Vectors
    //
    // Nearest neighbours under the engine's metric (cosine by default), with a filter.
    let near = engine.search_vector(&[0.1, 0.2, 0.8, 0.1], &Filter::price(None, Some(200.0)), 2)?;
    println!(
        "nearest: {:?}",
        near.iter().map(|h| (&h.id, h.score)).collect::<Vec<_>>()
    );

    // # History
    println!("alice: {:?}", engine.user_history("alice", None)?);
    println!("{:?}", engine.stats());

    drop(engine);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
