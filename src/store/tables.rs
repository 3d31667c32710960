//! The tables of one write transaction, and the primitive writes every command is made of
//! (each keeps the operation indexes and the search index in step).

use std::ops::Bound;

use redb::{ReadableTable, Table, WriteTransaction};

use super::StoreError;
use super::op_record::OpRecord;
use super::prepare::{AssignedCreate, PreparedNewCustomers};
use super::schema::{self, CustomerRef, decode, encode};
use crate::domain::operation::OpError;
use crate::domain::search;
use crate::domain::view::CustomerView;
use crate::domain::{OpState, Operation, OperationId};

/// Every table, open in one write transaction.
pub(crate) struct Tables<'tx> {
    pub meta: Table<'tx, &'static str, u64>,
    pub ops: Table<'tx, u64, &'static [u8]>,
    pub op_ids: Table<'tx, u128, u64>,
    pub by_state: Table<'tx, (u8, u64), ()>,
    pub customers: Table<'tx, CustomerRef, &'static [u8]>,
    pub customer_keys: Table<'tx, CustomerRef, &'static [u8]>,
    pub customer_ops: Table<'tx, (CustomerRef, u64), u8>,
    pub search: Table<'tx, (&'static str, &'static str), i64>,
    pub accounts: Table<'tx, &'static str, &'static str>,
    pub bases: Table<'tx, CustomerRef, &'static [u8]>,
    pub cdx_jobs: Table<'tx, u32, &'static [u8]>,
    /// Search index writes held back to be applied in key order (bulk applies): (term,
    /// customer reference, the time of change to put in or `None` to take it out), in the
    /// order they were made.
    deferred_terms: Option<Vec<(String, String, Option<i64>)>>,
    /// Whether this transaction wrote the main search index itself (not through the log).
    pub wrote_index: bool,
    /// Term changes of this transaction that go to the search terms log (every write but a
    /// bulk apply), in the order they were made.
    term_changes: Vec<schema::TermChange>,
    /// Customer creates taken and not yet written ([`Tables::add_create`]).
    creates: PendingCreates,
}

/// The rows of customer creates held back, to go into their tables together: a group's creates
/// hold consecutive keys in each of the five tables, so each table takes them as one run
/// through a cursor ([`insert_sorted`]) instead of a descent from its root per row.
#[derive(Default)]
struct PendingCreates {
    /// Sequence number and operation record.
    ops: Vec<(u64, Vec<u8>)>,
    /// Operation id and sequence number.
    ids: Vec<(u128, u64)>,
    /// Customer reference, the create's sequence number, and the key record.
    customers: Vec<(String, u64, Vec<u8>)>,
}

impl<'tx> Tables<'tx> {
    pub fn open(tx: &'tx WriteTransaction) -> Result<Self, StoreError> {
        Ok(Tables {
            meta: tx.open_table(schema::META).map_err(StoreError::db)?,
            ops: tx.open_table(schema::OPS).map_err(StoreError::db)?,
            op_ids: tx.open_table(schema::OP_IDS).map_err(StoreError::db)?,
            by_state: tx
                .open_table(schema::OPS_BY_STATE)
                .map_err(StoreError::db)?,
            customers: tx.open_table(schema::CUSTOMERS).map_err(StoreError::db)?,
            customer_keys: tx
                .open_table(schema::CUSTOMER_KEYS)
                .map_err(StoreError::db)?,
            customer_ops: tx
                .open_table(schema::CUSTOMER_OPS)
                .map_err(StoreError::db)?,
            search: tx.open_table(schema::SEARCH).map_err(StoreError::db)?,
            accounts: tx.open_table(schema::ACCOUNTS).map_err(StoreError::db)?,
            bases: tx
                .open_table(schema::CUSTOMER_BASES)
                .map_err(StoreError::db)?,
            cdx_jobs: tx.open_table(schema::CDX_JOBS).map_err(StoreError::db)?,
            deferred_terms: None,
            wrote_index: false,
            term_changes: Vec::new(),
            creates: PendingCreates::default(),
        })
    }

    /// Takes a customer create made at `time`: its operation, the operation's index entries and
    /// the customer's key record are held back until [`Tables::flush_creates`]; its search
    /// terms go to the log as any write's. Until that flush, nothing may read the operation
    /// tables or the key records (the writer flushes before every command that is not a plain
    /// create, and before the commit).
    pub fn add_create(&mut self, create: AssignedCreate, time: i64) -> Result<(), StoreError> {
        let AssignedCreate { record, terms } = create;
        debug_assert_eq!(record.state, OpState::Pending);
        let pending = &mut self.creates;
        pending.ops.push((record.seq, encode(&record)?));
        pending.ids.push((record.id.as_u128(), record.seq));
        pending.customers.push((
            record.customer_ref.clone(),
            record.seq,
            schema::encode_keys(time, &terms),
        ));
        self.change_terms(&record.customer_ref, Vec::new(), terms, time)
    }

