//! Open-format export (feature `parquet`): "here is the engine's data, give it to me as files
//! any tool reads." The interaction log, the catalog and the MF factors as Apache Parquet,
//! written with the `parquet` crate's Arrow writer (snappy pages). The only module that names
//! arrow or parquet.
//!
//! - events: `DIR/day=YYYY-MM-DD/part-0.parquet` (Hive-style partitions by the event's UTC
//!   day, which Spark, pyarrow and DuckDB read as one partitioned data set), columns
//!   `user`, `item`, `kind` (`view`, `click`, `cart`, `purchase`, `rating`), `value` (a
//!   rating's number, else 0) and `ts` (unix seconds), in time order;
//! - products: `DIR/products.parquet`: `id`, `title`, `description`, `brand`, `category`,
//!   `price` (null when unset), `attributes` (a JSON object), `embedding` (a list of floats,
//!   null when none);
//! - the MF model: `DIR/user_factors.parquet` and `DIR/item_factors.parquet`, `id` and
//!   `features` (a list of floats), the layout of Spark's `ALSModel.userFactors` /
//!   `itemFactors` with the application's ids.
//!
//! Files are written in `DIR.partial/` and renamed to `DIR` when complete. The same state
//! exports to byte-identical files.
//!
//! The reverse for the log and the catalog: `read_events` / `read_products` read a Parquet
//! file or a folder of them (these layouts, from this engine or any other writer), checking
//! every file's columns and decoding everything. The engine checks every event in a first
//! pass and commits them in chunks in a second, so a bad file applies nothing and memory
//! stays bounded; products are read whole and committed once.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow_array::builder::{Float32Builder, ListBuilder};
use arrow_array::{
    Array, ArrayRef, Float32Array, Float64Array, Int32Array, Int64Array, LargeStringArray,
    ListArray, RecordBatch, StringArray,
};
use arrow_schema::{Field, Schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::error::{Error, Result};
use crate::state::State;

/// Rows per record batch (and so at most per row group): bounds the writer's memory.
const BATCH_ROWS: usize = 65_536;

/// What an export wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct ExportReport {
    /// Where the files are.
    pub dir: PathBuf,
    /// Parquet files written.
    pub files: usize,
    /// Rows written, over every file.
    pub rows: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Seconds taken.
    pub seconds: f64,
}

fn pq(path: &Path) -> impl Fn(parquet::errors::ParquetError) -> Error + '_ {
    move |e| Error::corrupt(path, format!("parquet: {e}"))
}

fn arrow_err(e: arrow_schema::ArrowError) -> Error {
    Error::backend("arrow", e)
}

/// Writes `batches` (each a list of named columns) to one Parquet file; returns its rows.
fn write_file(
    path: &Path,
    batches: impl Iterator<Item = Result<Vec<(&'static str, ArrayRef)>>>,
) -> Result<u64> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    let file = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(BATCH_ROWS))
        .build();
    let mut writer: Option<ArrowWriter<std::fs::File>> = None;
    let mut file = Some(file);
    let mut rows = 0u64;
    for columns in batches {
        let columns = columns?;
        let schema = Arc::new(Schema::new(
            columns
                .iter()
                .map(|(name, a)| Field::new(*name, a.data_type().clone(), true))
                .collect::<Vec<_>>(),
        ));
        let batch = RecordBatch::try_new(
            schema.clone(),
            columns.into_iter().map(|(_, a)| a).collect(),
        )
        .map_err(arrow_err)?;
        rows += batch.num_rows() as u64;
        let w = match &mut writer {
            Some(w) => w,
            None => {
                let f = file
                    .take()
                    .ok_or_else(|| Error::corrupt(path, "writer lost"))?;
                writer
                    .insert(ArrowWriter::try_new(f, schema, Some(props.clone())).map_err(pq(path))?)
            }
        };
        w.write(&batch).map_err(pq(path))?;
    }
    match writer {
        Some(w) => {
            let f = w.into_inner().map_err(pq(path))?;
            f.sync_all().map_err(|e| Error::io(path, e))?;
        }
        None => return Err(Error::invalid("export", "nothing to write")),
    }
    Ok(rows)
}

