//! Products: the record, its validation, and the in-memory item table.
//!
//! "Here is a product id, give me the product": the catalog maps external string ids to dense
//! internal ids ([`ItemId`]) and keeps the committed records in memory for filters, features and
//! result rendering. The records themselves live in the store (see `store`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::Limits;
use crate::error::{Error, Result};
use crate::store::{be_u32, be_u64, key, Batch, Store};

/// Dense internal item id, assigned once per external id and never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ItemId(pub u32);

/// A product in the catalog.
///
/// `category` is a path such as `shoes/running`; `/` and `>` both separate levels.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Product {
    /// External id, 1..=`Limits::max_id_bytes` bytes, no control characters.
    pub id: String,
    /// Title, indexed for search.
    pub title: String,
    /// Description, indexed for search.
    pub description: String,
    /// Brand; also linked as a knowledge-graph entity.
    pub brand: String,
    /// Category path; every level is linked as a knowledge-graph entity.
    pub category: String,
    /// Price, finite and not negative, when known.
    pub price: Option<f64>,
    /// Free attributes (`color = red`), filterable by equality.
    pub attributes: BTreeMap<String, String>,
    /// Embedding of the engine's dimension, finite and not all zero.
    pub embedding: Option<Vec<f32>>,
}

impl Product {
    /// A product with only an id; fill the rest with the builder methods.
    pub fn new(id: impl Into<String>) -> Self {
        Product {
            id: id.into(),
            ..Product::default()
        }
    }

    /// Sets the title.
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.title = title.into();
        self
    }

    /// Sets the description.
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// Sets the brand.
    pub fn brand(mut self, brand: impl Into<String>) -> Self {
        self.brand = brand.into();
        self
    }

    /// Sets the category path.
    pub fn category(mut self, category: impl Into<String>) -> Self {
        self.category = category.into();
        self
    }

    /// Sets the price.
    pub fn price(mut self, price: f64) -> Self {
        self.price = Some(price);
        self
    }

    /// Adds an attribute.
    pub fn attribute(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.attributes.insert(key.into(), value.into());
        self
    }

    /// Sets the embedding.
    pub fn embedding(mut self, embedding: Vec<f32>) -> Self {
        self.embedding = Some(embedding);
        self
    }

    /// The category path's levels, cleaned: `"Shoes > Running"` gives `["Shoes", "Running"]`.
    pub fn category_levels(&self) -> Vec<&str> {
        category_levels(&self.category)
    }

    /// Checks every field against `limits` and the engine's vector dimension, and normalises
    /// the category path. Nothing is stored by this call.
    pub(crate) fn validate(&mut self, limits: &Limits, dim: usize) -> Result<()> {
        validate_id("product.id", &self.id, limits)?;
        for (field, text) in [
            ("product.title", &self.title),
            ("product.description", &self.description),
            ("product.brand", &self.brand),
            ("product.category", &self.category),
        ] {
            if text.len() > limits.max_text_bytes {
                return Err(Error::LimitExceeded {
                    what: field,
                    got: text.len(),
                    limit: limits.max_text_bytes,
                });
            }
        }
        if let Some(price) = self.price {
            if !price.is_finite() || price < 0.0 {
                return Err(Error::invalid(
                    "product.price",
                    format!("{price} is not a finite, non-negative number"),
                ));
            }
        }
        if self.attributes.len() > limits.max_attributes {
            return Err(Error::LimitExceeded {
                what: "product.attributes",
                got: self.attributes.len(),
                limit: limits.max_attributes,
            });
        }
        for (k, v) in &self.attributes {
            if k.is_empty() || k.len() > limits.max_id_bytes || k.chars().any(char::is_control) {
                return Err(Error::invalid(
                    "product.attributes",
                    format!(
                        "attribute name {k:?} must be 1..={} bytes without control characters",
                        limits.max_id_bytes
                    ),
                ));
            }
            if v.len() > limits.max_text_bytes {
                return Err(Error::LimitExceeded {
                    what: "product.attributes value",
                    got: v.len(),
                    limit: limits.max_text_bytes,
                });
            }
        }
        if let Some(v) = &self.embedding {
            validate_vector(v, dim)?;
        }
        self.category = category_levels(&self.category).join("/");
        Ok(())
    }
}

