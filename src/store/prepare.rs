//! What a write needs that does not depend on the store, worked out beside the writer.
//!
//! The writer is the store's one serial stage: every till's write waits for it. A create's
//! payload, as its operation record holds it, and the new customer's search terms depend on
//! the till's fields alone, so the caller computes them on its own thread, beside the writer
//! (`WriterHandle::execute`). The writer adds only what it assigns: the sequence number and
//! reference, the operation's id and time.
//!
//! A 1010 download's customers are prepared the same way, a chunk at a time on a thread of
//! their own, as the records they get if they are new to the store (`Tables::apply_customers`
//! checks that they are, and applies a chunk that is not customer by customer).

use serde_json::value::RawValue;

use super::StoreError;
use super::cdx::HqCopy;
use super::op_record::OpRecord;
use super::schema::{self, encode, numeric_order};
use crate::domain::search::{add_reference, new_customer_terms, term_head, terms};
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

/// Customers of a 1010 download as they are written if none of them is known to the store:
/// each one's reference is its account number and its view is HQ's copy.
pub(crate) struct PreparedNewCustomers {
    /// Each customer's records, in the tables' key order of references.
    pub customers: Vec<NewCustomerRecords>,
    /// Every customer's search terms, in the search index's key order.
    terms: Vec<NewTerm>,
    /// The terms' bytes, one after another.
    term_bytes: String,
}

/// The records of a customer new to the store.
pub(crate) struct NewCustomerRecords {
    /// The customer's reference (its account number).
    pub key: String,
    /// Its view record.
    pub view: Vec<u8>,
    /// Its key record.
    pub keys: Vec<u8>,
    /// Its time of change (its search index entries' value).
    pub updated_at_ms: i64,
}

/// A search term of a customer new to the store (a download holds millions: kept small).
struct NewTerm {
    /// [`term_head`] of the term: compared first when the terms are sorted.
    head: u64,
    /// Where the term starts in [`PreparedNewCustomers::term_bytes`].
    start: u32,
    /// Its length (at most `search::MAX_TERM_LEN`).
    len: u8,
    /// The customer's place in [`PreparedNewCustomers::customers`].
    customer: u32,
}

impl PreparedNewCustomers {
    /// Prepares `copies`; `None` if two of them share an account number (the second is then a
    /// change of the first, not a new customer).
    pub fn of(copies: &[HqCopy]) -> Result<Option<Self>, StoreError> {
        let mut prepared = Vec::with_capacity(copies.len());
        for copy in copies {
            let mut view = copy.view.clone();
            view.customer_ref.clone_from(&copy.account_number);
            view.account_number = Some(copy.account_number.clone());
            let terms = terms(&view);
            let mut json = encode(&view)?;
            json.shrink_to_fit();
            let records = NewCustomerRecords {
                keys: schema::encode_keys(view.updated_at_ms, &terms),
                view: json,
                updated_at_ms: view.updated_at_ms,
                key: view.customer_ref,
            };
            prepared.push((records, terms));
        }
        prepared.sort_unstable_by(|a, b| numeric_order(a.0.key.as_bytes(), b.0.key.as_bytes()));
        if prepared.windows(2).any(|w| w[0].0.key == w[1].0.key) {
            return Ok(None);
        }
        let too_long = || StoreError::Encoding("a download chunk too long to prepare".into());
        let count = prepared.iter().map(|(_, terms)| terms.len()).sum();
        let mut entries = Vec::with_capacity(count);
        let mut term_bytes = String::new();
        let mut customers = Vec::with_capacity(prepared.len());
        for (at, (records, terms)) in prepared.into_iter().enumerate() {
            let customer = u32::try_from(at).map_err(|_| too_long())?;
            for term in terms {
                entries.push(NewTerm {
                    head: term_head(&term),
                    start: u32::try_from(term_bytes.len()).map_err(|_| too_long())?,
                    len: u8::try_from(term.len()).map_err(|_| too_long())?,
                    customer,
                });
                term_bytes.push_str(&term);
            }
            customers.push(records);
        }
        let mut prepared = PreparedNewCustomers {
            customers,
            terms: Vec::new(),
            term_bytes,
        };
        // No two entries are equal: a customer's terms are distinct, and so are the customers.
        entries.sort_unstable_by(|a, b| {
            let key = |t: &NewTerm| (t.head, prepared.term(t), prepared.key(t));
            key(a).cmp(&key(b))
        });
        prepared.terms = entries;
        Ok(Some(prepared))
    }

    /// The search index entries: (term, customer) and the customer's time of change, in key
    /// order.
    pub fn index_entries(&self) -> impl Iterator<Item = ((&str, &str), i64)> {
        self.terms.iter().map(|t| {
            let customer = &self.customers[t.customer as usize];
            (
                (self.term(t), customer.key.as_str()),
                customer.updated_at_ms,
            )
        })
    }

    fn term(&self, t: &NewTerm) -> &str {
        let start = t.start as usize;
        self.term_bytes
            .get(start..start + usize::from(t.len))
            .unwrap_or_default()
    }

    fn key(&self, t: &NewTerm) -> &str {
        self.customers[t.customer as usize].key.as_str()
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
