//! The encoder's plumbing on a tiny randomly initialised BERT written by the test, its typed
//! errors on damaged folders, and (when the weights and the data are present) agreement with
//! the shipped all-MiniLM-L6-v2 vectors of SciFact.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use candle_transformers::models::bert::{BertModel, Config as BertConfig};

use super::*;

const HIDDEN: usize = 32;

/// Special tokens, 26 letters, 26 word-piece letters and a few whole words.
fn vocab() -> Vec<String> {
    let mut v: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for c in 'a'..='z' {
        v.push(c.to_string());
        v.push(format!("##{c}"));
    }
    for w in [
        "red", "blue", "shoe", "running", "##ing", "the", "jacket", ".",
    ] {
        v.push(w.to_string());
    }
    v
}

fn config_json(hidden: usize, heads: usize, vocab: usize) -> String {
    format!(
        r#"{{"_name_or_path": "tiny-bert", "hidden_size": {hidden}, "num_hidden_layers": 2,
        "num_attention_heads": {heads}, "intermediate_size": 64, "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1, "max_position_embeddings": 512, "type_vocab_size": 2,
        "initializer_range": 0.02, "layer_norm_eps": 1e-12, "pad_token_id": 0,
        "vocab_size": {vocab}, "model_type": "bert"}}"#
    )
}

/// A WordPiece tokenizer.json shaped like the real model's, including its fixed padding and
/// truncation at 8 (which the embedder must replace by its own).
fn tokenizer_json() -> String {
    let vocab = vocab();
    let entries: Vec<String> = vocab
        .iter()
        .enumerate()
        .map(|(i, t)| format!("{}: {i}", serde_json::Value::from(t.as_str())))
        .collect();
    let added: Vec<String> = vocab[..4]
        .iter()
        .enumerate()
        .map(|(i, t)| {
            format!(
                r#"{{"id": {i}, "content": "{t}", "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true}}"#
            )
        })
        .collect();
    format!(
        r###"{{"version": "1.0",
        "truncation": {{"max_length": 8, "strategy": "LongestFirst", "stride": 0}},
        "padding": {{"strategy": {{"Fixed": 8}}, "direction": "Right", "pad_to_multiple_of": null,
            "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]"}},
        "added_tokens": [{}],
        "normalizer": {{"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
            "strip_accents": null, "lowercase": true}},
        "pre_tokenizer": {{"type": "BertPreTokenizer"}},
        "post_processor": {{"type": "BertProcessing", "sep": ["[SEP]", 3], "cls": ["[CLS]", 2]}},
        "decoder": {{"type": "WordPiece", "prefix": "##", "cleanup": true}},
        "model": {{"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
            "max_input_chars_per_word": 100, "vocab": {{{}}}}}}}"###,
        added.join(", "),
        entries.join(", ")
    )
}

/// Writes a tiny random BERT (hidden 32, 2 layers, 2 heads) into a new folder.
fn tiny_model() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("tiny-bert")
        .tempdir()
        .unwrap();
    let vocab = vocab().len();
    let config = config_json(HIDDEN, 2, vocab);
    std::fs::write(dir.path().join(CONFIG_FILE), &config).unwrap();
    std::fs::write(dir.path().join(TOKENIZER_FILE), tokenizer_json()).unwrap();
    let parsed: BertConfig = serde_json::from_str(&config).unwrap();
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    BertModel::load(vb, &parsed).unwrap();
    varmap.save(dir.path().join(WEIGHTS_FILE)).unwrap();
    dir
}

fn norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Short texts of every kind: words the vocabulary has, none, punctuation, unknown words.
const SAMPLE_TEXTS: [&str; 5] = [
    "red running shoes",
    "",
    "The blue jacket.",
    "zzz qqq unknown-ish words 123",
    "shoe",
];

