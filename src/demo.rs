//! The built-in demo shop: a deterministic, realistic catalog and interaction log.
//!
//! "Give me a shop to play with." [`generate`] fills an engine with a few thousand products
//! (English and Chinese titles, brands, a two- and three-level category tree, prices,
//! attributes, 64-d embeddings that reflect category and brand), a couple of thousand users
//! with latent tastes (favourite categories, brands, a price band, a gender line), and a few
//! hundred thousand view/click/cart/purchase events over the past year that follow those
//! tastes. Then it trains the models, so every query of the language works on the result.
//!
//! Everything comes from one seed through a splitmix64 generator: the same options give
//! the same shop (timestamps are relative to [`DemoOptions::end_ts`]).

use std::time::Instant;

use crate::catalog::Product;
use crate::engine::Engine;
use crate::error::Result;
use crate::events::{Event, EventKind};
use crate::models::SplitMix64;
pub use crate::progress::Progress;
use crate::train::{TrainOptions, TrainReport};

/// What to generate.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Products. Default 3,000.
    pub products: usize,
    /// Users. Default 2,000.
    pub users: usize,
    /// Events, approximately (the funnel of the last session may overshoot a little).
    /// Default 300,000.
    pub events: usize,
    /// Random seed. Default 2024.
    pub seed: u64,
    /// The newest event's bound, unix seconds; events fall in the year before it. Default:
    /// the start of the current UTC day.
    pub end_ts: Option<i64>,
    /// Train the models at the end. Default true.
    pub train: bool,
    /// The sequence model's settings when training; `None` leaves it out. Default: a small
    /// model (32 dimensions, the last 20 items, a few epochs), enough to show the channel at
    /// work on this shop, whose shoppers follow tastes and product lines rather than an
    /// order.
    pub sequence: Option<crate::models::SeqConfig>,
    /// Show progress on stderr. Default false.
    pub progress: bool,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            products: 3_000,
            users: 2_000,
            events: 300_000,
            seed: 2024,
            end_ts: None,
            train: true,
            sequence: Some(demo_sequence()),
            progress: false,
        }
    }
}

/// The demo's sequence model: small and quick. Dropout 0.2: per-shop tuning's race chose it
/// over the default 0.5 on this shop (validation NDCG@10 0.040 against 0.010 in 10 epochs);
/// starting there, the race only tries 0.3 beside it.
fn demo_sequence() -> crate::models::SeqConfig {
    crate::models::SeqConfig {
        dim: 32,
        max_len: 20,
        dropout: 0.2,
        negatives: 256,
        max_epochs: 10,
        eval_every: 2,
        ..crate::models::SeqConfig::default()
    }
}

impl DemoOptions {
    /// A small shop for tests: 300 products, 150 users, 6,000 events.
    pub fn small() -> Self {
        DemoOptions {
            products: 300,
            users: 150,
            events: 6_000,
            ..DemoOptions::default()
        }
    }
}

/// What [`generate`] made.
#[derive(Clone, Debug)]
pub struct DemoReport {
    /// Products stored.
    pub products: usize,
    /// Users with events.
    pub users: usize,
    /// Events stored.
    pub events: usize,
    /// The training report, when trained.
    pub trained: Option<TrainReport>,
    /// Seconds per phase.
    pub timings: Vec<(String, f64)>,
    /// Example statements that show the shop off (run them with [`crate::sql::Session`]).
    pub examples: Vec<String>,
}

/// One of `xs`, drawn with [`SplitMix64::below32`] (`None` when empty).
pub(crate) fn pick<'a, T>(rng: &mut SplitMix64, xs: &'a [T]) -> Option<&'a T> {
    if xs.is_empty() {
        None
    } else {
        xs.get(rng.below32(xs.len()))
    }
}

/// `dim` normal draws ([`SplitMix64::gauss`]) times `scale`.
fn gauss_vec(rng: &mut SplitMix64, dim: usize, scale: f64) -> Vec<f64> {
    (0..dim).map(|_| rng.gauss() * scale).collect()
}

/// A leaf of the category tree.
struct Leaf {
    path: &'static str,
    en: &'static str,
    zh: &'static str,
    /// Typical price of a mid-range brand.
    price: f64,
    /// Sold in men's / women's / kids' lines.
    gendered: bool,
}

const fn leaf(
    path: &'static str,
    en: &'static str,
    zh: &'static str,
    price: f64,
    gendered: bool,
) -> Leaf {
    Leaf {
        path,
        en,
        zh,
        price,
        gendered,
    }
}

