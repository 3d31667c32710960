//! What a caller works out for a new customer before the writer takes the create.
//!
//! The writer is the store's one serial stage: every till's write waits for it. A create's
//! payload, as its operation record holds it, and the new customer's search terms depend on
//! the till's fields alone, so the caller computes them on its own thread, beside the writer
//! (`WriterHandle::execute`). The writer adds only what it assigns: the sequence number and
//! reference, the operation's id and time.

use serde_json::value::RawValue;

use super::StoreError;
use super::op_record::OpRecord;
use crate::domain::search::{add_reference, new_customer_terms};
use crate::domain::{NewCustomer, OpState, OperationId, Payload};

/// A customer create's parts that do not depend on the store.
#[derive(Debug)]
pub(crate) struct PreparedCreate {
    /// The create's payload, encoded as its operation record holds it.
    payload: Box<RawValue>,
    /// The new customer's search terms, but its reference's; sorted.
    terms: Vec<String>,
}

/// The create as the writer stores it: its operation record and its customer's search terms.
pub(crate) struct AssignedCreate {
    /// The operation's record, as [`crate::store::schema::encode`] of the operation gives it.
    pub record: OpRecord,
    /// Every search term of the new customer, its reference's among them; sorted.
    pub terms: Vec<String>,
}

impl PreparedCreate {
    /// Prepares the create of a customer with `fields`.
    pub fn of(fields: &NewCustomer) -> Result<Self, StoreError> {
        let payload = Payload::CustomerCreate(fields.clone());
        Ok(PreparedCreate {
            payload: serde_json::value::to_raw_value(&payload)
                .map_err(|e| StoreError::Encoding(e.to_string()))?,
            terms: new_customer_terms(fields),
        })
    }

    /// The create, given what the writer assigns it: operation `id`, sequence number `seq`,
    /// `customer_ref` and the time `now`.
    pub fn assign(
        self,
        id: OperationId,
        seq: u64,
        customer_ref: String,
        now: i64,
    ) -> AssignedCreate {
        let mut terms = self.terms;
        add_reference(&mut terms, &customer_ref);
        AssignedCreate {
            record: OpRecord {
                id,
                seq,
                customer_ref,
                record_id: None,
                payload: self.payload,
                state: OpState::Pending,
                error: None,
                revision: 0,
                accepted_at_ms: now,
                updated_at_ms: now,
                base: None,
                conflicts: Vec::new(),
            },
            terms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Operation;
    use crate::domain::search::terms;
    use crate::domain::view::CustomerView;
    use crate::store::schema::encode;

    #[test]
    fn an_assigned_create_is_the_operation_and_the_terms_of_its_view() {
        let fields = NewCustomer {
            first_name: "Õie \"Õ\"".into(),
            last_name: "Tamm-Täht".into(),
            email: Some("oie@example.ee".into()),
            phone: Some("+372 5123 4567".into()),
            customer_group: Some("RETAIL".into()),
            language: Some("et".into()),
        };
        let id = OperationId::new_v7(1_796_000_000_000);
        let assigned = PreparedCreate::of(&fields).expect("prepared").assign(
            id,
            42,
            "S0001-T42".into(),
            1_796_000_000_123,
        );
        let op = Operation {
            id,
            seq: 42,
            customer_ref: "S0001-T42".into(),
            record_id: None,
            payload: Payload::CustomerCreate(fields),
            state: OpState::Pending,
            error: None,
            revision: 0,
            accepted_at_ms: 1_796_000_000_123,
            updated_at_ms: 1_796_000_000_123,
            base: None,
            conflicts: Vec::new(),
        };
        assert_eq!(
            encode(&assigned.record).expect("record"),
            encode(&op).expect("operation")
        );
        let view = CustomerView::created_by(&op).expect("a create's view");
        assert_eq!(assigned.terms, terms(&view));
    }
}
