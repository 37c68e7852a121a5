//! Reads: the fused query (behind the hot-query cache), facets, single-channel searches,
//! products, histories, the knowledge graph and statistics.

use super::*;

impl Engine {
    /// The one call: fused search and recommendation. See [`Query`](crate::Query).
    ///
    /// # Errors
    /// [`Error::LimitExceeded`] for k, candidate counts or query text over the limits,
    /// [`Error::Invalid`] / [`Error::DimensionMismatch`] for a bad vector or filter,
    /// [`Error::UnknownItem`] for an unknown `similar_to` item, [`Error::TimedOut`] when the
    /// time budget (`Limits::max_query_time` or [`Query::time_budget`](crate::Query)) runs out.
    pub fn query(&self, query: &crate::query::Query) -> Result<Vec<crate::query::Hit>> {
        crate::query::validate(&self.state, query)?;
        // The hot-query cache: keyed by the whole request, valid for one generation (every
        // commit and every new model generation moves it on).
        let key = format!("{query:?}");
        let generation = self.state.generation();
        {
            let mut cache = self.query_cache.lock();
            if cache.generation != generation {
                cache.entries.clear();
                cache.generation = generation;
            }
            if let Some(hits) = cache.entries.get(&key).cloned() {
                cache.hits += 1;
                return Ok(hits);
            }
            cache.misses += 1;
        }
        let hits = crate::query::run(&self.state, query)?;
        let mut cache = self.query_cache.lock();
        if cache.generation == generation {
            if cache.entries.len() >= QUERY_CACHE_ENTRIES {
                cache.entries.clear();
            }
            cache.entries.insert(key, hits.clone());
        }
        Ok(hits)
    }

    /// Hot-query cache counters: `(hits, misses)` since open.
    pub fn query_cache_stats(&self) -> (u64, u64) {
        let c = self.query_cache.lock();
        (c.hits, c.misses)
    }

    /// Facet counts of a search: how many matching products each brand and each category
    /// level has, under the filter. Sorted by count, then name.
    ///
    /// # Errors
    /// As [`search_text`](Self::search_text).
    pub fn facets(&self, text: &str, filter: &Filter) -> Result<Facets> {
        let matching = self.matching(text, filter)?;
        let items = self.state.items.read();
        let mut brands: HashMap<String, usize> = HashMap::new();
        let mut categories: HashMap<String, usize> = HashMap::new();
        for iid in matching {
            let Some(p) = items.get(iid) else { continue };
            if !p.brand.is_empty() {
                *brands.entry(p.brand.clone()).or_default() += 1;
            }
            for c in crate::catalog::category_ancestors(&p.category) {
                *categories.entry(c).or_default() += 1;
            }
        }
        let sorted = |m: HashMap<String, usize>| {
            let mut v: Vec<(String, usize)> = m.into_iter().collect();
            v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            v
        };
        Ok(Facets {
            brands: sorted(brands),
            categories: sorted(categories),
        })
    }

    /// Every live product a search for `text` matches under the filter, not only the best
    /// k: the set [`facets`](Self::facets) counts and SQL aggregates over `search('text')`
    /// read (typo corrections and synonyms included, as the search applies them). Unordered.
    ///
    /// # Errors
    /// As [`search_text`](Self::search_text).
    pub fn search_matches(&self, text: &str, filter: &Filter) -> Result<Vec<Arc<Product>>> {
        let matching = self.matching(text, filter)?;
        let items = self.state.items.read();
        Ok(matching
            .into_iter()
            .filter_map(|iid| items.get(iid).cloned())
            .collect())
    }

    fn matching(&self, text: &str, filter: &Filter) -> Result<Vec<ItemId>> {
        self.state.check_query_text(text)?;
        filter.validate(&self.state.config.limits)?;
        let synonyms = self
            .state
            .synonyms
            .read()
            .expand(&crate::text::analyze(text));
        self.state.text.matching(text, filter, &synonyms)
    }

    /// The committed product with this id, embedding included.
    ///
    /// # Errors
    /// [`Error::Corrupt`] when the record cannot be decoded.
    pub fn get_product(&self, id: &str) -> Result<Option<Product>> {
        self.state.stored_product(id)
    }