const LEAVES: &[Leaf] = &[
    leaf("shoes/running/road", "Running Shoe", "跑步鞋", 89.0, true),
    leaf(
        "shoes/running/trail",
        "Trail Running Shoe",
        "越野跑鞋",
        119.0,
        true,
    ),
    leaf("shoes/hiking", "Hiking Boot", "登山靴", 139.0, true),
    leaf("shoes/sneakers", "Canvas Sneaker", "帆布鞋", 59.0, true),
    leaf("shoes/formal", "Leather Oxford Shoe", "皮鞋", 149.0, true),
    leaf("shoes/sandals", "Sandal", "凉鞋", 39.0, true),
    leaf(
        "clothing/tops/t-shirts",
        "Cotton T-Shirt",
        "纯棉T恤",
        19.0,
        true,
    ),
    leaf("clothing/tops/shirts", "Oxford Shirt", "衬衫", 45.0, true),
    leaf(
        "clothing/outerwear/rain-jackets",
        "Rain Jacket",
        "冲锋衣",
        129.0,
        true,
    ),
    leaf(
        "clothing/outerwear/down-jackets",
        "Down Jacket",
        "羽绒服",
        189.0,
        true,
    ),
    leaf("clothing/bottoms/jeans", "Slim Jeans", "牛仔裤", 59.0, true),
    leaf("clothing/dresses", "Summer Dress", "连衣裙", 69.0, false),
    leaf("electronics/phones", "Smartphone", "智能手机", 599.0, false),
    leaf(
        "electronics/audio/headphones",
        "Wireless Headphones",
        "无线耳机",
        129.0,
        false,
    ),
    leaf(
        "electronics/audio/speakers",
        "Bluetooth Speaker",
        "蓝牙音箱",
        79.0,
        false,
    ),
    leaf(
        "electronics/computers/laptops",
        "Laptop",
        "笔记本电脑",
        999.0,
        false,
    ),
    leaf(
        "electronics/computers/keyboards",
        "Mechanical Keyboard",
        "机械键盘",
        89.0,
        false,
    ),
    leaf(
        "electronics/cameras",
        "Mirrorless Camera",
        "微单相机",
        799.0,
        false,
    ),
    leaf(
        "electronics/wearables",
        "Smart Watch",
        "智能手表",
        249.0,
        false,
    ),
    leaf(
        "home/kitchen/cookware",
        "Nonstick Frying Pan",
        "不粘锅",
        39.0,
        false,
    ),
    leaf(
        "home/kitchen/appliances",
        "Electric Kettle",
        "电热水壶",
        35.0,
        false,
    ),
    leaf(
        "home/kitchen/coffee",
        "Espresso Machine",
        "咖啡机",
        299.0,
        false,
    ),
    leaf("home/bedding", "Duvet Cover Set", "被套四件套", 59.0, false),
    leaf("home/furniture", "Office Chair", "办公椅", 199.0, false),
    leaf("home/lighting", "LED Desk Lamp", "LED台灯", 29.0, false),
    leaf(
        "beauty/skincare",
        "Hydrating Face Cream",
        "保湿面霜",
        32.0,
        false,
    ),
    leaf("beauty/makeup", "Matte Lipstick", "哑光口红", 22.0, false),
    leaf("beauty/fragrance", "Eau de Parfum", "香水", 79.0, false),
    leaf("sports/yoga", "Yoga Mat", "瑜伽垫", 29.0, false),
    leaf("sports/cycling", "Cycling Helmet", "骑行头盔", 69.0, false),
    leaf("sports/camping/tents", "Camping Tent", "帐篷", 159.0, false),
    leaf(
        "sports/camping/sleeping-bags",
        "Sleeping Bag",
        "睡袋",
        89.0,
        false,
    ),
    leaf(
        "sports/fitness",
        "Adjustable Dumbbell",
        "可调哑铃",
        119.0,
        false,
    ),
    leaf("bags/backpacks", "Travel Backpack", "双肩背包", 79.0, false),
    leaf(
        "bags/handbags",
        "Leather Handbag",
        "真皮手提包",
        149.0,
        false,
    ),
    leaf("bags/luggage", "Carry-On Suitcase", "登机箱", 139.0, false),
];

/// Brands by top-level category, with a price tier (1.0 is mid-range).
const BRANDS: &[(&str, &[(&str, f64)])] = &[
    (
        "shoes",
        &[
            ("Acme", 1.0),
            ("Stride", 0.8),
            ("Nimbus", 1.3),
            ("Peakline", 1.5),
            ("Koda", 0.7),
        ],
    ),
    (
        "clothing",
        &[
            ("Northwind", 1.2),
            ("Urbana", 0.9),
            ("Lumen", 1.0),
            ("Maple", 0.8),
            ("Sakura", 1.1),
        ],
    ),
    (
        "electronics",
        &[
            ("Voltix", 1.0),
            ("Sonora", 1.2),
            ("Pixelon", 1.1),
            ("Zenbyte", 0.8),
            ("Orion", 1.5),
        ],
    ),
    (
        "home",
        &[
            ("Hearth", 1.0),
            ("Casa", 0.8),
            ("Brio", 1.2),
            ("Nordhaus", 1.4),
        ],
    ),
    ("beauty", &[("Lotus", 1.0), ("Aurora", 1.3), ("Petal", 0.8)]),
    (
        "sports",
        &[
            ("Summit", 1.2),
            ("Acme", 0.9),
            ("Trailhead", 1.0),
            ("Kinetic", 0.9),
        ],
    ),
    ("bags", &[("Voyager", 1.1), ("Acme", 0.9), ("Atelier", 1.6)]),
];