    /// Writes the creates held back by [`Tables::add_create`].
    pub fn flush_creates(&mut self) -> Result<(), StoreError> {
        if self.creates.ops.is_empty() {
            return Ok(());
        }
        let PendingCreates {
            ops,
            mut ids,
            customers,
        } = std::mem::take(&mut self.creates);
        // Sequence numbers rise, and so do the references made of them; ids are random within
        // one millisecond.
        ids.sort_unstable();
        let pending = OpState::Pending.code();
        let rows: Vec<(u64, &[u8])> = ops.iter().map(|(seq, r)| (*seq, r.as_slice())).collect();
        insert_sorted(&mut self.ops, &rows)?;
        insert_sorted(&mut self.op_ids, &ids)?;
        let states: Vec<((u8, u64), ())> =
            ops.iter().map(|(seq, _)| ((pending, *seq), ())).collect();
        insert_sorted(&mut self.by_state, &states)?;
        let mut customer_ops: Vec<((&str, u64), u8)> = customers
            .iter()
            .map(|(customer, seq, _)| ((customer.as_str(), *seq), pending))
            .collect();
        let mut keys: Vec<(&str, &[u8])> = customers
            .iter()
            .map(|(customer, _, keys)| (customer.as_str(), keys.as_slice()))
            .collect();
        // In the tables' own order of references (digit runs as numbers).
        let order = |a: &str, b: &str| schema::numeric_order(a.as_bytes(), b.as_bytes());
        customer_ops.sort_by(|a, b| order(a.0.0, b.0.0).then(a.0.1.cmp(&b.0.1)));
        keys.sort_by(|a, b| order(a.0, b.0));
        insert_sorted(&mut self.customer_ops, &customer_ops)?;
        insert_sorted(&mut self.customer_keys, &keys)?;
        Ok(())
    }

    /// Writes customers new to the store (`Tables::apply_customers` checked that they are): their
    /// view records, key records and search terms, each table's rows as one sorted run. The
    /// terms go straight into the main index, as a bulk apply's held-back terms do.
    ///
    /// The views and key records go in on a second thread while this one writes the terms:
    /// redb lets separate tables of one write transaction be written from separate threads, and
    /// the terms alone take most of the time.
    pub fn put_new_customers(&mut self, new: &PreparedNewCustomers) -> Result<(), StoreError> {
        let terms: Vec<((&str, &str), Option<i64>)> = new
            .index_entries()
            .map(|(key, time)| (key, Some(time)))
            .collect();
        self.wrote_index |= !terms.is_empty();
        let (customers, customer_keys) = (&mut self.customers, &mut self.customer_keys);
        let search = &mut self.search;
        let (terms, records) = std::thread::scope(|scope| {
            let records = std::thread::Builder::new()
                .name("outpost-cdx-views".into())
                .spawn_scoped(scope, move || {
                    crate::process::yield_to_the_writer();
                    put_new_records(customers, customer_keys, new)
                });
            let terms = write_terms_sorted(search, &terms);
            let records = records.ok().map(|thread| {
                thread
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            });
            (terms, records)
        });
        terms?;
        match records {
            Some(records) => records,
            // No thread to be had: the same writes, after the terms.
            None => put_new_records(&mut self.customers, &mut self.customer_keys, new),
        }
    }

    /// The term changes for the search terms log, taken out of the transaction's tables.
    pub fn take_term_changes(&mut self) -> Vec<schema::TermChange> {
        std::mem::take(&mut self.term_changes)
    }

    /// From now on, search index writes are held back until [`Tables::flush_terms`]. Nothing
    /// may read the search index meanwhile.
    pub fn defer_terms(&mut self) {
        self.deferred_terms.get_or_insert_with(Vec::new);
    }

    /// Applies the search index writes held back, in key order (a B-tree takes sorted inserts
    /// far faster than scattered ones: each leaf is visited once per run, not once per key),
    /// and stops holding them back.
    pub fn flush_terms(&mut self) -> Result<(), StoreError> {
        let Some(mut writes) = self.deferred_terms.take() else {
            return Ok(());
        };
        // Stable: writes of the same key keep their order, so the last one wins.
        writes.sort_by(|a, b| (a.0.as_str(), a.1.as_str()).cmp(&(b.0.as_str(), b.1.as_str())));
        self.wrote_index |= !writes.is_empty();
        let writes: Vec<_> = writes
            .iter()
            .map(|(term, key, put)| ((term.as_str(), key.as_str()), *put))
            .collect();
        write_terms_sorted(&mut self.search, &writes)
    }

