//! Reads: customers by reference or account number, search, and the operation listings of the
//! sync-status page. Each read runs in its own snapshot; readers never wait for the writer.

use redb::{ReadOnlyTable, ReadableTableMetadata};

use super::schema::{self, CustomerKeys, decode};
use super::{Store, StoreError};
use crate::domain::search;
use crate::domain::view::{CustomerView, SyncState};
use crate::domain::{OpState, Operation, OperationId};

/// A customer with its summarised sync state.
#[derive(Debug, Clone)]
pub struct CustomerRead {
    /// The view.
    pub view: CustomerView,
    /// The worst state among its operations still held at the node.
    pub sync_state: SyncState,
}

/// Which operations to list.
#[derive(Debug, Clone, Default)]
pub struct OpFilter {
    /// Only this state; all states when `None`.
    pub state: Option<OpState>,
    /// Only operations accepted after this sequence number (paging cursor).
    pub after_seq: Option<u64>,
    /// Most operations returned.
    pub limit: usize,
}

/// Most candidate customers one search examines: a query so broad that every term matches
/// more customers than this may miss some (a till types more letters).
const CANDIDATE_CAP: usize = 10_000;

/// Most candidates a quick search ([`Store::search_quick`]) takes from any one source before
/// it gives the query up as too broad to answer in place.
pub const QUICK_SEARCH_CANDIDATES: usize = 32;
/// Most customers a quick search answers (each is a view read and decoded).
pub const QUICK_SEARCH_LIMIT: usize = 20;

fn t<T>(r: Result<T, impl Into<redb::Error>>) -> Result<T, StoreError> {
    r.map_err(StoreError::db)
}

impl Store {
    /// The customer by temporary reference or HQ account number.
    pub fn customer(&self, key: &str) -> Result<Option<CustomerRead>, StoreError> {
        let tx = self.begin_read()?;
        let mut views = Views::open(&tx)?;
        if let Some(found) = views.read(key)? {
            return Ok(Some(found));
        }
        let accounts = t(tx.open_table(schema::ACCOUNTS))?;
        match t(accounts.get(key))? {
            Some(r) => views.read(r.value()),
            None => Ok(None),
        }
    }

    /// Customers whose terms match every term of `q` by prefix, most recently changed first.
    pub fn search(&self, q: &str, limit: usize) -> Result<Vec<CustomerRead>, StoreError> {
        self.search_within(q, limit, CANDIDATE_CAP)
            .map(|(found, _)| found)
    }

    /// As [`Store::search`] when the query is narrow: at most [`QUICK_SEARCH_CANDIDATES`]
    /// candidates from each source and [`QUICK_SEARCH_LIMIT`] customers, so a bounded read (a
    /// few dozen index entries and key records, twenty views) that a caller may run where it
    /// stands. `None` when a source holds more, or the limit is larger: the answer could be
    /// incomplete, and the query needs [`Store::search`].
    pub fn search_quick(
        &self,
        q: &str,
        limit: usize,
    ) -> Result<Option<Vec<CustomerRead>>, StoreError> {
        if limit > QUICK_SEARCH_LIMIT {
            return Ok(None);
        }
        let (found, full) = self.search_within(q, limit, QUICK_SEARCH_CANDIDATES)?;
        Ok((!full).then_some(found))
    }

    /// The search, with each candidate source read up to `cap`; and whether any source
    /// reached it (then a match may be missing).
    fn search_within(
        &self,
        q: &str,
        limit: usize,
        cap: usize,
    ) -> Result<(Vec<CustomerRead>, bool), StoreError> {
        let terms = search::query_terms(q);
        if terms.is_empty() || limit == 0 {
            return Ok((Vec::new(), false));
        }
        // The ranking keeps as many candidates as results are asked for. A kept one with no
        // customer to read (none is expected: its index entries, key record and view change
        // in one transaction) leaves a result short, and the search reads again keeping more;
        // short still after the last reading, the answer says a match may be missing.
        let mut keep = limit;
        let mut round = 1;
        loop {
            let (found, full, cut) = self.search_keeping(&terms, limit, keep, cap)?;
            let short = cut && found.len() < limit;
            if !short || round == MAX_SEARCH_READINGS {
                return Ok((found, full || short));
            }
            keep = keep.saturating_mul(4);
            round += 1;
        }
    }