    /// Number of live products.
    pub fn product_count(&self) -> usize {
        self.state.items.read().live
    }

    /// Every live product id, in internal id order.
    pub fn product_ids(&self) -> Vec<String> {
        let items = self.state.items.read();
        let mut by_iid: Vec<(u32, &String)> = items
            .ids
            .iter()
            .filter(|(_, iid)| items.get(**iid).is_some())
            .map(|(id, iid)| (iid.0, id))
            .collect();
        by_iid.sort();
        by_iid.into_iter().map(|(_, id)| id.clone()).collect()
    }

    /// `text` (a title, say) with the words a search for `query` matches wrapped in
    /// `<em>` and `</em>`: its terms, their typo corrections and synonyms, on the stemmed
    /// form (so `Running` is marked for `run`), English and Chinese.
    ///
    /// # Errors
    /// [`Error::LimitExceeded`] for an overlong query.
    pub fn highlight(&self, query: &str, text: &str) -> Result<String> {
        self.state.check_query_text(query)?;
        let mut terms: std::collections::BTreeSet<String> =
            crate::text::analyze(query).into_iter().collect();
        for c in self.state.text.explain_typos(query)? {
            terms.extend(c.terms.into_iter().map(|(t, _)| t));
        }
        for (_, syn) in self
            .state
            .synonyms
            .read()
            .expand(&crate::text::analyze(query))
        {
            terms.extend(syn);
        }
        Ok(crate::text::highlight(text, &terms, "<em>", "</em>"))
    }