const ADJECTIVES: &[(&str, &str)] = &[
    ("Lightweight", "轻便"),
    ("Waterproof", "防水"),
    ("Classic", "经典"),
    ("Breathable", "透气"),
    ("Premium", "高端"),
    ("Compact", "便携"),
    ("Durable", "耐用"),
    ("Eco", "环保"),
    ("Pro", "专业"),
    ("Soft", "柔软"),
    ("Retro", "复古"),
    ("Ultra-Thin", "超薄"),
];

const AUDIENCES: &[(&str, &str)] = &[
    ("Men's", "男士"),
    ("Women's", "女士"),
    ("Kids'", "儿童"),
    ("Unisex", "中性"),
];

const COLORS: &[(&str, &str)] = &[
    ("black", "黑色"),
    ("white", "白色"),
    ("red", "红色"),
    ("blue", "蓝色"),
    ("green", "绿色"),
    ("grey", "灰色"),
    ("pink", "粉色"),
    ("navy", "藏青色"),
];

const SECONDS_PER_DAY: i64 = 86_400;

/// Events staged per commit: large enough that commits are few, small enough that one
/// batch stays a few tens of MB.
const EVENT_BATCH: usize = 50_000;

/// Products staged per commit.
const PRODUCT_BATCH: usize = 2_000;

/// Products of one product line: a brand's products of one category leaf, in id order, are
/// cut into lines of this many (the models, sizes and colours a shopper compares). A line's
/// size does not grow with the catalog, so neither does what a model can learn from which
/// products are looked at together.
const LINE_SIZE: usize = 8;

/// Chance that the next product of a session comes from the current product's line (the
/// shopper compares variants) rather than from a fresh look at the leaf.
const STAY_IN_LINE: f64 = 0.6;

/// Chance that a session starts from a line the shopper has engaged with before (a return
/// visit) rather than from a fresh look at one of their favourite leaves.
const RETURN_TO_LINE: f64 = 0.3;

fn top_of(path: &str) -> &str {
    path.split('/').next().unwrap_or(path)
}

fn brands_of(path: &str) -> &'static [(&'static str, f64)] {
    let top = top_of(path);
    BRANDS
        .iter()
        .find(|(t, _)| *t == top)
        .map_or(&[], |(_, b)| *b)
}

/// A generated product with the hidden variables the users' behaviour depends on.
struct Item {
    leaf: usize,
    brand: &'static str,
    tier: f64,
    audience: Option<usize>,
    popularity: f64,
}

/// A user's hidden taste.
struct Taste {
    leaves: Vec<usize>,
    brands: Vec<&'static str>,
    tier: f64,
    audience: Option<usize>,
    activity: f64,
}

fn normalise(v: &[f64]) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-9);
    v.iter().map(|x| (x / norm) as f32).collect()
}

fn add(a: &mut [f64], b: &[f64]) {
    for (x, y) in a.iter_mut().zip(b) {
        *x += y;
    }
}

/// Cumulative weights for sampling by [`sample`].
fn cumulative(weights: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut acc = 0.0;
    weights
        .map(|w| {
            acc += w.max(0.0);
            acc
        })
        .collect()
}

fn sample(rng: &mut SplitMix64, cum: &[f64]) -> usize {
    let total = cum.last().copied().unwrap_or(0.0);
    let x = rng.next_f64() * total;
    cum.partition_point(|c| *c <= x)
        .min(cum.len().saturating_sub(1))
}

fn round_price(p: f64) -> f64 {
    if p < 5.0 {
        (p * 100.0).round() / 100.0
    } else {
        p.floor() + 0.99
    }
}

/// A generated shop held in memory: what [`generate`] stores, and what the benchmark
/// harness ingests, times and scores against.
#[derive(Clone, Debug)]
pub struct Shop {
    /// The catalog, in id order.
    pub products: Vec<Product>,
    /// The interaction log, user by user (each user's events in time order).
    pub events: Vec<Event>,
    /// Labelled searches: one per (category leaf, brand) that is stocked.
    pub queries: Vec<ShopQuery>,
    /// The user with the most events (a good showcase).
    pub busiest_user: String,
    /// A popular product, a running shoe when there is one.
    pub popular_item: String,
}

/// A search with known answers: the text and vector a shopper looking for one brand's
/// products of one category would send, and those products.
#[derive(Clone, Debug)]
pub struct ShopQuery {
    /// E.g. "acme running shoe".
    pub text: String,
    /// The concept's embedding (category, leaf and brand directions, unit length).
    pub vector: Vec<f32>,
    /// The products of that leaf and brand with their relevance grade: 2 for the fifth of
    /// them shoppers go for most (by the hidden popularity their choices follow), 1 for the
    /// rest. Every one matches the words; the grades ask for the wanted ones first, which is
    /// what tells search methods apart once a catalog holds thousands of matches.
    pub relevant: Vec<(String, u32)>,
}