/// Runs `write` into `DIR.partial/` and renames it to `dir` when it succeeds.
fn into_dir(dir: &Path, write: impl FnOnce(&Path) -> Result<(usize, u64)>) -> Result<ExportReport> {
    let started = Instant::now();
    let (files, rows) = crate::fsutil::build_dir(dir, "export.dir", write)?;
    Ok(ExportReport {
        dir: dir.to_path_buf(),
        files,
        rows,
        bytes: dir_bytes(dir)?,
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn dir_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        total += if path.is_dir() {
            dir_bytes(&path)?
        } else {
            std::fs::metadata(&path)
                .map_err(|e| Error::io(&path, e))?
                .len()
        };
    }
    Ok(total)
}

/// The UTC calendar date of a unix time, `YYYY-MM-DD` (days to civil date, proleptic
/// Gregorian; the algorithm of H. Hinnant's `civil_from_days`).
pub(crate) fn utc_day(ts: i64) -> String {
    let z = ts.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

fn list_column(rows: &[Option<&[f32]>]) -> ArrayRef {
    let mut b = ListBuilder::new(Float32Builder::new());
    for r in rows {
        match r {
            Some(v) => {
                b.values().append_slice(v);
                b.append(true);
            }
            None => b.append(false),
        }
    }
    Arc::new(b.finish())
}

/// The committed log, partitioned by day; with `progress`, a bar of events on stderr.
pub(crate) fn events(state: &State, dir: &Path, progress: bool) -> Result<ExportReport> {
    into_dir(dir, |out| {
        let idx = state.events.read();
        let users = state.users.read();
        let items = state.items.read();
        // (ts, seq, user, position in the user's list): the log in time order, 24 bytes an
        // event beside the index the engine already holds.
        let mut order: Vec<(i64, u64, u32, u32)> = Vec::with_capacity(idx.total as usize);
        for (u, evs) in idx.by_user.iter().enumerate() {
            for (i, e) in evs.iter().enumerate() {
                order.push((e.ts, e.seq, u as u32, i as u32));
            }
        }
        order.sort_unstable();
        let bar = events_bar(progress, order.len() as u64, "exporting");
        let (mut files, mut rows) = (0, 0);
        let mut start = 0;
        while start < order.len() {
            let day = utc_day(order[start].0);
            let end = start + order[start..].partition_point(|o| utc_day(o.0) == day);
            let path = out.join(format!("day={day}")).join("part-0.parquet");
            let day_rows = &order[start..end];
            let batches = day_rows.chunks(BATCH_ROWS).map(|chunk| {
                let mut user = Vec::with_capacity(chunk.len());
                let mut item = Vec::with_capacity(chunk.len());
                let mut kind = Vec::with_capacity(chunk.len());
                let mut value = Vec::with_capacity(chunk.len());
                let mut ts = Vec::with_capacity(chunk.len());
                for &(_, _, u, i) in chunk {
                    let e = idx.by_user[u as usize][i as usize];
                    user.push(users.external(e.user).unwrap_or_default());
                    item.push(items.name(e.item).unwrap_or_default().to_string());
                    kind.push(e.kind.name());
                    value.push(e.kind.value());
                    ts.push(e.ts);
                }
                Ok(vec![
                    ("user", Arc::new(StringArray::from(user)) as ArrayRef),
                    ("item", Arc::new(StringArray::from(item)) as ArrayRef),
                    ("kind", Arc::new(StringArray::from(kind)) as ArrayRef),
                    ("value", Arc::new(Float32Array::from(value)) as ArrayRef),
                    ("ts", Arc::new(Int64Array::from(ts)) as ArrayRef),
                ])
            });
            rows += write_file(&path, batches)?;
            bar.set_position(rows);
            files += 1;
            start = end;
        }
        bar.finish_and_clear();
        Ok((files, rows))
    })
}

/// A bar of `len` events doing `what` (a counter when `len` is 0: not known yet), or a
/// hidden one.
pub(crate) fn events_bar(progress: bool, len: u64, what: &str) -> crate::progress::Progress {
    use crate::progress::Progress;
    if !progress {
        return Progress::hidden();
    }
    let bar = if len == 0 {
        Progress::spinner("{spinner} {msg} {human_pos} events {elapsed}")
    } else {
        Progress::bar(
            len,
            "{msg} [{bar:30}] {human_pos}/{human_len} events {elapsed}",
        )
    };
    bar.set_message(what.to_string());
    bar
}

/// The live catalog, in internal id order.
pub(crate) fn products(state: &State, dir: &Path) -> Result<ExportReport> {
    into_dir(dir, |out| {
        let items = state.items.read();
        let live: Vec<u32> = (0..items.items.len() as u32)
            .filter(|&i| items.items[i as usize].is_some())
            .collect();
        if live.is_empty() {
            return Err(Error::invalid("export", "the catalog is empty"));
        }
        let batches = live.chunks(BATCH_ROWS).map(|chunk| {
            let mut embeddings = Vec::with_capacity(chunk.len());
            let mut cols: [Vec<String>; 6] = Default::default();
            let mut price = Vec::with_capacity(chunk.len());
            for &i in chunk {
                let Some(p) = items.items[i as usize].as_ref() else {
                    continue;
                };
                let record = state.stored_product(&p.id)?;
                embeddings.push(record.and_then(|r| r.embedding));
                let attrs = serde_json::to_string(&p.attributes)
                    .map_err(|e| Error::backend("serde_json", e))?;
                for (c, v) in cols.iter_mut().zip([
                    &p.id,
                    &p.title,
                    &p.description,
                    &p.brand,
                    &p.category,
                    &attrs,
                ]) {
                    c.push(v.clone());
                }
                price.push(p.price);
            }
            let refs: Vec<Option<&[f32]>> = embeddings.iter().map(|e| e.as_deref()).collect();
            let [id, title, description, brand, category, attributes] = cols;
            Ok(vec![
                ("id", Arc::new(StringArray::from(id)) as ArrayRef),
                ("title", Arc::new(StringArray::from(title)) as ArrayRef),
                (
                    "description",
                    Arc::new(StringArray::from(description)) as ArrayRef,
                ),
                ("brand", Arc::new(StringArray::from(brand)) as ArrayRef),
                (
                    "category",
                    Arc::new(StringArray::from(category)) as ArrayRef,
                ),
                ("price", Arc::new(Float64Array::from(price)) as ArrayRef),
                (
                    "attributes",
                    Arc::new(StringArray::from(attributes)) as ArrayRef,
                ),
                ("embedding", list_column(&refs)),
            ])
        });
        let rows = write_file(&out.join("products.parquet"), batches)?;
        Ok((1, rows))
    })
}

/// The serving generation's MF factors, by the application's ids.
pub(crate) fn mf(state: &State, dir: &Path) -> Result<ExportReport> {
    let models = state
        .models
        .read()
        .clone()
        .ok_or(Error::NotTrained("EXPORT MODEL mf needs a trained model"))?;
    let channel = models
        .models
        .typed::<crate::channel::MfChannel>()
        .ok_or(Error::NotTrained("the serving generation has no MF model"))?;
    let mf = &channel.mf;
    into_dir(dir, |out| {
        let users = state.users.read();
        let items = state.items.read();
        let user_rows: Vec<(String, &[f32])> = (0..mf.n_users() as u32)
            .filter_map(|u| {
                Some((
                    users.external(crate::events::UserId(u))?,
                    mf.user_vector(u)?,
                ))
            })
            .collect();
        let item_rows: Vec<(String, &[f32])> = (0..mf.n_items() as u32)
            .filter_map(|i| {
                let iid = crate::catalog::ItemId(i);
                items.get(iid)?;
                Some((items.name(iid)?.to_string(), mf.item_vector(i)?))
            })
            .collect();
        let mut rows = 0;
        for (name, table) in [("user_factors", &user_rows), ("item_factors", &item_rows)] {
            let batches = table.chunks(BATCH_ROWS).map(|chunk| {
                let ids: Vec<&str> = chunk.iter().map(|(id, _)| id.as_str()).collect();
                let vecs: Vec<Option<&[f32]>> = chunk.iter().map(|(_, v)| Some(*v)).collect();
                Ok(vec![
                    ("id", Arc::new(StringArray::from(ids)) as ArrayRef),
                    ("features", list_column(&vecs)),
                ])
            });
            rows += write_file(&out.join(format!("{name}.parquet")), batches)?;
        }
        Ok((2, rows))
    })
}

/// A training matrix, for fitting elsewhere: `DIR/interactions.parquet` (`user`, `item`,
/// `weight`: one row per pair, by the application's ids) and `DIR/mf_params.json` (the MF
/// settings the engine fits with: `factors`, `regularization`, `alpha`, `iterations`).
pub(crate) fn interactions(
    state: &State,
    data: &crate::models::Interactions,
    mf: &crate::models::MfParams,
    dir: &Path,
) -> Result<ExportReport> {
    into_dir(dir, |out| {
        let users = state.users.read();
        let items = state.items.read();
        let batches = data.rows.chunks(BATCH_ROWS).map(|chunk| {
            let mut user = Vec::with_capacity(chunk.len());
            let mut item = Vec::with_capacity(chunk.len());
            let mut weight = Vec::with_capacity(chunk.len());
            for r in chunk {
                user.push(
                    users
                        .external(crate::events::UserId(r.user))
                        .unwrap_or_default(),
                );
                item.push(
                    items
                        .name(crate::catalog::ItemId(r.item))
                        .unwrap_or_default()
                        .to_string(),
                );
                weight.push(r.weight);
            }
            Ok(vec![
                ("user", Arc::new(StringArray::from(user)) as ArrayRef),
                ("item", Arc::new(StringArray::from(item)) as ArrayRef),
                ("weight", Arc::new(Float32Array::from(weight)) as ArrayRef),
            ])
        });
        let rows = write_file(&out.join("interactions.parquet"), batches)?;
        let params = serde_json::json!({
            "factors": mf.factors,
            "regularization": mf.regularization,
            "alpha": mf.alpha,
            "iterations": mf.iterations,
        });
        let path = out.join("mf_params.json");
        std::fs::write(&path, params.to_string()).map_err(|e| Error::io(&path, e))?;
        Ok((1, rows))
    })
}

/// Every `.parquet` file of `path` (itself, or under it recursively), sorted.
fn parquet_files(path: &Path) -> Result<Vec<PathBuf>> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(path).map_err(|e| Error::io(path, e))? {
        let p = entry.map_err(|e| Error::io(path, e))?.path();
        if p.is_dir() {
            out.extend(parquet_files(&p)?);
        } else if p.extension().is_some_and(|x| x == "parquet") {
            out.push(p);
        }
    }
    out.sort();
    if out.is_empty() {
        return Err(Error::invalid(
            "import",
            format!("no .parquet file under {}", path.display()),
        ));
    }
    Ok(out)
}

/// The record batches of one file, read as they are consumed; a file that is not Parquet,
/// or cut, is `Corrupt`.
fn read_batches(path: &Path) -> Result<impl Iterator<Item = Result<RecordBatch>> + '_> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(pq(path))?
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(pq(path))?;
    Ok(reader.map(move |b| b.map_err(|e| Error::corrupt(path, format!("parquet: {e}")))))
}

