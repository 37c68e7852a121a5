//! The knowledge graph: entities, typed relations and edges.
//!
//! "Here is an entity, give me its neighbours." Every product is an entity named `item:<id>`,
//! linked automatically to `brand:<brand>` (relation `brand`) and to each level of its category
//! path `category:<path>` (relation `category`). External triples (e.g. Freebase for MovieLens)
//! and item-to-entity links are imported beside them. Names and ids are kept in memory;
//! imported edges live in the store under both directions.
//!
//! The automatic edges are not stored: they follow from the product record
//! ([`product_edges`]), so a product costs the store no graph records (ingest speed at a
//! million products), and only its brand and category names enter the dictionary. A product
//! gets an entity id of its own only when a triple or a link names it.

use std::collections::HashMap;

use crate::catalog::{category_ancestors, Product};
use crate::error::{Error, Result};
use crate::store::{be_u32, key, Batch, Store};

/// Store prefixes: entity name -> eid `u32`, and eid -> name.
pub(crate) const ENTITY: u8 = b'N';
pub(crate) const ENTITY_ID: u8 = b'n';
/// Store prefixes: relation name -> rid `u16`, and rid -> name.
pub(crate) const RELATION: u8 = b'R';
pub(crate) const RELATION_ID: u8 = b'r';
/// Store prefixes of edges: (head, rid, tail) and (tail, rid, head), empty values.
pub(crate) const EDGE: u8 = b'T';
pub(crate) const EDGE_REV: u8 = b't';

/// Relation from a product to its brand.
pub const REL_BRAND: &str = "brand";
/// Relation from a product to each level of its category.
pub const REL_CATEGORY: &str = "category";
/// Relation from a product to an external entity given by a link file.
pub const REL_LINK: &str = "link";

/// Entity name of a product.
pub fn item_entity(id: &str) -> String {
    format!("item:{id}")
}

/// The automatic edges of a product: `(relation, tail entity)`.
pub(crate) fn product_edges(p: &Product) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if !p.brand.trim().is_empty() {
        out.push((
            REL_BRAND,
            format!("brand:{}", p.brand.trim().to_lowercase()),
        ));
    }
    for c in category_ancestors(&p.category) {
        out.push((REL_CATEGORY, format!("category:{c}")));
    }
    out
}

/// A product's automatic edges as dictionary ids: `(relation, tail entity)`. Names the
/// dictionary lacks (none, once the product is committed) are left out.
pub(crate) fn automatic_edges(kg: &Dictionary, p: &Product) -> Vec<(u16, u32)> {
    product_edges(p)
        .into_iter()
        .filter_map(|(rel, tail)| {
            Some((
                *kg.relation_ids.get(rel)?,
                *kg.entity_ids.get(tail.as_str())?,
            ))
        })
        .collect()
}

/// Entity and relation dictionaries (in memory, mirrored in the store).
#[derive(Clone, Debug, Default)]
pub(crate) struct Dictionary {
    pub entities: Vec<String>,
    pub entity_ids: HashMap<String, u32>,
    pub relations: Vec<String>,
    pub relation_ids: HashMap<String, u16>,
}

impl Dictionary {
    pub fn load(store: &Store) -> Result<Dictionary> {
        let mut d = Dictionary::default();
        let mut ents: Vec<(u32, String)> = Vec::new();
        for r in store.scan(&[ENTITY_ID]) {
            let (k, v) = r?;
            if let Some(id) = be_u32(&k, 1) {
                ents.push((id, String::from_utf8_lossy(&v).into_owned()));
            }
        }
        ents.sort();
        for (id, name) in ents {
            if id as usize == d.entities.len() {
                d.entity_ids.insert(name.clone(), id);
                d.entities.push(name);
            }
        }
        let mut rels: Vec<(u16, String)> = Vec::new();
        for r in store.scan(&[RELATION_ID]) {
            let (k, v) = r?;
            if k.len() == 3 {
                rels.push((
                    u16::from_be_bytes([k[1], k[2]]),
                    String::from_utf8_lossy(&v).into_owned(),
                ));
            }
        }
        rels.sort();
        for (id, name) in rels {
            if id as usize == d.relations.len() {
                d.relation_ids.insert(name.clone(), id);
                d.relations.push(name);
            }
        }
        Ok(d)
    }
}

