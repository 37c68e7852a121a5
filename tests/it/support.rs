//! Shared helpers: temporary databases and deterministic data.

use shopdb::{Engine, Product};

/// A fresh temporary directory.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// Deterministic pseudo-random numbers (splitmix64).
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// A deterministic vector for product number `i`.
pub fn vector(i: u64, dim: usize) -> Vec<f32> {
    let mut r = Rng(i.wrapping_mul(7919).wrapping_add(1));
    (0..dim).map(|_| r.f32() * 2.0 - 1.0).collect()
}

/// A small catalog: `n` products with unique title words `tok{i}` and vectors.
pub fn products(n: u64, dim: usize) -> Vec<Product> {
    let brands = ["Acme", "Globex", "Initech"];
    let cats = ["shoes/running", "shoes/formal", "bags/backpacks"];
    (0..n)
        .map(|i| {
            Product::new(format!("p{i}"))
                .title(format!("tok{i} product number {i}"))
                .description("a sturdy item")
                .brand(brands[(i % 3) as usize])
                .category(cats[(i % 3) as usize])
                .price(10.0 + i as f64)
                .attribute("color", if i % 2 == 0 { "red" } else { "blue" })
                .embedding(vector(i, dim))
        })
        .collect()
}

/// Opens an engine with dimension 8.
pub fn open(dir: &std::path::Path) -> Engine {
    Engine::builder().dim(8).open(dir).expect("open")
}

/// A command that runs one ignored test of this binary in a child process (crash, damage
/// and fault tests need a process they can kill or limit), with `dir` passed as `env_key`.
pub fn child_test(test: &str, env_key: &str, dir: &std::path::Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--ignored",
        "--exact",
        test,
        "--nocapture",
        "--test-threads=1",
    ])
    .env(env_key, dir);
    cmd
}