    /// One reading of a search: the first `keep` candidates ranked, and of them the first
    /// `limit` customers read; whether a source was full, and whether the ranking left a
    /// candidate out.
    fn search_keeping(
        &self,
        terms: &[String],
        limit: usize,
        keep: usize,
        cap: usize,
    ) -> Result<(Vec<CustomerRead>, bool, bool), StoreError> {
        let Candidates {
            tx,
            mut ranking,
            unproven,
            full,
        } = match self.pair_candidates(terms, keep, cap)? {
            Some(found) => found,
            None => self.term_candidates(terms, keep, cap)?,
        };
        let keys = t(tx.open_table(schema::CUSTOMER_KEYS))?;
        // Candidates the index does not prove are checked and ranked by their key records
        // (terms and time of change, a table a fraction of the views' size). A customer among
        // them may have changed since its index entries were written: its key record rules.
        for r in &unproven {
            let Some(bytes) = t(keys.get(r.as_str()))? else {
                continue;
            };
            let record = CustomerKeys::parse(bytes.value())?;
            if record.matches_all(terms) {
                ranking.offer(record.updated_at_ms, r);
            }
        }
        let cut = ranking.cut();
        let mut views = Views::open(&tx)?;
        let mut out = Vec::with_capacity(limit);
        for (_, r) in ranking.into_ranked() {
            if out.len() >= limit {
                break;
            }
            if let Some(found) = views.read(&r)? {
                out.push(found);
            }
        }
        Ok((out, full, cut))
    }

    /// Candidates of a query of two or more terms from the name pairs: the customers with a
    /// pair of name words matching its two longest terms, and those that could match either
    /// term by another term (e-mail, reference, ...), or have more name words than are paired.
    /// No customer matching the query is left out: its two terms match two different words
    /// (`search::query_terms` leaves no term that begins another), or one of them matches
    /// something else. A pair proves a query of two terms. `None` when both ways round, the
    /// pair's first term begins too many distinct words: the terms one by one are cheaper
    /// then.
    fn pair_candidates(
        &self,
        terms: &[String],
        keep: usize,
        cap: usize,
    ) -> Result<Option<Candidates>, StoreError> {
        let mut by_length: Vec<&str> = terms.iter().map(String::as_str).collect();
        by_length.sort_by_key(|t| std::cmp::Reverse(t.len()));
        let [long, short, ..] = by_length[..] else {
            return Ok(None);
        };
        // From memory before the snapshot opens (see `store::search_log`). Both orders of a
        // customer's words are paired, but a merge under way may have moved one order into
        // the index and not yet the other, and the index is read in whichever order
        // `pair_plan` picks: so memory is read in both.
        let log = &self.search_log;
        let mut unproven = log.pair_candidates(short, long, cap);
        let mut full = unproven.len() >= cap;
        let other_order = log.pair_candidates(long, short, cap);
        full |= other_order.len() >= cap;
        unproven.extend(other_order);
        for prefix in [short, long, search::MANY_NAME_WORDS] {
            let recent = log.candidates(prefix, cap);
            full |= recent.len() >= cap;
            unproven.extend(recent);
        }
        let tx = self.begin_read()?;
        let mut ranking = search::Ranking::new(keep);
        {
            let index = t(tx.open_table(schema::SEARCH))?;
            // A short term (a first name, often) wins a tie: it begins fewer words, often.
            let Some(plan) = pair_plan(&index, short, long)? else {
                return Ok(None);
            };
            // Each source up to its own cap: one that is full must not hide another.
            for prefix in [short, long, search::MANY_NAME_WORDS] {
                let mut plain = Vec::new();
                if prefix == search::MANY_NAME_WORDS {
                    scan_term(&index, prefix, cap, &mut plain)?;
                } else {
                    scan_prefix(&index, prefix, cap, &mut plain)?;
                }
                full |= plain.len() >= cap;
                unproven.extend(plain.into_iter().map(|(r, _)| r));
            }
            let mut pairs = cap;
            if terms.len() == 2 {
                // The pairs prove the query, each ranked by its entry's time as it is read,
                // but a customer among those to check: its check rules.
                unproven.sort();
                unproven.dedup();
                for word in &plan.first_words {
                    if pairs == 0 {
                        break;
                    }
                    let prefix = search::pair_term(word, plan.second);
                    pairs -= scan_where(&index, &prefix, pairs, starts(&prefix), |r, time| {
                        if ranking.admits(time, r)
                            && unproven.binary_search_by(|u| u.as_str().cmp(r)).is_err()
                        {
                            ranking.offer(time, r);
                        }
                    })?;
                }
            } else {
                for word in &plan.first_words {
                    if pairs == 0 {
                        break;
                    }
                    let prefix = search::pair_term(word, plan.second);
                    pairs -= scan_where(&index, &prefix, pairs, starts(&prefix), |r, _| {
                        unproven.push(r.to_string());
                    })?;
                }
                unproven.sort();
                unproven.dedup();
            }
            full |= pairs == 0;
        }
        Ok(Some(Candidates {
            tx,
            ranking,
            unproven,
            full,
        }))
    }

