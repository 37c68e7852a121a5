//! # How fast the in-process sentence encoder is
//!
//! ```text
//! tools/fetch_minilm.sh target/minilm
//! cargo run --release --features embed --example embed_speed -- target/minilm [N]
//! ```
//!
//! Loads all-MiniLM-L6-v2 (or any BERT-family model in the folder) with
//! [`shopdb::Embedder`], then measures:
//!
//! 1. documents per second on N (default 1,000) generated product descriptions of about 128
//!    tokens, embedded in one call (the encoder batches and sorts them itself);
//! 2. documents per second on the first N SciFact documents (title + " " + text, up to 256
//!    tokens), when `$SHOPDB_DATA/scifact/corpus.jsonl` exists (default `../shared/data`);
//! 3. the latency of embedding one short query at a time: p50 and p99 over 200 queries
//!    (SciFact's when present, else generated shopper queries), after 10 for warm-up.
//!
//! The encoder's matrix products use every thread of rayon's pool: set `RAYON_NUM_THREADS`
//! to compare.

use std::path::{Path, PathBuf};
use std::time::Instant;

use shopdb::Embedder;

fn main() -> shopdb::Result<()> {
    let mut args = std::env::args().skip(1);
    let Some(model) = args.next().map(PathBuf::from) else {
        eprintln!("usage: embed_speed MODEL_DIR [N]");
        std::process::exit(2);
    };
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);

    // # Loading
    let started = Instant::now();
    let embedder = Embedder::load(&model)?;
    let info = embedder.info();
    println!(
        "model {} (dim {}, sha256 {}...) loaded in {:.2} s; {} threads",
        info.name,
        info.dim,
        &info.checksum[..8],
        started.elapsed().as_secs_f64(),
        rayon::current_num_threads()
    );

    // # Throughput on generated product texts of ~128 tokens
    let products: Vec<String> = (0..n).map(product_text).collect();
    throughput(&embedder, "generated products", &products)?;

    // # Throughput on SciFact
    let data = std::env::var_os("SHOPDB_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("../shared/data"));
    let scifact = data.join("scifact");
    match read_jsonl(&scifact.join("corpus.jsonl"), n, |doc| {
        let field = |k: &str| doc[k].as_str().unwrap_or_default().to_owned();
        format!("{} {}", field("title"), field("text"))
            .trim()
            .to_owned()
    }) {
        Some(docs) => throughput(&embedder, "SciFact documents", &docs)?,
        None => println!("SciFact absent under {}: skipped", scifact.display()),
    }

    // # Query latency, one query at a time
    let queries = read_jsonl(&scifact.join("queries.jsonl"), 210, |q| {
        q["text"].as_str().unwrap_or_default().to_owned()
    })
    .unwrap_or_else(|| (0..210).map(query_text).collect());
    let mut times = Vec::with_capacity(queries.len());
    for (i, q) in queries.iter().enumerate() {
        let t = Instant::now();
        embedder.embed(&[q])?;
        if i >= 10 {
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    times.sort_by(f64::total_cmp);
    let pct = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    println!(
        "query latency over {} queries (mean {:.1} tokens): p50 {:.2} ms, p99 {:.2} ms",
        times.len(),
        mean_tokens(&embedder, &queries[10..])?,
        pct(0.50),
        pct(0.99)
    );
    Ok(())
}

/// Embeds `texts` in one call and prints documents per second.
fn throughput(embedder: &Embedder, what: &str, texts: &[String]) -> shopdb::Result<()> {
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let t = Instant::now();
    let vectors = embedder.embed(&refs)?;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{what}: {} docs (mean {:.1} tokens) in {secs:.2} s = {:.1} docs/s",
        vectors.len(),
        mean_tokens(embedder, texts)?,
        vectors.len() as f64 / secs
    );
    Ok(())
}

fn mean_tokens(embedder: &Embedder, texts: &[String]) -> shopdb::Result<f64> {
    let mut total = 0;
    for t in texts {
        total += embedder.tokens(t)?;
    }
    Ok(total as f64 / texts.len().max(1) as f64)
}

/// The first `n` rows of a JSON-lines file mapped by `f`, or `None` if it cannot be read.
fn read_jsonl(
    path: &Path,
    n: usize,
    f: impl Fn(&serde_json::Value) -> String,
) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(path).ok()?;
    Some(
        text.lines()
            .take(n)
            .filter_map(|l| serde_json::from_str(l).ok())
            .map(|v| f(&v))
            .collect(),
    )
}

const ADJECTIVES: [&str; 12] = [
    "lightweight",
    "waterproof",
    "breathable",
    "durable",
    "classic",
    "slim",
    "organic",
    "recycled",
    "cushioned",
    "adjustable",
    "compact",
    "insulated",
];
const NOUNS: [&str; 12] = [
    "running shoe",
    "rain jacket",
    "backpack",
    "wool sweater",
    "yoga mat",
    "water bottle",
    "hiking boot",
    "desk lamp",
    "coffee grinder",
    "travel mug",
    "sleeping bag",
    "cotton t-shirt",
];
const BRANDS: [&str; 6] = [
    "Northwind",
    "Acme",
    "Trailhead",
    "Lumen",
    "Basecamp",
    "Orchid",
];
const PHRASES: [&str; 10] = [
    "designed for everyday comfort and long days on your feet",
    "made from materials that resist wear, stains and fading",
    "with a reinforced base and stitched seams for extra strength",
    "easy to clean by hand or in the machine on a gentle cycle",
    "available in several colours and sizes to suit every taste",
    "backed by a two year warranty and free returns within thirty days",
    "packs down small so it fits in a carry-on or a drawer",
    "tested outdoors in rain, wind and snow by our product team",
    "a favourite of customers who value quality over quantity",
    "pairs well with the rest of the collection for a complete look",
];

/// A deterministic product title, brand, category and description of about 128 tokens.
fn product_text(i: usize) -> String {
    let mut x = i as u64 * 2_654_435_761 + 12_345;
    let mut next = |m: usize| {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (x >> 33) as usize % m
    };
    let mut s = format!(
        "{} {} {} by {}. Category: outdoor and home.",
        ADJECTIVES[next(12)],
        ADJECTIVES[next(12)],
        NOUNS[next(12)],
        BRANDS[next(6)]
    );
    for _ in 0..7 {
        s.push_str(&format!(
            " The {} is {}.",
            NOUNS[next(12)],
            PHRASES[next(10)]
        ));
    }
    s
}

/// A short shopper query such as "waterproof hiking boot acme".
fn query_text(i: usize) -> String {
    format!(
        "{} {} {}",
        ADJECTIVES[i % 12],
        NOUNS[(i / 12) % 12],
        BRANDS[i % 6].to_lowercase()
    )
}