/// The hidden structure the catalog's embeddings are built from, kept to build the
/// embeddings of labelled queries.
struct Directions {
    tops: Vec<&'static str>,
    top_centroids: Vec<Vec<f64>>,
    leaf_offsets: Vec<Vec<f64>>,
    brand_names: Vec<&'static str>,
    brand_offsets: Vec<Vec<f64>>,
    adjective_offsets: Vec<Vec<f64>>,
}

impl Directions {
    fn new(rng: &mut SplitMix64, dim: usize) -> Self {
        let tops: Vec<&str> = BRANDS.iter().map(|(t, _)| *t).collect();
        let top_centroids: Vec<Vec<f64>> = tops.iter().map(|_| gauss_vec(rng, dim, 1.0)).collect();
        let leaf_offsets: Vec<Vec<f64>> = LEAVES.iter().map(|_| gauss_vec(rng, dim, 0.6)).collect();
        let mut brand_names: Vec<&str> = BRANDS
            .iter()
            .flat_map(|(_, b)| b.iter().map(|(n, _)| *n))
            .collect();
        brand_names.sort_unstable();
        brand_names.dedup();
        let brand_offsets: Vec<Vec<f64>> = brand_names
            .iter()
            .map(|_| gauss_vec(rng, dim, 0.3))
            .collect();
        let adjective_offsets: Vec<Vec<f64>> = ADJECTIVES
            .iter()
            .map(|_| gauss_vec(rng, dim, 0.2))
            .collect();
        Directions {
            tops,
            top_centroids,
            leaf_offsets,
            brand_names,
            brand_offsets,
            adjective_offsets,
        }
    }

    /// The un-normalised direction of a leaf and brand (what every such product shares).
    fn concept(&self, leaf: usize, brand: &str) -> Vec<f64> {
        let ti = self
            .tops
            .iter()
            .position(|t| *t == top_of(LEAVES[leaf].path))
            .unwrap_or(0);
        let bi = self
            .brand_names
            .iter()
            .position(|b| *b == brand)
            .unwrap_or(0);
        let mut v = self.top_centroids[ti].clone();
        add(&mut v, &self.leaf_offsets[leaf]);
        add(&mut v, &self.brand_offsets[bi]);
        v
    }
}

/// Generates the catalog: products and their hidden variables.
fn catalog(rng: &mut SplitMix64, dirs: &Directions, n: usize) -> (Vec<Product>, Vec<Item>) {
    let dim = dirs.top_centroids.first().map_or(0, Vec::len);
    let mut items: Vec<Item> = Vec::with_capacity(n);
    let mut products: Vec<Product> = Vec::with_capacity(n);
    let mut directions: Vec<Vec<f64>> = Vec::with_capacity(n);
    for i in 0..n {
        let li = rng.below32(LEAVES.len());
        let lf = &LEAVES[li];
        let brands = brands_of(lf.path);
        let (brand, tier) = pick(rng, brands).copied().unwrap_or(("Acme", 1.0));
        let ai = rng.below32(ADJECTIVES.len());
        let (adj_en, adj_zh) = ADJECTIVES[ai];
        let (color_en, color_zh) = pick(rng, COLORS).copied().unwrap_or(("black", "黑色"));
        let audience = lf.gendered.then(|| rng.below32(AUDIENCES.len()));
        let (aud_en, aud_zh) = audience.map_or(("", ""), |a| AUDIENCES[a]);
        let title = if aud_en.is_empty() {
            format!("{brand} {adj_zh}{} {adj_en} {}", lf.zh, lf.en)
        } else {
            format!(
                "{brand} {aud_zh}{adj_zh}{} {aud_en} {adj_en} {}",
                lf.zh, lf.en
            )
        };
        let description = format!(
            "{adj_en} {} by {brand} in {color_en}. Free returns within 30 days. {color_zh}{}，{adj_zh}设计。",
            lf.en.to_lowercase(),
            lf.zh
        );
        let price = round_price(lf.price * tier * (rng.gauss() * 0.2).exp());
        let mut v = dirs.concept(li, brand);
        add(&mut v, &dirs.adjective_offsets[ai]);
        add(&mut v, &gauss_vec(rng, dim, 0.25));
        let mut p = Product::new(format!("p{:05}", i + 1))
            .title(title)
            .description(description)
            .brand(brand)
            .category(lf.path)
            .price(price)
            .attribute("color", color_en);
        directions.push(v);
        if let Some(a) = audience {
            p = p.attribute("gender", ["men", "women", "kids", "unisex"][a]);
        }
        products.push(p);
        items.push(Item {
            leaf: li,
            brand,
            tier,
            audience,
            popularity: (rng.gauss() * 0.9).exp(),
        });
    }
    // A line's products look alike: they share a direction of their own.
    let (line_of, lines) = product_lines(&items);
    let line_offsets: Vec<Vec<f64>> = lines.iter().map(|_| gauss_vec(rng, dim, 0.2)).collect();
    let products = products
        .into_iter()
        .zip(directions)
        .zip(&line_of)
        .map(|((p, mut v), line)| {
            add(&mut v, &line_offsets[*line]);
            p.embedding(normalise(&v))
        })
        .collect();
    (products, items)
}

