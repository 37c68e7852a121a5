//! Filtered vector search: a selective filter is answered exactly from the text index's
//! allowed set, a broad one by the graph walk with the filter as a predicate; both return
//! only products that pass, and follow a product whose brand a commit changed.

use shopdb::{Engine, Filter, Metric, Product};

use crate::support::{tempdir, vector};

const DIM: usize = 16;

fn unit(v: &[f32]) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / n).collect()
}

/// The true top `k` ids among `pass`, by cosine.
fn brute(vs: &[Vec<f32>], q: &[f32], k: usize, pass: impl Fn(usize) -> bool) -> Vec<String> {
    let q = unit(q);
    let mut s: Vec<(f32, usize)> = vs
        .iter()
        .enumerate()
        .filter(|(i, _)| pass(*i))
        .map(|(i, v)| (unit(v).iter().zip(&q).map(|(a, b)| a * b).sum(), i))
        .collect();
    s.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    s.into_iter()
        .take(k)
        .map(|(_, i)| format!("p{i}"))
        .collect()
}

fn brand(i: usize) -> String {
    // "rare" on 1% of the catalog (below the exact-scan share), the rest split in two.
    if i % 100 == 7 {
        "Rare".into()
    } else if i.is_multiple_of(2) {
        "Even".into()
    } else {
        "Odd".into()
    }
}

#[test]
fn filtered_vector_search_returns_only_passing_products_and_finds_the_nearest() {
    let dir = tempdir();
    let e = Engine::builder()
        .dim(DIM)
        .metric(Metric::Cosine)
        .open(dir.path())
        .unwrap();
    let n = 3000usize;
    let vs: Vec<Vec<f32>> = (0..n).map(|i| vector(i as u64, DIM)).collect();
    e.upsert_products(
        (0..n)
            .map(|i| {
                Product::new(format!("p{i}"))
                    .brand(brand(i))
                    .price((i % 50) as f64)
                    .embedding(vs[i].clone())
            })
            .collect(),
    )
    .unwrap();
    e.commit().unwrap();
    type Passes = Box<dyn Fn(usize) -> bool>;
    let cases: Vec<(Filter, Passes, bool)> = vec![
        (
            Filter::brand("Rare"),
            Box::new(|i| brand(i) == "Rare"),
            true,
        ),
        (
            Filter::brand("Rare").or(Filter::price(Some(49.0), None)),
            Box::new(|i| brand(i) == "Rare" || i % 50 == 49),
            true,
        ),
        (
            Filter::brand("Even"),
            Box::new(|i| brand(i) == "Even"),
            false,
        ),
        (
            Filter::brand("Odd").and(Filter::price(None, Some(24.0))),
            Box::new(|i| brand(i) == "Odd" && i % 50 <= 24),
            false,
        ),
        (
            Filter::brand("Rare").not(),
            Box::new(|i| brand(i) != "Rare"),
            false,
        ),
    ];
    for (filter, pass, exact) in &cases {
        let mut found = 0;
        let queries = 30;
        for qi in 0..queries {
            let q = vector(10_000 + qi, DIM);
            let hits = e.search_vector(&q, filter, 10).unwrap();
            let want = brute(&vs, &q, 10, pass);
            for h in &hits {
                let i: usize = h.id[1..].parse().unwrap();
                assert!(pass(i), "{filter:?}: {} does not pass", h.id);
            }
            let ids: Vec<String> = hits.iter().map(|h| h.id.clone()).collect();
            if *exact {
                assert_eq!(
                    ids, want,
                    "{filter:?}: a selective filter is answered exactly"
                );
            }
            found += ids.iter().filter(|id| want.contains(id)).count();
        }
        let recall = found as f64 / (queries as usize * 10) as f64;
        assert!(recall >= 0.9, "{filter:?}: recall@10 {recall:.3}");
    }
    // A product moved into the rare brand is found under it at once after the commit; one
    // moved out is not.
    let q = vector(20_000, DIM);
    e.upsert_products(vec![
        Product::new("p0").brand("Rare").embedding(q.clone()),
        Product::new("p7").brand("Even").embedding(vs[7].clone()),
    ])
    .unwrap();
    e.commit().unwrap();
    let hits = e.search_vector(&q, &Filter::brand("Rare"), 5).unwrap();
    assert_eq!(hits.first().map(|h| h.id.as_str()), Some("p0"));
    assert!(hits.iter().all(|h| h.id != "p7"));
}

/// Price ranges are read from the fast column, and from the inverted index under a `Not`:
/// with every filtered search answered from the text index's allowed set, each combination
/// returns exactly the nearest passing products.
#[test]
fn price_ranges_in_every_position_of_a_filter_select_what_they_should() {
    let dir = tempdir();
    let e = Engine::builder()
        .dim(DIM)
        .metric(Metric::Cosine)
        .hnsw(shopdb::HnswParams {
            exact_scan_below: 1.0,
            ..shopdb::HnswParams::default()
        })
        .open(dir.path())
        .unwrap();
    let n = 2000usize;
    let vs: Vec<Vec<f32>> = (0..n).map(|i| vector(i as u64, DIM)).collect();
    let price = |i: usize| (i % 97) as f64 + 0.5;
    e.upsert_products(
        (0..n)
            .map(|i| {
                let p = Product::new(format!("p{i}"))
                    .brand(brand(i))
                    .embedding(vs[i].clone());
                // Every 10th product has no price: no range holds it.
                if i % 10 == 3 {
                    p
                } else {
                    p.price(price(i))
                }
            })
            .collect(),
    )
    .unwrap();
    e.commit().unwrap();
    let priced = |i: usize| i % 10 != 3;
    let within = move |i: usize, lo: f64, hi: f64| priced(i) && price(i) >= lo && price(i) <= hi;
    type Passes = Box<dyn Fn(usize) -> bool>;
    let range = |lo: f64, hi: f64| Filter::price(Some(lo), Some(hi));
    let cases: Vec<(Filter, Passes)> = vec![
        (range(10.0, 20.0), Box::new(move |i| within(i, 10.0, 20.0))),
        (
            Filter::price(None, Some(5.0)),
            Box::new(move |i| within(i, f64::MIN, 5.0)),
        ),
        (
            Filter::price(Some(90.0), None),
            Box::new(move |i| within(i, 90.0, f64::MAX)),
        ),
        (
            range(10.0, 60.0).and(Filter::brand("Odd")),
            Box::new(move |i| within(i, 10.0, 60.0) && brand(i) == "Odd"),
        ),
        (
            range(0.0, 3.0).or(range(95.0, 100.0)),
            Box::new(move |i| within(i, 0.0, 3.0) || within(i, 95.0, 100.0)),
        ),
        (
            range(0.0, 50.0).not(),
            Box::new(move |i| !within(i, 0.0, 50.0)),
        ),
        (
            range(0.0, 50.0).and(Filter::brand("Even")).not(),
            Box::new(move |i| !(within(i, 0.0, 50.0) && brand(i) == "Even")),
        ),
        (
            Filter::brand("Odd").and(range(20.0, 80.0).not()),
            Box::new(move |i| brand(i) == "Odd" && !within(i, 20.0, 80.0)),
        ),
    ];
    for (filter, pass) in &cases {
        for qi in 0..10 {
            let q = vector(30_000 + qi, DIM);
            let ids: Vec<String> = e
                .search_vector(&q, filter, 10)
                .unwrap()
                .into_iter()
                .map(|h| h.id)
                .collect();
            assert_eq!(ids, brute(&vs, &q, 10, pass), "{filter:?}");
        }
    }
}
