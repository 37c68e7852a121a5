//! The SQL-like query language: text -> `Plan` -> rows, on an [`Engine`](crate::Engine).
//!
//! "Here is a statement, run it." The grammar is real SQL parsed by `sqlparser` (its generic
//! dialect); the engine's verbs are table functions, so nothing here is a hand-written
//! grammar:
//!
//! ```sql
//! INSERT INTO products (id, title, brand, category, price, embedding, color)
//!     VALUES ('p1', 'Acme 男士轻便跑步鞋 Running Shoe', 'Acme', 'shoes/running', 59.9, [0.1, 0.2], 'red');
//! INSERT INTO events (user_id, item_id, kind, ts) VALUES ('u1', 'p1', 'purchase', 1732000000);
//! SELECT id, title, price, score FROM search('running shoes', user => 'u1')
//!     WHERE price < 100 AND category = 'shoes' LIMIT 10;
//! SELECT * FROM recommend('u1') WHERE brand IN ('Acme', 'Nimbus') LIMIT 10;
//! SELECT * FROM similar('p1') LIMIT 5;
//! SELECT * FROM trending(since => 1732000000) WHERE category = 'shoes' LIMIT 10;
//! EXPLAIN SELECT * FROM search('跑步鞋') LIMIT 3;
//! SELECT id, price FROM products WHERE color = 'red' ORDER BY price DESC LIMIT 5;
//! SELECT * FROM events WHERE user_id = 'u1';
//! SELECT brand, count(*) AS n, avg(price) FROM products GROUP BY brand ORDER BY n DESC;
//! SELECT count(*) FROM search('runing shoos');
//! INSERT INTO synonyms (word, synonym, two_way) VALUES ('tv', 'television', true);
//! DELETE FROM synonyms WHERE word = 'tv'; SHOW SYNONYMS;
//! DELETE FROM products WHERE id IN ('p1', 'p2');
//! DELETE FROM users WHERE id = 'u1';
//! TRAIN; TRAIN WITH (tune = off, tune_budget = 30); EVALUATE; SHOW MODELS;
//! TRAIN WITH (sequence = on, sequence_budget = 60);
//! SHOW STATS; SHOW TABLES; DESCRIBE products;
//! IMPORT PRODUCTS FROM 'products.jsonl'; IMPORT EVENTS FROM 'events.csv';
//! IMPORT SEQUENCES FROM 'user_sequence.txt';
//! IMPORT MOVIELENS FROM 'ml-100k'; IMPORT KG FROM 'x.kg' LINKS 'x.link';
//! SET RETENTION (max_age_days = 365, max_events_per_user = 500); SHOW RETENTION; COMPACT;
//! BACKUP TO 'backups/today'; EXPORT EVENTS TO 'out/events'; IMPORT EVENTS FROM 'out/events';
//! IMPORT MODEL mf FROM 'spark/factors' WITH (skip_unknown = true);
//! ```
//!
//! Three steps, each its own module:
//!
//! - `parse`: guards (statement length, operator count), splitting a script at `;`,
//!   recognising the keyword verbs sqlparser does not know (`TRAIN`, `EVALUATE`, `IMPORT`),
//!   and turning sqlparser's messages into `line:column` positions. It imports nothing of
//!   `plan`.
//! - `plan`: sqlparser's AST (or a keyword verb's tokens) to a `Plan`, a pure function of
//!   the text (`plan` needs no engine, which is what the fuzz target drives). `WHERE`
//!   becomes a `Pred` whose filter-only part is pushed into the engine as a
//!   [`Filter`](crate::Filter).
//! - `execute`: a [`Session`] runs plans on an engine. Every write statement is
//!   all-or-nothing: rows are validated before anything is staged, and a failure rolls the
//!   staged writes back before the error is returned.
//!
//! Errors are [`Error::Syntax`](crate::Error::Syntax) with the position (`line:column`) and
//! what was expected, or the engine's typed errors ([`Error::LimitExceeded`](crate::Error)
//! for an over-deep `WHERE`, [`Error::PathNotAllowed`](crate::Error) for an `IMPORT` outside
//! the allowed directories, ...).

mod adapter;
mod execute;
mod group;
mod output;
mod parse;
mod plan;

pub use execute::Session;
pub use output::{ResultSet, Value};
pub use parse::{is_complete, split_script, Completeness, Source};

// The planner: public (and undocumented) only with the `cli` feature, for the integration
// tests and the fuzz targets; a `Session` is the entry point of the library.
#[cfg(feature = "cli")]
#[doc(hidden)]
pub use parse::{MAX_OPERATORS, MAX_STATEMENT_BYTES};
#[cfg(feature = "cli")]
#[doc(hidden)]
pub use plan::{plan, plan_source};
#[cfg(not(feature = "cli"))]
pub(crate) use plan::{plan, plan_source};
#[cfg(feature = "cli")]
#[doc(hidden)]
pub use plan::{
    CmpOp, Column, ExportData, Field, Import, Lit, NewEvent, OrderKey, Plan, Pred, Retrieval,
    Retrieve, Scan, Table, TrainSettings, Tuning,
};
