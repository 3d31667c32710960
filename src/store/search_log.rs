//! Search terms of recent writes that are not yet in the main index (`search_terms`).
//!
//! A customer's terms (names, e-mail, phone digits, reference) land all over the main index:
//! written there by the till's own transaction, each term copies and writes a B-tree leaf of
//! its own at every commit, which made the index most of the cost of a create. Instead the
//! writes of a group append one row to `search_terms_log` in their own transaction (sequential
//! keys: one leaf), and the terms they add are held here, in memory, where searches find them
//! at once. The
//! writer merges the log into the main index in key order, a bounded chunk per transaction,
//! when it is idle or the log is long: sorted, many terms share each leaf written.
//!
//! Why nothing is ever missed or wrong:
//! - A search checks every candidate it takes from here against its key record in its own
//!   snapshot, so an entry for a term the customer no longer has costs a lookup, never a wrong
//!   answer. The main index never holds a term its customer lacks in the same snapshot: a
//!   removal leaves it in the writing transaction itself (`Tables::change_terms`), and marks the
//!   log to be merged against the key records, like any direct write. So a search trusts what a
//!   range of the index proves. An index entry's time of change lags the customer's only while
//!   this log holds the write that moved it, with every term of the customer (a write that
//!   moves the time logs them all): such a customer is a candidate from here, checked and
//!   ranked by its key record.
//! - A reader takes its candidates from memory *before* it opens its read transaction, and the
//!   writer publishes new entries after their commit and drops merged ones only after the
//!   merge committed: an acknowledged term is in memory, or in the reader's snapshot, or both.
//! - A merge applies each (term, customer)'s entries oldest first, so the newest says whether
//!   the customer has the term: while the log holds every change of the index since the last
//!   merge, that is the truth, and the merge writes it without a look-up. When anything else
//!   wrote the index meanwhile (a 1010 download writes it directly), or the log's order may be
//!   lost (read back at open, a merge abandoned), the entries then in the log are merged
//!   against the customer's key record as it is *now* (a term it has goes in, one it has not
//!   comes out): merging twice, or after a download, still leaves the index right.
//! - A crash mid-merge loses nothing: the log rows go only with the merge's last chunk, and
//!   the log is read back into memory at open.

use std::cmp::Reverse;
use std::collections::binary_heap::PeekMut;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use redb::{ReadableTable, Table, WriteTransaction};

use super::schema::{self, CustomerKeys, TermChange};
use super::{Store, StoreError};
use crate::domain::search;

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
            chunk_entries: 1_024,
            idle_after: std::time::Duration::from_millis(250),
        }
    }
}

/// One term a log row added to or removed from a customer.
#[derive(Debug, Clone)]
struct Entry {
    /// The term's first eight bytes, big-endian (zeros after a shorter term): compared first,
    /// they order most pairs of entries without reading either term's bytes from the heap.
    term_head: u64,
    /// The folded term.
    term: Box<str>,
    /// The customer.
    customer: Arc<str>,
    /// Whether the row added the term (else it removed it: a merge must take it out).
    added: bool,
    /// The customer's time of change after the row's write (the index entry's value).
    updated_at_ms: i64,
}

/// An [`Entry`]'s place in key order: its term's head, its term, its customer.
type Key<'a> = (u64, &'a str, &'a str);

impl Entry {
    fn new(term: Box<str>, customer: Arc<str>, added: bool, updated_at_ms: i64) -> Entry {
        Entry {
            term_head: search::term_head(&term),
            term,
            customer,
            added,
            updated_at_ms,
        }
    }

    /// The entry's place: its term, then its customer (the main index's key order). The term's
    /// head leads, which orders as the term does: two heads differ only where the terms do.
    fn key(&self) -> Key<'_> {
        (self.term_head, &self.term, &self.customer)
    }
}

/// Entries in a few sorted runs, each at least twice as long as the next (the logarithmic
/// method) up to [`MAX_RUN_ENTRIES`]: a batch is sorted once and merged with its neighbours as
/// they fill, so adding costs a few sequential moves per entry, and a lookup is one binary
/// search per run.
#[derive(Default)]
struct Runs {
    runs: Vec<Vec<Entry>>,
    len: usize,
    /// Emptied buffers of merged runs, kept for the next merges (at most [`SPARE_BUFFERS`]).
    /// A fresh buffer of a large run is memory the allocator gets from the system and gives
    /// back within milliseconds: each merge into one faulted in and zeroed every page of it
    /// (a tenth of the writer's time in the P2 profile, with its purge delay of 2 ms).
    spare: Vec<Vec<Entry>>,
}