    /// Search-as-you-type: for `typed` (what is in the search box), completions of its last
    /// word from the catalog's words (typo tolerant from 4 letters, the most frequent first),
    /// as the typed text with that word completed (and the words before it respelt where
    /// the catalog does not hold them, [`TextIndex::respell`](crate::text::TextIndex::respell)), then the titles of the products the best
    /// completions find, ranked by the search and, when `user` is given, raised by the
    /// shopper's affinity (the share of their last 50 events on the product's brand and on
    /// its category). At most `k` in all, about half of each kind when both have enough.
    /// Chinese text gets title suggestions only.
    ///
    /// # Errors
    /// [`Error::LimitExceeded`] for k outside 1..=`max_k` or an overlong text. An unknown
    /// user is not an error: they are a shopper with no history.
    pub fn suggest(
        &self,
        typed: &str,
        user: Option<&str>,
        k: usize,
    ) -> Result<Vec<crate::engine::Suggestion>> {
        use crate::engine::Suggestion;
        self.state.check_k(k)?;
        self.state.check_query_text(typed)?;
        let trimmed = typed.trim_start();
        let complete_last = !trimmed.is_empty() && !trimmed.ends_with(char::is_whitespace);
        let (head, last) = match trimmed.rfind(char::is_whitespace) {
            Some(i) if complete_last => (trimmed[..i].trim_end(), &trimmed[i..]),
            _ if complete_last => ("", trimmed),
            _ => (trimmed.trim_end(), ""),
        };
        // The words before the last, respelt: `wireles head` completes as `wireless ...`.
        let head = self.state.text.respell(head)?;
        let head = head.as_str();
        let last = last.trim();
        let words = if last.is_empty() {
            Vec::new()
        } else {
            self.state.text.complete(last, k)?
        };
        let join = |w: &str| {
            if head.is_empty() {
                w.to_string()
            } else {
                format!("{head} {w}")
            }
        };
        let mut completions: Vec<Suggestion> = words
            .iter()
            .map(|(w, df, _)| Suggestion {
                text: join(w),
                id: None,
                score: *df as f32,
            })
            .collect();
        // Titles: what the best completions (or the text as typed) find.
        let probes: Vec<String> = if words.is_empty() {
            vec![trimmed.trim_end().to_string()]
        } else {
            words.iter().take(2).map(|(w, _, _)| join(w)).collect()
        };
        let affinity = self.affinity(user)?;
        let items = self.state.items.read();
        let mut titles: Vec<Suggestion> = Vec::new();
        for probe in probes.iter().filter(|p| !p.is_empty()) {
            let hits = self.state.text.search(&TextQuery {
                text: probe,
                filter: &Filter::All,
                limit: k,
                title_boost: 2.0,
                fuzzy: true,
                synonyms: &[],
            })?;
            for h in hits {
                let Some(p) = items.get(h.item) else { continue };
                if titles
                    .iter()
                    .any(|t| t.id.as_deref() == Some(p.id.as_str()))
                {
                    continue;
                }
                let boost = affinity.as_ref().map_or(1.0, |(brands, cats)| {
                    1.0 + brands.get(&p.brand).copied().unwrap_or(0.0)
                        + cats.get(&p.category).copied().unwrap_or(0.0)
                });
                titles.push(Suggestion {
                    text: p.title.clone(),
                    id: Some(p.id.clone()),
                    score: h.score * boost,
                });
            }
        }
        titles.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then_with(|| a.text.cmp(&b.text))
        });
        let words_wanted = if titles.is_empty() { k } else { k.div_ceil(2) };
        completions.truncate(words_wanted);
        titles.truncate(k - completions.len());
        completions.extend(titles);
        Ok(completions)
    }

    /// A shopper's shares of their last 50 events by brand and by category; `None` for no
    /// user or one with no history.
    #[allow(clippy::type_complexity)]
    fn affinity(
        &self,
        user: Option<&str>,
    ) -> Result<Option<(HashMap<String, f32>, HashMap<String, f32>)>> {
        let Some(user) = user else { return Ok(None) };
        let history = match self.user_history(user, Some(50)) {
            Ok(h) => h,
            Err(Error::UnknownUser(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        if history.is_empty() {
            return Ok(None);
        }
        let items = self.state.items.read();
        let (mut brands, mut cats) = (HashMap::new(), HashMap::new());
        let share = 1.0 / history.len() as f32;
        for e in &history {
            let Some(p) = items.live_iid(&e.item).and_then(|i| items.get(i)) else {
                continue;
            };
            *brands.entry(p.brand.clone()).or_insert(0.0) += share;
            *cats.entry(p.category.clone()).or_insert(0.0) += share;
        }
        Ok(Some((brands, cats)))
    }

    /// The search synonyms, as `(word, synonym)` one-way rules (a two-way rule is two),
    /// sorted.
    pub fn synonyms(&self) -> Vec<(String, String)> {
        self.state.synonyms.read().rules()
    }

    /// BM25 search over title, description, brand and category, with a filter applied inside
    /// the search. The text channel alone; [`Engine::query`] fuses every channel.
    ///
    /// # Errors
    /// [`Error::LimitExceeded`] for k outside 1..=`max_k` or an overlong query,
    /// [`Error::Invalid`] for a bad filter.
    pub fn search_text(&self, text: &str, filter: &Filter, k: usize) -> Result<Vec<Scored>> {
        self.state.check_k(k)?;
        self.state.check_query_text(text)?;
        filter.validate(&self.state.config.limits)?;
        let hits = self.state.text.search(&TextQuery {
            text,
            filter,
            limit: k,
            title_boost: 0.0,
            fuzzy: false,
            synonyms: &[],
        })?;
        Ok(self.name_hits(hits.into_iter().map(|h| (h.item, h.score))))
    }

    pub(crate) fn name_hits(&self, hits: impl Iterator<Item = (ItemId, f32)>) -> Vec<Scored> {
        let items = self.state.items.read();
        hits.filter_map(|(iid, score)| {
            items.get(iid).map(|p| Scored {
                id: p.id.clone(),
                score,
            })
        })
        .collect()
    }

    /// Nearest products to a vector under the engine's metric, with a filter applied during
    /// the graph walk (or an exact scan of the allowed items when few pass).
    ///
    /// # Errors
    /// [`Error::DimensionMismatch`], [`Error::Invalid`] for NaN/inf/zero vectors or a bad
    /// filter, [`Error::LimitExceeded`] for k.
    pub fn search_vector(&self, vector: &[f32], filter: &Filter, k: usize) -> Result<Vec<Scored>> {
        let hits = self.vector_hits(vector, filter, k)?;
        Ok(self.name_hits(hits.into_iter()))
    }

    pub(crate) fn vector_hits(
        &self,
        vector: &[f32],
        filter: &Filter,
        k: usize,
    ) -> Result<Vec<(ItemId, f32)>> {
        self.state.check_k(k)?;
        validate_vector(vector, self.state.config.dim)?;
        filter.validate(&self.state.config.limits)?;
        let items = self.state.items.read();
        Ok(crate::channel::search_vectors(
            &self.state.vectors,
            &items,
            &self.state.text,
            filter,
            vector,
            k,
            self.state.config.hnsw.exact_scan_below,
        ))
    }

    /// Exact nearest neighbours over every vector (no graph): the reference for ANN recall.
    ///
    /// # Errors
    /// As [`search_vector`](Self::search_vector).
    pub fn search_vector_exact(&self, vector: &[f32], k: usize) -> Result<Vec<Scored>> {
        self.state.check_k(k)?;
        validate_vector(vector, self.state.config.dim)?;
        let hits = self.state.vectors.search_exact(vector, k);
        Ok(self.name_hits(hits.into_iter().map(|h| (h.item, h.score))))
    }

    /// A user's events in time order (oldest first); the last `limit` when given.
    ///
    /// # Errors
    /// [`Error::UnknownUser`] when the user has no events.
    pub fn user_history(&self, user: &str, limit: Option<usize>) -> Result<Vec<Event>> {
        let uid = self
            .state
            .users
            .read()
            .get(user)
            .ok_or_else(|| Error::UnknownUser(user.to_string()))?;
        let evs = self.state.user_events(uid, limit)?;
        let items = self.state.items.read();
        Ok(evs
            .into_iter()
            .map(|e| Event {
                user: user.to_string(),
                item: items.name(e.item).unwrap_or_default().to_string(),
                kind: e.kind,
                ts: e.ts,
            })
            .collect())
    }

    /// Everything the engine holds about one shopper, for a right-of-access request: every
    /// stored event, the shopper's current top `k` recommendations with their explanations,
    /// and each channel's part in them (see [`UserExport`](crate::UserExport)).
    ///
    /// # Errors
    /// [`Error::UnknownUser`] when the user has no events (a forgotten user has none);
    /// `k` is checked as [`Engine::query`] checks it.
    pub fn export_user(&self, user: &str, k: usize) -> Result<crate::access::UserExport> {
        // One committed state for both parts: commits wait while the document is made (a
        // read of one user's events and one query), so the events are the history the
        // recommendations were served from.
        let _commit = self.commit_lock.lock();
        let seq = self.seq();
        let events = self.user_history(user, None)?;
        let hits = self.query(&crate::query::Query::new().user(user).k(k).explain(true))?;
        Ok(crate::access::UserExport::new(
            user,
            seq,
            self.model_generation(),
            events,
            &hits,
        ))
    }

    /// Writes the committed interaction log as Apache Parquet into the new directory `dir`,
    /// one file per UTC day (`day=YYYY-MM-DD/part-0.parquet`; columns `user`, `item`,
    /// `kind`, `value`, `ts`), in time order. Needs the `parquet` feature.
    ///
    /// # Errors
    /// [`Error::Invalid`] when `dir` exists or the log is empty; [`Error::Io`].
    #[cfg(feature = "parquet")]
    pub fn export_events(
        &self,
        dir: impl AsRef<std::path::Path>,
    ) -> Result<crate::export::ExportReport> {
        crate::export::events(&self.state, dir.as_ref(), false)
    }

    /// Writes the live catalog as `DIR/products.parquet` (id, title, description, brand,
    /// category, price, attributes as JSON, embedding). Needs the `parquet` feature.
    ///
    /// # Errors
    /// As [`export_events`](Self::export_events).
    #[cfg(feature = "parquet")]
    pub fn export_products(
        &self,
        dir: impl AsRef<std::path::Path>,
    ) -> Result<crate::export::ExportReport> {
        crate::export::products(&self.state, dir.as_ref())
    }

    /// Writes the serving generation's MF factors as `DIR/user_factors.parquet` and
    /// `DIR/item_factors.parquet` (`id`, `features`: Spark ALS's layout). Needs the `parquet`
    /// feature.
    ///
    /// # Errors
    /// [`Error::NotTrained`] without an MF model; as [`export_events`](Self::export_events).
    #[cfg(feature = "parquet")]
    pub fn export_mf(
        &self,
        dir: impl AsRef<std::path::Path>,
    ) -> Result<crate::export::ExportReport> {
        crate::export::mf(&self.state, dir.as_ref())
    }

    /// Ids of every user with at least one committed event, sorted.
    pub fn user_ids(&self) -> Vec<String> {
        let users = self.state.users.read();
        let idx = self.state.events.read();
        let mut out: Vec<String> = idx
            .by_user
            .iter()
            .enumerate()
            .filter(|(_, evs)| !evs.is_empty())
            .filter_map(|(u, _)| users.external(crate::events::UserId(u as u32)))
            .collect();
        out.sort_unstable();
        out
    }

    /// Users who interacted with an item and when, in arrival order (the per-item index).
    ///
    /// # Errors
    /// [`Error::UnknownItem`].
    pub fn item_events(&self, item: &str) -> Result<Vec<(String, i64)>> {
        let iid = self
            .state
            .items
            .read()
            .live_iid(item)
            .ok_or_else(|| Error::UnknownItem(item.to_string()))?;
        let users = self.state.users.read();
        let idx = self.state.events.read();
        let list = idx
            .by_item
            .get(iid.0 as usize)
            .map_or(&[][..], Vec::as_slice);
        Ok(list
            .iter()
            .filter_map(|(uid, ts)| users.external(*uid).map(|n| (n, *ts)))
            .collect())
    }

    /// Trending products: for each live product passing `filter`, the number of distinct
    /// shoppers with at least one committed event on it at or after `since` (unix
    /// seconds), the `k` highest first (ties by id; products with a count of 0 left out).
    ///
    /// With [`EngineBuilder::count_noise`] each count is released as `max(0, count +
    /// Laplace(1/ε))` and the ranking is made on the released counts (one shopper adds at
    /// most 1 to one product's distinct count: Δ = 1). Every product's count gets noise, so
    /// a product nobody touched may be listed. The noise is a function of the database's
    /// seed, the product, `since` and the committed sequence: asking again before the next
    /// commit returns the same figures; each other `since` or committed state is another
    /// release. While noise is on, the count waits for a commit in progress, so that the
    /// sequence names the state counted.
    ///
    /// # Errors
    /// [`Error::LimitExceeded`] for k outside 1..=`max_k`, [`Error::Invalid`] for a negative
    /// `since` or a bad filter.
    pub fn trending(&self, since: i64, k: usize, filter: &Filter) -> Result<Vec<crate::Count>> {
        self.state.check_k(k)?;
        if since < 0 {
            return Err(Error::invalid(
                "trending.since",
                format!("{since} is before 1970: expected unix seconds >= 0"),
            ));
        }
        filter.validate(&self.state.config.limits)?;
        // Held to the end: no commit between reading the sequence and counting.
        let _commit = self
            .state
            .config
            .count_noise
            .map(|_| self.commit_lock.lock());
        let noise = match self.state.config.count_noise {
            Some(epsilon) => Some(crate::noise::CountNoise {
                epsilon,
                seed: crate::noise::seed(&self.state.store)?,
                release: [crate::noise::TRENDING, since as u64, self.seq()],
            }),
            None => None,
        };
        let items = self.state.items.read();
        let idx = self.state.events.read();
        let mut counts: Vec<(f64, &str)> = Vec::new();
        let mut users = HashSet::new();
        for (iid, product) in items.items.iter().enumerate() {
            let Some(p) = product else { continue };
            if !filter.matches(p) {
                continue;
            }
            users.clear();
            if let Some(list) = idx.by_item.get(iid) {
                users.extend(list.iter().filter(|(_, ts)| *ts >= since).map(|(u, _)| u.0));
            }
            let count = users.len() as f64;
            let count = match &noise {
                Some(n) => n.release(iid as u64, count, 1.0),
                None => count,
            };
            if count > 0.0 {
                counts.push((count, p.id.as_str()));
            }
        }
        counts.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1)));
        counts.truncate(k);
        Ok(counts
            .into_iter()
            .map(|(count, id)| crate::Count {
                id: id.to_string(),
                count,
            })
            .collect())
    }

    /// Knowledge-graph neighbours of an entity: `(relation, entity)`, outgoing edges first,
    /// then incoming ones with the relation prefixed by `~`. Products are `item:<id>`.
    /// `relation` keeps only edges of that relation.
    ///
    /// A product's brand and category edges are read from its record; the products of a
    /// brand or category (`~brand`, `~category`) are found by a scan of the catalog.
    ///
    /// # Errors
    /// [`Error::Invalid`] for an unknown entity.
    pub fn neighbors(&self, entity: &str, relation: Option<&str>) -> Result<Vec<(String, String)>> {
        let items = self.state.items.read();
        let kg = self.state.kg.read();
        let eid = kg.entity_ids.get(entity).copied();
        let product = entity
            .strip_prefix("item:")
            .and_then(|id| items.live_iid(id))
            .and_then(|iid| items.get(iid));
        if eid.is_none() && product.is_none() {
            return Err(Error::invalid(
                "entity",
                format!("{entity:?} is not in the graph"),
            ));
        }
        let wanted = |shown: &str| relation.is_none_or(|r| r == shown);
        let mut out: Vec<(String, String)> = Vec::new();
        if let Some(p) = product {
            for (rel, tail) in graph::product_edges(p) {
                if wanted(rel) {
                    out.push((rel.to_string(), tail));
                }
            }
        }
        let name = |id: u32| kg.entities.get(id as usize).cloned().unwrap_or_default();
        let rel_name = |id: u16| kg.relations.get(id as usize).map_or("", String::as_str);
        if let Some(eid) = eid {
            for (rel, other) in graph::edges(&self.state.store, eid, true)? {
                if wanted(rel_name(rel)) {
                    out.push((rel_name(rel).to_string(), name(other)));
                }
            }
        }
        for rel in [graph::REL_BRAND, graph::REL_CATEGORY] {
            let shown = format!("~{rel}");
            if !entity.starts_with(&format!("{rel}:")) || !wanted(&shown) {
                continue;
            }
            for p in items.items.iter().flatten() {
                if graph::product_edges(p)
                    .iter()
                    .any(|(r, tail)| *r == rel && tail == entity)
                {
                    out.push((shown.clone(), graph::item_entity(&p.id)));
                }
            }
        }
        if let Some(eid) = eid {
            for (rel, other) in graph::edges(&self.state.store, eid, false)? {
                let shown = format!("~{}", rel_name(rel));
                if wanted(&shown) {
                    out.push((shown, name(other)));
                }
            }
        }
        // A database written before the automatic edges were derived also stores them.
        let mut seen = std::collections::HashSet::new();
        out.retain(|edge| seen.insert(edge.clone()));
        Ok(out)
    }

    /// Counts and sizes of every store.
    pub fn stats(&self) -> Stats {
        let kg = self.state.kg.read();
        Stats {
            seq: self.seq(),
            products: self.product_count(),
            text_docs: self.state.text.num_docs(),
            vectors: self.state.vectors.len(),
            vector_slots: self.state.vectors.slots(),
            events: self.state.events_count(),
            users: self.state.users.read().len(),
            entities: kg.entities.len(),
            relations: kg.relations.len(),
            store_bytes: self.state.store.size_on_disk(),
            text_bytes: self.state.text.size_on_disk(),
            typo_list_bytes: self.state.text.spell_bytes() as u64,
        }
    }

    /// HNSW parameters in force.
    pub fn hnsw_params(&self) -> &HnswParams {
        &self.state.config.hnsw
    }
}