    /// Candidates from the terms one by one: the term with the fewest matches drives. Each
    /// term's matches are the plain terms it begins and the name pairs whose first word it
    /// begins; they prove a query of one term.
    fn term_candidates(
        &self,
        terms: &[String],
        keep: usize,
        cap: usize,
    ) -> Result<Candidates, StoreError> {
        // The terms of recent writes not merged into the index yet, taken before the snapshot
        // is opened: what leaves memory after this is in the snapshot's index (see
        // `store::search_log`).
        let recent: Vec<Vec<String>> = terms
            .iter()
            .map(|term| {
                let mut found = self.search_log.candidates(term, cap);
                let pairs = search::pair_first_prefix(term);
                found.extend(self.search_log.candidates(&pairs, cap));
                found
            })
            .collect();
        let tx = self.begin_read()?;
        let (mut unproven, hits) = {
            let index = t(tx.open_table(schema::SEARCH))?;
            // Longer terms are usually more selective, so they are scanned first, and a later
            // term's scan stops as soon as it cannot beat the driver.
            let mut order: Vec<usize> = (0..terms.len()).collect();
            order.sort_by_key(|&i| std::cmp::Reverse(terms[i].len()));
            // The driver's candidates from memory, and from the index with their times.
            let mut driver: Option<(Vec<String>, Vec<Hit>)> = None;
            for i in order {
                let term = &terms[i];
                let bound = driver.as_ref().map_or(cap, |(r, h)| r.len() + h.len());
                let recent = recent[i].clone();
                let mut hits = Vec::new();
                for prefix in [term.clone(), search::pair_first_prefix(term)] {
                    if recent.len() + hits.len() < bound {
                        scan_prefix(&index, &prefix, bound - recent.len(), &mut hits)?;
                    }
                }
                let beaten = driver.is_some() && recent.len() + hits.len() >= bound;
                if !beaten {
                    driver = Some((recent, hits));
                }
            }
            driver.unwrap_or_default()
        };
        // A term that beat another holds fewer than it; only the first can have been cut.
        let full = unproven.len() + hits.len() >= cap;
        let mut ranking = search::Ranking::new(keep);
        if terms.len() == 1 {
            // The index proves these, but a customer among those to check: its check rules.
            unproven.sort();
            unproven.dedup();
            for (r, time) in &hits {
                if unproven.binary_search(r).is_err() {
                    ranking.offer(*time, r);
                }
            }
        } else {
            unproven.extend(hits.into_iter().map(|(r, _)| r));
            unproven.sort();
            unproven.dedup();
        }
        Ok(Candidates {
            tx,
            ranking,
            unproven,
            full,
        })
    }

