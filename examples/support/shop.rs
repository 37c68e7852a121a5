//! The small shop the examples share: 60 products in three categories with 4-d embeddings,
//! and 40 shoppers whose tastes lean towards one category each. Deterministic.

use shopdb::{Event, EventKind, Product};

pub const DIM: usize = 4;

const KINDS: [(&str, &str, [f32; 4]); 3] = [
    ("shoes/running", "running shoe", [0.9, 0.1, 0.1, 0.0]),
    ("shoes/formal", "oxford shoe", [0.1, 0.9, 0.1, 0.0]),
    ("bags/travel", "travel backpack", [0.0, 0.1, 0.9, 0.2]),
];
const BRANDS: [&str; 4] = ["Acme", "Globex", "Initech", "Umbrella"];

/// The catalog.
pub fn products() -> Vec<Product> {
    (0..60)
        .map(|i| {
            let (category, noun, v) = KINDS[i % 3];
            let wobble = (i as f32 * 0.37).sin() * 0.1;
            Product::new(format!("p{i:02}"))
                .title(format!("{} {noun} model {i}", BRANDS[i % 4]))
                .brand(BRANDS[i % 4])
                .category(category)
                .price(20.0 + (i * 7 % 100) as f64)
                .embedding(vec![v[0] + wobble, v[1] - wobble, v[2], v[3] + 0.05])
        })
        .collect()
}

/// Shopper `u` mostly views, clicks and buys in category `u % 3`, sometimes elsewhere.
pub fn events() -> Vec<Event> {
    let mut out = Vec::new();
    let start = 1_700_000_000;
    for u in 0..40usize {
        for j in 0..15usize {
            let taste = if j % 5 == 4 { (u + 1) % 3 } else { u % 3 };
            let item = (taste + 3 * ((u * 5 + j * 7) % 20)) % 60;
            let kind = match j % 6 {
                0 | 3 => EventKind::View,
                1 | 4 => EventKind::Click,
                2 => EventKind::Cart,
                _ => EventKind::Purchase,
            };
            let ts = start + (u * 1_000 + j * 60) as i64;
            out.push(Event::new(
                format!("u{u:02}"),
                format!("p{item:02}"),
                kind,
                ts,
            ));
        }
    }
    out
}