/// Splits a category path on `/` or `>` and drops empty levels.
pub(crate) fn category_levels(path: &str) -> Vec<&str> {
    path.split(['/', '>'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

/// Every ancestor of a normalised category path, shortest first: `a/b` gives `a`, `a/b`.
pub(crate) fn category_ancestors(path: &str) -> Vec<String> {
    let levels = category_levels(path);
    (1..=levels.len()).map(|n| levels[..n].join("/")).collect()
}

/// Checks an external id (product, user or entity).
pub(crate) fn validate_id(field: &'static str, id: &str, limits: &Limits) -> Result<()> {
    if id.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if id.len() > limits.max_id_bytes {
        return Err(Error::LimitExceeded {
            what: field,
            got: id.len(),
            limit: limits.max_id_bytes,
        });
    }
    if id.chars().any(char::is_control) {
        return Err(Error::invalid(field, "must not contain control characters"));
    }
    Ok(())
}

/// Checks a vector: right dimension, every component finite, not all zero.
pub(crate) fn validate_vector(v: &[f32], dim: usize) -> Result<()> {
    if v.len() != dim {
        return Err(Error::DimensionMismatch {
            expected: dim,
            got: v.len(),
        });
    }
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        return Err(Error::invalid(
            "vector",
            format!("component {i} is {} (NaN or infinite)", v[i]),
        ));
    }
    if v.iter().all(|x| *x == 0.0) {
        return Err(Error::invalid("vector", "all components are zero"));
    }
    Ok(())
}

/// The committed products by internal id, shared read-only with queries.
///
/// Records are held without their embeddings (those live in the vector index).
#[derive(Clone, Debug, Default)]
pub(crate) struct ItemTable {
    /// `items[iid]` is the live product, or `None` when deleted.
    pub items: Vec<Option<Arc<Product>>>,
    /// External id -> internal id, for every id ever seen (deleted ones included).
    pub ids: std::collections::HashMap<String, ItemId>,
    /// Internal id -> external id, deleted ones included.
    pub names: Vec<String>,
    /// Number of live products.
    pub live: usize,
    /// What the re-ranker's features read of each product, by internal id (default for
    /// deleted ones): kept beside the records so that a query's feature rows read one small
    /// dense array instead of following every candidate's record and strings.
    pub facts: Vec<ItemInfo>,
}

impl ItemTable {
    pub fn get(&self, iid: ItemId) -> Option<&Arc<Product>> {
        self.items.get(iid.0 as usize).and_then(Option::as_ref)
    }

    pub fn lookup(&self, id: &str) -> Option<ItemId> {
        self.ids.get(id).copied()
    }

    /// The external id of an internal id, deleted items included.
    pub fn name(&self, iid: ItemId) -> Option<&str> {
        self.names
            .get(iid.0 as usize)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }

    pub fn live_iid(&self, id: &str) -> Option<ItemId> {
        self.lookup(id).filter(|iid| self.get(*iid).is_some())
    }

    /// The re-ranker's facts about an item (defaults for unknown or deleted ones).
    pub fn facts(&self, iid: u32) -> ItemInfo {
        self.facts.get(iid as usize).copied().unwrap_or_default()
    }

    pub fn set(&mut self, iid: ItemId, id: &str, product: Option<Arc<Product>>) {
        let i = iid.0 as usize;
        if self.items.len() <= i {
            self.items.resize(i + 1, None);
            self.names.resize(i + 1, String::new());
            self.facts.resize(i + 1, ItemInfo::default());
        }
        self.facts[i] = product.as_deref().map(ItemInfo::of).unwrap_or_default();
        if self.names[i].is_empty() {
            self.names[i] = id.to_string();
        }
        let was = self.items[i].is_some();
        let now = product.is_some();
        self.items[i] = product;
        self.ids.insert(id.to_string(), iid);
        match (was, now) {
            (false, true) => self.live += 1,
            (true, false) => self.live = self.live.saturating_sub(1),
            _ => {}
        }
    }

    /// The number of internal ids ever assigned.
    pub fn capacity(&self) -> usize {
        self.items.len()
    }
}

/// A product as stored in the catalog.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct StoredProduct {
    pub iid: u32,
    pub seq: u64,
    pub product: Product,
}

// ---------------------------------------------------------------- storage

/// Store prefix of product records: product id -> [`StoredProduct`] (bincode).
pub(crate) const PRODUCT: u8 = b'P';
/// Store prefix of internal ids: iid `u32` -> product id (kept after a delete: ids are never
/// reused).
pub(crate) const ITEM_ID: u8 = b'I';
/// Store prefix of the change log: seq `u64` -> the product id whose record changed
/// (replayed into the text and vector indexes).
pub(crate) const CHANGE: u8 = b'C';

/// Every product's embedding by internal id.
pub(crate) type Embeddings = Vec<(ItemId, Vec<f32>)>;

/// The committed catalog, read at open: the item table, and every product's embedding (the
/// vector index is rebuilt or checked from them).
pub(crate) fn load(store: &Store) -> Result<(ItemTable, Embeddings)> {
    let mut items = ItemTable::default();
    for r in store.scan(&[ITEM_ID]) {
        let (k, v) = r?;
        if let Some(iid) = be_u32(&k, 1) {
            let id = String::from_utf8_lossy(&v).into_owned();
            items.set(ItemId(iid), &id, None);
        }
    }
    let mut with_vectors: Embeddings = Vec::new();
    for r in store.scan(&[PRODUCT]) {
        let (k, v) = r?;
        let sp: StoredProduct = crate::codec::decode(&v, "store: product record")?;
        let id = String::from_utf8_lossy(&k[1..]).into_owned();
        let mut p = sp.product;
        if let Some(e) = p.embedding.take() {
            with_vectors.push((ItemId(sp.iid), e));
        }
        items.set(ItemId(sp.iid), &id, Some(Arc::new(p)));
    }
    Ok((items, with_vectors))
}

/// The committed record of a product, embedding included.
pub(crate) fn stored_product(store: &Store, id: &str) -> Result<Option<Product>> {
    match store.get(&key(PRODUCT, &[id.as_bytes()]))? {
        Some(v) => Ok(Some(
            crate::codec::decode::<StoredProduct>(&v, "store: product record")?.product,
        )),
        None => Ok(None),
    }
}

/// What the derived indexes and the item table do once a commit is durable.
pub(crate) enum ProductChange {
    /// The product (its embedding apart) is new or replaced.
    Upsert(ItemId, Arc<Product>, Option<Vec<f32>>),
    /// The product is gone.
    Delete(ItemId, String),
}

/// One commit's product writes, staged beside the committed table (which readers keep
/// reading until the commit is durable).
pub(crate) struct CatalogDraft<'a> {
    items: &'a ItemTable,
    next_item: u32,
    new_items: HashMap<String, ItemId>,
    /// The latest state of every product this commit touched.
    current: HashMap<String, Option<Arc<Product>>>,
    /// In commit order.
    pub changes: Vec<ProductChange>,
}