#[test]
fn embeds_unit_vectors_deterministically() {
    let dir = tiny_model();
    let e = Embedder::load(dir.path()).unwrap();
    assert_eq!(e.dim(), HIDDEN);
    assert!(e.info().name.starts_with("tiny-bert"), "{:?}", e.info());
    assert_eq!(e.info().checksum.len(), 64);

    assert!(e.embed(&[]).unwrap().is_empty());
    let texts = SAMPLE_TEXTS;
    let vs = e.embed(&texts).unwrap();
    assert_eq!(vs.len(), texts.len());
    for v in &vs {
        assert_eq!(v.len(), HIDDEN);
        assert!(v.iter().all(|x| x.is_finite()));
        assert!((norm(v) - 1.0).abs() < 1e-5, "norm {}", norm(v));
    }
    assert_ne!(vs[0], vs[4]);
    // Deterministic, and the same one by one as in a padded batch.
    assert_eq!(e.embed(&texts).unwrap(), vs);
    for (t, v) in texts.iter().zip(&vs) {
        let one = e.embed(&[t]).unwrap();
        assert!(max_diff(&one[0], v) < 1e-5, "{t:?}");
    }
}

#[test]
fn large_batches_keep_the_order() {
    let dir = tiny_model();
    let e = Embedder::load(dir.path()).unwrap();
    let texts: Vec<String> = (0..21)
        .map(|i| "red shoe ".repeat(i % 7 + 1) + &"x".repeat(i % 3))
        .collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let all = e.embed(&refs).unwrap();
    for (t, v) in refs.iter().zip(&all) {
        assert!(max_diff(&e.embed(&[t]).unwrap()[0], v) < 1e-5);
    }
}

#[test]
fn long_texts_are_truncated() {
    let dir = tiny_model();
    let e = Embedder::load(dir.path()).unwrap();
    let long = "red shoe ".repeat(2000);
    let longer = "red shoe ".repeat(3000);
    // 2 words a repeat: both are cut to the same first 254 words, past the tokenizer
    // file's own truncation at 8 tokens.
    let cut = "red shoe ".repeat(127);
    let short = "red shoe ".repeat(3);
    let vs = e.embed(&[&long, &longer, &cut, &short]).unwrap();
    assert!(max_diff(&vs[0], &vs[1]) < 1e-5);
    assert!(max_diff(&vs[0], &vs[2]) < 1e-5);
    assert!(max_diff(&vs[0], &vs[3]) > 1e-4, "truncated at 8 tokens?");
}

/// The hand-written forward pass agrees with candle's `BertModel` (one text at a time, no
/// padding, the same pooling) on the tiny random model.
#[test]
fn forward_matches_candle_bert() {
    let dir = tiny_model();
    let e = Embedder::load(dir.path()).unwrap();
    let config: BertConfig =
        serde_json::from_slice(&std::fs::read(dir.path().join(CONFIG_FILE)).unwrap()).unwrap();
    let tensors =
        candle_core::safetensors::load(dir.path().join(WEIGHTS_FILE), &Device::Cpu).unwrap();
    let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
    let model = BertModel::load(vb, &config).unwrap();
    let long = "red shoe the blue jacket running ".repeat(12);
    let texts: Vec<&str> = SAMPLE_TEXTS.into_iter().chain([long.as_str()]).collect();
    let ours = e.embed(&texts).unwrap();
    for (t, v) in texts.iter().zip(&ours) {
        let ids = e.tokenizer.encode(*t, true).unwrap().get_ids().to_vec();
        let n = ids.len();
        let ids = candle_core::Tensor::from_vec(ids, (1, n), &Device::Cpu).unwrap();
        let types = ids.zeros_like().unwrap();
        let states: Vec<f32> = model
            .forward(&ids, &types, None)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let want = mean_normalised(&states, HIDDEN);
        let diff = max_diff(v, &want);
        assert!(diff <= 1e-5, "{t:?}: max abs diff {diff}");
        // A lone text (products split between threads) gives the same vector.
        assert!(max_diff(&e.embed(&[t]).unwrap()[0], &want) <= 1e-5, "{t:?}");
    }
}