/// Draws each user's hidden taste.
fn tastes(rng: &mut SplitMix64, tops: &[&'static str], stocked: &[usize], n: usize) -> Vec<Taste> {
    let top_weights = cumulative(tops.iter().map(|t| match *t {
        "clothing" | "electronics" => 3.0,
        "shoes" | "home" => 2.5,
        _ => 1.5,
    }));
    let mut tastes = Vec::with_capacity(n);
    for _ in 0..n {
        let mut fav_tops = vec![tops[sample(rng, &top_weights)]];
        if rng.chance(0.5) {
            fav_tops.push(tops[sample(rng, &top_weights)]);
        }
        let candidates: Vec<usize> = stocked
            .iter()
            .copied()
            .filter(|l| fav_tops.contains(&top_of(LEAVES[*l].path)))
            .collect();
        let mut leaves = Vec::new();
        for _ in 0..1 + rng.below32(3) {
            if let Some(l) = pick(rng, &candidates).or_else(|| pick(rng, stocked)) {
                if !leaves.contains(l) {
                    leaves.push(*l);
                }
            }
        }
        let mut brands = Vec::new();
        for top in &fav_tops {
            if let Some((b, _)) = pick(rng, brands_of(top)) {
                brands.push(*b);
            }
        }
        tastes.push(Taste {
            leaves,
            brands,
            tier: [0.75, 1.0, 1.0, 1.4][rng.below32(4)],
            audience: if rng.chance(0.8) {
                Some(rng.below32(2))
            } else {
                None
            },
            activity: (rng.gauss() * 0.8).exp(),
        });
    }
    tastes
}

fn end_of(options: &DemoOptions) -> i64 {
    options.end_ts.unwrap_or_else(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(0))
            .unwrap_or(0);
        now - now.rem_euclid(SECONDS_PER_DAY)
    })
}

/// Generates the interaction log from the users' tastes: sessions of views, some clicks,
/// fewer carts and purchases, moving within product lines ([`STAY_IN_LINE`]) and coming
/// back to them ([`RETURN_TO_LINE`]). Returns the events and the busiest user's index.
fn interactions(
    rng: &mut SplitMix64,
    items: &[Item],
    tastes: &[Taste],
    options: &DemoOptions,
) -> (Vec<Event>, usize) {
    let mut by_leaf: Vec<Vec<usize>> = vec![Vec::new(); LEAVES.len()];
    for (i, it) in items.iter().enumerate() {
        by_leaf[it.leaf].push(i);
    }
    let leaf_cum: Vec<Vec<f64>> = by_leaf
        .iter()
        .map(|ids| cumulative(ids.iter().map(|i| items[*i].popularity)))
        .collect();
    let stocked: Vec<usize> = (0..LEAVES.len())
        .filter(|l| !by_leaf[*l].is_empty())
        .collect();
    let (line_of, lines) = product_lines(items);
    let line_cum: Vec<Vec<f64>> = lines
        .iter()
        .map(|ids| cumulative(ids.iter().map(|i| items[*i].popularity)))
        .collect();
    let end = end_of(options);
    let start = end - 365 * SECONDS_PER_DAY;
    let total_activity: f64 = tastes.iter().map(|t| t.activity).sum::<f64>().max(1e-9);
    let mut events: Vec<Event> = Vec::with_capacity(options.events + 64);
    let mut most_active = (0usize, 0usize);
    for (u, taste) in tastes.iter().enumerate() {
        let user = format!("u{:04}", u + 1);
        let budget =
            ((options.events as f64 * taste.activity / total_activity).round() as usize).max(3);
        if budget > most_active.1 {
            most_active = (u, budget);
        }
        let mut made = 0;
        // The lines this shopper has looked at, in the order first met.
        let mut seen_lines: Vec<usize> = Vec::new();
        while made < budget && !stocked.is_empty() {
            let leaf = if rng.chance(0.75) && !taste.leaves.is_empty() {
                taste.leaves[rng.below32(taste.leaves.len())]
            } else {
                stocked[rng.below32(stocked.len())]
            };
            let mut ts = start + (rng.next_f64() * (end - start - 3_600) as f64) as i64;
            let mut current: Option<usize> = None;
            if !seen_lines.is_empty() && rng.chance(RETURN_TO_LINE) {
                let line = seen_lines[rng.below32(seen_lines.len())];
                current = Some(lines[line][sample(rng, &line_cum[line])]);
            }
            for step in 0..1 + rng.below32(3) {
                let next = match current {
                    // A return visit's first product is already chosen.
                    Some(i) if step == 0 => i,
                    // Comparing variants: another product of the same line.
                    Some(i) if rng.chance(STAY_IN_LINE) => {
                        let line = line_of[i];
                        lines[line][sample(rng, &line_cum[line])]
                    }
                    // Sample a few items of the leaf by popularity; the user goes for the
                    // one closest to their taste most of the time.
                    _ => {
                        let mut best: Option<(usize, f64)> = None;
                        for _ in 0..6 {
                            let i = by_leaf[leaf][sample(rng, &leaf_cum[leaf])];
                            let it = &items[i];
                            let mut s = rng.next_f64() * 0.8;
                            if taste.brands.contains(&it.brand) {
                                s += 1.5;
                            }
                            s += 1.0 - (it.tier / taste.tier).ln().abs();
                            if it.audience.is_some() && it.audience == taste.audience {
                                s += 0.7;
                            }
                            if best.is_none_or(|(_, b)| s > b) {
                                best = Some((i, s));
                            }
                        }
                        let Some((i, _)) = best else { break };
                        i
                    }
                };
                current = Some(next);
                if !seen_lines.contains(&line_of[next]) {
                    seen_lines.push(line_of[next]);
                }
                let item = format!("p{:05}", next + 1);
                let fan = taste.brands.contains(&items[next].brand);
                let mut push = |kind: EventKind, ts: &mut i64, rng: &mut SplitMix64| {
                    *ts += 5 + rng.below32(240) as i64;
                    events.push(Event::new(user.clone(), item.clone(), kind, (*ts).min(end)));
                };
                push(EventKind::View, &mut ts, rng);
                made += 1;
                if rng.chance(0.45) {
                    push(EventKind::Click, &mut ts, rng);
                    made += 1;
                    if rng.chance(if fan { 0.5 } else { 0.3 }) {
                        push(EventKind::Cart, &mut ts, rng);
                        made += 1;
                        if rng.chance(0.55) {
                            push(EventKind::Purchase, &mut ts, rng);
                            made += 1;
                        }
                    }
                }
            }
        }
    }
    (events, most_active.0)
}