    /// Records that `customer` lost the terms `removed` and has `added` as of `updated_at_ms`:
    /// in key order with the bulk apply's writes when those are held back, else as one row of
    /// the search terms log (merged into the main index later, see `store::search_log`).
    ///
    /// A removed term also leaves the main index at once, in this transaction: the index never
    /// holds a term its customer lacks in the same snapshot, so a search may trust what a range
    /// of it proves (see `Store::search`). The log's merge then checks its entries against the
    /// key records, as after any direct write of the index.
    fn change_terms(
        &mut self,
        customer: &str,
        removed: Vec<String>,
        added: Vec<String>,
        updated_at_ms: i64,
    ) -> Result<(), StoreError> {
        if removed.is_empty() && added.is_empty() {
            return Ok(());
        }
        if let Some(deferred) = &mut self.deferred_terms {
            let writes = removed.into_iter().map(|t| (t, None));
            let writes = writes.chain(added.into_iter().map(|t| (t, Some(updated_at_ms))));
            deferred.extend(writes.map(|(t, put)| (t, customer.to_string(), put)));
            return Ok(());
        }
        for term in &removed {
            self.search
                .remove((term.as_str(), customer))
                .map_err(StoreError::db)?;
            self.wrote_index = true;
        }
        self.term_changes.push(schema::TermChange {
            customer_ref: customer.to_string(),
            added,
            removed,
            updated_at_ms,
        });
        Ok(())
    }

    /// Moves an operation to `state`, keeping the by-state and per-customer indexes in step.
    pub fn set_state(
        &mut self,
        op: &mut Operation,
        state: OpState,
        error: Option<OpError>,
        now: i64,
    ) -> Result<(), StoreError> {
        self.move_state(op.seq, &op.customer_ref, op.state, state)?;
        op.state = state;
        op.error = error;
        op.updated_at_ms = now;
        self.ops
            .insert(op.seq, encode(op)?.as_slice())
            .map_err(StoreError::db)?;
        Ok(())
    }

    /// As [`Tables::set_state`], for an operation read as an [`OpRecord`].
    pub fn set_record_state(
        &mut self,
        record: &mut OpRecord,
        state: OpState,
        error: Option<OpError>,
        now: i64,
    ) -> Result<(), StoreError> {
        self.move_state(record.seq, &record.customer_ref, record.state, state)?;
        record.state = state;
        record.error = error;
        record.updated_at_ms = now;
        self.ops
            .insert(record.seq, encode(record)?.as_slice())
            .map_err(StoreError::db)?;
        Ok(())
    }

    /// Moves operation `seq` of `customer` from state `from` to `to` in the by-state and
    /// per-customer indexes.
    fn move_state(
        &mut self,
        seq: u64,
        customer: &str,
        from: OpState,
        to: OpState,
    ) -> Result<(), StoreError> {
        if from == to {
            return Ok(());
        }
        self.by_state
            .remove((from.code(), seq))
            .map_err(StoreError::db)?;
        self.by_state
            .insert((to.code(), seq), ())
            .map_err(StoreError::db)?;
        self.customer_ops
            .insert((customer, seq), to.code())
            .map_err(StoreError::db)?;
        Ok(())
    }

    /// Writes a new operation and every index of it.
    pub fn insert_op(&mut self, op: &Operation) -> Result<(), StoreError> {
        self.ops
            .insert(op.seq, encode(op)?.as_slice())
            .map_err(StoreError::db)?;
        self.op_ids
            .insert(op.id.as_u128(), op.seq)
            .map_err(StoreError::db)?;
        self.by_state
            .insert((op.state.code(), op.seq), ())
            .map_err(StoreError::db)?;
        self.customer_ops
            .insert((op.customer_ref.as_str(), op.seq), op.state.code())
            .map_err(StoreError::db)?;
        Ok(())
    }

    pub fn op_by_id(&self, id: OperationId) -> Result<Option<Operation>, StoreError> {
        self.op_bytes_by_id(id, decode)
    }

    /// As [`Tables::op_by_id`], its payload left encoded.
    pub fn op_record_by_id(&self, id: OperationId) -> Result<Option<OpRecord>, StoreError> {
        self.op_bytes_by_id(id, decode)
    }