impl<'a> CatalogDraft<'a> {
    pub fn new(items: &'a ItemTable) -> Self {
        CatalogDraft {
            items,
            next_item: items.capacity() as u32,
            new_items: HashMap::new(),
            current: HashMap::new(),
            changes: Vec::new(),
        }
    }

    /// The internal id of a product committed or created in this commit.
    pub fn iid(&self, id: &str) -> Option<ItemId> {
        self.items
            .lookup(id)
            .or_else(|| self.new_items.get(id).copied())
    }

    /// The product as this commit leaves it so far (`None` when absent or deleted).
    pub fn latest(&self, id: &str) -> Option<Arc<Product>> {
        match self.current.get(id) {
            Some(state) => state.clone(),
            None => self.iid(id).and_then(|iid| self.items.get(iid).cloned()),
        }
    }

    /// Stages an insert or replacement at `seq`: the record, a new internal id when the
    /// product is new, and the change-log entry.
    pub fn upsert(&mut self, p: Product, seq: u64, batch: &mut Batch) -> Result<()> {
        let iid = match self.iid(&p.id) {
            Some(iid) => iid,
            None => {
                let iid = ItemId(self.next_item);
                self.next_item += 1;
                self.new_items.insert(p.id.clone(), iid);
                batch.put(
                    key(ITEM_ID, &[&iid.0.to_be_bytes()]),
                    p.id.as_bytes().to_vec(),
                );
                iid
            }
        };
        let record = StoredProduct {
            iid: iid.0,
            seq,
            product: p,
        };
        batch.put(
            key(PRODUCT, &[record.product.id.as_bytes()]),
            crate::codec::encode(&record)?,
        );
        batch.put(
            key(CHANGE, &[&seq.to_be_bytes()]),
            record.product.id.as_bytes().to_vec(),
        );
        let mut p = record.product;
        let embedding = p.embedding.take();
        let arc = Arc::new(p);
        self.current.insert(arc.id.clone(), Some(arc.clone()));
        self.changes
            .push(ProductChange::Upsert(iid, arc, embedding));
        Ok(())
    }

    /// Stages a delete at `seq` of a product [`iid`](Self::iid) knows.
    pub fn delete(&mut self, id: &str, iid: ItemId, seq: u64, batch: &mut Batch) {
        batch.remove(key(PRODUCT, &[id.as_bytes()]));
        batch.put(key(CHANGE, &[&seq.to_be_bytes()]), id.as_bytes().to_vec());
        self.current.insert(id.to_string(), None);
        self.changes
            .push(ProductChange::Delete(iid, id.to_string()));
    }
}

