//! Search terms of recent writes that are not yet in the main index (`search_terms`).
//!
//! A customer's terms (names, e-mail, phone digits, reference) land all over the main index:
//! written there by the till's own transaction, each term copies and writes a B-tree leaf of
//! its own at every commit, which made the index most of the cost of a create. Instead a write
//! appends one row to `search_terms_log` in its own transaction (sequential keys: one leaf),
//! and the terms it adds are held here, in memory, where searches find them at once. The
//! writer merges the log into the main index in key order, a bounded chunk per transaction,
//! when it is idle or the log is long: sorted, many terms share each leaf written.
//!
//! Why nothing is ever missed or wrong:
//! - A search checks every candidate against its key record in its own snapshot, so an entry
//!   for a term the customer no longer has costs a lookup, never a wrong answer.
//! - A reader takes its candidates from memory *before* it opens its read transaction, and the
//!   writer publishes new entries after their commit and drops merged ones only after the
//!   merge committed: an acknowledged term is in memory, or in the reader's snapshot, or both.
//! - A merge writes what the customer's key record says *now* (inserts a term it has, removes
//!   one it has not), so merging twice, or after a 1010 download wrote the main index
//!   directly, still leaves the index right. A crash mid-merge loses nothing: the log rows go
//!   only with the merge's last chunk, and the log is read back into memory at open.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use redb::{ReadableTable, WriteTransaction};

use super::schema::{self, CustomerKeys, TermChange};
use super::{Store, StoreError};

/// When and how much the writer merges.
#[derive(Debug, Clone, Copy)]
pub struct MergeOptions {
    /// Term entries held in memory that make the writer start a merge between groups.
    pub start_at_entries: usize,
    /// Most term entries merged in one transaction (bounds the pause a merge adds to a write).
    pub chunk_entries: usize,
    /// Quiet time after which the writer merges whatever the log holds.
    pub idle_after: std::time::Duration,
}

impl Default for MergeOptions {
    fn default() -> Self {
        MergeOptions {
            start_at_entries: 262_144,
            chunk_entries: 16_384,
            idle_after: std::time::Duration::from_millis(250),
        }
    }
}

/// (folded term, customer reference).
type Entry = (Box<str>, Arc<str>);

/// A log taken for merging: every entry of its rows, sorted, and how far the merge has come.
struct Frozen {
    /// Each (term, customer) the rows touched, with whether the last row to touch it added it.
    entries: Vec<(Entry, bool)>,
    /// Entries before this index are merged.
    merged: usize,
    /// The highest log key of the rows taken.
    last_key: u64,
}

#[derive(Default)]
struct State {
    /// Entries of the rows not taken for a merge yet, with whether the last row added them.
    active: BTreeMap<Entry, bool>,
    /// The highest log key published.
    last_key: u64,
    frozen: Option<Frozen>,
}

/// The log's terms in memory, shared by the writer and every reader of one store.
#[derive(Default)]
pub(crate) struct SearchLog {
    state: RwLock<State>,
}

fn entry(term: &str, customer: &Arc<str>) -> Entry {
    (term.into(), customer.clone())
}

impl State {
    fn add(&mut self, change: &TermChange) {
        let customer: Arc<str> = change.customer_ref.as_str().into();
        for t in &change.removed {
            self.active.insert(entry(t, &customer), false);
        }
        for t in &change.added {
            self.active.insert(entry(t, &customer), true);
        }
    }

    fn entries(&self) -> usize {
        self.active.len()
            + self
                .frozen
                .as_ref()
                .map_or(0, |f| f.entries.len() - f.merged)
    }
}

impl SearchLog {
    fn read(&self) -> RwLockReadGuard<'_, State> {
        // Plain data, consistent between calls.
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Customers with a term starting with `prefix` that the main index may lack, up to `cap`.
    pub(crate) fn candidates(&self, prefix: &str, cap: usize) -> Vec<String> {
        let state = self.read();
        let mut out = Vec::new();
        let start: Entry = (prefix.into(), Arc::from(""));
        for ((term, customer), added) in state
            .active
            .range((Bound::Included(start), Bound::Unbounded))
        {
            if out.len() >= cap || !term.starts_with(prefix) {
                break;
            }
            if *added {
                out.push(customer.to_string());
            }
        }
        if let Some(f) = &state.frozen {
            let rest = &f.entries[f.merged..];
            let from = rest.partition_point(|((term, _), _)| &**term < prefix);
            for ((term, customer), added) in &rest[from..] {
                if out.len() >= cap || !term.starts_with(prefix) {
                    break;
                }
                if *added {
                    out.push(customer.to_string());
                }
            }
        }
        out
    }

    /// Term entries waiting to be merged.
    pub(crate) fn entries(&self) -> usize {
        self.read().entries()
    }