    /// Operation `id`'s stored record, decoded by `decode`.
    fn op_bytes_by_id<T>(
        &self,
        id: OperationId,
        decode: impl FnOnce(&[u8]) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        let Some(seq) = self.op_ids.get(id.as_u128()).map_err(StoreError::db)? else {
            return Ok(None);
        };
        let seq = seq.value();
        let Some(bytes) = self.ops.get(seq).map_err(StoreError::db)? else {
            return Ok(None);
        };
        decode(bytes.value()).map(Some)
    }

    /// The customer by temporary reference or HQ account number.
    pub fn customer(&self, key: &str) -> Result<Option<CustomerView>, StoreError> {
        if let Some(view) = self.view(key)? {
            return Ok(Some(view));
        }
        let Some(customer_ref) = self.accounts.get(key).map_err(StoreError::db)? else {
            return Ok(None);
        };
        let customer_ref = customer_ref.value().to_string();
        self.view(&customer_ref)
    }

    /// The customer's view by its reference: its view record, or the view its create makes
    /// (`store::views`).
    pub fn view(&self, customer_ref: &str) -> Result<Option<CustomerView>, StoreError> {
        match self.view_record(customer_ref)? {
            Some(view) => Ok(Some(view)),
            None => super::views::created(&self.customer_ops, &self.ops, customer_ref),
        }
    }

    /// The customer's view record, if it has one.
    pub fn view_record(&self, customer_ref: &str) -> Result<Option<CustomerView>, StoreError> {
        match self.customers.get(customer_ref).map_err(StoreError::db)? {
            Some(bytes) => decode(bytes.value()).map(Some),
            None => Ok(None),
        }
    }

    /// Whether a customer exists under this reference (every customer has a key record).
    pub fn has_customer(&self, customer_ref: &str) -> Result<bool, StoreError> {
        Ok(self
            .customer_keys
            .get(customer_ref)
            .map_err(StoreError::db)?
            .is_some())
    }