/// Each (leaf, brand)'s products, in id order.
fn by_leaf_and_brand(
    items: &[Item],
) -> std::collections::BTreeMap<(usize, &'static str), Vec<usize>> {
    let mut groups: std::collections::BTreeMap<(usize, &'static str), Vec<usize>> =
        std::collections::BTreeMap::new();
    for (i, it) in items.iter().enumerate() {
        groups.entry((it.leaf, it.brand)).or_default().push(i);
    }
    groups
}

/// The product lines: each product's line, and each line's products. A brand's products of
/// one leaf, in id order, are cut into lines of [`LINE_SIZE`] (the last may be shorter).
fn product_lines(items: &[Item]) -> (Vec<usize>, Vec<Vec<usize>>) {
    let mut line_of = vec![0; items.len()];
    let mut lines = Vec::new();
    for ids in by_leaf_and_brand(items).values() {
        for chunk in ids.chunks(LINE_SIZE) {
            for &i in chunk {
                line_of[i] = lines.len();
            }
            lines.push(chunk.to_vec());
        }
    }
    (line_of, lines)
}

/// One labelled search per stocked (leaf, brand): the products of that leaf and brand are
/// the relevant answers, graded by popularity ([`ShopQuery::relevant`]).
fn labelled_queries(dirs: &Directions, items: &[Item]) -> Vec<ShopQuery> {
    by_leaf_and_brand(items)
        .into_iter()
        .map(|((leaf, brand), mut ids)| {
            // Most popular first; the top fifth (at least one) is graded 2.
            ids.sort_by(|a, b| items[*b].popularity.total_cmp(&items[*a].popularity));
            let favoured = ids.len().div_ceil(5);
            ShopQuery {
                text: format!("{} {}", brand, LEAVES[leaf].en).to_lowercase(),
                vector: normalise(&dirs.concept(leaf, brand)),
                relevant: ids
                    .iter()
                    .enumerate()
                    .map(|(rank, i)| {
                        (
                            format!("p{:05}", i + 1),
                            if rank < favoured { 2 } else { 1 },
                        )
                    })
                    .collect(),
            }
        })
        .collect()
}

/// Generates the shop described by `options` with `dim`-dimensional embeddings, in memory.
/// Deterministic: the same options give the same shop.
pub fn shop(options: &DemoOptions, dim: usize) -> Shop {
    let mut rng = SplitMix64::new(options.seed);
    let dirs = Directions::new(&mut rng, dim);
    let (products, items) = catalog(&mut rng, &dirs, options.products);
    let stocked: Vec<usize> = (0..LEAVES.len())
        .filter(|l| items.iter().any(|it| it.leaf == *l))
        .collect();
    let tastes = tastes(&mut rng, &dirs.tops, &stocked, options.users);
    let (events, busiest) = interactions(&mut rng, &items, &tastes, options);
    let popular = items
        .iter()
        .enumerate()
        .filter(|(_, it)| LEAVES[it.leaf].path.starts_with("shoes/running"))
        .max_by(|a, b| a.1.popularity.total_cmp(&b.1.popularity))
        .or_else(|| {
            items
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.popularity.total_cmp(&b.1.popularity))
        })
        .map_or(1, |(i, _)| i + 1);
    Shop {
        queries: labelled_queries(&dirs, &items),
        products,
        events,
        busiest_user: format!("u{:04}", busiest + 1),
        popular_item: format!("p{popular:05}"),
    }
}