/// Most emptied run buffers [`Runs`] keeps: a merge empties two and fills one, so a few cover
/// every merge of a cascade. At most 6 MiB: four buffers of the longest run.
const SPARE_BUFFERS: usize = 4;

impl Runs {
    /// Adds a batch sorted by key.
    fn push_sorted(&mut self, batch: Vec<Entry>) {
        if batch.is_empty() {
            return;
        }
        self.len += batch.len();
        self.runs.push(batch);
        while let [.., older, newer] = self.runs.as_slice() {
            if older.len() > 2 * newer.len() || older.len() + newer.len() > MAX_RUN_ENTRIES {
                break;
            }
            let (Some(newer), Some(older)) = (self.runs.pop(), self.runs.pop()) else {
                break;
            };
            let merged = self.merge(older, newer);
            self.runs.push(merged);
        }
    }

    /// Adds a batch in any order.
    fn push_batch(&mut self, mut batch: Vec<Entry>) {
        batch.sort_by(|a, b| a.key().cmp(&b.key()));
        self.push_sorted(batch);
    }

    /// Merges two sorted runs into a spare buffer when one is large enough, keeping theirs.
    fn merge(&mut self, mut older: Vec<Entry>, mut newer: Vec<Entry>) -> Vec<Entry> {
        let n = older.len() + newer.len();
        // The smallest that fits: a small run does not hold on to a large buffer.
        let fits = (0..self.spare.len())
            .filter(|&i| self.spare[i].capacity() >= n)
            .min_by_key(|&i| self.spare[i].capacity());
        let mut out = match fits {
            Some(at) => self.spare.swap_remove(at),
            None => Vec::with_capacity(n),
        };
        merge_runs(&mut older, &mut newer, &mut out);
        for emptied in [older, newer] {
            self.keep_spare(emptied);
        }
        out
    }

    /// Keeps an emptied buffer for a later merge, or frees the smallest when enough are kept.
    fn keep_spare(&mut self, emptied: Vec<Entry>) {
        self.spare.push(emptied);
        if self.spare.len() > SPARE_BUFFERS {
            self.spare.sort_by_key(|b| std::cmp::Reverse(b.capacity()));
            self.spare.truncate(SPARE_BUFFERS);
        }
    }

    /// Takes the runs out, leaving no entries (and the spare buffers).
    fn take_runs(&mut self) -> Vec<Vec<Entry>> {
        self.len = 0;
        std::mem::take(&mut self.runs)
    }
}

/// Longest run two runs are merged into. A merge of runs moves every entry of both while the
/// writer holds the log's lock (no search reads it meanwhile, and the group waits to be
/// answered): uncapped, the merge into a run of half a million entries took up to 28 ms, the
/// slowest answers of P1. Capped, a merge moves at most this many (0.9 ms at most, measured),
/// and a log of the 524,288 entries a merge falls behind at most holds about 32 runs.
const MAX_RUN_ENTRIES: usize = 32_768;

/// Moves two sorted runs into `out` (empty) in key order, leaving them empty; on equal keys
/// the older run's entry comes first.
fn merge_runs(older: &mut Vec<Entry>, newer: &mut Vec<Entry>, out: &mut Vec<Entry>) {
    out.reserve(older.len() + newer.len());
    let mut a = older.drain(..).peekable();
    let mut b = newer.drain(..).peekable();
    loop {
        let take_a = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => x.key() <= y.key(),
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        let next = if take_a { a.next() } else { b.next() };
        out.extend(next);
    }
}

/// Customers of `run` (sorted) with an added term starting with `prefix` that passes `also`,
/// until `out` holds `cap`.
fn scan(
    run: &[Entry],
    prefix: &str,
    cap: usize,
    out: &mut Vec<String>,
    also: impl Fn(&str) -> bool,
) {
    let from = run.partition_point(|e| &*e.term < prefix);
    for e in &run[from..] {
        if out.len() >= cap || !e.term.starts_with(prefix) {
            break;
        }
        if e.added && also(&e.term) {
            out.push(e.customer.to_string());
        }
    }
}

/// A log taken for merging: its runs, and how far the merge has come in each. The merge takes
/// entries from all runs in key order.
struct Frozen {
    /// The runs of the rows taken, each sorted by (term, customer).
    runs: Vec<Vec<Entry>>,
    /// In each run, the entries before this index are merged.
    merged: Vec<usize>,
    /// The highest log key of the rows taken.
    last_key: u64,
    /// The highest log key merged before: the rows taken are all above it.
    after_key: u64,
}

impl Frozen {
    fn left(&self) -> usize {
        self.runs
            .iter()
            .zip(&self.merged)
            .map(|(r, m)| r.len() - m)
            .sum()
    }