    /// Whether the customer has operations HQ has not confirmed (read from the per-customer
    /// index, without decoding them).
    pub fn has_unconfirmed(&self, customer_ref: &str) -> Result<bool, StoreError> {
        let completed = OpState::Completed.code();
        for entry in self
            .customer_ops
            .range((customer_ref, 0)..=(customer_ref, u64::MAX))
            .map_err(StoreError::db)?
        {
            let (_, state) = entry.map_err(StoreError::db)?;
            if state.value() != completed {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The customer's operations still held at the node, in acceptance order.
    pub fn customer_operations(&self, customer_ref: &str) -> Result<Vec<Operation>, StoreError> {
        let mut out = Vec::new();
        let range = self
            .customer_ops
            .range((customer_ref, 0)..=(customer_ref, u64::MAX))
            .map_err(StoreError::db)?;
        for entry in range {
            let (key, _) = entry.map_err(StoreError::db)?;
            let seq = key.value().1;
            if let Some(bytes) = self.ops.get(seq).map_err(StoreError::db)? {
                out.push(decode(bytes.value())?);
            }
        }
        Ok(out)
    }

    /// Before a customer's first local change: a customer that came down with job 1010 and
    /// was never changed here has no base record, its view being its base; the change is about
    /// to make them differ, so the view is kept as the base.
    pub fn keep_base(&mut self, view: &CustomerView) -> Result<(), StoreError> {
        let key = view.customer_ref.as_str();
        if self.bases.get(key).map_err(StoreError::db)?.is_some() || self.has_unconfirmed(key)? {
            // It has a base, or it is a local create HQ has not confirmed (no base yet).
            return Ok(());
        }
        self.bases
            .insert(key, encode(view)?.as_slice())
            .map_err(StoreError::db)?;
        Ok(())
    }

    /// The customer as HQ confirmed it, with the operations HQ confirmed since folded in: the
    /// base the operations still unconfirmed are applied on. `None` for a local create HQ has
    /// not confirmed. (A customer with nothing unconfirmed may have no base record: its view
    /// is its base, see [`Tables::keep_base`].)
    pub fn customer_base(&self, customer_ref: &str) -> Result<Option<CustomerView>, StoreError> {
        match self.bases.get(customer_ref).map_err(StoreError::db)? {
            Some(bytes) => decode(bytes.value()).map(Some),
            None => Ok(None),
        }
    }

    /// The customer's view recomputed from its base (what HQ confirmed) and its operations HQ
    /// has not confirmed, in order, with `substitute` standing in for the stored operation of
    /// the same sequence number. `Ok(Err(_))` when an operation no longer applies.
    pub fn compute_view(
        &self,
        customer_ref: &str,
        substitute: Option<&Operation>,
    ) -> Result<Result<Option<CustomerView>, crate::domain::FieldError>, StoreError> {
        let base = self.customer_base(customer_ref)?;
        let mut ops = self.customer_operations(customer_ref)?;
        ops.retain(|o| o.state != OpState::Completed);
        if let Some(sub) = substitute {
            for o in ops.iter_mut().filter(|o| o.seq == sub.seq) {
                *o = sub.clone();
            }
        }
        let old = self.customer(customer_ref)?;
        Ok(CustomerView::rebuild(base, ops.iter()).map(|view| {
            view.map(|mut v| {
                if let Some(old) = &old {
                    v.created_at_ms = old.created_at_ms;
                    if v.account_number.is_none() {
                        v.account_number.clone_from(&old.account_number);
                    }
                }
                v
            })
        }))
    }

    /// Folds a confirmed operation into the customer's base. Its payload is decoded only when
    /// the base needs it: a confirmed create with nothing after it does not.
    pub fn fold_into_base(&mut self, record: &OpRecord) -> Result<(), StoreError> {
        let customer = record.customer_ref.as_str();
        let base = match self.customer_base(customer)? {
            Some(mut base) => {
                // An operation HQ confirmed but that no longer folds (its record was replaced
                // by a newer HQ copy) changes nothing: HQ's copy already has the truth.
                let _ = base.apply(&record.operation()?);
                Some(base)
            }
            // A confirmed create with nothing after it unconfirmed: the view is the base, and
            // needs no record of its own until the next local change (`Tables::keep_base`).
            None if !self.has_unconfirmed(customer)? => None,
            None => CustomerView::created_by(&record.operation()?),
        };
        if let Some(mut base) = base {
            if let Some(current) = self.customer(customer)? {
                base.account_number = current.account_number;
            }
            self.bases
                .insert(customer, encode(&base)?.as_slice())
                .map_err(StoreError::db)?;
        }
        Ok(())
    }

    /// Removes a customer's view and its search terms.
    pub fn remove_view(&mut self, view: &CustomerView) -> Result<(), StoreError> {
        let key = view.customer_ref.as_str();
        self.customers.remove(key).map_err(StoreError::db)?;
        self.customer_keys.remove(key).map_err(StoreError::db)?;
        self.change_terms(key, search::terms(view), Vec::new(), view.updated_at_ms)?;
        if let Some(acc) = &view.account_number {
            self.accounts.remove(acc.as_str()).map_err(StoreError::db)?;
        }
        self.bases.remove(key).map_err(StoreError::db)?;
        Ok(())
    }

    /// Whether a new operation on this customer must wait behind a failed one (read from the
    /// per-customer index, without decoding the operations).
    ///
    /// Only a failed operation blocks: its re-sync releases what it held. An operation held
    /// only because HQ reported it held completes on its own once HQ processes it, and nothing
    /// would ever release a new operation held behind it (found by `tests/sim.rs`, seed 3).
    pub fn customer_blocked(&self, customer_ref: &str) -> Result<bool, StoreError> {
        let failed = OpState::Failed.code();
        for entry in self
            .customer_ops
            .range((customer_ref, 0)..=(customer_ref, u64::MAX))
            .map_err(StoreError::db)?
        {
            let (_, state) = entry.map_err(StoreError::db)?;
            if state.value() == failed {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Writes a customer view and brings its search terms in step with `old`: its index
    /// entries carry its time of change, so when that moved every term is written again.
    pub fn put_view(
        &mut self,
        old: Option<&CustomerView>,
        new: &CustomerView,
    ) -> Result<(), StoreError> {
        let json = encode(new)?;
        self.put_view_json(old, new, &json)
    }

    /// As [`Tables::put_view`], with the view already encoded as `json`.
    pub fn put_view_json(
        &mut self,
        old: Option<&CustomerView>,
        new: &CustomerView,
        json: &[u8],
    ) -> Result<(), StoreError> {
        let old_terms = old.map(search::terms).unwrap_or_default();
        let new_terms = search::terms(new);
        let removed = old_terms
            .iter()
            .filter(|t| new_terms.binary_search(t).is_err())
            .cloned()
            .collect();
        let retimed = old.is_none_or(|old| old.updated_at_ms != new.updated_at_ms);
        let added = new_terms
            .iter()
            .filter(|t| retimed || old_terms.binary_search(t).is_err())
            .cloned()
            .collect();
        self.write_view(new, Some(json), &new_terms, removed, added)
    }

    /// Writes `new`, which is `old` given the account number HQ assigned (it had none, and its
    /// time of change is the same): its terms are its key record's and the account number's,
    /// so neither view's terms are computed again (twice per confirmed create, a tenth of the
    /// backlog drain's writer).
    pub fn put_view_with_account(
        &mut self,
        old: &CustomerView,
        new: &CustomerView,
    ) -> Result<(), StoreError> {
        let key = new.customer_ref.as_str();
        let account = match (&old.account_number, &new.account_number) {
            (None, Some(account)) if old.updated_at_ms == new.updated_at_ms => account,
            _ => return self.put_view(Some(old), new),
        };
        let Some(mut terms) = self.stored_terms(key)? else {
            return self.put_view(Some(old), new);
        };
        let term = search::account_term(account);
        let added = match terms.binary_search(&term) {
            Ok(_) => Vec::new(),
            Err(at) => {
                terms.insert(at, term.clone());
                vec![term]
            }
        };
        self.write_view(new, Some(&encode(new)?), &terms, Vec::new(), added)
    }

    /// The terms of a customer's key record (sorted, as `search::terms` made them).
    fn stored_terms(&self, key: &str) -> Result<Option<Vec<String>>, StoreError> {
        let Some(bytes) = self.customer_keys.get(key).map_err(StoreError::db)? else {
            return Ok(None);
        };
        let record = schema::CustomerKeys::parse(bytes.value())?;
        record
            .terms()
            .map(|t| {
                String::from_utf8(t.to_vec())
                    .map_err(|_| StoreError::Encoding("customer key record".into()))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// Writes a customer's view record `json` (a create writes none, see [`Tables::add_create`]),
    /// its key record with `terms`, its term changes and its account-number record.
    fn write_view(
        &mut self,
        new: &CustomerView,
        json: Option<&[u8]>,
        terms: &[String],
        removed: Vec<String>,
        added: Vec<String>,
    ) -> Result<(), StoreError> {
        let key = new.customer_ref.as_str();
        if let Some(json) = json {
            self.customers.insert(key, json).map_err(StoreError::db)?;
        }
        self.customer_keys
            .insert(
                key,
                schema::encode_keys(new.updated_at_ms, terms).as_slice(),
            )
            .map_err(StoreError::db)?;
        self.change_terms(key, removed, added, new.updated_at_ms)?;
        // A customer known here by its account number is found by it without this record.
        if let Some(acc) = new.account_number.as_deref().filter(|acc| *acc != key) {
            self.accounts.insert(acc, key).map_err(StoreError::db)?;
        }
        Ok(())
    }
}

/// Writes the view records and key records of customers new to the store.
fn put_new_records(
    customers: &mut Table<'_, CustomerRef, &'static [u8]>,
    customer_keys: &mut Table<'_, CustomerRef, &'static [u8]>,
    new: &PreparedNewCustomers,
) -> Result<(), StoreError> {
    let views: Vec<(&str, &[u8])> = new
        .customers
        .iter()
        .map(|c| (c.key.as_str(), c.view.as_slice()))
        .collect();
    insert_sorted(customers, &views)?;
    let keys: Vec<(&str, &[u8])> = new
        .customers
        .iter()
        .map(|c| (c.key.as_str(), c.keys.as_slice()))
        .collect();
    insert_sorted(customer_keys, &keys)
}

/// Applies search index writes given in key order (for one key, in the order they were made):
/// `Some(time)` puts the (term, customer) pair in with that time of change, `None` takes it
/// out.
///
/// A run of inserts that all fall between the same two entries of the index (a bulk apply into
/// an empty index, a term many new customers share, numbers handed out in order) goes in
/// through a cursor, which redb splices in leaf by leaf: about a third of the cost of inserting
/// each key (measured in the 1010 apply). A cursor costs about four plain inserts to open and
/// close, so a short run is inserted key by key.
///
/// Finding a run's end costs a look-up of the index's next entry, about half an insert: wasted
/// on keys that each fall in a gap of their own (e-mails and names among a million others).
/// So after look-ups in a row that found short runs, the next keys go in key by key without
/// one, twice as many after each such look-up (up to [`BLIND_MAX`]); a long run found starts
/// over. A key the index holds already is then written over even with the same time.
pub(crate) fn write_terms_sorted(
    index: &mut Table<'_, (&'static str, &'static str), i64>,
    writes: &[((&str, &str), Option<i64>)],
) -> Result<(), StoreError> {
    let mut at = 0;
    // Keys still to insert without looking up their run's end, and look-ups in a row that
    // found a short run.
    let (mut blind, mut short_looks) = (0usize, 0u32);
    while let Some(&(key, put)) = writes.get(at) {
        let Some(time) = put else {
            index.remove(key).map_err(StoreError::db)?;
            at += 1;
            continue;
        };
        if blind > 0 {
            blind -= 1;
            index.insert(key, time).map_err(StoreError::db)?;
            at += 1;
            continue;
        }
        // The inserts from `at` on that come before the index's next entry share one gap.
        let (end, present) = {
            let mut after = index.range(key..).map_err(StoreError::db)?;
            let next = after.next().transpose().map_err(StoreError::db)?;
            let next = next.as_ref().map(|(k, v)| (k.value(), v.value()));
            let in_gap = |(k, put): &((&str, &str), Option<i64>)| {
                put.is_some() && next.is_none_or(|(n, _)| *k < n)
            };
            let len = writes[at..].iter().take_while(|w| in_gap(w)).count();
            (at + len, next.filter(|(n, _)| *n == key).map(|(_, v)| v))
        };
        if end - at < CURSOR_RUN_MIN {
            short_looks += 1;
            if short_looks >= 2 {
                blind = 1 << (short_looks - 1).min(BLIND_MAX.ilog2());
            }
        } else {
            short_looks = 0;
        }
        if let Some(held) = present {
            // The index holds the pair already; the keys after it start a gap of their own.
            if held != time {
                index.insert(key, time).map_err(StoreError::db)?;
            }
            at += 1;
            continue;
        }
        // Of a key given more than once, the last write wins (they are adjacent, in order).
        let run = &writes[at..end];
        let run = run
            .iter()
            .enumerate()
            .filter(|(i, (k, _))| run.get(i + 1).is_none_or(|(next, _)| next != k))
            .map(|(_, (k, put))| (*k, put.unwrap_or(time)));
        if end - at < CURSOR_RUN_MIN {
            for (key, time) in run {
                index.insert(key, time).map_err(StoreError::db)?;
            }
        } else {
            let mut cursor = index
                .lower_bound_mut(Bound::Included(key))
                .map_err(StoreError::db)?;
            for (key, time) in run {
                cursor.insert_before(key, time).map_err(StoreError::db)?;
            }
            cursor.close().map_err(StoreError::db)?;
        }
        at = end;
    }
    Ok(())
}

/// Inserts `rows`, in the table's key order and each new to it, through a cursor: a run of
/// keys that fall in one gap of the table is spliced in leaf by leaf, not each found from the
/// root. A key past the cursor's gap (the table holds a key before it) opens a cursor there; a
/// key the table holds already is written over, as an insert would. Fewer than
/// [`CURSOR_RUN_MIN`] rows go in key by key.
fn insert_sorted<'r, K, V>(
    table: &mut Table<'_, K, V>,
    rows: &'r [(K::SelfType<'r>, V::SelfType<'r>)],
) -> Result<(), StoreError>
where
    K: redb::Key + 'static,
    V: redb::Value + 'static,
{
    if rows.len() < CURSOR_RUN_MIN {
        for (key, value) in rows {
            table.insert(key, value).map_err(StoreError::db)?;
        }
        return Ok(());
    }
    let mut at = 0;
    while let Some((first, _)) = rows.get(at) {
        let start = at;
        let mut cursor = table
            .lower_bound_mut(Bound::Included(first))
            .map_err(StoreError::db)?;
        while let Some((key, value)) = rows.get(at) {
            match cursor.insert_before(key, value) {
                Ok(()) => at += 1,
                Err(redb::CursorError::UnorderedKey) => break,
                Err(e) => return Err(StoreError::db(e)),
            }
        }
        cursor.close().map_err(StoreError::db)?;
        if at == start {
            // The table holds this key already: the cursor's gap ends at it.
            let (key, value) = &rows[at];
            table.insert(key, value).map_err(StoreError::db)?;
            at += 1;
        }
    }
    Ok(())
}

/// Shortest run of inserts into one gap that goes through a cursor (see
/// [`write_terms_sorted`]).
const CURSOR_RUN_MIN: usize = 8;

/// Most keys inserted without a look-up of their run's end between two look-ups (see
/// [`write_terms_sorted`]): a long run that starts meanwhile goes in key by key this far.
const BLIND_MAX: usize = 64;

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use redb::{Database, ReadableDatabase, ReadableTable};

    use super::{insert_sorted, write_terms_sorted};
    use crate::store::schema::SEARCH;

    type Key = (String, String);

    /// The index after `writes` (sorted, as the callers give them) on top of `existing`, read
    /// back from a real redb file.
    fn apply(existing: &BTreeMap<Key, i64>, writes: &[(Key, Option<i64>)]) -> BTreeMap<Key, i64> {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Database::create(dir.path().join("t.redb")).expect("db");
        let tx = db.begin_write().expect("tx");
        {
            let mut index = tx.open_table(SEARCH).expect("table");
            for ((t, c), time) in existing {
                index
                    .insert((t.as_str(), c.as_str()), time)
                    .expect("insert");
            }
            let writes: Vec<_> = writes
                .iter()
                .map(|((t, c), put)| ((t.as_str(), c.as_str()), *put))
                .collect();
            write_terms_sorted(&mut index, &writes).expect("writes");
        }
        tx.commit().expect("commit");
        let tx = db.begin_read().expect("read");
        let index = tx.open_table(SEARCH).expect("table");
        index
            .iter()
            .expect("iter")
            .map(|e| {
                let (k, v) = e.expect("entry");
                let (t, c) = k.value();
                ((t.to_string(), c.to_string()), v.value())
            })
            .collect()
    }

    /// A key from a small space, so that writes meet existing keys, each other, and long runs.
    fn key() -> impl Strategy<Value = Key> {
        (0u8..6, 0u16..400).prop_map(|(t, c)| (format!("t{t}"), format!("C{c:04}")))
    }

    /// A write: a time of change to put in (from a few, so that some equal what is held), or
    /// a removal.
    fn write() -> impl Strategy<Value = Option<i64>> {
        prop_oneof![6 => (0i64..3).prop_map(Some), 1 => Just(None)]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever the mix of runs, single keys, duplicates, keys present already (with the
        /// same time or another) and removals, the index ends as a map applying the writes in
        /// order would.
        #[test]
        fn sorted_writes_leave_the_index_as_a_map_would(
            existing in proptest::collection::btree_map(key(), 0i64..3, 0..300),
            mut writes in proptest::collection::vec((key(), write()), 0..600),
        ) {
            // Sorted by key, stable: writes of one key keep their order, as the callers'.
            writes.sort_by(|a, b| a.0.cmp(&b.0));
            let mut model = existing.clone();
            for (k, put) in &writes {
                match put {
                    Some(time) => model.insert(k.clone(), *time),
                    None => model.remove(k),
                };
            }
            prop_assert_eq!(apply(&existing, &writes), model);
        }
    }

    /// Keys each in a gap of their own, then a long run: the writes between look-ups (keys the
    /// index holds among them, with the same time and another) and the run after them end as
    /// a map would.
    #[test]
    fn single_keys_written_without_look_ups_and_a_run_after_end_as_a_map_would() {
        let k = |t: &str, c: u32| (t.to_string(), format!("C{c:05}"));
        let existing: BTreeMap<Key, i64> = (0..400).map(|c| (k("a", 2 * c), 1)).collect();
        let mut writes: Vec<(Key, Option<i64>)> = Vec::new();
        for c in 0..400 {
            writes.push((k("a", 2 * c + 1), Some(2)));
            // Held already: every fourth with its time, the others with a new one.
            writes.push((k("a", 2 * c), Some(if c % 4 == 0 { 1 } else { 3 })));
        }
        writes.extend((0..300).map(|c| (k("b", c), Some(4))));
        writes.sort_by(|a, b| a.0.cmp(&b.0));
        let mut model = existing.clone();
        for (key, put) in &writes {
            model.insert(key.clone(), put.expect("puts only"));
        }
        assert_eq!(apply(&existing, &writes), model);
    }

    const ROWS: redb::TableDefinition<u64, u64> = redb::TableDefinition::new("rows");

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Rows inserted through cursor runs end as plain inserts would leave them: runs cut by
        /// keys the table holds, keys it holds written over, short runs key by key.
        #[test]
        fn sorted_rows_go_in_as_plain_inserts_would(
            existing in proptest::collection::btree_map(0u64..300, 0u64..5, 0..60),
            rows in proptest::collection::btree_map(0u64..300, 5u64..10, 0..80),
        ) {
            let dir = tempfile::tempdir().expect("temp dir");
            let db = Database::create(dir.path().join("t.redb")).expect("db");
            let tx = db.begin_write().expect("tx");
            {
                let mut table = tx.open_table(ROWS).expect("table");
                for (k, v) in &existing {
                    table.insert(k, v).expect("insert");
                }
                let rows: Vec<(u64, u64)> = rows.iter().map(|(k, v)| (*k, *v)).collect();
                insert_sorted(&mut table, &rows).expect("rows");
            }
            tx.commit().expect("commit");
            let mut expected = existing.clone();
            expected.extend(rows);
            let tx = db.begin_read().expect("read");
            let table = tx.open_table(ROWS).expect("table");
            let held: BTreeMap<u64, u64> = table
                .iter()
                .expect("iter")
                .map(|e| e.map(|(k, v)| (k.value(), v.value())).expect("entry"))
                .collect();
            prop_assert_eq!(held, expected);
        }
    }
}
