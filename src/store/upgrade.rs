//! In-place upgrades of a store file of an older layout, made at open before anything else
//! touches the file.

use redb::{
    Key, ReadableTable, ReadableTableMetadata, TableDefinition, TableError, TableHandle, Value,
    WriteTransaction,
};

use super::schema::{self, decode};
use super::{Store, StoreError};
use crate::domain::search;
use crate::domain::view::CustomerView;

/// Customers whose terms are rebuilt in one transaction: bounds the memory and the dirty pages
/// of each step.
const CUSTOMERS_PER_STEP: usize = 20_000;

/// Rebuilds every customer's key record and the search index from the customers' views, for
/// a file whose terms predate the present ones (name pairs, the time of change in the index),
/// then records the present schema version. Steps commit as they go; the version is written
/// last, so an upgrade cut short starts over (from an emptied index) at the next open.
pub(crate) fn rebuild_terms(store: &Store) -> Result<(), StoreError> {
    let tx = store.begin_write()?;
    // The log's rows are in the old terms too; the rebuilt index holds all they would add.
    tx.delete_table(schema::SEARCH).map_err(StoreError::db)?;
    tx.delete_table(schema::SEARCH_LOG)
        .map_err(StoreError::db)?;
    tx.open_table(schema::SEARCH).map_err(StoreError::db)?;
    tx.open_table(schema::SEARCH_LOG).map_err(StoreError::db)?;
    tx.commit().map_err(StoreError::db)?;
    let mut after: Option<String> = None;
    let mut rebuilt = 0usize;
    loop {
        let tx = store.begin_write()?;
        let step = {
            let customers = tx.open_table(schema::CUSTOMERS).map_err(StoreError::db)?;
            let mut views = Vec::with_capacity(CUSTOMERS_PER_STEP);
            let range = match &after {
                Some(key) => customers.range::<&str>((
                    std::ops::Bound::Excluded(key.as_str()),
                    std::ops::Bound::Unbounded,
                )),
                None => customers.range::<&str>(..),
            }
            .map_err(StoreError::db)?;
            for row in range.take(CUSTOMERS_PER_STEP) {
                let (_, bytes) = row.map_err(StoreError::db)?;
                views.push(decode::<CustomerView>(bytes.value())?);
            }
            let mut keys = tx
                .open_table(schema::CUSTOMER_KEYS)
                .map_err(StoreError::db)?;
            let mut index = tx.open_table(schema::SEARCH).map_err(StoreError::db)?;
            let mut entries = Vec::new();
            for view in &views {
                let terms = search::terms(view);
                let record = schema::encode_keys(view.updated_at_ms, &terms);
                keys.insert(view.customer_ref.as_str(), record.as_slice())
                    .map_err(StoreError::db)?;
                let (customer, time) = (view.customer_ref.as_str(), view.updated_at_ms);
                entries.extend(terms.into_iter().map(|t| (t, customer, time)));
            }
            // In key order: each leaf of the index is written once per run of its keys.
            entries.sort_unstable();
            for (term, customer, time) in &entries {
                index
                    .insert((term.as_str(), *customer), time)
                    .map_err(StoreError::db)?;
            }
            rebuilt += views.len();
            views.last().map(|v| v.customer_ref.clone())
        };
        tx.commit().map_err(StoreError::db)?;
        match step {
            Some(last) => after = Some(last),
            None => break,
        }
    }
    let tx = store.begin_write()?;
    tx.open_table(schema::META)
        .map_err(StoreError::db)?
        .insert(schema::SCHEMA_KEY, schema::SCHEMA_VERSION)
        .map_err(StoreError::db)?;
    tx.commit().map_err(StoreError::db)?;
    tracing::info!(
        customers = rebuilt,
        "store upgraded: search index and key records rebuilt"
    );
    Ok(())
}

/// Copies the tables keyed by customer reference, in byte order up to schema 5, into tables
/// in [`schema::CustomerRef`] order under the same names, in `tx`. A table already in that
/// order is left as it is (an upgrade from before schema 5 that was cut short after this
/// step). Returns the rows copied.
pub(crate) fn order_tables_by_ref(tx: &WriteTransaction) -> Result<u64, StoreError> {
    let mut copied = 0;
    for (name, temp) in [
        (schema::CUSTOMERS, "customers.v6"),
        (schema::CUSTOMER_KEYS, "customer_keys.v6"),
        (schema::CUSTOMER_BASES, "customer_bases.v6"),
    ] {
        let old = TableDefinition::<&str, &[u8]>::new(name.name());
        copied += reorder(tx, old, TableDefinition::new(temp), name, |t, k, v| {
            t.insert(k, v).map(drop)
        })?;
    }
    let old = TableDefinition::<(&str, u64), u8>::new(schema::CUSTOMER_OPS.name());
    let temp = TableDefinition::new("customer_operations.v6");
    copied += reorder(tx, old, temp, schema::CUSTOMER_OPS, |t, k, v| {
        t.insert(k, v).map(drop)
    })?;
    tracing::info!(
        rows = copied,
        "store upgraded: tables keyed by customer reference put in reference order"
    );
    Ok(copied)
}

/// Copies `old` into `temp` (each row by `copy`), then replaces `old` with it under
/// `name`; nothing when `old` is in the new order already. Returns the rows copied.
fn reorder<Old: Key + 'static, New: Key + 'static, V: Value + 'static>(
    tx: &WriteTransaction,
    old: TableDefinition<Old, V>,
    temp: TableDefinition<New, V>,
    name: TableDefinition<New, V>,
    mut copy: impl for<'a> FnMut(
        &mut redb::Table<'_, New, V>,
        Old::SelfType<'a>,
        V::SelfType<'a>,
    ) -> Result<(), redb::StorageError>,
) -> Result<u64, StoreError> {
    let source = match tx.open_table(old) {
        Ok(table) => table,
        Err(TableError::TableTypeMismatch { .. }) => return Ok(0),
        Err(e) => return Err(StoreError::db(e)),
    };
    let copied = {
        let mut target = tx.open_table(temp).map_err(StoreError::db)?;
        for row in source.iter().map_err(StoreError::db)? {
            let (k, v) = row.map_err(StoreError::db)?;
            copy(&mut target, k.value(), v.value()).map_err(StoreError::db)?;
        }
        target.len().map_err(StoreError::db)?
    };
    drop(source);
    tx.delete_table(old).map_err(StoreError::db)?;
    tx.rename_table(temp, name).map_err(StoreError::db)?;
    Ok(copied)
}
