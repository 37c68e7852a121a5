//! A random sequence of writes, commits, rollbacks, forgets, reopens and queries, checked
//! against a model a few lines long: maps of what should be committed.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use super::{Input, Scratch, DIM};
use crate::catalog::Product;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::events::{Event, EventKind};
use crate::filter::Filter;
use crate::query::Query;

/// Products and users the operations draw from (few, so that they collide).
const IDS: usize = 8;
const USERS: usize = 4;
/// Operations run per input at most.
const MAX_OPS: usize = 48;

/// One user's committed events: `(item, kind code, ts)` (an identical event is a duplicate).
type History = BTreeSet<(String, u8, i64)>;

enum Staged {
    Upsert(String, String, bool),
    Delete(String),
    Events(Vec<Event>),
    Forget(String),
}

/// What the engine should hold: committed products `id -> (title, has vector)`, committed
/// events per user, and the staged operations in order.
#[derive(Default)]
struct Model {
    products: BTreeMap<String, (String, bool)>,
    events: BTreeMap<String, History>,
    staged: Vec<Staged>,
}

impl Model {
    /// Whether `id` is live once the staged operations are applied (what staging checks).
    fn live_after_staged(&self, id: &str) -> bool {
        let mut live = self.products.contains_key(id);
        for s in &self.staged {
            match s {
                Staged::Upsert(i, _, _) if i == id => live = true,
                Staged::Delete(i) if i == id => live = false,
                _ => {}
            }
        }
        live
    }

    fn commit(&mut self) {
        for s in std::mem::take(&mut self.staged) {
            match s {
                Staged::Upsert(id, title, vector) => {
                    self.products.insert(id, (title, vector));
                }
                Staged::Delete(id) => {
                    self.products.remove(&id);
                }
                Staged::Events(evs) => {
                    for e in evs {
                        let set = self.events.entry(e.user).or_default();
                        set.insert((e.item, kind_code(e.kind), e.ts));
                    }
                }
                Staged::Forget(user) => {
                    self.events.remove(&user);
                }
            }
        }
    }

    fn forget(&mut self, user: &str) {
        for s in &mut self.staged {
            if let Staged::Events(evs) = s {
                evs.retain(|e| e.user != user);
            }
        }
        self.staged.push(Staged::Forget(user.to_string()));
    }
}

fn kind_code(kind: EventKind) -> u8 {
    match kind {
        EventKind::View => 0,
        EventKind::Click => 1,
        EventKind::Cart => 2,
        EventKind::Purchase => 3,
        EventKind::Rating(_) => 4,
    }
}

fn open(dir: &Scratch) -> Result<Engine> {
    Engine::builder()
        .dim(DIM)
        .durable_commits(false)
        .open(dir.path())
}

/// Product `n`'s vector: one direction per product, so a search by it finds it first.
fn vector(n: usize) -> Vec<f32> {
    (0..DIM)
        .map(|d| if d == n % DIM { 1.0 } else { 0.1 })
        .collect()
}

/// The one word of product `n`'s title that no other title has.
fn token(n: usize) -> String {
    format!("zq{n}")
}

/// Runs the operations encoded in `data` on a fresh engine and compares it with the model
/// after every commit, reopen and query.
///
/// # Panics
/// On any difference from the model, an unexpected error or a panic inside the engine.
pub fn ops(data: &[u8]) {
    let Ok(dir) = Scratch::new("ops") else {
        return;
    };
    let mut engine = match open(&dir) {
        Ok(e) => e,
        Err(e) => panic!("open: {e}"),
    };
    let mut model = Model::default();
    let mut input = Input::new(data);
    for _ in 0..MAX_OPS {
        if input.is_empty() {
            break;
        }
        match input.below(10) {
            0 | 1 => upsert(&engine, &mut model, &mut input),
            2 => delete(&engine, &mut model, &mut input),
            3 | 4 => append(&engine, &mut model, &mut input),
            5 => {
                if let Err(e) = engine.commit() {
                    panic!("commit: {e}");
                }
                model.commit();
                check(&engine, &model);
            }
            6 => {
                engine.rollback();
                model.staged.clear();
            }
            7 => {
                let user = format!("u{}", input.below(USERS));
                let staged = engine.forget_user(&user);
                assert!(staged.is_ok(), "forget_user: {staged:?}");
                model.forget(&user);
            }
            8 => {
                drop(engine);
                engine = match open(&dir) {
                    Ok(e) => e,
                    Err(e) => panic!("reopen: {e}"),
                };
                model.staged.clear();
                check(&engine, &model);
            }
            _ => query(&engine, &model, &mut input),
        }
        assert_eq!(
            engine.pending_ops(),
            model.staged.len(),
            "staged operations"
        );
    }
}