    /// One operation by id.
    pub fn operation(&self, id: OperationId) -> Result<Option<Operation>, StoreError> {
        let tx = self.begin_read()?;
        let ids = t(tx.open_table(schema::OP_IDS))?;
        let ops = t(tx.open_table(schema::OPS))?;
        let Some(seq) = t(ids.get(id.as_u128()))? else {
            return Ok(None);
        };
        match t(ops.get(seq.value()))? {
            Some(bytes) => decode(bytes.value()).map(Some),
            None => Ok(None),
        }
    }

    /// Operations in acceptance order, filtered by state and paged by sequence number.
    pub fn operations(&self, filter: &OpFilter) -> Result<Vec<Operation>, StoreError> {
        let tx = self.begin_read()?;
        let ops = t(tx.open_table(schema::OPS))?;
        let start = filter.after_seq.map_or(0, |s| s.saturating_add(1));
        let mut out = Vec::new();
        match filter.state {
            Some(state) => {
                let by_state = t(tx.open_table(schema::OPS_BY_STATE))?;
                let code = state.code();
                for entry in t(by_state.range((code, start)..=(code, u64::MAX)))? {
                    if out.len() >= filter.limit {
                        break;
                    }
                    let (key, _) = t(entry)?;
                    if let Some(bytes) = t(ops.get(key.value().1))? {
                        out.push(decode(bytes.value())?);
                    }
                }
            }
            None => {
                for entry in t(ops.range(start..))? {
                    if out.len() >= filter.limit {
                        break;
                    }
                    let (_, bytes) = t(entry)?;
                    out.push(decode(bytes.value())?);
                }
            }
        }
        Ok(out)
    }

    /// Number of operations in each state.
    pub fn operation_counts(&self) -> Result<Vec<(OpState, u64)>, StoreError> {
        let tx = self.begin_read()?;
        let by_state = t(tx.open_table(schema::OPS_BY_STATE))?;
        let mut out = Vec::new();
        for state in OpState::ALL {
            let code = state.code();
            let n = t(by_state.range((code, 0)..=(code, u64::MAX)))?.count() as u64;
            out.push((state, n));
        }
        Ok(out)
    }

    /// Number of customers in the store (each has a key record; not each a view record).
    pub fn customer_count(&self) -> Result<u64, StoreError> {
        let tx = self.begin_read()?;
        t(t(tx.open_table(schema::CUSTOMER_KEYS))?.len())
    }
}

/// The tables a customer's view and sync state are read from, in one snapshot
/// (`store::views`); the operations table is opened only for a customer with no view record.
struct Views<'tx> {
    tx: &'tx redb::ReadTransaction,
    customers: ReadOnlyTable<schema::CustomerRef, &'static [u8]>,
    customer_ops: ReadOnlyTable<(schema::CustomerRef, u64), u8>,
    ops: Option<ReadOnlyTable<u64, &'static [u8]>>,
}

impl<'tx> Views<'tx> {
    fn open(tx: &'tx redb::ReadTransaction) -> Result<Self, StoreError> {
        Ok(Views {
            tx,
            customers: t(tx.open_table(schema::CUSTOMERS))?,
            customer_ops: t(tx.open_table(schema::CUSTOMER_OPS))?,
            ops: None,
        })
    }

    /// The customer with reference `customer_ref` and its sync state, if there is one.
    fn read(&mut self, customer_ref: &str) -> Result<Option<CustomerRead>, StoreError> {
        let (first_op, sync_state) = operations(&self.customer_ops, customer_ref)?;
        let view = match (t(self.customers.get(customer_ref))?, first_op) {
            (Some(bytes), _) => decode::<CustomerView>(bytes.value())?,
            (None, Some(seq)) => {
                let ops = match &mut self.ops {
                    Some(ops) => ops,
                    none => none.insert(t(self.tx.open_table(schema::OPS))?),
                };
                super::views::created_by(ops, customer_ref, seq)?
            }
            (None, None) => return Ok(None),
        };
        Ok(Some(CustomerRead { view, sync_state }))
    }
}