/// Upserts `products`, committing every `batch`, and advances `progress` by each batch.
/// Returns how many were stored.
///
/// # Errors
/// The engine's validation and commit errors; earlier batches stay committed.
pub fn store_products(
    engine: &Engine,
    products: Vec<Product>,
    batch: usize,
    progress: &Progress,
) -> Result<usize> {
    let n = products.len();
    let mut staged = Vec::with_capacity(batch.min(n));
    for p in products {
        staged.push(p);
        if staged.len() >= batch.max(1) {
            progress.inc(staged.len() as u64);
            engine.upsert_products(std::mem::take(&mut staged))?;
            engine.commit()?;
        }
    }
    progress.inc(staged.len() as u64);
    engine.upsert_products(staged)?;
    engine.commit()?;
    Ok(n)
}

/// Appends `events`, committing every 50,000, and advances `progress` by each batch.
/// Returns how many were new (exact duplicates of stored events add nothing).
///
/// # Errors
/// The engine's validation and commit errors; earlier batches stay committed.
pub fn store_events(engine: &Engine, events: &[Event], progress: &Progress) -> Result<usize> {
    let mut stored = 0;
    for chunk in events.chunks(EVENT_BATCH) {
        engine.append_events(chunk.to_vec())?;
        let c = engine.commit()?;
        stored += chunk.len() - c.duplicate_events;
        progress.inc(chunk.len() as u64);
    }
    Ok(stored)
}

/// The example a demo with a sentence encoder adds: a search by meaning.
pub const SEMANTIC_EXAMPLE: &str =
    "SELECT id, title, score FROM search('a gift for someone who loves cooking') LIMIT 5";

