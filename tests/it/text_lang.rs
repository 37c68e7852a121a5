//! Analyzers: Chinese segmentation and English stemming.

use shopdb::{Filter, Product};

use crate::support::{open, tempdir};

fn ids(hits: Vec<shopdb::Scored>) -> Vec<String> {
    hits.into_iter().map(|h| h.id).collect()
}

#[test]
fn chinese_words_find_longer_titles() {
    let dir = tempdir();
    let e = open(dir.path());
    e.upsert_products(vec![
        Product::new("shoe").title("男士轻便跑步鞋"),
        Product::new("mixed").title("Nike 红色跑步鞋 Air Zoom"),
        Product::new("phone").title("华为智能手机 5G"),
        Product::new("bag").title("女士真皮手提包"),
    ])
    .unwrap();
    e.commit().unwrap();
    let found = ids(e.search_text("跑步鞋", &Filter::All, 10).unwrap());
    assert!(
        found.contains(&"shoe".to_string()) && found.contains(&"mixed".to_string()),
        "{found:?}"
    );
    assert!(!found.contains(&"phone".to_string()));
    assert_eq!(
        ids(e.search_text("手机", &Filter::All, 10).unwrap()),
        vec!["phone"]
    );
    assert_eq!(
        ids(e.search_text("手提包", &Filter::All, 10).unwrap()),
        vec!["bag"]
    );
    // Mixed Chinese/Latin queries match both scripts.
    assert_eq!(
        ids(e.search_text("nike 跑步", &Filter::All, 10).unwrap())[0],
        "mixed"
    );
    assert_eq!(
        ids(e.search_text("ZOOM", &Filter::All, 10).unwrap()),
        vec!["mixed"]
    );
}

#[test]
fn english_stemming_and_stop_words() {
    let dir = tempdir();
    let e = open(dir.path());
    e.upsert_products(vec![
        Product::new("a").title("Running shoes for the marathon"),
        Product::new("b").title("Wooden chairs"),
        Product::new("c").description("A chair that is comfortable"),
    ])
    .unwrap();
    e.commit().unwrap();
    assert_eq!(
        ids(e.search_text("runs", &Filter::All, 10).unwrap()),
        vec!["a"]
    );
    assert_eq!(
        ids(e.search_text("shoe", &Filter::All, 10).unwrap()),
        vec!["a"]
    );
    let chairs = ids(e.search_text("chair", &Filter::All, 10).unwrap());
    assert_eq!(chairs.len(), 2, "{chairs:?}");
    // Stop words alone match nothing.
    assert!(e
        .search_text("the for that", &Filter::All, 10)
        .unwrap()
        .is_empty());
}

#[test]
fn real_chinese_reviews_segment() {
    let path = shopdb::import::data_dir().join("zh-reviews/pos.txt");
    let Ok(text) = std::fs::read_to_string(&path) else {
        println!("skipping: {} not found (set SHOPDB_DATA)", path.display());
        return;
    };
    let dir = tempdir();
    let e = open(dir.path());
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .take(2000)
        .collect();
    let products: Vec<Product> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| Product::new(format!("r{i}")).title(l.chars().take(200).collect::<String>()))
        .collect();
    e.upsert_products(products).unwrap();
    e.commit().unwrap();
    let with_word = lines.iter().filter(|l| l.contains("质量")).count();
    let found = e.search_text("质量", &Filter::All, 1000).unwrap().len();
    // Segmentation can split a few lines differently, but the word must be found in most.
    assert!(
        with_word > 10 && found * 10 >= with_word * 8,
        "{found} of {with_word}"
    );
}

#[test]
fn one_wrong_letter_still_finds_the_product_below_exact_matches() {
    let dir = tempdir();
    let e = open(dir.path());
    e.upsert_products(vec![
        Product::new("exact").title("wireless headphones"),
        Product::new("typo").title("wireless headphanes"),
        Product::new("other").title("garden chair"),
    ])
    .unwrap();
    e.commit().unwrap();
    // Words not in the index: the fuzzy clause finds the products anyway.
    for typo in ["wireliss", "headphonez", "wirelesss"] {
        let hits = e.query(&shopdb::Query::new().text(typo)).unwrap();
        let ids: Vec<&str> = hits.iter().map(|h| h.id.as_str()).collect();
        assert!(
            ids.contains(&"exact") && !ids.contains(&"other"),
            "{typo}: {ids:?}"
        );
    }
    // A known word: exact matches rank first.
    let hits = e.query(&shopdb::Query::new().text("headphones")).unwrap();
    assert_eq!(hits[0].id, "exact");
    assert!(hits.iter().all(|h| h.id != "other"));
}