fn upsert(engine: &Engine, model: &mut Model, input: &mut Input<'_>) {
    let n = input.below(IDS);
    let id = format!("p{n}");
    let title = format!("{} version {}", token(n), input.byte());
    let with_vector = input.flag();
    let mut p = Product::new(&id).title(&title).brand("Acme");
    if with_vector {
        p = p.embedding(vector(n));
    }
    let bad = input.below(8);
    match bad {
        0 => p.id = String::new(),
        1 => p = p.embedding(vec![f32::NAN; DIM]),
        2 => p = p.price(-1.0),
        _ => {}
    }
    let result = engine.upsert_product(p);
    if bad <= 2 {
        assert!(
            matches!(result, Err(Error::Invalid { .. })),
            "a bad product was staged: {result:?}"
        );
    } else {
        assert!(result.is_ok(), "upsert: {result:?}");
        model.staged.push(Staged::Upsert(id, title, with_vector));
    }
}

fn delete(engine: &Engine, model: &mut Model, input: &mut Input<'_>) {
    let id = format!("p{}", input.below(IDS));
    let result = engine.delete_product(&id);
    if model.live_after_staged(&id) {
        assert!(result.is_ok(), "delete {id}: {result:?}");
        model.staged.push(Staged::Delete(id));
    } else {
        assert!(
            matches!(result, Err(Error::UnknownItem(_))),
            "delete of absent {id}: {result:?}"
        );
    }
}

fn append(engine: &Engine, model: &mut Model, input: &mut Input<'_>) {
    let kinds = [
        EventKind::View,
        EventKind::Click,
        EventKind::Purchase,
        EventKind::Rating(3.5),
    ];
    let events: Vec<Event> = (0..1 + input.below(3))
        .map(|_| {
            Event::new(
                format!("u{}", input.below(USERS)),
                format!("p{}", input.below(IDS)),
                input.pick(&kinds),
                1_700_000_000 + input.below(3) as i64,
            )
        })
        .collect();
    let live = events.iter().all(|e| model.live_after_staged(&e.item));
    let result = engine.append_events(events.clone());
    if live {
        assert!(result.is_ok(), "append: {result:?}");
        model.staged.push(Staged::Events(events));
    } else {
        assert!(
            matches!(result, Err(Error::UnknownItem(_))),
            "events on an absent item: {result:?}"
        );
    }
}

fn query(engine: &Engine, model: &Model, input: &mut Input<'_>) {
    let n = input.below(IDS);
    let q = Query::new()
        .text(token(n))
        .user(format!("u{}", input.below(USERS)))
        .exclude_purchased(false);
    let hits = match engine.query(&q) {
        Ok(h) => h,
        Err(e) => panic!("query: {e}"),
    };
    for h in &hits {
        assert!(model.products.contains_key(&h.id), "{} is not live", h.id);
    }
    let id = format!("p{n}");
    let expect_found = model.products.contains_key(&id);
    assert_eq!(
        hits.iter().any(|h| h.id == id),
        expect_found,
        "query for {id}'s word"
    );
}

/// Every committed product, vector, text document and event is what the model says.
fn check(engine: &Engine, model: &Model) {
    assert_eq!(
        engine.product_count(),
        model.products.len(),
        "product count"
    );
    for n in 0..IDS {
        let id = format!("p{n}");
        let stored = engine.get_product(&id).map(|p| p.map(|p| p.title));
        let expected = model.products.get(&id).map(|(t, _)| t.clone());
        assert!(
            matches!(&stored, Ok(t) if *t == expected),
            "{id}: stored {stored:?}, expected {expected:?}"
        );
        let found = engine.search_text(&token(n), &Filter::All, 10);
        let found: Vec<String> = match found {
            Ok(h) => h.into_iter().map(|s| s.id).collect(),
            Err(e) => panic!("search {id}: {e}"),
        };
        let expected: Vec<String> = expected.map(|_| id.clone()).into_iter().collect();
        assert_eq!(found, expected, "text index for {id}");
    }
    let with_vectors: HashSet<String> = model
        .products
        .iter()
        .filter(|(_, (_, v))| *v)
        .map(|(id, _)| id.clone())
        .collect();
    let found: HashSet<String> = match engine.search_vector(&vector(0), &Filter::All, 100) {
        Ok(h) => h.into_iter().map(|s| s.id).collect(),
        Err(e) => panic!("vector search: {e}"),
    };
    assert_eq!(found, with_vectors, "vector index");
    let total: usize = model.events.values().map(BTreeSet::len).sum();
    assert_eq!(engine.stats().events, total as u64, "event count");
    for u in 0..USERS {
        check_user(engine, model, &format!("u{u}"));
    }
}

fn check_user(engine: &Engine, model: &Model, user: &str) {
    let expected = model.events.get(user).cloned().unwrap_or_default();
    match engine.user_history(user, None) {
        Ok(evs) => {
            let got: History = evs
                .into_iter()
                .map(|e| (e.item, kind_code(e.kind), e.ts))
                .collect();
            assert_eq!(got, expected, "history of {user}");
        }
        Err(Error::UnknownUser(_)) => assert!(expected.is_empty(), "{user} lost"),
        Err(e) => panic!("history of {user}: {e}"),
    }
}
