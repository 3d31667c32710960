//! What HQ sends down (CDX jobs 1010, 1070, 1110) and what a real-time call brings back, kept
//! in the store. Each package is applied in one transaction: a failed download changes nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};

use redb::{ReadableTable, ReadableTableMetadata};
use serde::{Deserialize, Serialize};

use super::prepare::PreparedNewCustomers;
use super::schema::{self, decode, encode, numeric_order};
use super::tables::Tables;
use super::writer::{CommandError, Outcome, Refusable};
use super::{Store, StoreError};
use crate::domain::features::FeatureSet;
use crate::domain::mode::{ChannelSettings, Held, HeldConfig};
use crate::domain::operation::Conflict;
use crate::domain::view::CustomerView;
use crate::domain::{OpState, OperationId};

/// Job numbers.
pub const JOB_CUSTOMERS: u32 = 1010;
/// Job 1070: channel configuration.
pub const JOB_CHANNEL: u32 = 1070;
/// Job 1110: global configuration.
pub const JOB_GLOBAL: u32 = 1110;

/// Customers of a 1010 download prepared, sorted and written together. Bounds the memory the
/// apply holds beside the download: two chunks at most, each about 70 MB at 100,000 customers
/// (views, key records, about 6 terms per customer).
const APPLY_SORT_CHUNK: usize = 100_000;

/// `copies` in chunks of `chunk`, but for the first few, which grow from an eighth of it by
/// doubling: the writer waits for the first chunk to be prepared, and the preparer (about
/// twice as fast as the writer) keeps one chunk ahead from then on.
fn ramped_chunks(copies: &[HqCopy], chunk: usize) -> impl Iterator<Item = &[HqCopy]> {
    let chunk = chunk.max(1);
    let mut rest = copies;
    let mut next = (chunk / 8).max(1);
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let (this, after) = rest.split_at(next.min(rest.len()));
        rest = after;
        next = (next * 2).min(chunk);
        Some(this)
    })
}

/// A package as held in the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldPackage {
    /// HQ's version.
    pub version: u64,
    /// When the node applied it (Unix ms).
    pub received_at_ms: i64,
    /// When HQ generated it (Unix ms).
    pub generated_at_ms: i64,
    /// The body (1110: a feature set; 1070: channel settings; 1010: a summary).
    pub body: serde_json::Value,
}

/// A customer as HQ holds it, ready to become a customer's base at this node.
#[derive(Debug, Clone)]
pub struct HqCopy {
    /// HQ's account number.
    pub account_number: String,
    /// This store's temporary reference, when this store created the customer.
    pub origin_ref: Option<String>,
    /// HQ's fields and sub-records (`customer_ref` is set by the store).
    pub view: CustomerView,
}