/// The search index as a search reads it.
type Index = ReadOnlyTable<(&'static str, &'static str), i64>;

/// A customer found in the index, with the time of change its entry holds.
type Hit = (String, i64);

/// A search's candidates, and the snapshot they were read in.
struct Candidates {
    tx: redb::ReadTransaction,
    /// The customers the index proves to match, ranked by the time of change their entries
    /// hold (the best the ranking keeps).
    ranking: search::Ranking,
    /// Customers to check against their key records (from memory, or from index ranges that
    /// match only some of the query's terms); sorted, each once.
    unproven: Vec<String>,
    /// Some source held as many as it was allowed to give: a match may be missing.
    full: bool,
}

/// Most readings of one search, each keeping four times the candidates of the one before (see
/// [`Store::search_within`]).
const MAX_SEARCH_READINGS: usize = 3;

/// Adds the customers of the index entries whose term starts with `prefix` to `found`, with
/// the time of change each entry holds, until it holds `bound`.
fn scan_prefix(
    index: &Index,
    prefix: &str,
    bound: usize,
    found: &mut Vec<Hit>,
) -> Result<(), StoreError> {
    let room = bound.saturating_sub(found.len());
    scan_where(index, prefix, room, starts(prefix), |r, time| {
        found.push((r.to_string(), time));
    })?;
    Ok(())
}

/// As [`scan_prefix`], for the entries of exactly `term`.
fn scan_term(
    index: &Index,
    term: &str,
    bound: usize,
    found: &mut Vec<Hit>,
) -> Result<(), StoreError> {
    let room = bound.saturating_sub(found.len());
    scan_where(
        index,
        term,
        room,
        |t| t == term,
        |r, time| {
            found.push((r.to_string(), time));
        },
    )?;
    Ok(())
}

/// A test of an entry's term: that it starts with `prefix`.
fn starts(prefix: &str) -> impl Fn(&str) -> bool + '_ {
    move |term| term.starts_with(prefix)
}

/// Hands `visit` the customer and time of each index entry from `from` on while its term is
/// `within`, at most `bound` customers, a customer's adjacent entries once; returns how many.
fn scan_where(
    index: &Index,
    from: &str,
    bound: usize,
    within: impl Fn(&str) -> bool,
    mut visit: impl FnMut(&str, i64),
) -> Result<usize, StoreError> {
    let mut visited = 0;
    // The last customer visited, copied into one buffer: no allocation per entry.
    let mut last = String::new();
    for entry in t(index.range((from, "")..))? {
        if visited >= bound {
            break;
        }
        let (key, time) = t(entry)?;
        let (term, customer_ref) = key.value();
        if !within(term) {
            break;
        }
        if visited == 0 || last != customer_ref {
            visit(customer_ref, time.value());
            visited += 1;
            last.clear();
            last.push_str(customer_ref);
        }
    }
    Ok(visited)
}

/// Most distinct first words a pair search visits (one seek each) before it gives up.
const MAX_PAIR_FIRST_WORDS: usize = 64;

/// The pair plan of two terms over the index ([`search::pair_plan`]): one range per distinct
/// first word that begins whichever term begins fewer, each with a second word that begins
/// the other. `None` when both terms begin more than [`MAX_PAIR_FIRST_WORDS`] words.
fn pair_plan<'q>(
    index: &Index,
    a: &'q str,
    b: &'q str,
) -> Result<Option<search::PairPlan<'q>>, StoreError> {
    let next_term = |seek: &str| -> Result<Option<String>, StoreError> {
        let Some(entry) = t(index.range((seek, "")..))?.next() else {
            return Ok(None);
        };
        let (key, _) = t(entry)?;
        Ok(Some(key.value().0.to_string()))
    };
    search::pair_plan(a, b, MAX_PAIR_FIRST_WORDS, next_term)
}