/// Column `name` of `b` as `T`, or `Corrupt` naming the column and its type.
fn column<'a, T: 'static>(
    b: &'a RecordBatch,
    name: &str,
    expected: &str,
    path: &Path,
) -> Result<&'a T> {
    let col = b
        .column_by_name(name)
        .ok_or_else(|| Error::corrupt(path, format!("no column {name:?} ({expected})")))?;
    col.as_any().downcast_ref::<T>().ok_or_else(|| {
        Error::corrupt(
            path,
            format!(
                "column {name:?} is {}, expected {expected}",
                col.data_type()
            ),
        )
    })
}

/// A required string cell.
fn text(col: &StringArray, row: usize, name: &str, path: &Path) -> Result<String> {
    if col.is_null(row) {
        return Err(Error::corrupt(path, format!("null {name} in row {row}")));
    }
    Ok(col.value(row).to_string())
}

/// Events from Parquet: columns `user`, `item`, `kind` (strings), `value` (float32), `ts`
/// (int64), as `export_events` writes them, handed to `f` in chunks of `chunk` events as the
/// files are read (memory bounded by a chunk and a record batch); returns the events read.
/// A bad file is an error at the chunk that reaches it.
pub(crate) fn read_events(
    path: &Path,
    chunk: usize,
    mut f: impl FnMut(Vec<crate::events::Event>) -> Result<()>,
) -> Result<usize> {
    let mut events = Vec::with_capacity(chunk.min(BATCH_ROWS));
    let mut total = 0;
    for file in parquet_files(path)? {
        for b in read_batches(&file)? {
            let b = b?;
            let user = column::<StringArray>(&b, "user", "string", &file)?;
            let item = column::<StringArray>(&b, "item", "string", &file)?;
            let kind = column::<StringArray>(&b, "kind", "string", &file)?;
            let value = column::<Float32Array>(&b, "value", "float32", &file)?;
            let ts = column::<Int64Array>(&b, "ts", "int64", &file)?;
            for r in 0..b.num_rows() {
                let k = text(kind, r, "kind", &file)?;
                let parsed = if k == "rating" {
                    Some(crate::events::EventKind::Rating(value.value(r)))
                } else {
                    crate::events::EventKind::parse(&k)
                };
                let kind = parsed.ok_or_else(|| {
                    Error::corrupt(&file, format!("row {r}: unknown event kind {k:?}"))
                })?;
                events.push(crate::events::Event::new(
                    text(user, r, "user", &file)?,
                    text(item, r, "item", &file)?,
                    kind,
                    ts.value(r),
                ));
                if events.len() >= chunk {
                    total += events.len();
                    f(std::mem::take(&mut events))?;
                }
            }
        }
    }
    if !events.is_empty() {
        total += events.len();
        f(events)?;
    }
    Ok(total)
}