    /// The next `n` entries in key order from every run, and where each run stands after them.
    /// On equal keys the older run's entry comes first (runs are oldest first).
    fn next_chunk(&self, n: usize) -> (Vec<&Entry>, Vec<usize>) {
        let mut at = self.merged.clone();
        // Each run's next entry, least first: a log that fell behind holds a few dozen runs,
        // and a scan of every run's head per entry was a tenth of the merge's time.
        let mut heads: BinaryHeap<Reverse<(Key<'_>, usize)>> = (0..self.runs.len())
            .filter_map(|i| self.runs[i].get(at[i]).map(|e| Reverse((e.key(), i))))
            .collect();
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let Some(mut head) = heads.peek_mut() else {
                break;
            };
            let i = head.0.1;
            let Some(entry) = self.runs[i].get(at[i]) else {
                PeekMut::pop(head);
                continue;
            };
            out.push(entry);
            at[i] += 1;
            match self.runs[i].get(at[i]) {
                Some(next) => *head = Reverse((next.key(), i)),
                None => {
                    PeekMut::pop(head);
                }
            }
        }
        (out, at)
    }
}

#[derive(Default)]
struct State {
    /// Entries of the rows not taken for a merge yet.
    active: Runs,
    /// The highest log key published.
    last_key: u64,
    /// The highest log key of a finished merge.
    merged_through: u64,
    /// Entries of rows up to this log key are merged against the customers' key records (see
    /// the module's notes): the index was written by something else after they were logged.
    verify_through: u64,
    frozen: Option<Frozen>,
}

/// The log's terms in memory, shared by the writer and every reader of one store.
#[derive(Default)]
pub(crate) struct SearchLog {
    state: RwLock<State>,
}

/// The entries of some log rows, in row order (the rows' strings are moved, not copied).
fn entries_of(changes: Vec<TermChange>) -> Vec<Entry> {
    let n = changes
        .iter()
        .map(|c| c.added.len() + c.removed.len())
        .sum();
    let mut out = Vec::with_capacity(n);
    for change in changes {
        let customer: Arc<str> = change.customer_ref.into();
        let removed = change.removed.into_iter().map(|t| (t, false));
        for (term, added) in removed.chain(change.added.into_iter().map(|t| (t, true))) {
            out.push(Entry::new(
                term.into_boxed_str(),
                customer.clone(),
                added,
                change.updated_at_ms,
            ));
        }
    }
    out
}