/// Fills `engine` with the demo shop and (by default) trains it. Meant for an empty
/// database; existing products with the same ids (`p00001`, ...) are replaced.
///
/// # Errors
/// The engine's errors while storing or training; what was committed before stays.
pub fn generate(engine: &Engine, options: &DemoOptions) -> Result<DemoReport> {
    let mut timings = Vec::new();
    let progress = if options.progress {
        Progress::spinner("{spinner} {msg}")
    } else {
        Progress::hidden()
    };
    progress.enable_steady_tick(std::time::Duration::from_millis(120));

    let t = Instant::now();
    progress.set_message("generating the shop");
    #[cfg_attr(not(feature = "embed"), allow(unused_mut))]
    let mut shop = shop(options, engine.config().dim);
    // With a sentence encoder the products' vectors are the encoder's, made at commit from
    // their text, instead of the generated concept vectors.
    #[cfg(feature = "embed")]
    let semantic = engine.embedder().is_some();
    #[cfg(not(feature = "embed"))]
    let semantic = false;
    if semantic {
        for p in &mut shop.products {
            p.embedding = None;
        }
    }
    timings.push(("shop generated".to_string(), t.elapsed().as_secs_f64()));

    let t = Instant::now();
    progress.set_message(format!("storing {} products", shop.products.len()));
    let n_products = store_products(engine, shop.products, PRODUCT_BATCH, &progress)?;
    timings.push(("products stored".to_string(), t.elapsed().as_secs_f64()));

    let t = Instant::now();
    progress.set_message(format!("storing {} events", shop.events.len()));
    let stored = store_events(engine, &shop.events, &progress)?;
    timings.push(("events stored".to_string(), t.elapsed().as_secs_f64()));

    let trained = if options.train {
        let t = Instant::now();
        progress.set_message("training");
        let report = engine.train(&TrainOptions {
            sequence: options.sequence.clone(),
            ..TrainOptions::default()
        })?;
        timings.push(("trained".to_string(), t.elapsed().as_secs_f64()));
        Some(report)
    } else {
        None
    };
    progress.finish_and_clear();

    let (user, popular) = (&shop.busiest_user, &shop.popular_item);
    let mut examples = vec![
        "SELECT id, title, price, score FROM search('lightweight running shoes') LIMIT 5".to_string(),
        "SELECT id, title, price, score FROM search('跑步鞋') LIMIT 5".to_string(),
        "SELECT id, title, brand, price FROM search('waterproof jacket') WHERE price < 150 AND category = 'clothing' LIMIT 5"
            .to_string(),
        format!("SELECT id, title, category, score FROM recommend('{user}') LIMIT 5"),
        format!("SELECT id, title, brand, score FROM similar('{popular}') LIMIT 5"),
        format!("EXPLAIN SELECT id, title, score FROM search('wireless headphones', user => '{user}') LIMIT 3"),
        format!("SELECT item_id, kind, ts FROM events WHERE user_id = '{user}' ORDER BY ts DESC LIMIT 5"),
    ];
    if semantic {
        // No product holds these words: only the encoder's vectors can answer.
        examples.push(SEMANTIC_EXAMPLE.to_string());
    }
    Ok(DemoReport {
        products: n_products,
        users: engine.stats().users,
        events: stored,
        trained,
        timings,
        examples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_is_deterministic_and_uniform_enough() {
        let mut a = SplitMix64::new(7);
        let mut b = SplitMix64::new(7);
        let xs: Vec<u64> = (0..100).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..100).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        let mut r = SplitMix64::new(1);
        let mean = (0..10_000).map(|_| r.next_f64()).sum::<f64>() / 10_000.0;
        assert!((mean - 0.5).abs() < 0.02, "{mean}");
        let mut counts = [0usize; 4];
        for _ in 0..4_000 {
            counts[r.below32(4)] += 1;
        }
        assert!(counts.iter().all(|c| (800..1200).contains(c)), "{counts:?}");
    }

    /// What a model can learn from does not thin out as the catalog grows: products seen one
    /// after the other in a session share a product line about as often at 30,000 products
    /// as at 3,000 (lines keep their size; a leaf's products grow tenfold), and every line is
    /// one brand's products of one leaf.
    #[test]
    fn sessions_follow_product_lines_at_every_catalog_size() {
        let mut shares = Vec::new();
        for products in [3_000, 30_000] {
            let options = DemoOptions {
                products,
                users: 400,
                events: 30_000,
                seed: 5,
                end_ts: Some(1_700_000_000),
                train: false,
                sequence: None,
                progress: false,
            };
            // The same draws as `shop` makes first, so the same items.
            let mut rng = SplitMix64::new(options.seed);
            let dirs = Directions::new(&mut rng, 8);
            let (_, items) = catalog(&mut rng, &dirs, products);
            let (line_of, lines) = product_lines(&items);
            for line in &lines {
                assert!(!line.is_empty() && line.len() <= LINE_SIZE);
                let (leaf, brand) = (items[line[0]].leaf, items[line[0]].brand);
                assert!(line
                    .iter()
                    .all(|i| items[*i].leaf == leaf && items[*i].brand == brand));
            }
            let shop = shop(&options, 8);
            let index = |id: &str| id[1..].parse::<usize>().map(|n| n - 1);
            let mut by_user: std::collections::BTreeMap<&str, Vec<(i64, usize)>> =
                std::collections::BTreeMap::new();
            for e in &shop.events {
                let i = index(&e.item).expect("a generated id");
                by_user.entry(&e.user).or_default().push((e.ts, i));
            }
            let (mut steps, mut same) = (0usize, 0usize);
            for evs in by_user.values_mut() {
                evs.sort();
                for w in evs.windows(2) {
                    // A session's next product follows within minutes.
                    if w[0].1 != w[1].1 && w[1].0 - w[0].0 <= 300 {
                        steps += 1;
                        same += usize::from(line_of[w[0].1] == line_of[w[1].1]);
                    }
                }
            }
            assert!(steps > 1_000, "{steps} session steps");
            shares.push(same as f64 / steps as f64);
        }
        assert!(
            shares.iter().all(|s| *s >= 0.4) && (shares[0] - shares[1]).abs() <= 0.1,
            "share of session steps within a line at 3k and 30k products: {shares:?}"
        );
    }

    /// A labelled search's products are graded: the most popular fifth (at least one) 2,
    /// the rest 1.
    #[test]
    fn labelled_searches_grade_the_favoured_fifth() {
        let options = DemoOptions {
            products: 2_000,
            users: 50,
            events: 500,
            train: false,
            sequence: None,
            ..DemoOptions::default()
        };
        let shop = shop(&options, 8);
        assert!(!shop.queries.is_empty());
        let mut total = 0;
        for q in &shop.queries {
            let twos = q.relevant.iter().filter(|(_, g)| *g == 2).count();
            assert_eq!(twos, q.relevant.len().div_ceil(5), "{}", q.text);
            assert!(q.relevant.iter().all(|(_, g)| *g == 1 || *g == 2));
            // Graded 2 first: the list is ordered by popularity.
            assert!(q.relevant.windows(2).all(|w| w[0].1 >= w[1].1));
            total += q.relevant.len();
        }
        assert_eq!(total, options.products, "every product answers one search");
    }

    #[test]
    fn every_leaf_has_brands() {
        for l in LEAVES {
            assert!(!brands_of(l.path).is_empty(), "{}", l.path);
        }
    }
}