impl Tables<'_> {
    fn held(&self, job: u32) -> Result<Option<HeldPackage>, StoreError> {
        match self.cdx_jobs.get(job).map_err(StoreError::db)? {
            Some(bytes) => decode(bytes.value()).map(Some),
            None => Ok(None),
        }
    }

    /// Records a package unless a newer one is held already.
    fn hold(&mut self, job: u32, package: &HeldPackage) -> Result<bool, StoreError> {
        if self.held(job)?.is_some_and(|h| h.version > package.version) {
            return Ok(false);
        }
        self.cdx_jobs
            .insert(job, encode(package)?.as_slice())
            .map_err(StoreError::db)?;
        Ok(true)
    }

    pub(crate) fn apply_config(
        &mut self,
        job: u32,
        package: &HeldPackage,
    ) -> Result<Refusable, StoreError> {
        Ok(Ok(Outcome::Synced(usize::from(self.hold(job, package)?))))
    }

    pub(crate) fn apply_customers(
        &mut self,
        package: &HeldPackage,
        copies: &[HqCopy],
    ) -> Result<Refusable, StoreError> {
        self.apply_copies(copies, APPLY_SORT_CHUNK)?;
        self.hold(JOB_CUSTOMERS, package)?;
        Ok(Ok(Outcome::Synced(copies.len())))
    }

    /// Applies `copies`, `chunk` at a time; answers how many were written as new customers.
    ///
    /// Most of a first download's work does not depend on the store: a thread of its own
    /// prepares the next chunk as customers new to the store (views encoded, terms computed and
    /// sorted) while this one writes the last, and the two cores share the apply. A chunk with
    /// a customer the store knows, and every chunk after it, is applied customer by customer.
    fn apply_copies(&mut self, copies: &[HqCopy], chunk: usize) -> Result<usize, StoreError> {
        std::thread::scope(|scope| {
            // A rendezvous: the thread holds one chunk ready while this one writes another.
            let (send, receive) = std::sync::mpsc::sync_channel(0);
            let spawned = std::thread::Builder::new()
                .name("outpost-cdx-prepare".into())
                .spawn_scoped(scope, move || {
                    crate::process::yield_to_the_writer();
                    for copies in ramped_chunks(copies, chunk) {
                        if send.send(PreparedNewCustomers::of(copies)).is_err() {
                            return;
                        }
                    }
                });
            // Without the thread there is nothing to receive: every chunk goes the long way.
            let mut prepared = spawned.is_ok().then_some(receive);
            let mut written_new = 0;
            for copies in ramped_chunks(copies, chunk) {
                let new = match prepared.as_ref().map(std::sync::mpsc::Receiver::recv) {
                    Some(Ok(Ok(Some(new)))) if self.all_new(copies, &new)? => Some(new),
                    _ => None,
                };
                match new {
                    Some(new) => {
                        self.put_new_customers(&new)?;
                        written_new += copies.len();
                    }
                    None => {
                        // Dropping the receiver stops the thread.
                        prepared = None;
                        self.rebase_all(copies)?;
                    }
                }
            }
            Ok(written_new)
        })
    }

    /// Rebases each of `copies` in turn, their search index writes held back and applied in
    /// key order.
    pub(crate) fn rebase_all(&mut self, copies: &[HqCopy]) -> Result<(), StoreError> {
        self.defer_terms();
        for copy in copies {
            self.rebase(copy)?;
        }
        self.flush_terms()
    }

    /// Whether every one of `copies` (prepared as `new`) is new to the store:
    /// [`Tables::rebase`] would give it its account number as its reference and find no view
    /// there.
    fn all_new(&self, copies: &[HqCopy], new: &PreparedNewCustomers) -> Result<bool, StoreError> {
        // Only a customer made at this store comes with its reference here.
        for copy in copies {
            if let Some(r) = &copy.origin_ref
                && self.has_customer(r)?
            {
                return Ok(false);
            }
        }
        // Only a customer known here by another reference has an account record.
        if !self.accounts.is_empty().map_err(StoreError::db)? {
            for copy in copies {
                let account = copy.account_number.as_str();
                if self
                    .accounts
                    .get(account)
                    .map_err(StoreError::db)?
                    .is_some()
                {
                    return Ok(false);
                }
            }
        }
        // The views under the chunk's references: one walk of the range they span (a download
        // into new ground finds it empty), unless it holds more views than the chunk has
        // customers; then a look-up each.
        let (Some(first), Some(last)) = (new.customers.first(), new.customers.last()) else {
            return Ok(true);
        };
        let mut keys = new.customers.iter().map(|c| c.key.as_str()).peekable();
        let range = self
            .customers
            .range(first.key.as_str()..=last.key.as_str())
            .map_err(StoreError::db)?;
        for (walked, entry) in range.enumerate() {
            if walked == new.customers.len() {
                for c in &new.customers {
                    let view = self.customers.get(c.key.as_str()).map_err(StoreError::db)?;
                    if view.is_some() {
                        return Ok(false);
                    }
                }
                return Ok(true);
            }
            let (held, _) = entry.map_err(StoreError::db)?;
            let held = held.value();
            while keys
                .next_if(|k| numeric_order(k.as_bytes(), held.as_bytes()).is_lt())
                .is_some()
            {}
            if keys.peek() == Some(&held) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Makes HQ's copy the customer's base and rebuilds the view on top of it: one record per
    /// customer, whether it was created here (matched by origin reference) or at HQ.
    pub(crate) fn rebase(&mut self, copy: &HqCopy) -> Result<String, StoreError> {
        let (local_ref, made_here) = match &copy.origin_ref {
            Some(r) if self.has_customer(r)? => (r.clone(), true),
            _ => match self
                .accounts
                .get(copy.account_number.as_str())
                .map_err(StoreError::db)?
            {
                Some(r) => (r.value().to_string(), false),
                None => (copy.account_number.clone(), false),
            },
        };
        // `local_ref` is the customer's reference by now: no look-up by account number. Only a
        // customer made here may have no view record (`store::views`); one known by its account
        // number got it with HQ's confirmation, so the rest of a download reads one record.
        let old = if made_here {
            self.view(&local_ref)?
        } else {
            self.view_record(&local_ref)?
        };
        let mut base = copy.view.clone();
        base.customer_ref.clone_from(&local_ref);
        base.account_number = Some(copy.account_number.clone());
        if let Some(old) = &old {
            base.created_at_ms = old.created_at_ms;
        }
        let json = encode(&base)?;
        // With no local change waiting for HQ (every customer of a first full download; one new
        // to this store has no operations), the view is HQ's copy as it stands: written from
        // the same bytes, nothing recomputed. The base is then the view itself: it gets a record
        // of its own only with the customer's first local change (`Tables::keep_base`), and one
        // it has already is kept current.
        if old.is_none() || !self.has_unconfirmed(&local_ref)? {
            if old.is_some()
                && self
                    .bases
                    .get(local_ref.as_str())
                    .map_err(StoreError::db)?
                    .is_some()
            {
                self.bases
                    .insert(local_ref.as_str(), json.as_slice())
                    .map_err(StoreError::db)?;
            }
            self.put_view_json(old.as_ref(), &base, &json)?;
            return Ok(local_ref);
        }
        self.bases
            .insert(local_ref.as_str(), json.as_slice())
            .map_err(StoreError::db)?;
        // Local changes HQ has not confirmed still apply on top; if one no longer does (HQ
        // removed what it edits), HQ's copy shows until HQ answers that operation.
        let view = match self.compute_view(&local_ref, None)? {
            Ok(Some(v)) => v,
            _ => base,
        };
        self.put_view(old.as_ref(), &view)?;
        Ok(local_ref)
    }

    pub(crate) fn complete_realtime(
        &mut self,
        id: OperationId,
        copy: &HqCopy,
        conflicts: &[Conflict],
        now: i64,
    ) -> Result<Refusable, StoreError> {
        let Some(mut op) = self.op_by_id(id)? else {
            return Ok(Err(CommandError::NotFound {
                what: "operation",
                id: id.to_string(),
            }));
        };
        if op.state != OpState::Completed {
            op.conflicts = conflicts.to_vec();
            self.set_state(&mut op, OpState::Completed, None, now)?;
        }
        self.rebase(copy)?;
        let Some(view) = self.customer(&op.customer_ref)? else {
            return Err(StoreError::Encoding(format!(
                "customer {} vanished",
                op.customer_ref
            )));
        };
        Ok(Ok(Outcome::Updated(Box::new(op)).with_view(view)))
    }

    /// Forgets an operation HQ refused in a real-time call: the till was told, nothing is
    /// queued. Only a pending operation can go (one HQ staged is HQ's to answer).
    pub(crate) fn discard(&mut self, id: OperationId) -> Result<Refusable, StoreError> {
        let Some(op) = self.op_by_id(id)? else {
            return Ok(Err(CommandError::NotFound {
                what: "operation",
                id: id.to_string(),
            }));
        };
        if op.state != OpState::Pending {
            return Ok(Err(CommandError::Conflict(format!(
                "only a pending operation can be discarded; this one is {}",
                op.state.as_str()
            ))));
        }
        let old = self.customer(&op.customer_ref)?;
        self.ops.remove(op.seq).map_err(StoreError::db)?;
        self.op_ids
            .remove(op.id.as_u128())
            .map_err(StoreError::db)?;
        self.by_state
            .remove((op.state.code(), op.seq))
            .map_err(StoreError::db)?;
        self.customer_ops
            .remove((op.customer_ref.as_str(), op.seq))
            .map_err(StoreError::db)?;
        match (self.compute_view(&op.customer_ref, None)?, old) {
            (Ok(Some(view)), old) => self.put_view(old.as_ref(), &view)?,
            (_, Some(old)) => self.remove_view(&old)?,
            (_, None) => {}
        }
        Ok(Ok(Outcome::Synced(1)))
    }
}

/// The configuration held, as last read from the store, with the generation it was read at.
#[derive(Default)]
pub(crate) struct HeldCache {
    /// Bumped by the writer after each commit of a configuration package.
    generation: AtomicU64,
    value: RwLock<Option<(u64, HeldConfig)>>,
}

/// What the node holds of one CDX job, for diagnostics.
#[derive(Debug, Clone, Serialize)]
pub struct JobHeld {
    /// The job.
    pub job: u32,
    /// The package held, if any.
    pub held: Option<HeldPackage>,
}

impl Store {
    /// The packages held for jobs 1010, 1070 and 1110.
    pub fn cdx_jobs(&self) -> Result<Vec<JobHeld>, StoreError> {
        let tx = self.begin_read()?;
        let table = tx.open_table(schema::CDX_JOBS).map_err(StoreError::db)?;
        let mut out = Vec::new();
        for job in [JOB_CUSTOMERS, JOB_CHANNEL, JOB_GLOBAL] {
            let held = match table.get(job).map_err(StoreError::db)? {
                Some(bytes) => Some(decode::<HeldPackage>(bytes.value())?),
                None => None,
            };
            out.push(JobHeld { job, held });
        }
        Ok(out)
    }

    /// The configuration the mode decision uses: jobs 1110 and 1070 as held, however old.
    /// Every till write asks for it, so it is kept in memory and read again from the store only
    /// after the writer committed a new package.
    pub fn held_config(&self) -> Result<HeldConfig, StoreError> {
        let generation = self.held.generation.load(Ordering::Acquire);
        if let Some(config) = self.held_config_cached() {
            return Ok(config);
        }
        let fresh = self.read_held_config()?;
        let mut cached = self
            .held
            .value
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        // A package committed since `generation` was read may be missing from `fresh`: then it
        // is answered once but not kept.
        if self.held.generation.load(Ordering::Acquire) == generation {
            *cached = Some((generation, fresh.clone()));
        }
        Ok(fresh)
    }

    /// The configuration held, if it is in memory and current: no read of the store, so a
    /// caller on an async task need not go to the blocking pool for it.
    pub fn held_config_cached(&self) -> Option<HeldConfig> {
        let generation = self.held.generation.load(Ordering::Acquire);
        match &*self
            .held
            .value
            .read()
            .unwrap_or_else(PoisonError::into_inner)
        {
            Some((g, config)) if *g == generation => Some(config.clone()),
            _ => None,
        }
    }

    /// Called by the writer after it committed a configuration package.
    pub(crate) fn held_config_changed(&self) {
        self.held.generation.fetch_add(1, Ordering::AcqRel);
    }

    fn read_held_config(&self) -> Result<HeldConfig, StoreError> {
        let mut config = HeldConfig::default();
        for JobHeld { job, held } in self.cdx_jobs()? {
            let Some(p) = held else { continue };
            match job {
                JOB_GLOBAL => {
                    let value: FeatureSet = serde_json::from_value(p.body)
                        .map_err(|e| StoreError::Encoding(e.to_string()))?;
                    config.global = Some(Held {
                        version: p.version,
                        received_at_ms: p.received_at_ms,
                        value,
                    });
                }
                JOB_CHANNEL => {
                    let value: ChannelSettings = serde_json::from_value(p.body)
                        .map_err(|e| StoreError::Encoding(e.to_string()))?;
                    config.channel = Some(Held {
                        version: p.version,
                        received_at_ms: p.received_at_ms,
                        value,
                    });
                }
                _ => {}
            }
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::NewCustomer;
    use crate::hq::wire::HqCustomerRecord;
    use crate::store::StoreOptions;
    use crate::sync::cdx::copy_from_wire;

    const STORE: &str = "S0001";
    const NOW: i64 = 1_796_000_000_000;

    /// HQ's copy of customer `i`, created at `origin` (this store's reference) if given.
    fn copy(i: usize, origin: Option<&str>) -> HqCopy {
        let names = ["Mari", "Õie", "Jaan", "Tiit", "Malle"];
        let record = HqCustomerRecord {
            account_number: format!("C{i}"),
            origin_store_id: origin.map(|_| STORE.to_string()),
            origin_customer_ref: origin.map(str::to_string),
            fields: NewCustomer {
                first_name: names[i % names.len()].into(),
                last_name: format!("Tamm{}", i % 7),
                email: Some(format!("c{i}@example.ee")),
                phone: Some(format!("+372 5{:06}", i * 7919 % 1_000_000)),
                customer_group: Some("RETAIL".into()),
                language: None,
            },
            addresses: Vec::new(),
            contacts: Vec::new(),
            affiliations: Vec::new(),
            attributes: Vec::new(),
            version: i as u64,
        };
        copy_from_wire(record, STORE, NOW + i as i64)
    }

    /// Every row of the tables a download writes, after `before` and then `copies` were
    /// applied (`chunk` at a time, or each customer in turn when `chunk` is `None`), and how
    /// many customers went in as new ones.
    fn after(before: &[HqCopy], copies: &[HqCopy], chunk: Option<usize>) -> (Vec<String>, usize) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store =
            Store::open(&dir.path().join("s.redb"), &StoreOptions::new(8 << 20)).expect("store");
        let tx = store.begin_write().expect("write");
        let written_new = {
            let mut tables = Tables::open(&tx).expect("tables");
            tables.rebase_all(before).expect("before");
            match chunk {
                Some(chunk) => tables.apply_copies(copies, chunk).expect("applied"),
                None => tables.rebase_all(copies).map(|()| 0).expect("applied"),
            }
        };
        tx.commit().expect("commit");
        let tx = store.begin_read().expect("read");
        let mut rows = Vec::new();
        for table in [
            schema::CUSTOMERS,
            schema::CUSTOMER_KEYS,
            schema::CUSTOMER_BASES,
        ] {
            let table = tx.open_table(table).expect("table");
            for row in table.iter().expect("rows") {
                let (k, v) = row.expect("row");
                rows.push(format!("{} {:?}", k.value(), v.value()));
            }
        }
        let search = tx.open_table(schema::SEARCH).expect("search");
        for row in search.iter().expect("rows") {
            let (k, v) = row.expect("row");
            rows.push(format!("search {:?} {}", k.value(), v.value()));
        }
        let accounts = tx.open_table(schema::ACCOUNTS).expect("accounts");
        for row in accounts.iter().expect("rows") {
            let (k, v) = row.expect("row");
            rows.push(format!("account {} {}", k.value(), v.value()));
        }
        (rows, written_new)
    }

    #[test]
    fn a_first_download_written_as_new_customers_is_what_rebasing_each_writes() {
        // Chunks of 8, 16, 32, then 64: later chunks' terms fall between earlier ones'.
        let copies: Vec<HqCopy> = (1..=250).map(|i| copy(i, None)).collect();
        let (each, _) = after(&[], &copies, None);
        let (chunked, written_new) = after(&[], &copies, Some(64));
        assert_eq!(written_new, 250);
        assert_eq!(chunked.len(), each.len());
        assert_eq!(chunked, each);
        assert!(
            each.iter()
                .any(|r| r.starts_with("search (\"c250@example.ee\""))
        );
    }

    #[test]
    fn a_chunk_with_a_known_customer_is_rebased_and_so_are_the_rest() {
        let before = [copy(150, None), copy(7, None)];
        let mut copies: Vec<HqCopy> = (1..=250).map(|i| copy(i, None)).collect();
        // HQ's copy of a customer known here changed: its terms are replaced, not added to.
        copies[149].view.fields.last_name = "Kask".into();
        let (each, _) = after(&before, &copies, None);
        let (chunked, written_new) = after(&before, &copies, Some(64));
        // C7 is in the first chunk.
        assert_eq!(written_new, 0);
        assert_eq!(chunked, each);
        let before = [copy(150, None)];
        let (each, _) = after(&before, &copies, None);
        let (chunked, written_new) = after(&before, &copies, Some(64));
        // Chunks C1..C8, C9..C24, C25..C56, C57..C120, C121..C184: C150 is in the fifth.
        assert_eq!(written_new, 120);
        assert_eq!(chunked, each);
        assert!(
            !each
                .iter()
                .any(|r| r.contains("tamm3") && r.contains("\"C150\""))
        );
    }

    #[test]
    fn a_chunk_whose_references_span_many_views_is_checked_one_by_one() {
        // Twenty customers whose references sort between C3 and C4: more views in the first
        // chunk's range (C1..C8) than it has customers.
        let mut before: Vec<HqCopy> = (0..20).map(|j| copy(9000 + j, None)).collect();
        for (j, c) in before.iter_mut().enumerate() {
            c.account_number = format!("C3-{j}");
        }
        let copies: Vec<HqCopy> = (1..=100).map(|i| copy(i, None)).collect();
        let (each, _) = after(&before, &copies, None);
        let (chunked, written_new) = after(&before, &copies, Some(64));
        assert_eq!(written_new, 100);
        assert_eq!(chunked, each);
        // And one of them is a customer of the download.
        before[7].account_number = "C5".into();
        let (each, _) = after(&before, &copies, None);
        let (chunked, written_new) = after(&before, &copies, Some(64));
        assert_eq!(written_new, 0);
        assert_eq!(chunked, each);
    }

    #[test]
    fn a_customer_made_here_or_given_twice_is_not_written_as_new() {
        let before = [copy(9000, None)];
        let mut copies: Vec<HqCopy> = (1..=100).map(|i| copy(i, None)).collect();
        // HQ's copy of a customer this store created (here under reference C9000).
        copies[3] = copy(4, Some("C9000"));
        let (each, _) = after(&before, &copies, None);
        let (chunked, written_new) = after(&before, &copies, Some(64));
        assert_eq!(written_new, 0);
        assert_eq!(chunked, each);
        // A customer made here and confirmed: known by its account number, under another
        // reference.
        let before = [copy(9000, None), copy(4, Some("C9000"))];
        let copies: Vec<HqCopy> = (1..=100).map(|i| copy(i, None)).collect();
        let (each, _) = after(&before, &copies, None);
        let (chunked, written_new) = after(&before, &copies, Some(64));
        assert_eq!(written_new, 0);
        assert_eq!(chunked, each);
        assert!(each.iter().any(|r| r == "account C4 C9000"));
        // The same account twice in one chunk: the second is a change of the first.
        let mut copies: Vec<HqCopy> = (1..=100).map(|i| copy(i, None)).collect();
        copies[90] = copy(70, None);
        copies[90].view.fields.first_name = "Teine".into();
        let (each, _) = after(&[], &copies, None);
        let (chunked, written_new) = after(&[], &copies, Some(64));
        // Both are in the fourth chunk, C57..C120.
        assert_eq!(written_new, 56);
        assert_eq!(chunked, each);
    }
}