/// The names one commit allocates, beside the committed dictionary: readers keep reading
/// the committed dictionary (under a read lock the commit shares) while the batch is written
/// and flushed, and [`Dictionary::extend`] publishes the new names once it is durable. A
/// failed commit drops its draft, so no name of it is ever seen.
pub(crate) struct Draft<'a> {
    base: &'a Dictionary,
    entities: Vec<String>,
    entity_ids: HashMap<String, u32>,
    relations: Vec<String>,
    relation_ids: HashMap<String, u16>,
}

/// What a durable commit adds to the dictionary, in id order.
#[derive(Default)]
pub(crate) struct Additions {
    entities: Vec<String>,
    relations: Vec<String>,
}

impl<'a> Draft<'a> {
    pub fn new(base: &'a Dictionary) -> Self {
        Draft {
            base,
            entities: Vec::new(),
            entity_ids: HashMap::new(),
            relations: Vec::new(),
            relation_ids: HashMap::new(),
        }
    }

    /// The id of an entity, committed or allocated by this draft.
    pub fn entity_id(&self, name: &str) -> Option<u32> {
        self.base
            .entity_ids
            .get(name)
            .or_else(|| self.entity_ids.get(name))
            .copied()
    }

    /// The id of an entity, allocating it (and staging its records) when new.
    pub fn entity(&mut self, name: &str, batch: &mut Batch) -> u32 {
        if let Some(id) = self.entity_id(name) {
            return id;
        }
        let id = (self.base.entities.len() + self.entities.len()) as u32;
        self.entities.push(name.to_string());
        self.entity_ids.insert(name.to_string(), id);
        batch.put(key(ENTITY, &[name.as_bytes()]), id.to_be_bytes().to_vec());
        batch.put(
            key(ENTITY_ID, &[&id.to_be_bytes()]),
            name.as_bytes().to_vec(),
        );
        id
    }

    /// The id of a relation, allocating it when new. `None` past 65,535 relations.
    pub fn relation(&mut self, name: &str, batch: &mut Batch) -> Option<u16> {
        if let Some(id) = self
            .base
            .relation_ids
            .get(name)
            .or_else(|| self.relation_ids.get(name))
        {
            return Some(*id);
        }
        let id = u16::try_from(self.base.relations.len() + self.relations.len()).ok()?;
        self.relations.push(name.to_string());
        self.relation_ids.insert(name.to_string(), id);
        batch.put(key(RELATION, &[name.as_bytes()]), id.to_be_bytes().to_vec());
        batch.put(
            key(RELATION_ID, &[&id.to_be_bytes()]),
            name.as_bytes().to_vec(),
        );
        Some(id)
    }

    /// The names to publish once the commit is durable.
    pub fn into_additions(self) -> Additions {
        Additions {
            entities: self.entities,
            relations: self.relations,
        }
    }
}