/// The sequence number of a customer's first operation still held, and the sync state of all
/// of them, from one range of the per-customer index.
fn operations(
    customer_ops: &ReadOnlyTable<(schema::CustomerRef, u64), u8>,
    customer_ref: &str,
) -> Result<(Option<u64>, SyncState), StoreError> {
    let mut first = None;
    let mut states = Vec::new();
    for entry in t(customer_ops.range((customer_ref, 0)..=(customer_ref, u64::MAX)))? {
        let (key, code) = t(entry)?;
        first.get_or_insert(key.value().1);
        let code = code.value();
        match OpState::ALL.into_iter().find(|s| s.code() == code) {
            Some(state) => states.push(state),
            None => {
                return Err(StoreError::Encoding(format!(
                    "customer {customer_ref}: unknown operation state code {code}"
                )));
            }
        }
    }
    Ok((first, SyncState::summarise(states)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::NewCustomer;
    use crate::hq::wire::HqCustomerRecord;
    use crate::store::StoreOptions;
    use crate::store::tables::Tables;
    use crate::sync::cdx::copy_from_wire;

    /// HQ's copy of "Mari Tamm{i}", changed at `at`.
    fn mari(i: usize, at: i64) -> crate::store::cdx::HqCopy {
        let record = HqCustomerRecord {
            account_number: format!("C{i}"),
            origin_store_id: None,
            origin_customer_ref: None,
            fields: NewCustomer {
                first_name: "Mari".into(),
                last_name: format!("Tamm{i}"),
                email: None,
                phone: None,
                customer_group: None,
                language: None,
            },
            addresses: Vec::new(),
            contacts: Vec::new(),
            affiliations: Vec::new(),
            attributes: Vec::new(),
            version: 1,
        };
        copy_from_wire(record, "S0001", at)
    }

    #[test]
    fn a_kept_candidate_with_no_customer_makes_the_search_read_again_keeping_more() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb"), &StoreOptions::new(8 << 20)).unwrap();
        let tx = store.begin_write().unwrap();
        {
            let mut tables = Tables::open(&tx).unwrap();
            let copies: Vec<_> = (1..=30).map(|i| mari(i, 1_000 + i as i64)).collect();
            tables.rebase_all(&copies).unwrap();
        }
        tx.commit().unwrap();
        let newest =
            |n: usize| -> Vec<String> { (1..=30).rev().take(n).map(|i| format!("C{i}")).collect() };
        let refs = |found: Vec<CustomerRead>| -> Vec<String> {
            found.into_iter().map(|c| c.view.customer_ref).collect()
        };
        assert_eq!(refs(store.search("mari tamm", 3).unwrap()), newest(3));
        // The three newest lose their views behind the index's back (as a damaged file
        // might): the first reading keeps only them, and reads none.
        let tx = store.begin_write().unwrap();
        {
            let mut customers = tx.open_table(schema::CUSTOMERS).unwrap();
            for r in newest(3) {
                customers.remove(r.as_str()).unwrap();
            }
        }
        tx.commit().unwrap();
        let (found, full) = store.search_within("mari tamm", 3, CANDIDATE_CAP).unwrap();
        assert_eq!(refs(found), vec!["C27", "C26", "C25"]);
        assert!(!full);
        // Too many gone for its readings of one (1, 4 and 16 kept): what it found, none,
        // and that a match may be missing.
        let tx = store.begin_write().unwrap();
        {
            let mut customers = tx.open_table(schema::CUSTOMERS).unwrap();
            for r in newest(27).into_iter().skip(3) {
                customers.remove(r.as_str()).unwrap();
            }
        }
        tx.commit().unwrap();
        let (found, full) = store.search_within("mari tamm", 1, CANDIDATE_CAP).unwrap();
        assert!(found.is_empty());
        assert!(
            full,
            "short after its last reading, it says a match may be missing"
        );
        // Asked for four, its third reading keeps all thirty: the three left, none missing.
        let (found, full) = store.search_within("mari tamm", 4, CANDIDATE_CAP).unwrap();
        assert_eq!(refs(found), vec!["C3", "C2", "C1"]);
        assert!(!full);
    }
}