/// Products from Parquet: `id` and optionally `title`, `description`, `brand`, `category`
/// (strings), `price` (float64), `attributes` (a JSON object as a string), `embedding` (a
/// list of float32), as `export_products` writes them; every file read and checked.
pub(crate) fn read_products(path: &Path) -> Result<Vec<crate::catalog::Product>> {
    let mut products = Vec::new();
    for file in parquet_files(path)? {
        for b in read_batches(&file)? {
            let b = b?;
            let id = column::<StringArray>(&b, "id", "string", &file)?;
            let optional = |name: &str| -> Result<Option<&StringArray>> {
                match b.column_by_name(name) {
                    None => Ok(None),
                    Some(_) => column::<StringArray>(&b, name, "string", &file).map(Some),
                }
            };
            let strings = [
                optional("title")?,
                optional("description")?,
                optional("brand")?,
                optional("category")?,
                optional("attributes")?,
            ];
            let price = match b.column_by_name("price") {
                None => None,
                Some(_) => Some(column::<Float64Array>(&b, "price", "float64", &file)?),
            };
            let embedding = match b.column_by_name("embedding") {
                None => None,
                Some(_) => Some(column::<ListArray>(
                    &b,
                    "embedding",
                    "list<float32>",
                    &file,
                )?),
            };
            for r in 0..b.num_rows() {
                let cell = |c: Option<&StringArray>| {
                    c.filter(|c| !c.is_null(r))
                        .map_or_else(String::new, |c| c.value(r).to_string())
                };
                let [title, description, brand, category, attributes] = strings.map(cell);
                let mut p = crate::catalog::Product::new(text(id, r, "id", &file)?)
                    .title(title)
                    .description(description)
                    .brand(brand)
                    .category(category);
                if !attributes.is_empty() {
                    p.attributes = serde_json::from_str(&attributes).map_err(|e| {
                        Error::corrupt(
                            &file,
                            format!("row {r}: attributes are not a JSON object of strings: {e}"),
                        )
                    })?;
                }
                if let Some(price) = price.filter(|c| !c.is_null(r)) {
                    p = p.price(price.value(r));
                }
                if let Some(list) = embedding.filter(|c| !c.is_null(r)) {
                    let row = list.value(r);
                    let v = row.as_any().downcast_ref::<Float32Array>().ok_or_else(|| {
                        Error::corrupt(&file, "column \"embedding\" is not a list of float32")
                    })?;
                    p = p.embedding(v.values().to_vec());
                }
                products.push(p);
            }
        }
    }
    Ok(products)
}

