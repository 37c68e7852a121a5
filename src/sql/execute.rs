//! Running plans on an engine: the [`Session`].
//!
//! "Here is a plan, give me the rows." Writes are all-or-nothing: the engine validates a
//! whole batch before staging it, and when anything fails (validation, an unknown id, the
//! commit itself) the session rolls the staged writes back before returning the error.

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::catalog::Product;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::events::{Event, EventKind};
use crate::import::{self, ImportReport};

use super::adapter::{self, Request};
use super::output::{ResultSet, Value};
use super::parse::Source;
use super::plan::{
    CmpOp, Column, Field, Import, Lit, OrderKey, Plan, Pred, Retrieval, Retrieve, Scan, Suggest,
    SuggestColumn, Table, Trending, TrendingColumn,
};

/// Runs statements on one engine.
///
/// A session assumes it is the engine's only writer while a statement runs: a failed write
/// statement calls [`Engine::rollback`], which drops every staged write.
///
/// `IMPORT` reads and `EXPORT` writes only files under the directories given to
/// [`Session::allow_dir`] (none by default); the check is made on the canonical path, so
/// `..` and symbolic links cannot leave them.
pub struct Session<'e> {
    pub(super) engine: &'e Engine,
    allowed: Vec<PathBuf>,
    /// `TRAIN` draws a progress bar on stderr.
    train_progress: bool,
    /// `TRAIN` stops when this is cancelled.
    cancel: Option<crate::CancelToken>,
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl<'e> Session<'e> {
    /// A session on `engine` that may not import any file yet.
    pub fn new(engine: &'e Engine) -> Self {
        Session {
            engine,
            allowed: Vec::new(),
            train_progress: false,
            cancel: None,
        }
    }

    /// Makes `TRAIN`, and `EXPORT` and `IMPORT` of Parquet events, draw a progress bar on
    /// stderr (off by default).
    pub fn set_train_progress(&mut self, on: bool) {
        self.train_progress = on;
    }

    /// Makes `TRAIN` stop, with [`Error::Cancelled`], when `token` is cancelled (from a
    /// signal handler, say). Each `TRAIN` resets the token when it starts, so a cancel that
    /// came while no training ran does not stop the next one.
    pub fn set_cancel(&mut self, token: crate::CancelToken) {
        self.cancel = Some(token);
    }

    /// Lets `IMPORT` read files under `dir` (and its subdirectories).
    ///
    /// # Errors
    /// [`Error::Io`] when `dir` does not exist or cannot be resolved.
    pub fn allow_dir(&mut self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        let canonical = dir.canonicalize().map_err(|e| Error::Io {
            path: dir.to_path_buf(),
            source: e,
        })?;
        self.allowed.push(canonical);
        Ok(())
    }

    /// The directories `IMPORT` may read, canonicalised.
    pub fn allowed_dirs(&self) -> &[PathBuf] {
        &self.allowed
    }

    /// Plans and runs one statement.
    ///
    /// # Errors
    /// Planning errors (syntax, limits) and the engine's errors; a failed write
    /// leaves nothing staged.
    pub fn execute(&self, sql: &str) -> Result<ResultSet> {
        self.run(&super::plan(sql)?)
    }

    /// Plans and runs one statement of a script (positions in errors are script positions).
    ///
    /// # Errors
    /// As [`execute`](Self::execute).
    pub fn execute_source(&self, source: &Source) -> Result<ResultSet> {
        self.run(&super::plan_source(source)?)
    }

    /// Runs a plan.
    ///
    /// # Errors
    /// As [`execute`](Self::execute).
    pub(crate) fn run(&self, plan: &Plan) -> Result<ResultSet> {
        let engine = self.engine;
        match plan {
            Plan::InsertProducts(rows) => self.write(|| {
                engine.upsert_products(rows.clone())?;
                let c = engine.commit()?;
                Ok(ResultSet::status(format!(
                    "inserted {} (seq {})",
                    plural(rows.len(), "product", "products"),
                    c.seq
                )))
            }),
            Plan::InsertEvents(rows) => self.write(|| {
                let now = now_secs();
                let events = rows
                    .iter()
                    .map(|r| {
                        Event::new(r.user.clone(), r.item.clone(), r.kind, r.ts.unwrap_or(now))
                    })
                    .collect();
                engine.append_events(events)?;
                let c = engine.commit()?;
                let mut dup = if c.duplicate_events > 0 {
                    format!(", {} already stored", c.duplicate_events)
                } else {
                    String::new()
                };
                if c.expired_events > 0 {
                    dup.push_str(&format!(
                        ", {} dropped by the retention policy",
                        plural(c.expired_events, "event", "events")
                    ));
                }
                Ok(ResultSet::status(format!(
                    "inserted {}{dup} (seq {})",
                    plural(rows.len(), "event", "events"),
                    c.seq
                )))
            }),
            Plan::DeleteProducts(ids) => self.write(|| {
                for id in ids {
                    engine.delete_product(id)?;
                }
                let c = engine.commit()?;
                Ok(ResultSet::status(format!(
                    "deleted {} (seq {})",
                    plural(ids.len(), "product", "products"),
                    c.seq
                )))
            }),
            Plan::ForgetUsers(users) => self.write(|| {
                for u in users {
                    // An unknown user is an error, as deleting an unknown product is.
                    engine.user_history(u, Some(1))?;
                    engine.forget_user(u)?;
                }
                let c = engine.commit()?;
                Ok(ResultSet::status(format!(
                    "forgot {} and their events (seq {}); models forget them at the next TRAIN",
                    plural(users.len(), "user", "users"),
                    c.seq
                )))
            }),
            Plan::Retrieve(r) => self.retrieve(r),
            Plan::Scan(s) => self.scan(s),
            Plan::Aggregate(a) => self.aggregate(a),
            Plan::Suggest(s) => self.suggest(s),
            Plan::Trending(t) => self.trending(t),
            Plan::Train(settings) => {
                if let Some(c) = &self.cancel {
                    c.reset();
                }
                let report =
                    adapter::train(engine, settings, self.train_progress, self.cancel.clone())?;
                Ok(ResultSet::status(report.to_string()))
            }
            Plan::ShowModels => Ok(self.models()),
            Plan::Evaluate => self.evaluate(),
            Plan::ShowStats => self.stats(),
            Plan::ShowTables => Ok(self.tables()),
            Plan::AddSynonyms(rules) => self.write(|| {
                for (w, s, two_way) in rules {
                    engine.add_synonym(w, s, *two_way)?;
                }
                let c = engine.commit()?;
                Ok(ResultSet::status(format!(
                    "added {} (seq {}); searches use them now",
                    plural(rules.len(), "synonym", "synonyms"),
                    c.seq
                )))
            }),
            Plan::RemoveSynonyms { word, synonym } => self.write(|| {
                let w = word
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
                    .to_lowercase();
                let s = synonym.as_ref().map(|s| {
                    s.split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" ")
                        .to_lowercase()
                });
                let gone: Vec<(String, String)> = engine
                    .synonyms()
                    .into_iter()
                    .filter(|(a, b)| {
                        // A rule and its reverse (the other half of a two-way rule).
                        let one =
                            |x: &String, y: &String| *x == w && s.as_ref().is_none_or(|s| s == y);
                        one(a, b) || one(b, a)
                    })
                    .collect();
                for (a, b) in &gone {
                    engine.remove_synonym(a, b, false)?;
                }
                let c = engine.commit()?;
                Ok(ResultSet::status(format!(
                    "removed {} (seq {})",
                    plural(gone.len(), "synonym", "synonyms"),
                    c.seq
                )))
            }),
            Plan::SetRetention(policy) => self.write(|| {
                engine.set_retention(*policy)?;
                let c = engine.commit()?;
                let what = match policy {
                    Some(p) => format!("retention policy set: {p}"),
                    None => "retention policy removed".to_string(),
                };
                Ok(ResultSet::status(format!(
                    "{what}; {} dropped (seq {}); they leave the models at the next TRAIN and \
                     every file at the next COMPACT",
                    plural(c.expired_events, "event", "events"),
                    c.seq
                )))
            }),
            Plan::Compact => {
                let before = engine.stats().store_bytes;
                engine.compact()?;
                let after = engine.stats().store_bytes;
                Ok(ResultSet::status(format!(
                    "compacted the store: {before} -> {after} bytes; no forgotten user or dropped \
                     event is left in its files"
                )))
            }
            Plan::Export { data, path } => self.export(*data, path),
            Plan::Backup { path } => {
                let p = self.resolve_path(path)?;
                let r = engine.backup(&p)?;
                Ok(ResultSet::status(format!(
                    "backed up sequence {} to {}: {} files, {} bytes in {:.2} s (commits waited {:.3} s); serve it with shopdb {} --read-only",
                    r.seq,
                    p.display(),
                    r.files,
                    r.bytes,
                    r.seconds,
                    r.capture_seconds,
                    p.display()
                )))
            }
            Plan::ShowRetention => Ok(ResultSet {
                columns: vec!["max_age_days".into(), "max_events_per_user".into()],
                rows: engine
                    .retention()
                    .map(|p| {
                        let n =
                            |v: Option<u32>| v.map_or(Value::Null, |v| Value::Int(i64::from(v)));
                        vec![n(p.max_age_days), n(p.max_events_per_user)]
                    })
                    .into_iter()
                    .collect(),
                ..ResultSet::default()
            }),
            Plan::ShowSynonyms => Ok(ResultSet {
                columns: vec!["word".into(), "synonym".into()],
                rows: engine
                    .synonyms()
                    .into_iter()
                    .map(|(w, s)| vec![Value::Text(w), Value::Text(s)])
                    .collect(),
                ..ResultSet::default()
            }),
            Plan::Describe(t) => Ok(describe(*t)),
            Plan::Import(i) => self.import(i),
            Plan::ExportUser { user, path } => self.export_user(user, path),
            Plan::Explain(p) => Ok(ResultSet::status(format!("{p:#?}"))),
        }
    }

    /// Runs a write; on any error, drops what it staged.
    fn write(&self, f: impl FnOnce() -> Result<ResultSet>) -> Result<ResultSet> {
        let out = f();
        if out.is_err() {
            self.engine.rollback();
        }
        out
    }

    // ------------------------------------------------------------ reads

    fn retrieve(&self, r: &Retrieve) -> Result<ResultSet> {
        let columns = labels(&r.columns);
        if r.limit == 0 {
            return Ok(ResultSet {
                columns,
                ..ResultSet::default()
            });
        }
        let max_k = self.engine.config().limits.max_k;
        let wanted = r.limit.saturating_add(r.offset);
        if wanted > max_k {
            return Err(Error::LimitExceeded {
                what: "LIMIT + OFFSET",
                got: wanted,
                limit: max_k,
            });
        }
        // Conditions checked after retrieval remove hits: fetch more so that LIMIT is met.
        let k = if r.residual.is_some() {
            wanted.saturating_mul(4).max(wanted + 20).min(max_k)
        } else {
            wanted
        };
        let mut req = Request {
            text: None,
            vector: None,
            user: None,
            similar_to: None,
            filter: &r.filter,
            k,
            explain: r.explain,
            tuning: &r.tuning,
        };
        match &r.source {
            Retrieval::Search { text, vector, user } => {
                req.text = text.as_deref();
                req.vector = vector.as_deref();
                req.user = user.as_deref();
            }
            Retrieval::Recommend { user } => req.user = Some(user),
            Retrieval::Similar { item } => req.similar_to = Some(item),
        }
        let hits = adapter::query(self.engine, &req)?;
        // Hits carry their records without embeddings; read them only when shown or sorted.
        let needs_embedding = r.columns.iter().any(|c| c.field == Field::Embedding)
            || r.order.iter().any(|o| o.field == Field::Embedding);
        let mut rows = Vec::new();
        for h in &hits {
            let full = if needs_embedding {
                self.engine.get_product(&h.id)?
            } else {
                None
            };
            let row = Row::Product {
                p: full.as_ref().unwrap_or(&h.product),
                id: &h.id,
                score: Some(h.score),
                explanation: h.explanation.as_deref(),
            };
            if r.residual.as_ref().is_none_or(|p| row.matches(p)) {
                rows.push(row.keyed(&r.order, &r.columns));
            }
        }
        if let Retrieval::Search {
            text: Some(text), ..
        } = &r.source
        {
            for (i, c) in r.columns.iter().enumerate() {
                if !matches!(c.field, Field::Highlight(_)) {
                    continue;
                }
                for (_, cells) in &mut rows {
                    if let Some(Value::Text(t)) = cells.get(i) {
                        let marked = self.engine.highlight(text, t)?;
                        cells[i] = Value::Text(marked);
                    }
                }
            }
        }
        Ok(finish(columns, rows, &r.order, r.offset, Some(r.limit)))
    }

    fn suggest(&self, s: &Suggest) -> Result<ResultSet> {
        let found = if s.limit == 0 {
            Vec::new()
        } else {
            self.engine.suggest(&s.text, s.user.as_deref(), s.limit)?
        };
        let rows = found
            .iter()
            .map(|g| {
                s.columns
                    .iter()
                    .map(|(c, _)| match c {
                        SuggestColumn::Suggestion => Value::Text(g.text.clone()),
                        SuggestColumn::Id => g.id.clone().map_or(Value::Null, Value::Text),
                        SuggestColumn::Score => {
                            Value::Float((f64::from(g.score) * 10_000.0).round() / 10_000.0)
                        }
                    })
                    .collect()
            })
            .collect();
        Ok(ResultSet {
            columns: s.columns.iter().map(|(_, l)| l.clone()).collect(),
            rows,
            status: None,
        })
    }

    fn trending(&self, t: &Trending) -> Result<ResultSet> {
        let found = if t.limit == 0 {
            Vec::new()
        } else {
            self.engine.trending(t.since, t.limit, &t.filter)?
        };
        let wants_title = t.columns.iter().any(|(c, _)| *c == TrendingColumn::Title);
        let mut rows = Vec::with_capacity(found.len());
        for c in &found {
            let title = if wants_title {
                self.engine.get_product(&c.id)?.map(|p| p.title)
            } else {
                None
            };
            rows.push(
                t.columns
                    .iter()
                    .map(|(col, _)| match col {
                        TrendingColumn::Id => Value::Text(c.id.clone()),
                        TrendingColumn::Title => title.clone().map_or(Value::Null, Value::Text),
                        TrendingColumn::Count => Value::Float((c.count * 100.0).round() / 100.0),
                    })
                    .collect(),
            );
        }
        let status = self.engine.config().count_noise.map(|e| {
            format!(
                "counts carry Laplace noise of scale {} (epsilon {e} per count)",
                1.0 / e
            )
        });
        Ok(ResultSet {
            columns: t.columns.iter().map(|(_, l)| l.clone()).collect(),
            rows,
            status,
        })
    }

    fn scan(&self, s: &Scan) -> Result<ResultSet> {
        let enough = enough(s);
        let mut rows = Vec::new();
        let mut keep = |row: &Row<'_>| {
            rows.push(row.keyed(&s.order, &s.columns));
            rows.len() < enough
        };
        if s.table == Table::Events {
            self.each_event(s.predicate.as_ref(), &mut keep)?;
        } else {
            self.each_product(s.predicate.as_ref(), &mut keep)?;
        }
        Ok(finish(
            labels(&s.columns),
            rows,
            &s.order,
            s.offset,
            s.limit,
        ))
    }

    /// Calls `f` on every product that meets the condition, in internal id order, until it
    /// returns `false`. An id condition reads only those products.
    pub(super) fn each_product(
        &self,
        pred: Option<&Pred>,
        f: &mut dyn FnMut(&Row<'_>) -> bool,
    ) -> Result<()> {
        let ids = match pred.and_then(|p| conjunct_values(p, &Field::Id)) {
            Some(ids) => ids,
            None => self.engine.product_ids(),
        };
        for id in ids {
            let Some(p) = self.engine.get_product(&id)? else {
                continue;
            };
            let row = Row::Product {
                p: &p,
                id: &p.id,
                score: None,
                explanation: None,
            };
            if pred.is_none_or(|pr| row.matches(pr)) && !f(&row) {
                break;
            }
        }
        Ok(())
    }

    /// Calls `f` on every event that meets the condition, user by user, until it returns
    /// `false`.
    pub(super) fn each_event(
        &self,
        pred: Option<&Pred>,
        f: &mut dyn FnMut(&Row<'_>) -> bool,
    ) -> Result<()> {
        // The log is keyed by user: a user condition reads those users' histories; an item
        // condition finds its users through the per-item index; otherwise every user.
        let users: BTreeSet<String> =
            if let Some(users) = pred.and_then(|p| conjunct_values(p, &Field::User)) {
                users.into_iter().collect()
            } else if let Some(items) = pred.and_then(|p| conjunct_values(p, &Field::Item)) {
                let mut users = BTreeSet::new();
                for item in items {
                    match self.engine.item_events(&item) {
                        Ok(evs) => users.extend(evs.into_iter().map(|(u, _)| u)),
                        Err(Error::UnknownItem(_)) => {}
                        Err(e) => return Err(e),
                    }
                }
                users
            } else {
                self.engine.user_ids().into_iter().collect()
            };
        for user in users {
            let history = match self.engine.user_history(&user, None) {
                Ok(h) => h,
                Err(Error::UnknownUser(_)) => continue,
                Err(e) => return Err(e),
            };
            for e in &history {
                let row = Row::Event(e);
                if pred.is_none_or(|p| row.matches(p)) && !f(&row) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    fn evaluate(&self) -> Result<ResultSet> {
        let report = adapter::evaluate(self.engine)?;
        // One row per (model, k), one column per metric, in the order they come.
        let mut metrics: Vec<String> = Vec::new();
        let mut keys: Vec<(String, usize)> = Vec::new();
        for r in &report.rows {
            if !metrics.contains(&r.metric) {
                metrics.push(r.metric.clone());
            }
            if !keys.iter().any(|(m, k)| *m == r.model && *k == r.k) {
                keys.push((r.model.clone(), r.k));
            }
        }
        let mut columns = vec!["model".to_string(), "k".to_string()];
        columns.extend(metrics.iter().cloned());
        let rows = keys
            .iter()
            .map(|(model, k)| {
                let mut row = vec![
                    Value::Text(model.clone()),
                    Value::Int(i64::try_from(*k).unwrap_or(i64::MAX)),
                ];
                row.extend(metrics.iter().map(|m| {
                    report.get(model, m, *k).map_or(Value::Null, |v| {
                        Value::Float((v * 10_000.0).round() / 10_000.0)
                    })
                }));
                row
            })
            .collect();
        Ok(ResultSet {
            columns,
            rows,
            status: Some(format!(
                "{} evaluated",
                plural(report.users, "user", "users")
            )),
        })
    }

    fn stats(&self) -> Result<ResultSet> {
        let stats = self.engine.stats();
        let json = serde_json::to_value(&stats).map_err(|e| Error::backend("serde_json", e))?;
        let mut rows = Vec::new();
        if let serde_json::Value::Object(map) = json {
            for (k, v) in map {
                let value = match v {
                    serde_json::Value::Number(n) => n
                        .as_i64()
                        .map(Value::Int)
                        .or_else(|| n.as_f64().map(Value::Float))
                        .unwrap_or(Value::Null),
                    serde_json::Value::String(s) => Value::Text(s),
                    other => Value::Text(other.to_string()),
                };
                rows.push(vec![Value::Text(k), value]);
            }
        }
        let generation = adapter::model_generation(self.engine);
        rows.push(vec![
            Value::Text("model_generation".into()),
            Value::Int(i64::try_from(generation).unwrap_or(i64::MAX)),
        ]);
        Ok(ResultSet {
            columns: vec!["stat".into(), "value".into()],
            rows,
            status: None,
        })
    }

    /// One row per tuned model (the chosen setting and its held-out NDCG@10) and one per
    /// tried setting.
    fn models(&self) -> ResultSet {
        let generation = adapter::model_generation(self.engine);
        let mut rows = Vec::new();
        let tuning = adapter::tuning(self.engine);
        for (model, setting) in tuning.iter().flat_map(|t| t.chosen.iter()) {
            let trial = tuning.as_ref().and_then(|t| {
                t.trials
                    .iter()
                    .find(|x| &x.model == model && &x.setting == setting)
            });
            rows.push(vec![
                Value::Text(model.clone()),
                Value::Text("chosen".into()),
                Value::Text(setting.clone()),
                trial.map_or(Value::Null, |x| Value::Float(x.ndcg)),
                trial.map_or(Value::Null, |x| Value::Float(x.seconds)),
            ]);
        }
        for t in tuning.iter().flat_map(|t| t.trials.iter()) {
            rows.push(vec![
                Value::Text(t.model.clone()),
                Value::Text("tried".into()),
                Value::Text(t.setting.clone()),
                Value::Float(t.ndcg),
                Value::Float(t.seconds),
            ]);
        }
        if let Some(r) = self.engine.mf_import_report() {
            rows.push(vec![
                Value::Text("mf".into()),
                Value::Text("imported".into()),
                Value::Text(describe_mf_import(&r)),
                Value::Null,
                Value::Float(r.seconds),
            ]);
        }
        if let Some(n) = adapter::popularity_noise(self.engine) {
            rows.push(vec![
                Value::Text("popularity".into()),
                Value::Text("noise".into()),
                Value::Text(format!(
                    "epsilon={}, sensitivity={}, laplace_scale={}",
                    n.epsilon, n.sensitivity, n.scale
                )),
                Value::Null,
                Value::Null,
            ]);
        }
        let status = match &tuning {
            _ if generation == 0 => "no models yet: run TRAIN".to_string(),
            None => format!("generation {generation}, trained without tuning"),
            Some(t) => format!(
                "generation {generation}: tuned on {} held-out users in {:.1} s{}",
                t.users,
                t.seconds,
                if t.budget_exhausted {
                    " (budget used up)"
                } else {
                    ""
                }
            ),
        };
        ResultSet {
            columns: vec![
                "model".into(),
                "row".into(),
                "setting".into(),
                "valid_ndcg10".into(),
                "seconds".into(),
            ],
            rows,
            status: Some(status),
        }
    }

    fn tables(&self) -> ResultSet {
        let stats = self.engine.stats();
        let n = |x: u64| Value::Int(i64::try_from(x).unwrap_or(i64::MAX));
        ResultSet {
            columns: vec!["table".into(), "rows".into(), "what".into()],
            rows: vec![
                vec![
                    Value::Text("products".into()),
                    n(stats.products as u64),
                    Value::Text("the catalog; INSERT, DELETE, SELECT".into()),
                ],
                vec![
                    Value::Text("events".into()),
                    n(stats.events),
                    Value::Text("the interaction log; INSERT, SELECT".into()),
                ],
                vec![
                    Value::Text("users".into()),
                    n(stats.users as u64),
                    Value::Text("users with events; DELETE forgets one".into()),
                ],
                vec![
                    Value::Text("search(text, user =>, vector =>)".into()),
                    Value::Null,
                    Value::Text("table function: keyword + vector retrieval".into()),
                ],
                vec![
                    Value::Text("recommend(user)".into()),
                    Value::Null,
                    Value::Text("table function: recommendations".into()),
                ],
                vec![
                    Value::Text("similar(item)".into()),
                    Value::Null,
                    Value::Text("table function: similar items".into()),
                ],
                vec![
                    Value::Text("trending(since =>)".into()),
                    Value::Null,
                    Value::Text(
                        "table function: distinct shoppers per product since a time".into(),
                    ),
                ],
            ],
            status: None,
        }
    }

    // ------------------------------------------------------------ import

    /// Resolves an `IMPORT` path against the current directory and checks it lies under an
    /// allowed directory. The longest existing ancestor is canonicalised (so `..` and
    /// symbolic links are resolved as the OS will); a missing remainder may not contain `..`.
    ///
    /// # Errors
    /// [`Error::PathNotAllowed`] when the path is outside every allowed directory.
    pub fn resolve_path(&self, raw: &str) -> Result<PathBuf> {
        let refused = || Error::PathNotAllowed(PathBuf::from(raw));
        let p = Path::new(raw);
        let abs = if p.is_absolute() {
            p.to_path_buf()
        } else {
            std::env::current_dir()
                .map_err(|e| Error::Io {
                    path: PathBuf::from("."),
                    source: e,
                })?
                .join(p)
        };
        let mut existing = abs.as_path();
        let mut missing = Vec::new();
        let canonical = loop {
            match existing.canonicalize() {
                Ok(c) => break c,
                Err(_) => match (existing.parent(), existing.file_name()) {
                    (Some(parent), Some(name)) => {
                        missing.push(name.to_os_string());
                        existing = parent;
                    }
                    _ => return Err(refused()),
                },
            }
        };
        let mut full = canonical;
        for part in missing.iter().rev() {
            full.push(part);
        }
        if self.allowed.iter().any(|d| full.starts_with(d)) {
            Ok(full)
        } else {
            Err(refused())
        }
    }

    /// Writes `user`'s data (events, derived profile, explained recommendations) as one JSON
    /// document to `path`, which must lie under an allowed directory, atomically.
    #[cfg(feature = "parquet")]
    fn export(&self, data: crate::sql::plan::ExportData, path: &str) -> Result<ResultSet> {
        use crate::sql::plan::ExportData;
        let p = self.resolve_path(path)?;
        let (what, r) = match data {
            ExportData::Events => (
                "events",
                crate::export::events(&self.engine.state, &p, self.train_progress)?,
            ),
            ExportData::Products => ("products", self.engine.export_products(&p)?),
            ExportData::Mf => ("MF factors", self.engine.export_mf(&p)?),
        };
        Ok(ResultSet::status(format!(
            "exported {} rows of {what} to {} as Parquet: {}, {} bytes in {:.2} s",
            r.rows,
            p.display(),
            plural(r.files, "file", "files"),
            r.bytes,
            r.seconds
        )))
    }

    #[cfg(not(feature = "parquet"))]
    fn export(&self, _data: crate::sql::plan::ExportData, _path: &str) -> Result<ResultSet> {
        Err(Error::invalid(
            "export",
            "Parquet export needs a build with the parquet feature (cargo build --features parquet)",
        ))
    }

    fn export_user(&self, user: &str, path: &str) -> Result<ResultSet> {
        let p = self.resolve_path(path)?;
        let doc = self.engine.export_user(user, 10)?;
        let json = serde_json::to_vec_pretty(&doc).map_err(|e| Error::backend("serde_json", e))?;
        crate::fsutil::write_atomic(&p, &json)?;
        Ok(ResultSet::status(format!(
            "exported {} and {} of user {user:?} to {}",
            plural(doc.events.len(), "event", "events"),
            plural(
                doc.recommendations.len(),
                "recommendation",
                "recommendations"
            ),
            p.display()
        )))
    }

    fn import(&self, i: &Import) -> Result<ResultSet> {
        let engine = self.engine;
        let (what, report) = match i {
            Import::Mf { dir, skip_unknown } => {
                let p = self.resolve_path(dir)?;
                let opts = crate::channel::MfImportOptions {
                    skip_unknown: *skip_unknown,
                };
                let r = parquet_mf(engine, &p, &opts)?;
                return Ok(ResultSet::status(describe_mf_import(&r)));
            }
            Import::Products { path, on_error } => {
                let p = self.resolve_path(path)?;
                let report = if is_parquet(&p) {
                    self.write_import(|| parquet_products(engine, &p))?
                } else {
                    self.write_import(|| import::products_jsonl(engine, &p, *on_error))?
                };
                ("products", report)
            }
            Import::Events { path, on_error } => {
                let p = self.resolve_path(path)?;
                let report = if is_parquet(&p) {
                    self.write_import(|| parquet_events(engine, &p, self.train_progress))?
                } else {
                    self.write_import(|| import::events_csv(engine, &p, *on_error))?
                };
                ("events", report)
            }
            Import::Sequences { path, on_error } => {
                let p = self.resolve_path(path)?;
                (
                    "purchases and new products",
                    self.write_import(|| import::sequences(engine, &p, *on_error))?,
                )
            }
            Import::MovieLens { dir } => {
                let p = self.resolve_path(dir)?;
                (
                    "products and ratings",
                    self.write_import(|| import::movielens(engine, &p))?,
                )
            }
            Import::Kg { kg, links } => {
                let k = self.resolve_path(kg)?;
                let l = self.resolve_path(links)?;
                (
                    "triples and links",
                    self.write_import(|| import::recbole_kg(engine, &k, &l))?,
                )
            }
        };
        let mut status = format!("imported {} {what}", report.imported);
        if report.skipped > 0 {
            status.push_str(&format!(", skipped {}", report.skipped));
        }
        for e in &report.errors {
            status.push_str(&format!("\n  {e}"));
        }
        Ok(ResultSet::status(status))
    }

    fn write_import(&self, f: impl FnOnce() -> Result<ImportReport>) -> Result<ImportReport> {
        let out = f();
        if out.is_err() {
            self.engine.rollback();
        }
        out
    }
}

/// Whether an import reads Parquet: a folder, or a `.parquet` file.
fn is_parquet(p: &Path) -> bool {
    p.is_dir() || p.extension().is_some_and(|x| x == "parquet")
}

#[cfg(feature = "parquet")]
fn parquet_events(engine: &Engine, p: &Path, progress: bool) -> Result<ImportReport> {
    engine.import_events_parquet_with(p, progress).map(imported)
}

#[cfg(feature = "parquet")]
fn parquet_products(engine: &Engine, p: &Path) -> Result<ImportReport> {
    engine.import_products_parquet(p).map(imported)
}

/// The report of an all-or-nothing import of `n` rows.
#[cfg(feature = "parquet")]
fn imported(n: usize) -> ImportReport {
    ImportReport {
        imported: n,
        skipped: 0,
        errors: Vec::new(),
    }
}

#[cfg(not(feature = "parquet"))]
fn parquet_events(_engine: &Engine, _p: &Path, _progress: bool) -> Result<ImportReport> {
    Err(no_parquet())
}

#[cfg(not(feature = "parquet"))]
fn parquet_products(_engine: &Engine, _p: &Path) -> Result<ImportReport> {
    Err(no_parquet())
}

#[cfg(feature = "parquet")]
fn parquet_mf(
    engine: &Engine,
    p: &Path,
    opts: &crate::channel::MfImportOptions,
) -> Result<crate::channel::MfImportReport> {
    engine.import_mf_parquet(p, opts)
}

#[cfg(not(feature = "parquet"))]
fn parquet_mf(
    _engine: &Engine,
    _p: &Path,
    _opts: &crate::channel::MfImportOptions,
) -> Result<crate::channel::MfImportReport> {
    Err(no_parquet())
}

/// What an MF import did, in a sentence (the statement's status and `SHOW MODELS`).
pub(crate) fn describe_mf_import(r: &crate::channel::MfImportReport) -> String {
    let mut s = format!(
        "generation {}: imported MF factors of dimension {} for {} users and {} items",
        r.generation, r.dim, r.users, r.items
    );
    if r.folded_users > 0 {
        s.push_str(&format!(
            "; {} users without one folded in from their history",
            r.folded_users
        ));
    }
    if r.items_without > 0 {
        s.push_str(&format!("; {} items without one", r.items_without));
    }
    if r.unknown_users + r.unknown_items > 0 {
        s.push_str(&format!(
            "; skipped {} unknown users and {} unknown items",
            r.unknown_users, r.unknown_items
        ));
    }
    if r.newer > 0 {
        s.push_str(&format!(
            "; skipped {} ids newer than the trained generation",
            r.newer
        ));
    }
    s.push_str(&format!(" ({:.2} s)", r.seconds));
    s
}

#[cfg(not(feature = "parquet"))]
fn no_parquet() -> Error {
    Error::invalid(
        "import",
        "Parquet import needs a build with the parquet feature (cargo build --features parquet)",
    )
}

fn describe(t: Table) -> ResultSet {
    let rows: &[(&str, &str, &str)] = match t {
        Table::Products => &[
            (
                "id",
                "text",
                "primary key; INSERT replaces a product with the same id",
            ),
            (
                "title",
                "text",
                "searched (English stemming, Chinese segmentation)",
            ),
            ("description", "text", "searched"),
            (
                "brand",
                "text",
                "filter: brand = 'x' (case-insensitive), brand IN (...)",
            ),
            (
                "category",
                "text",
                "path a/b/c; filter: category = 'a' or LIKE 'a/b%' matches the subtree",
            ),
            ("price", "number", "filter: <, <=, >, >=, =, BETWEEN"),
            (
                "embedding",
                "vector",
                "array literal [0.1, ...] of the database's dimension",
            ),
            (
                "<other>",
                "text",
                "any other column is an attribute; filter: color = 'red' or attr('color') = 'red'",
            ),
            (
                "score",
                "number",
                "search/recommend/similar only; filter after retrieval",
            ),
        ],
        Table::Events => &[
            ("user_id", "text", "who"),
            ("item_id", "text", "which product (must exist)"),
            (
                "kind",
                "text",
                "view, click, cart, purchase, or a number (a rating)",
            ),
            ("ts", "integer", "unix seconds; default now"),
            (
                "value",
                "number",
                "read only: a rating's number, NULL for the other kinds",
            ),
        ],
        Table::Users => &[(
            "id",
            "text",
            "a user with events; DELETE FROM users WHERE id = 'u' forgets them",
        )],
    };
    ResultSet {
        columns: vec!["column".into(), "type".into(), "notes".into()],
        rows: rows
            .iter()
            .map(|(a, b, c)| {
                vec![
                    Value::Text((*a).into()),
                    Value::Text((*b).into()),
                    Value::Text((*c).into()),
                ]
            })
            .collect(),
        status: None,
    }
}

fn labels(columns: &[Column]) -> Vec<String> {
    columns.iter().map(|c| c.label.clone()).collect()
}

/// Rows to collect before stopping early: all of them when sorting.
fn enough(s: &Scan) -> usize {
    match (s.order.is_empty(), s.limit) {
        (true, Some(l)) => l.saturating_add(s.offset),
        _ => usize::MAX,
    }
}

/// The literal values a top-level `AND` part pins `field` to (`field = 'x'` or
/// `field IN (...)`), for index lookups.
fn conjunct_values(p: &Pred, field: &Field) -> Option<Vec<String>> {
    let parts: &[Pred] = match p {
        Pred::And(v) => v,
        other => std::slice::from_ref(other),
    };
    parts.iter().find_map(|part| match part {
        Pred::Cmp {
            field: f,
            op: CmpOp::Eq,
            value,
        } if f == field => value.text().map(|t| vec![t]),
        Pred::In { field: f, values } if f == field => values.iter().map(Lit::text).collect(),
        _ => None,
    })
}

/// Sort keys and output cells of one row.
type KeyedRow = (Vec<Value>, Vec<Value>);

fn finish(
    columns: Vec<String>,
    mut rows: Vec<KeyedRow>,
    order: &[OrderKey],
    offset: usize,
    limit: Option<usize>,
) -> ResultSet {
    if !order.is_empty() {
        rows.sort_by(|(a, _), (b, _)| {
            for ((x, y), key) in a.iter().zip(b).zip(order) {
                let o = x.sort_cmp(y);
                let o = if key.descending { o.reverse() } else { o };
                if o != Ordering::Equal {
                    return o;
                }
            }
            Ordering::Equal
        });
    }
    let rows = rows
        .into_iter()
        .skip(offset)
        .take(limit.unwrap_or(usize::MAX))
        .map(|(_, cells)| cells)
        .collect();
    ResultSet {
        columns,
        rows,
        status: None,
    }
}

/// A row being read: a product (possibly a retrieval hit) or an event.
pub(super) enum Row<'a> {
    Product {
        p: &'a Product,
        id: &'a str,
        score: Option<f32>,
        explanation: Option<&'a str>,
    },
    Event(&'a Event),
}

fn text_or_null(s: &str) -> Value {
    if s.is_empty() {
        Value::Null
    } else {
        Value::Text(s.to_string())
    }
}

impl Row<'_> {
    pub(super) fn value(&self, field: &Field) -> Value {
        match self {
            Row::Product { .. } if matches!(field, Field::Highlight(_)) => match field {
                // The column as stored; `retrieve` marks the matched words.
                Field::Highlight(inner) => self.value(inner),
                _ => Value::Null,
            },
            Row::Product {
                p,
                id,
                score,
                explanation,
            } => match field {
                Field::Id => Value::Text((*id).to_string()),
                Field::Title => text_or_null(&p.title),
                Field::Description => text_or_null(&p.description),
                Field::Brand => text_or_null(&p.brand),
                Field::Category => text_or_null(&p.category),
                Field::Price => p.price.map_or(Value::Null, Value::Float),
                Field::Attributes => {
                    let parts: Vec<String> = p
                        .attributes
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect();
                    text_or_null(&parts.join("; "))
                }
                Field::Attribute(k) => p
                    .attributes
                    .get(k)
                    .map_or(Value::Null, |v| Value::Text(v.clone())),
                Field::Embedding => p.embedding.as_ref().map_or(Value::Null, |v| {
                    let parts: Vec<String> = v.iter().map(|x| x.to_string()).collect();
                    Value::Text(format!("[{}]", parts.join(", ")))
                }),
                Field::Score => score.map_or(Value::Null, |s| {
                    Value::Float((f64::from(s) * 10_000.0).round() / 10_000.0)
                }),
                Field::Explanation => {
                    explanation.map_or(Value::Null, |e| Value::Text(e.to_string()))
                }
                Field::User
                | Field::Item
                | Field::Kind
                | Field::Ts
                | Field::Value
                | Field::Highlight(_) => Value::Null,
            },
            Row::Event(e) => match field {
                Field::User => Value::Text(e.user.clone()),
                Field::Item => Value::Text(e.item.clone()),
                Field::Kind => match e.kind {
                    EventKind::Rating(v) => Value::from_f32(v),
                    other => Value::Text(other.name().to_string()),
                },
                Field::Ts => Value::Int(e.ts),
                Field::Value => match e.kind {
                    EventKind::Rating(v) => Value::from_f32(v),
                    _ => Value::Null,
                },
                _ => Value::Null,
            },
        }
    }

    fn keyed(&self, order: &[OrderKey], columns: &[Column]) -> KeyedRow {
        (
            order.iter().map(|k| self.value(&k.field)).collect(),
            columns.iter().map(|c| self.value(&c.field)).collect(),
        )
    }

    /// Evaluates a condition; recursion is bounded by the planner's depth limit.
    pub(super) fn matches(&self, pred: &Pred) -> bool {
        match pred {
            Pred::Filter(f) => match self {
                Row::Product { p, .. } => f.matches(p),
                Row::Event(_) => false,
            },
            Pred::Cmp { field, op, value } => {
                compare(&self.value(field), value).is_some_and(|o| op.holds(o))
            }
            Pred::In { field, values } => {
                let v = self.value(field);
                values
                    .iter()
                    .any(|l| compare(&v, l) == Some(Ordering::Equal))
            }
            Pred::Like { field, pattern } => match self.value(field) {
                Value::Null => false,
                v => like(&v.to_string(), pattern),
            },
            Pred::IsNull(field) => self.value(field) == Value::Null,
            Pred::And(v) => v.iter().all(|p| self.matches(p)),
            Pred::Or(v) => v.iter().any(|p| self.matches(p)),
            Pred::Not(p) => !self.matches(p),
        }
    }
}

/// Compares a cell with a literal; `None` when they cannot be compared (a `NULL` cell, a
/// number against text).
pub(super) fn compare(v: &Value, lit: &Lit) -> Option<Ordering> {
    match (v, lit) {
        (Value::Null, _) | (_, Lit::Null) => None,
        (Value::Text(s), Lit::Text(t)) => Some(s.as_str().cmp(t.as_str())),
        // A number against text (a rating's kind against 'view'): compared as text.
        (v, Lit::Text(t)) => Some(v.to_string().as_str().cmp(t.as_str())),
        (Value::Text(s), Lit::Bool(b)) => Some(s.as_str().cmp(if *b { "true" } else { "false" })),
        (v, Lit::Num { value, .. }) => v.as_f64().and_then(|x| x.partial_cmp(value)),
        _ => None,
    }
}

/// SQL `LIKE`: `%` matches any run of characters, `_` one character; case-sensitive.
/// Iterative (greedy with backtracking to the last `%`), O(text x pattern) at worst.
fn like(text: &str, pattern: &str) -> bool {
    let s: Vec<char> = text.chars().collect();
    let p: Vec<char> = pattern.chars().collect();
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if j < p.len() && p[j] == '%' {
            star = Some((j, i));
            j += 1;
        } else if j < p.len() && (p[j] == '_' || p[j] == s[i]) {
            i += 1;
            j += 1;
        } else if let Some((sj, si)) = star {
            j = sj + 1;
            i = si + 1;
            star = Some((sj, si + 1));
        } else {
            return false;
        }
    }
    p[j..].iter().all(|c| *c == '%')
}

#[cfg(test)]
mod tests {
    use super::like;

    #[test]
    fn like_patterns() {
        assert!(like("shoes/running", "shoes%"));
        assert!(like("shoes/running", "%run%"));
        assert!(like("abc", "a_c"));
        assert!(!like("abc", "a_"));
        assert!(like("", "%"));
        assert!(!like("abd", "%c"));
        assert!(like("跑步鞋", "跑_鞋"));
    }
}