    /// Whether the writer owes a merge before it waits for work: one is under way, or the
    /// log has grown past `start_at` entries.
    pub(crate) fn merge_due(&self, start_at: usize) -> bool {
        let state = self.read();
        state.frozen.is_some() || state.active.len() >= start_at
    }

    /// Makes the rows just committed (log keys up to `last_key`) visible to searches.
    pub(crate) fn publish(&self, changes: &[TermChange], last_key: u64) {
        let mut state = self.write();
        for c in changes {
            state.add(c);
        }
        state.last_key = state.last_key.max(last_key);
    }

    /// Reads the whole log back from the store (at open, and after the store was reopened).
    pub(crate) fn load(&self, tx: &redb::ReadTransaction) -> Result<(), StoreError> {
        let table = tx.open_table(schema::SEARCH_LOG).map_err(StoreError::db)?;
        let mut fresh = State::default();
        for row in table.iter().map_err(StoreError::db)? {
            let (key, bytes) = row.map_err(StoreError::db)?;
            fresh.add(&schema::decode_term_change(bytes.value())?);
            fresh.last_key = key.value();
        }
        *self.write() = fresh;
        Ok(())
    }

    /// Merges one chunk of the log into the main index, in `tx`; taking the whole log for a
    /// merge first if none is under way. Returns what to call [`SearchLog::merged`] with after
    /// the commit, or `None` when there was nothing to merge.
    pub(crate) fn merge_chunk(
        &self,
        tx: &WriteTransaction,
        chunk_entries: usize,
    ) -> Result<Option<MergeStep>, StoreError> {
        {
            let mut state = self.write();
            if state.frozen.is_none() {
                if state.active.is_empty() {
                    return Ok(None);
                }
                let entries: Vec<(Entry, bool)> =
                    std::mem::take(&mut state.active).into_iter().collect();
                let last_key = state.last_key;
                state.frozen = Some(Frozen {
                    entries,
                    merged: 0,
                    last_key,
                });
            }
        }
        // Only the writer changes `frozen`, and this is the writer: what is read here stays.
        let state = self.read();
        let Some(frozen) = &state.frozen else {
            return Ok(None);
        };
        let end = (frozen.merged + chunk_entries.max(1)).min(frozen.entries.len());
        let mut index = tx.open_table(schema::SEARCH).map_err(StoreError::db)?;
        let keys = tx
            .open_table(schema::CUSTOMER_KEYS)
            .map_err(StoreError::db)?;
        // Each customer's key record as it is now, read once per chunk.
        let mut current: HashMap<&str, Option<Vec<u8>>> = HashMap::new();
        for ((term, customer), _) in &frozen.entries[frozen.merged..end] {
            let record = match current.get(&**customer) {
                Some(r) => r,
                None => {
                    let r = keys
                        .get(&**customer)
                        .map_err(StoreError::db)?
                        .map(|g| g.value().to_vec());
                    current.entry(customer).or_insert(r)
                }
            };
            let has = match record {
                Some(bytes) => CustomerKeys::parse(bytes)?
                    .terms()
                    .any(|t| t == term.as_bytes()),
                None => false,
            };
            let key = (&**term, &**customer);
            if has {
                index.insert(key, ()).map_err(StoreError::db)?;
            } else {
                index.remove(key).map_err(StoreError::db)?;
            }
        }
        let last = end == frozen.entries.len();
        if last {
            let mut log = tx.open_table(schema::SEARCH_LOG).map_err(StoreError::db)?;
            log.retain_in(..=frozen.last_key, |_, _| false)
                .map_err(StoreError::db)?;
        }
        Ok(Some(MergeStep { end, last }))
    }

    /// After the commit of a [`SearchLog::merge_chunk`]: the chunk's entries leave memory.
    pub(crate) fn merged(&self, step: MergeStep) {
        let mut state = self.write();
        if step.last {
            state.frozen = None;
        } else if let Some(f) = &mut state.frozen {
            f.merged = step.end;
        }
    }

    /// Forgets a merge whose chunk did not commit (it starts over from the log's rows).
    pub(crate) fn abandon_merge(&self) {
        let mut state = self.write();
        if let Some(f) = state.frozen.take() {
            // Entries not merged go back; merged ones are in the main index already, and
            // merging them again is harmless.
            for (e, added) in f.entries.into_iter().skip(f.merged) {
                state.active.entry(e).or_insert(added);
            }
        }
    }
}

/// How far one committed merge chunk came.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MergeStep {
    end: usize,
    last: bool,
}

impl MergeStep {
    /// Whether this chunk finished the merge (and dropped the log rows).
    pub(crate) fn is_last(&self) -> bool {
        self.last
    }
}

impl Store {
    /// Term entries written by tills and not yet merged into the main search index.
    pub fn search_log_entries(&self) -> usize {
        self.search_log.entries()
    }
}