impl Draft<'_> {
    fn relation_id(&mut self, name: &str, batch: &mut Batch) -> Result<u16> {
        self.relation(name, batch)
            .ok_or_else(|| Error::invalid("relation", "more than 65,535 relation types"))
    }

    /// The dictionary ids of a product's brand and category edges, allocating new names.
    fn product_edge_ids(&mut self, p: &Product, batch: &mut Batch) -> Result<Vec<(u16, u32)>> {
        let mut out = Vec::new();
        for (rel, tail) in product_edges(p) {
            let r = self.relation_id(rel, batch)?;
            out.push((r, self.entity(&tail, batch)));
        }
        Ok(out)
    }

    /// Removes a product's brand and category edges from the store, where a database
    /// written before they were derived from the record holds them (only products with an
    /// entity of their own, i.e. older or linked ones, can).
    fn remove_stored_automatic_edges(
        &mut self,
        id: &str,
        old: Option<&Product>,
        batch: &mut Batch,
    ) -> Result<()> {
        let (Some(old), Some(head)) = (old, self.entity_id(&item_entity(id))) else {
            return Ok(());
        };
        for (r, t) in self.product_edge_ids(old, batch)? {
            remove_edge(batch, head, r, t);
        }
        Ok(())
    }

    /// Stages what a product upsert changes in the graph: its brand and category names
    /// enter the dictionary (its edges are read off the record), and edges an older format
    /// stored for its previous version `old` are removed.
    pub fn stage_product(
        &mut self,
        p: &Product,
        old: Option<&Product>,
        batch: &mut Batch,
    ) -> Result<()> {
        self.product_edge_ids(p, batch)?;
        self.remove_stored_automatic_edges(&p.id, old, batch)
    }

    /// Stages what a product delete changes in the graph (see [`stage_product`](Self::stage_product)).
    pub fn stage_product_delete(
        &mut self,
        id: &str,
        old: Option<&Product>,
        batch: &mut Batch,
    ) -> Result<()> {
        self.remove_stored_automatic_edges(id, old, batch)
    }

    /// Stages an imported triple `(head, relation, tail)`.
    pub fn stage_triple(&mut self, h: &str, r: &str, t: &str, batch: &mut Batch) -> Result<()> {
        let head = self.entity(h, batch);
        let rel = self.relation_id(r, batch)?;
        let tail = self.entity(t, batch);
        put_edge(batch, head, rel, tail);
        Ok(())
    }

    /// Stages a link from a product to an entity (relation `link`).
    pub fn stage_link(&mut self, item: &str, entity: &str, batch: &mut Batch) -> Result<()> {
        self.stage_triple(&item_entity(item), REL_LINK, entity, batch)
    }
}

impl Additions {
    /// Whether the commit named nothing new.
    pub fn is_empty(&self) -> bool {
        self.entities.is_empty() && self.relations.is_empty()
    }
}

impl Dictionary {
    /// Publishes a durable commit's new names (ids continue where the dictionary ends, as
    /// the draft allocated them).
    pub fn extend(&mut self, add: Additions) {
        for name in add.entities {
            let id = self.entities.len() as u32;
            self.entity_ids.insert(name.clone(), id);
            self.entities.push(name);
        }
        for name in add.relations {
            let id = self.relations.len() as u16;
            self.relation_ids.insert(name.clone(), id);
            self.relations.push(name);
        }
    }
}

/// Stages an edge in both directions.
pub(crate) fn put_edge(batch: &mut Batch, head: u32, rel: u16, tail: u32) {
    batch.put(edge_key(EDGE, head, rel, tail), Vec::new());
    batch.put(edge_key(EDGE_REV, tail, rel, head), Vec::new());
}

/// Stages removal of an edge in both directions.
pub(crate) fn remove_edge(batch: &mut Batch, head: u32, rel: u16, tail: u32) {
    batch.remove(edge_key(EDGE, head, rel, tail));
    batch.remove(edge_key(EDGE_REV, tail, rel, head));
}

fn edge_key(prefix: u8, a: u32, rel: u16, b: u32) -> Vec<u8> {
    key(
        prefix,
        &[&a.to_be_bytes(), &rel.to_be_bytes(), &b.to_be_bytes()],
    )
}

/// Edges leaving (`outgoing`) or entering an entity: `(relation id, other entity id)`.
pub(crate) fn edges(store: &Store, entity: u32, outgoing: bool) -> Result<Vec<(u16, u32)>> {
    let prefix = key(
        if outgoing { EDGE } else { EDGE_REV },
        &[&entity.to_be_bytes()],
    );
    let mut out = Vec::new();
    for r in store.scan(&prefix) {
        let (k, _) = r?;
        if k.len() == 11 {
            if let Some(other) = be_u32(&k, 7) {
                out.push((u16::from_be_bytes([k[5], k[6]]), other));
            }
        }
    }
    Ok(out)
}