impl State {
    fn entries(&self) -> usize {
        self.active.len + self.frozen.as_ref().map_or(0, Frozen::left)
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

    /// Customers with a term starting with `prefix` that the main index may lack, up to `cap`
    /// (a customer may come more than once).
    pub(crate) fn candidates(&self, prefix: &str, cap: usize) -> Vec<String> {
        self.candidates_where(prefix, cap, |_| true)
    }

    /// As [`SearchLog::candidates`], for the name pairs whose first word starts with `first`
    /// and whose second word starts with `second`.
    pub(crate) fn pair_candidates(&self, first: &str, second: &str, cap: usize) -> Vec<String> {
        let second_matches =
            |term: &str| search::pair_second_word(term).is_some_and(|w| w.starts_with(second));
        self.candidates_where(&search::pair_first_prefix(first), cap, second_matches)
    }

    fn candidates_where(
        &self,
        prefix: &str,
        cap: usize,
        also: impl Fn(&str) -> bool + Copy,
    ) -> Vec<String> {
        let state = self.read();
        let mut out = Vec::new();
        for run in &state.active.runs {
            scan(run, prefix, cap, &mut out, also);
        }
        if let Some(f) = &state.frozen {
            for (run, merged) in f.runs.iter().zip(&f.merged) {
                scan(&run[*merged..], prefix, cap, &mut out, also);
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
        state.frozen.is_some() || state.active.len >= start_at
    }

    /// Makes the rows just committed (log keys up to `last_key`) visible to searches.
    pub(crate) fn publish(&self, changes: Vec<TermChange>, last_key: u64) {
        // Built and sorted before the lock is taken: readers wait only for the merge of runs.
        let mut batch = entries_of(changes);
        batch.sort_by(|a, b| a.key().cmp(&b.key()));
        let mut state = self.write();
        state.active.push_sorted(batch);
        state.last_key = state.last_key.max(last_key);
    }

    /// After the commit of a transaction that wrote the main index directly (a 1010 download):
    /// the entries in the log now are older than what it wrote.
    pub(crate) fn index_written(&self) {
        let mut state = self.write();
        state.verify_through = state.last_key;
    }

    /// Reads the whole log back from the store (at open, and after the store was reopened).
    pub(crate) fn load(&self, tx: &redb::ReadTransaction) -> Result<(), StoreError> {
        let table = tx.open_table(schema::SEARCH_LOG).map_err(StoreError::db)?;
        let mut fresh = State::default();
        let mut changes = Vec::new();
        for row in table.iter().map_err(StoreError::db)? {
            let (key, bytes) = row.map_err(StoreError::db)?;
            changes.extend(schema::decode_term_changes(bytes.value())?);
            fresh.last_key = key.value();
        }
        // What else wrote the index before the log was read is not known.
        fresh.verify_through = fresh.last_key;
        fresh.active.push_batch(entries_of(changes));
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
                if state.active.len == 0 {
                    return Ok(None);
                }
                let runs = state.active.take_runs();
                let (last_key, after_key) = (state.last_key, state.merged_through);
                state.frozen = Some(Frozen {
                    merged: vec![0; runs.len()],
                    runs,
                    last_key,
                    after_key,
                });
            }
        }
        // Only the writer changes `frozen`, and this is the writer: what is read here stays.
        let state = self.read();
        let Some(frozen) = &state.frozen else {
            return Ok(None);
        };
        let (chunk, end) = frozen.next_chunk(chunk_entries.max(1));
        let mut index = tx.open_table(schema::SEARCH).map_err(StoreError::db)?;
        let keys = tx
            .open_table(schema::CUSTOMER_KEYS)
            .map_err(StoreError::db)?;
        let verify = state.verify_through > frozen.after_key;
        // Each customer's key record as it is now, read once per chunk.
        let mut current: HashMap<&str, Option<Vec<u8>>> = HashMap::new();
        let mut writes = Vec::with_capacity(chunk.len());
        for Entry {
            term,
            customer,
            added,
            updated_at_ms,
            ..
        } in chunk
        {
            let put = if verify {
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
                match record {
                    Some(bytes) => {
                        let record = CustomerKeys::parse(bytes)?;
                        let has = record.terms().any(|t| t == term.as_bytes());
                        has.then_some(record.updated_at_ms)
                    }
                    None => None,
                }
            } else {
                added.then_some(*updated_at_ms)
            };
            writes.push(((&**term, &**customer), put));
        }
        super::tables::write_terms_sorted(&mut index, &writes)?;
        let last = end
            .iter()
            .zip(&frozen.runs)
            .all(|(at, run)| *at == run.len());
        if last {
            let mut log = tx.open_table(schema::SEARCH_LOG).map_err(StoreError::db)?;
            log.retain_in(..=frozen.last_key, |_, _| false)
                .map_err(StoreError::db)?;
        }
        Ok(Some(MergeStep { end, last }))
    }

    /// After the commit of a [`SearchLog::merge_chunk`]: the chunk's entries leave the
    /// searches' view. After the last chunk, the whole merged log is handed back, for the caller
    /// to free where it does not hold anyone up: a quarter of a million entries (two strings
    /// each) took 40–140 ms to free, with the writer stalled and, under this lock, every search.
    #[must_use = "the merged entries are freed where they are dropped"]
    pub(crate) fn merged(&self, step: MergeStep) -> Option<MergedLog> {
        let mut state = self.write();
        if step.last {
            let f = state.frozen.take()?;
            state.merged_through = f.last_key;
            return Some(MergedLog(f));
        }
        if let Some(f) = &mut state.frozen {
            f.merged = step.end;
        }
        None
    }

    /// Forgets a merge whose chunk did not commit (it starts over from the log's rows).
    pub(crate) fn abandon_merge(&self) {
        let mut state = self.write();
        if let Some(f) = state.frozen.take() {
            // Put back behind newer entries, they lose their order: all the log holds now is
            // merged against the key records.
            state.verify_through = state.last_key;
            // Entries not merged go back (the rows are still in the log); merged ones are in
            // the main index already.
            for (run, merged) in f.runs.into_iter().zip(f.merged) {
                state
                    .active
                    .push_batch(run.into_iter().skip(merged).collect());
            }
        }
    }
}

/// Appends the term changes of a group to the log, in `tx`, as one row under the next log key
/// (counted in `meta`). Returns the key written, `None` when there was nothing to write.
pub(crate) fn append(
    tx: &WriteTransaction,
    meta: &mut Table<'_, &'static str, u64>,
    changes: &[TermChange],
) -> Result<Option<u64>, StoreError> {
    if changes.is_empty() {
        return Ok(None);
    }
    let key = meta
        .get(schema::NEXT_SEARCH_LOG)
        .map_err(StoreError::db)?
        .map_or(1, |g| g.value());
    let mut log = tx.open_table(schema::SEARCH_LOG).map_err(StoreError::db)?;
    log.insert(key, schema::encode_term_changes(changes)?.as_slice())
        .map_err(StoreError::db)?;
    meta.insert(schema::NEXT_SEARCH_LOG, key + 1)
        .map_err(StoreError::db)?;
    Ok(Some(key))
}

/// The entries of a finished merge, all in the main index now: only to be dropped.
pub(crate) struct MergedLog(#[allow(dead_code)] Frozen);

/// How far one committed merge chunk came.
#[derive(Debug, Clone)]
pub(crate) struct MergeStep {
    /// Where each run of the merge stands.
    end: Vec<usize>,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(term: String, customer: &str, added: bool) -> Entry {
        Entry::new(term.into_boxed_str(), customer.into(), added, 0)
    }

    #[test]
    fn entries_order_by_term_then_customer() {
        let terms = [
            "",
            "a",
            "a\u{1}",
            "ab",
            "abcdefgh",
            "abcdefg",
            "abcdefgha",
            "abcdefghb",
            "abcdefgi",
            "\u{2}mari\u{1}tamm",
            "\u{2}mari\u{1}tammik",
            "\u{2}mari\u{1}",
            "s0001-t10",
            "s0001-t9",
        ];
        let mut entries: Vec<Entry> = terms
            .iter()
            .flat_map(|t| ["C2", "C10", "C1"].map(|c| entry(t.to_string(), c, true)))
            .collect();
        entries.sort_by(|a, b| a.key().cmp(&b.key()));
        let by_key: Vec<(&str, &str)> = entries.iter().map(|e| (&*e.term, &*e.customer)).collect();
        let mut plain = by_key.clone();
        plain.sort();
        assert_eq!(by_key, plain);
    }

    #[test]
    fn runs_stay_sorted_capped_and_in_age_order_on_equal_keys() {
        const BATCH: usize = 512;
        const BATCHES: usize = 300;
        let mut runs = Runs::default();
        for b in 0..BATCHES {
            // Terms spread over the key space; every batch also writes one same key, adding
            // it in even batches and removing it in odd ones: a merge must see those entries
            // in the order they were written.
            let mut batch: Vec<Entry> = (0..BATCH - 1)
                .map(|i| {
                    entry(
                        format!("t{:07}", (b * BATCH + i) * 7_919 % 1_000_003),
                        "c",
                        true,
                    )
                })
                .collect();
            batch.push(entry("same".into(), "c", b % 2 == 0));
            batch.sort_by(|a, b| a.key().cmp(&b.key()));
            runs.push_sorted(batch);
        }
        assert_eq!(runs.len, BATCH * BATCHES);
        assert_eq!(runs.runs.iter().map(Vec::len).sum::<usize>(), runs.len);
        // Merges reuse emptied buffers: a few are kept, and they hold nothing.
        assert!(!runs.spare.is_empty() && runs.spare.len() <= SPARE_BUFFERS);
        assert!(runs.spare.iter().all(Vec::is_empty));
        for run in &runs.runs {
            assert!(run.len() <= MAX_RUN_ENTRIES, "a run of {}", run.len());
            assert!(run.windows(2).all(|w| w[0].key() <= w[1].key()));
        }
        // Runs of at least half the cap, and the few smaller ones still growing.
        let big = runs
            .runs
            .iter()
            .filter(|r| r.len() > MAX_RUN_ENTRIES / 2)
            .count();
        assert!(runs.runs.len() <= big + 2 * (MAX_RUN_ENTRIES / BATCH).ilog2() as usize + 2);
        let taken = runs.take_runs();
        assert_eq!((runs.len, runs.runs.len()), (0, 0));
        let frozen = Frozen {
            merged: vec![0; taken.len()],
            runs: taken,
            last_key: 0,
            after_key: 0,
        };
        let (all, end) = frozen.next_chunk(BATCH * BATCHES);
        assert_eq!(all.len(), BATCH * BATCHES);
        assert!(
            end.iter()
                .zip(&frozen.runs)
                .all(|(at, run)| *at == run.len())
        );
        assert!(all.windows(2).all(|w| w[0].key() <= w[1].key()));
        let same: Vec<bool> = all
            .iter()
            .filter(|e| &*e.term == "same")
            .map(|e| e.added)
            .collect();
        let written: Vec<bool> = (0..BATCHES).map(|b| b % 2 == 0).collect();
        assert_eq!(same, written, "equal keys come oldest first");
    }
}
