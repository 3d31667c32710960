//! Where a customer's view is read from. A customer has a view record in
//! [`CUSTOMERS`](super::schema::CUSTOMERS) once it differs from what its first operation
//! makes: every customer of a 1010 download, every customer changed here or confirmed by HQ.
//! A customer created here and not changed since has none: its create, its first and only
//! operation, is its view (`CustomerView::created_by`). Such a create writes one record fewer,
//! about a quarter of the bytes a create adds (`docs/performance.md`, step 37).
//!
//! So that the view never goes with its operation, the record is written before the create is
//! dropped (`Tables::prune`); every other change to the customer writes the record anyway.

use redb::ReadableTable;

use super::StoreError;
use super::schema::{CustomerRef, decode};
use crate::domain::Operation;
use crate::domain::view::CustomerView;

/// The view of a customer with no view record, made by its first operation; `None` when it has
/// no operations either (no such customer).
pub(crate) fn created<P, O>(
    customer_ops: &P,
    ops: &O,
    customer_ref: &str,
) -> Result<Option<CustomerView>, StoreError>
where
    P: ReadableTable<(CustomerRef, u64), u8>,
    O: ReadableTable<u64, &'static [u8]>,
{
    let first = customer_ops
        .range((customer_ref, 0)..=(customer_ref, u64::MAX))
        .map_err(StoreError::db)?
        .next()
        .transpose()
        .map_err(StoreError::db)?;
    match first {
        Some((key, _)) => created_by(ops, customer_ref, key.value().1).map(Some),
        None => Ok(None),
    }
}

/// The view that operation `seq`, the create of customer `customer_ref` (its first operation),
/// makes.
pub(crate) fn created_by<O>(
    ops: &O,
    customer_ref: &str,
    seq: u64,
) -> Result<CustomerView, StoreError>
where
    O: ReadableTable<u64, &'static [u8]>,
{
    let missing = || {
        StoreError::Encoding(format!(
            "customer {customer_ref} has no view record and its first operation ({seq}) is not \
             its create"
        ))
    };
    let Some(bytes) = ops.get(seq).map_err(StoreError::db)? else {
        return Err(missing());
    };
    let op: Operation = decode(bytes.value())?;
    CustomerView::created_by(&op).ok_or_else(missing)
}