/// The packed matrix product, on the SIMD and the portable path, against a naive triple
/// loop at odd shapes (partial register tiles and panels, strided rows, with and without
/// bias, split between threads or not).
#[test]
fn matmul_matches_a_naive_product() {
    use super::bert::{matmul, pack, Kern};
    let mut kerns = vec![Kern::Portable];
    kerns.extend(Kern::detect_simd());
    let value = |i: usize, salt: usize| ((i * 7919 + salt * 104_729) % 1000) as f32 / 500.0 - 1.0;
    for &rows in &[1usize, 5, 7, 13] {
        for &k in &[3usize, 17, 384] {
            // 80 columns x 13 rows x 384 is enough work to be split between threads.
            for &n in &[1usize, 15, 16, 17, 33, 80] {
                let lda = k + 3;
                let a: Vec<f32> = (0..rows * lda).map(|i| value(i, 1)).collect();
                let w: Vec<f32> = (0..n * k).map(|i| value(i, 2)).collect();
                let bias: Vec<f32> = (0..n.div_ceil(16) * 16).map(|i| value(i, 3)).collect();
                let mut packed = Vec::new();
                pack(&mut packed, n, k, |j, kk| w[j * k + kk]);
                for &kern in &kerns {
                    for with_bias in [false, true] {
                        for split in [false, true] {
                            let mut out = vec![f32::NAN; rows * n.div_ceil(16) * 16];
                            let b = with_bias.then_some(&bias[..]);
                            matmul(kern, &a, lda, rows, k, n, &packed, b, &mut out, split);
                            for r in 0..rows {
                                for j in 0..n {
                                    let mut want = if with_bias { bias[j] } else { 0.0 };
                                    for kk in 0..k {
                                        want += a[r * lda + kk] * w[j * k + kk];
                                    }
                                    let got = out[(j / 16) * rows * 16 + r * 16 + j % 16];
                                    assert!(
                                        (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                                        "{kern:?} rows {rows} k {k} n {n} ({r}, {j}): \
                                         {got} vs {want}"
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The vectorisable `erf` and `exp` against std's and libm-quality references.
#[test]
fn erf_and_exp_are_accurate() {
    use super::bert::erf;
    use crate::models::linalg::fast_exp as exp;
    let mut worst_erf = 0f64;
    for i in -60_000..=60_000 {
        let x = i as f64 / 10_000.0;
        worst_erf = worst_erf.max((erf(x as f32) as f64 - erf_ref(x)).abs());
    }
    assert!(worst_erf <= 1e-6, "erf max abs error {worst_erf}");
    for i in -8700..=8800 {
        let x = i as f32 / 100.0;
        let want = (x as f64).exp();
        let rel = ((exp(x) as f64 - want) / want).abs();
        assert!(rel <= 1e-6, "exp({x}): relative error {rel}");
    }
}

/// erf by its Taylor series (|x| < 3) or continued fraction, in f64: far more accurate than
/// the f32 approximation under test.
fn erf_ref(x: f64) -> f64 {
    let a = x.abs();
    let v = if a < 3.0 {
        let (mut term, mut sum, mut n) = (a, a, 0.0);
        while term.abs() > 1e-17 {
            n += 1.0;
            term *= -a * a / n;
            sum += term / (2.0 * n + 1.0);
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        // erfc(a) = exp(-a^2) / sqrt(pi) * 1 / (a + 1/2 / (a + 1 / (a + 3/2 / (a + ...))))
        let mut f = a;
        for k in (1..60).rev() {
            f = a + (k as f64 / 2.0) / f;
        }
        1.0 - (-a * a).exp() / std::f64::consts::PI.sqrt() / f
    };
    v.copysign(x)
}

fn expect_io(dir: &Path, file: &str) {
    match Embedder::load(dir) {
        Err(Error::Io { path, .. }) => assert!(path.ends_with(file), "{path:?}"),
        other => panic!("expected Io on {file}, got {other:?}"),
    }
}

fn expect_corrupt(dir: &Path, file: &str) {
    match Embedder::load(dir) {
        Err(Error::Corrupt { path, reason }) => {
            assert!(path.ends_with(file), "{path:?}: {reason}")
        }
        other => panic!("expected Corrupt on {file}, got {other:?}"),
    }
}

#[test]
fn missing_files_are_io_errors() {
    for file in [CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE] {
        let dir = tiny_model();
        std::fs::remove_file(dir.path().join(file)).unwrap();
        expect_io(dir.path(), file);
    }
    expect_io(Path::new("no/such/model"), CONFIG_FILE);
}

#[test]
fn damaged_weights_are_corrupt() {
    let dir = tiny_model();
    let path = dir.path().join(WEIGHTS_FILE);
    let bytes = std::fs::read(&path).unwrap();
    for damaged in [
        bytes[..bytes.len() / 2].to_vec(),
        bytes[..5].to_vec(),
        Vec::new(),
        b"garbage, not a safetensors file at all".to_vec(),
        {
            // A header length far past the end.
            let mut b = bytes.clone();
            b[..8].copy_from_slice(&u64::MAX.to_le_bytes());
            b
        },
    ] {
        std::fs::write(&path, &damaged).unwrap();
        expect_corrupt(dir.path(), WEIGHTS_FILE);
    }
    // Well-formed weights of another model: a tensor missing.
    let mut tensors = candle_core::safetensors::load(
        {
            std::fs::write(&path, &bytes).unwrap();
            &path
        },
        &Device::Cpu,
    )
    .unwrap();
    tensors.retain(|name, _| !name.contains("layer.1.output"));
    candle_core::safetensors::save(&tensors, &path).unwrap();
    expect_corrupt(dir.path(), WEIGHTS_FILE);
}

#[test]
fn damaged_tokenizer_is_corrupt() {
    let dir = tiny_model();
    let path = dir.path().join(TOKENIZER_FILE);
    let good = tokenizer_json();
    for damaged in [
        good[..good.len() / 2].to_string(),
        String::new(),
        "{\"version\": \"1.0\"}".to_string(),
        good.replace("WordPiece", "NoSuchModel"),
    ] {
        std::fs::write(&path, damaged).unwrap();
        expect_corrupt(dir.path(), TOKENIZER_FILE);
    }
}

#[test]
fn config_that_does_not_fit_the_weights_is_corrupt() {
    let dir = tiny_model();
    let path = dir.path().join(CONFIG_FILE);
    let vocab = vocab().len();
    // Another width than the weights': named on the weights, "per config.json".
    std::fs::write(&path, config_json(48, 2, vocab)).unwrap();
    expect_corrupt(dir.path(), WEIGHTS_FILE);
    // A larger vocabulary than the weights hold.
    std::fs::write(&path, config_json(HIDDEN, 2, vocab + 10)).unwrap();
    expect_corrupt(dir.path(), WEIGHTS_FILE);
    // Fewer embeddings than the tokenizer's tokens.
    std::fs::write(&path, config_json(HIDDEN, 2, vocab - 1)).unwrap();
    expect_corrupt(dir.path(), TOKENIZER_FILE);
    // Values candle would divide by or that do not parse.
    for bad in [
        config_json(HIDDEN, 0, vocab),
        config_json(HIDDEN, 3, vocab),
        config_json(0, 2, vocab),
        "{}".to_string(),
        "not json".to_string(),
        config_json(HIDDEN, 2, vocab).replace("\"gelu\"", "\"swish\""),
    ] {
        std::fs::write(&path, bad).unwrap();
        expect_corrupt(dir.path(), CONFIG_FILE);
    }
}

/// The folder with the real all-MiniLM-L6-v2 files: `SHOPDB_MINILM`, else where
/// `tools/fetch_minilm.sh target/minilm` puts them.
fn minilm_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("SHOPDB_MINILM")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/minilm"));
    [CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE]
        .iter()
        .all(|f| dir.join(f).is_file())
        .then_some(dir)
}

fn data_dir() -> PathBuf {
    std::env::var_os("SHOPDB_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data"))
}

/// The first SciFact documents embedded here match the shipped vectors, made with the
/// same model, text recipe (`(title + " " + text).strip()`) and 256-token truncation.
#[test]
fn real_minilm_matches_the_shipped_scifact_vectors() {
    let Some(model) = minilm_dir() else {
        println!("skipped: no all-MiniLM-L6-v2 (set SHOPDB_MINILM or run tools/fetch_minilm.sh target/minilm)");
        return;
    };
    let scifact = data_dir().join("scifact");
    let (Ok(corpus), Ok(ids), Ok(rows)) = (
        std::fs::read_to_string(scifact.join("corpus.jsonl")),
        std::fs::read_to_string(scifact.join("embeddings/corpus.ids")),
        std::fs::read(scifact.join("embeddings/corpus.f32")),
    ) else {
        println!("skipped: no SciFact data under {}", scifact.display());
        return;
    };
    let e = Embedder::load(&model).unwrap();
    assert_eq!(e.dim(), 384);
    assert!(e.info().checksum.starts_with("53aa5117"), "{:?}", e.info());

    let docs: Vec<(String, String)> = corpus
        .lines()
        .take(8)
        .map(|line| {
            let doc: serde_json::Value = serde_json::from_str(line).unwrap();
            let field = |k: &str| doc[k].as_str().unwrap_or_default().to_owned();
            let text = format!("{} {}", field("title"), field("text"));
            (field("_id"), text.trim().to_owned())
        })
        .collect();
    let texts: Vec<&str> = docs.iter().map(|(_, t)| t.as_str()).collect();
    let got = e.embed(&texts).unwrap();
    let ids: Vec<&str> = ids.lines().collect();
    for ((id, _), v) in docs.iter().zip(&got) {
        let row = ids.iter().position(|i| i == id).unwrap();
        let want: Vec<f32> = rows[row * 384 * 4..(row + 1) * 384 * 4]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let cos: f32 = v.iter().zip(&want).map(|(a, b)| a * b).sum();
        let diff = max_diff(v, &want);
        println!("scifact doc {id}: cosine {cos:.7}, max abs diff {diff:.2e}");
        assert!(cos >= 0.9999, "doc {id}: cosine {cos}");
        assert!(diff <= 1e-4, "doc {id}: max abs diff {diff}");
    }
    // A lone text (its products split between threads) gives the batch's vector.
    let alone = e.embed(&texts[..1]).unwrap();
    assert!(max_diff(&alone[0], &got[0]) <= 1e-5);
}

/// An engine opened with an encoder embeds products at commit and text queries, stores the
/// model's identity and refuses another model's database.
#[test]
fn engine_with_an_embedder() {
    use crate::{Channel, Engine, Filter, Product, Query};
    let model = tiny_model();
    let db = tempfile::tempdir().unwrap();
    let path = db.path().join("db");
    {
        let engine = Engine::builder()
            .embedder(model.path())
            .open(&path)
            .unwrap();
        assert_eq!(engine.config().dim, HIDDEN);
        engine
            .upsert_products(vec![
                Product::new("p1").title("red running shoe").brand("acme"),
                Product::new("p2").title("blue jacket").category("coats"),
                Product::new("p3")
                    .title("the jacket")
                    .description("a blue one"),
            ])
            .unwrap();
        engine.commit().unwrap();
        let e = Embedder::load(model.path()).unwrap();
        let v = e.embed(&["red running shoe acme"]).unwrap().pop().unwrap();
        let hits = engine.search_vector(&v, &Filter::All, 3).unwrap();
        assert_eq!(hits.len(), 3);
        assert_eq!(hits[0].id, "p1");
        assert!(hits[0].score > 0.9999, "{}", hits[0].score);
        // A text query reaches the vector channel.
        let hits = engine
            .query(&Query::new().text("zzz").k(3).explain(true))
            .unwrap();
        assert!(!hits.is_empty());
        assert!(hits.iter().all(|h| h
            .explanation
            .as_ref()
            .unwrap()
            .channels
            .iter()
            .any(|c| c.channel == Channel::Vector)));
    }
    // Reopened with the same model, or without one: fine.
    drop(
        Engine::builder()
            .embedder(model.path())
            .open(&path)
            .unwrap(),
    );
    drop(Engine::open(&path).unwrap());
    // Another model's weights (same shapes, other values): refused.
    let other = tiny_model();
    match Engine::builder().embedder(other.path()).open(&path) {
        Err(Error::ConfigMismatch { setting, .. }) => assert_eq!(setting, "embedder"),
        other => panic!("expected ConfigMismatch, got {:?}", other.map(|_| ())),
    }
    // A database made without an encoder is not opened with one.
    let plain = db.path().join("plain");
    drop(Engine::builder().dim(HIDDEN).open(&plain).unwrap());
    assert!(matches!(
        Engine::builder().embedder(model.path()).open(&plain),
        Err(Error::ConfigMismatch { .. })
    ));
}
