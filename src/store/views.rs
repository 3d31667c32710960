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
use serde::Deserialize;

use super::StoreError;
use super::schema::{CustomerRef, decode};
use crate::domain::view::CustomerView;
use crate::domain::{NewCustomer, Operation};

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
    match ops.get(seq).map_err(StoreError::db)? {
        Some(bytes) => view_of_create(customer_ref, seq, bytes.value()),
        None => Err(not_a_create(customer_ref, seq)),
    }
}

/// The view the stored operation record `bytes` (operation `seq`, the create of customer
/// `customer_ref`) makes.
fn view_of_create(customer_ref: &str, seq: u64, bytes: &[u8]) -> Result<CustomerView, StoreError> {
    if let Ok(create) = serde_json::from_slice::<StoredCreate>(bytes) {
        return Ok(CustomerView::created(
            customer_ref.to_string(),
            create.seq,
            create.accepted_at_ms,
            create.payload.data,
        ));
    }
    // Not a customer create, or not a record at all: the whole operation's decoding says which.
    let op: Operation = decode(bytes)?;
    CustomerView::created_by(&op).ok_or_else(|| not_a_create(customer_ref, seq))
}

fn not_a_create(customer_ref: &str, seq: u64) -> StoreError {
    StoreError::Encoding(format!(
        "customer {customer_ref} has no view record and its first operation ({seq}) is not its \
         create"
    ))
}

/// What a customer create's view takes from its stored record ([`Operation`]'s encoding),
/// decoded without the rest (its id, state and times), which a search that reads twenty such
/// views would decode twenty times. A record of any other operation does not decode as one.
#[derive(Deserialize)]
struct StoredCreate {
    seq: u64,
    payload: CreatePayload,
    accepted_at_ms: i64,
}

/// A customer create's payload, as [`Payload`](crate::domain::operation::Payload) encodes it.
#[derive(Deserialize)]
struct CreatePayload {
    #[serde(rename = "type")]
    _kind: CreateKind,
    data: NewCustomer,
}

/// The one payload type a [`CreatePayload`] reads.
#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum CreateKind {
    CustomerCreate,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::operation::{Conflict, OpError, OperationId, Payload};
    use crate::domain::{CustomerPatch, OpState};
    use crate::store::schema::encode;

    fn op(payload: Payload) -> Operation {
        Operation {
            id: OperationId::new_v7(1_796_000_000_000),
            seq: 7,
            customer_ref: "S0001-T7".into(),
            record_id: None,
            payload,
            state: OpState::Failed,
            error: Some(OpError {
                code: "validation".into(),
                message: "refused".into(),
                field: Some("email".into()),
            }),
            revision: 2,
            accepted_at_ms: 1_796_000_000_123,
            updated_at_ms: 1_796_000_000_456,
            base: None,
            conflicts: vec![Conflict {
                field: "email".into(),
                hq_value: serde_json::json!("hq@example.ee"),
                store_value: serde_json::json!("oie@example.ee"),
            }],
        }
    }

    #[test]
    fn a_creates_record_makes_the_view_its_operation_makes() {
        let create = op(Payload::CustomerCreate(NewCustomer {
            first_name: "Õie".into(),
            last_name: "Tamm".into(),
            email: Some("oie@example.ee".into()),
            phone: Some("+372 5123 4567".into()),
            customer_group: Some("RETAIL".into()),
            language: Some("et-EE".into()),
        }));
        let bytes = encode(&create).unwrap();
        // Read through the create's own decoding, not the whole operation's.
        assert!(serde_json::from_slice::<StoredCreate>(&bytes).is_ok());
        assert_eq!(
            view_of_create("S0001-T7", 7, &bytes).unwrap(),
            CustomerView::created_by(&create).unwrap()
        );
        let edit = op(Payload::CustomerEdit(CustomerPatch::default()));
        let e = view_of_create("S0001-T7", 7, &encode(&edit).unwrap()).unwrap_err();
        assert!(e.to_string().contains("is not its create"), "{e}");
        let e = view_of_create("S0001-T7", 7, b"{\"seq\":7}").unwrap_err();
        assert!(matches!(e, StoreError::Encoding(_)), "{e}");
    }
}