/// One id cell of a factor file: a string, or an integer (Spark's ids) as its decimal form.
fn id_cell(col: &ArrayRef, row: usize, path: &Path) -> Result<String> {
    if col.is_null(row) {
        return Err(Error::corrupt(path, format!("null id in row {row}")));
    }
    let any = col.as_any();
    if let Some(c) = any.downcast_ref::<StringArray>() {
        Ok(c.value(row).to_string())
    } else if let Some(c) = any.downcast_ref::<LargeStringArray>() {
        Ok(c.value(row).to_string())
    } else if let Some(c) = any.downcast_ref::<Int32Array>() {
        Ok(c.value(row).to_string())
    } else if let Some(c) = any.downcast_ref::<Int64Array>() {
        Ok(c.value(row).to_string())
    } else {
        Err(Error::corrupt(
            path,
            format!(
                "column \"id\" is {}, expected string or integer",
                col.data_type()
            ),
        ))
    }
}

/// One factor cell: a list of float32 or float64 without nulls.
fn factor_cell(col: &ListArray, row: usize, id: &str, path: &Path) -> Result<Vec<f32>> {
    if col.is_null(row) {
        return Err(Error::corrupt(path, format!("null features for id {id:?}")));
    }
    let values = col.value(row);
    if values.null_count() > 0 {
        return Err(Error::corrupt(
            path,
            format!("a null value in the features of id {id:?}"),
        ));
    }
    let any = values.as_any();
    if let Some(v) = any.downcast_ref::<Float32Array>() {
        Ok(v.values().to_vec())
    } else if let Some(v) = any.downcast_ref::<Float64Array>() {
        Ok(v.values().iter().map(|&x| x as f32).collect())
    } else {
        Err(Error::corrupt(
            path,
            format!(
                "column \"features\" holds {}, expected float32 or float64",
                values.data_type()
            ),
        ))
    }
}