impl ItemTable {
    /// Publishes a durable commit's product changes.
    pub fn apply(&mut self, changes: &[ProductChange]) {
        for c in changes {
            match c {
                ProductChange::Upsert(iid, p, _) => self.set(*iid, &p.id, Some(p.clone())),
                ProductChange::Delete(iid, id) => self.set(*iid, id, None),
            }
        }
    }
}

/// Product ids changed after sequence `after`, in sequence order (deduplicated, the last
/// change wins): what a derived index that applied `after` must replay.
pub(crate) fn changes_after(store: &Store, after: u64) -> Result<Vec<String>> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    let from = key(CHANGE, &[&(after + 1).to_be_bytes()]);
    let mut all = Vec::new();
    for r in store.range_from(&[CHANGE], from) {
        let (_, v) = r?;
        all.push(String::from_utf8_lossy(&v).into_owned());
    }
    for id in all.into_iter().rev() {
        if seen.insert(id.clone()) {
            out.push(id);
        }
    }
    out.reverse();
    Ok(out)
}

/// The oldest sequence still in the change log (0 when empty).
pub(crate) fn oldest_change(store: &Store) -> Result<u64> {
    match store.scan(&[CHANGE]).next() {
        Some(r) => Ok(be_u64(&r?.0, 1).unwrap_or(0)),
        None => Ok(0),
    }
}

/// Drops the change-log entries up to `upto` (every derived index applied them).
pub(crate) fn drop_changes_upto(store: &Store, upto: u64) -> Result<()> {
    let mut batch = Batch::default();
    for r in store.scan(&[CHANGE]) {
        let (k, _) = r?;
        match be_u64(&k, 1) {
            Some(s) if s <= upto => batch.remove(k.to_vec()),
            _ => break,
        }
    }
    if batch.len > 0 {
        store.apply(batch)?;
    }
    Ok(())
}

/// What the features know about an item. Names are kept as 64-bit hashes (0: none), so
/// that building a candidate's row allocates nothing.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ItemInfo {
    /// Top-level category.
    pub category: u64,
    /// Brand, lower-case.
    pub brand: u64,
    /// Price, when known and positive.
    pub price: Option<f64>,
}

/// FNV-1a step.
#[inline]
fn fnv(h: u64, b: u8) -> u64 {
    (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
}

const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

/// A name's key: FNV-1a over its UTF-8 bytes, lower-cased when `lower`; 0 for an empty name
/// (a non-empty one never maps to 0).
fn name_key(name: &str, lower: bool) -> u64 {
    if name.is_empty() {
        return 0;
    }
    let h = if !lower {
        name.bytes().fold(FNV_START, fnv)
    } else if name.is_ascii() {
        name.bytes()
            .fold(FNV_START, |h, b| fnv(h, b.to_ascii_lowercase()))
    } else {
        let mut buf = [0u8; 4];
        name.chars()
            .flat_map(char::to_lowercase)
            .fold(FNV_START, |h, c| {
                c.encode_utf8(&mut buf).bytes().fold(h, fnv)
            })
    };
    h.max(1)
}

impl ItemInfo {
    /// The features' view of a product.
    pub fn of(p: &Product) -> Self {
        let top = p
            .category
            .split(['/', '>'])
            .map(str::trim)
            .find(|s| !s.is_empty())
            .unwrap_or("");
        ItemInfo {
            category: name_key(top, false),
            brand: name_key(&p.brand, true),
            price: p.price.filter(|x| x.is_finite() && *x > 0.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_info_keys_are_case_blind_for_brands_and_take_the_top_category() {
        let a = ItemInfo::of(&Product::new("a").brand("ACME").category("Shoes/Running"));
        let b = ItemInfo::of(&Product::new("b").brand("acme").category(" Shoes > Trail"));
        let c = ItemInfo::of(&Product::new("c").brand("Globex").category("shoes"));
        assert_eq!(a.brand, b.brand);
        assert_eq!(a.category, b.category);
        assert_ne!(a.brand, c.brand);
        assert_ne!(a.category, c.category, "categories keep their case");
        let de = ItemInfo::of(&Product::new("e").brand("ÄPFEL Co"));
        let de2 = ItemInfo::of(&Product::new("f").brand("äpfel co"));
        assert_eq!(de.brand, de2.brand);
        assert_ne!(de.brand, a.brand);
        let none = ItemInfo::of(&Product::new("d"));
        assert_eq!((none.brand, none.category), (0, 0));
    }
}