/// MF factors from Parquet: `DIR/user_factors` and `DIR/item_factors`, each a `.parquet`
/// file or a folder of them (Spark writes folders of part files), columns `id` and
/// `features`; every file read and its cells checked for type and nulls (the values
/// themselves are checked by the import).
pub(crate) fn read_factors(dir: &Path) -> Result<crate::channel::MfFactors> {
    let mut sides = Vec::with_capacity(2);
    for name in ["user_factors", "item_factors"] {
        let file = dir.join(format!("{name}.parquet"));
        let folder = dir.join(name);
        let path = if file.is_file() {
            file
        } else if folder.is_dir() {
            folder
        } else {
            return Err(Error::invalid(
                "import",
                format!(
                    "{} has neither {name}.parquet nor a folder {name}/",
                    dir.display()
                ),
            ));
        };
        let mut rows = Vec::new();
        for file in parquet_files(&path)? {
            for b in read_batches(&file)? {
                let b = b?;
                let id = b
                    .column_by_name("id")
                    .ok_or_else(|| Error::corrupt(&file, "no column \"id\" (string or integer)"))?;
                let features = column::<ListArray>(&b, "features", "list<float32>", &file)?;
                for r in 0..b.num_rows() {
                    let name = id_cell(id, r, &file)?;
                    let f = factor_cell(features, r, &name, &file)?;
                    rows.push((name, f));
                }
            }
        }
        sides.push(rows);
    }
    let items = sides.pop().unwrap_or_default();
    let users = sides.pop().unwrap_or_default();
    Ok(crate::channel::MfFactors { users, items })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_read_in_chunks_across_files_and_batches() {
        let dir = tempfile::tempdir().unwrap();
        // Two files of 150 000 events each: three record batches per file.
        for f in 0..2i64 {
            let n = 150_000usize;
            let rows = (0..n).collect::<Vec<_>>();
            let batches = rows.chunks(BATCH_ROWS).map(|c| {
                let ts: Vec<i64> = c.iter().map(|&i| f * 1_000_000 + i as i64).collect();
                let s = |v: &str| Arc::new(StringArray::from(vec![v; c.len()])) as ArrayRef;
                Ok(vec![
                    ("user", s("u")),
                    ("item", s("i")),
                    ("kind", s("view")),
                    (
                        "value",
                        Arc::new(Float32Array::from(vec![0f32; c.len()])) as ArrayRef,
                    ),
                    ("ts", Arc::new(Int64Array::from(ts)) as ArrayRef),
                ])
            });
            write_file(&dir.path().join(format!("day={f}/part-0.parquet")), batches).unwrap();
        }
        let mut sizes = Vec::new();
        let mut last_ts = -1;
        let total = read_events(dir.path(), 70_000, |evs| {
            // In file and row order, none lost or repeated.
            for e in &evs {
                assert!(e.ts > last_ts);
                last_ts = e.ts;
            }
            sizes.push(evs.len());
            Ok(())
        })
        .unwrap();
        assert_eq!(total, 300_000);
        assert_eq!(sizes, [70_000, 70_000, 70_000, 70_000, 20_000]);
        // An error from the consumer stops the reading.
        let mut calls = 0;
        let stopped = read_events(dir.path(), 70_000, |_| {
            calls += 1;
            Err(Error::invalid("test", "stop"))
        });
        assert!(stopped.is_err());
        assert_eq!(calls, 1);
    }

    #[test]
    fn utc_days_match_the_calendar() {
        assert_eq!(utc_day(0), "1970-01-01");
        assert_eq!(utc_day(86_399), "1970-01-01");
        assert_eq!(utc_day(86_400), "1970-01-02");
        assert_eq!(utc_day(951_782_400), "2000-02-29");
        assert_eq!(utc_day(1_700_000_000), "2023-11-14");
        assert_eq!(utc_day(1_735_689_599), "2024-12-31");
        assert_eq!(utc_day(-1), "1969-12-31");
    }
}
