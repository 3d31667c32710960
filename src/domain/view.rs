//! The customer as the till should see it now: HQ's copy (if any) with every accepted local
//! operation applied in acceptance order.

use serde::{Deserialize, Serialize};

use super::customer::{Address, Affiliation, Attribute, Contact, NewCustomer};
use super::operation::{OpState, Operation, Payload};
use super::validation::FieldError;

/// A sub-record with its node-assigned id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubRecord<T> {
    /// Node-assigned id, e.g. `ADR-42`.
    pub id: String,
    /// The record's fields.
    pub record: T,
}

/// The materialised customer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomerView {
    /// Temporary reference assigned by this node (or HQ's account number for a customer that
    /// came down from HQ and was never created here).
    pub customer_ref: String,
    /// HQ's account number, once known.
    pub account_number: Option<String>,
    /// The customer's own fields.
    pub fields: NewCustomer,
    /// Addresses.
    pub addresses: Vec<SubRecord<Address>>,
    /// Contacts.
    pub contacts: Vec<SubRecord<Contact>>,
    /// Affiliations.
    pub affiliations: Vec<SubRecord<Affiliation>>,
    /// Attributes.
    pub attributes: Vec<SubRecord<Attribute>>,
    /// Sequence number of the last local operation applied.
    pub last_seq: u64,
    /// When the view was created (Unix milliseconds).
    pub created_at_ms: i64,
    /// When the view last changed (Unix milliseconds).
    pub updated_at_ms: i64,
}

fn sub_mut<'a, T>(
    list: &'a mut [SubRecord<T>],
    id: &str,
    field: &str,
) -> Result<&'a mut T, FieldError> {
    list.iter_mut()
        .find(|s| s.id == id)
        .map(|s| &mut s.record)
        .ok_or_else(|| FieldError::new(field, "exists", format!("no such record: {id}")))
}

/// Whether a sub-record id exists in the view for the kind of `payload`.
pub fn has_sub_record(view: &CustomerView, payload: &Payload, id: &str) -> bool {
    use super::operation::RecordKind as K;
    match payload.kind() {
        K::Customer => true,
        K::Address => view.addresses.iter().any(|s| s.id == id),
        K::Contact => view.contacts.iter().any(|s| s.id == id),
        K::Affiliation => view.affiliations.iter().any(|s| s.id == id),
        K::Attribute => view.attributes.iter().any(|s| s.id == id),
    }
}

impl CustomerView {
    /// A view started by a customer-create operation.
    pub fn created_by(op: &Operation) -> Option<CustomerView> {
        match &op.payload {
            Payload::CustomerCreate(fields) => Some(CustomerView::created(
                op.customer_ref.clone(),
                op.seq,
                op.accepted_at_ms,
                fields.clone(),
            )),
            _ => None,
        }
    }

    /// The view a customer create makes: customer `customer_ref` with `fields`, created by
    /// operation `seq` accepted at `accepted_at_ms`.
    pub fn created(
        customer_ref: String,
        seq: u64,
        accepted_at_ms: i64,
        fields: NewCustomer,
    ) -> CustomerView {
        CustomerView {
            customer_ref,
            account_number: None,
            fields,
            addresses: Vec::new(),
            contacts: Vec::new(),
            affiliations: Vec::new(),
            attributes: Vec::new(),
            last_seq: seq,
            created_at_ms: accepted_at_ms,
            updated_at_ms: accepted_at_ms,
        }
    }

    /// Applies one later operation. A create of the customer itself replaces its fields
    /// (a re-sync of an edited create); sub-record creates add, edits change in place.
    pub fn apply(&mut self, op: &Operation) -> Result<(), FieldError> {
        let id = op.record_id.as_deref().unwrap_or_default();
        match &op.payload {
            Payload::CustomerCreate(fields) => self.fields = fields.clone(),
            Payload::CustomerEdit(patch) => patch.apply_to(&mut self.fields),
            Payload::AddressCreate(a) => upsert(&mut self.addresses, id, a),
            Payload::AddressEdit(p) => p.apply_to(sub_mut(&mut self.addresses, id, "address_id")?),
            Payload::ContactCreate(c) => upsert(&mut self.contacts, id, c),
            Payload::ContactEdit(p) => {
                p.apply_checked(sub_mut(&mut self.contacts, id, "contact_id")?)?
            }
            Payload::AffiliationCreate(a) => upsert(&mut self.affiliations, id, a),
            Payload::AffiliationEdit(p) => {
                p.apply_to(sub_mut(&mut self.affiliations, id, "affiliation_id")?)
            }
            Payload::AttributeCreate(a) => upsert(&mut self.attributes, id, a),
            Payload::AttributeEdit(p) => {
                p.apply_to(sub_mut(&mut self.attributes, id, "attribute_id")?)
            }
        }
        self.last_seq = self.last_seq.max(op.seq);
        self.updated_at_ms = self.updated_at_ms.max(op.updated_at_ms);
        Ok(())
    }

    /// Rebuilds a view from its operations in acceptance order (used after an operator edits a
    /// failed operation's payload). Returns `None` when the first operation is not a create.
    pub fn rebuild<'a>(
        base: Option<CustomerView>,
        ops: impl IntoIterator<Item = &'a Operation>,
    ) -> Result<Option<CustomerView>, FieldError> {
        let mut view = base;
        for op in ops {
            match view.as_mut() {
                Some(v) => v.apply(op)?,
                None => view = CustomerView::created_by(op),
            }
        }
        Ok(view)
    }
}

fn upsert<T: Clone>(list: &mut Vec<SubRecord<T>>, id: &str, record: &T) {
    match list.iter_mut().find(|s| s.id == id) {
        Some(existing) => existing.record = record.clone(),
        None => list.push(SubRecord {
            id: id.to_string(),
            record: record.clone(),
        }),
    }
}

/// A customer's sync state, summarised from its operations' states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncState {
    /// Every operation is confirmed by HQ (or there are none).
    Synced,
    /// Some operation is queued or staged at HQ.
    Pending,
    /// Some operation waits behind a failed one.
    Held,
    /// Some operation was refused by HQ.
    Failed,
}

impl SyncState {
    /// The worst state among a customer's operations: failed, then held, then pending.
    pub fn summarise(states: impl IntoIterator<Item = OpState>) -> SyncState {
        states
            .into_iter()
            .map(|s| match s {
                OpState::Completed => SyncState::Synced,
                OpState::Pending | OpState::Uploaded => SyncState::Pending,
                OpState::Held => SyncState::Held,
                OpState::Failed => SyncState::Failed,
            })
            .max_by_key(|s| match s {
                SyncState::Synced => 0,
                SyncState::Pending => 1,
                SyncState::Held => 2,
                SyncState::Failed => 3,
            })
            .unwrap_or(SyncState::Synced)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::customer::{AddressPurpose, CustomerPatch};
    use crate::domain::operation::OperationId;

    fn op(seq: u64, record_id: Option<&str>, payload: Payload) -> Operation {
        Operation {
            id: OperationId::new_v7(1),
            seq,
            customer_ref: "S1-T1".into(),
            record_id: record_id.map(str::to_string),
            payload,
            state: OpState::Pending,
            error: None,
            revision: 0,
            accepted_at_ms: seq as i64,
            updated_at_ms: seq as i64,
            base: None,
            conflicts: Vec::new(),
        }
    }

    #[test]
    fn edits_apply_in_order() {
        let create = op(
            1,
            None,
            Payload::CustomerCreate(NewCustomer {
                first_name: "Õie".into(),
                last_name: "Täht".into(),
                email: None,
                phone: None,
                customer_group: None,
                language: None,
            }),
        );
        let e1 = op(
            2,
            None,
            Payload::CustomerEdit(CustomerPatch {
                last_name: Some("Kask".into()),
                ..Default::default()
            }),
        );
        let e2 = op(
            3,
            None,
            Payload::CustomerEdit(CustomerPatch {
                last_name: Some("Mets".into()),
                ..Default::default()
            }),
        );
        let addr = op(
            4,
            Some("ADR-4"),
            Payload::AddressCreate(Address {
                street: "Narva mnt 5".into(),
                city: "Tallinn".into(),
                postal_code: "10117".into(),
                country: "EST".into(),
                county: None,
                purpose: AddressPurpose::Home,
                is_primary: true,
            }),
        );
        let view = CustomerView::rebuild(None, [&create, &e1, &e2, &addr])
            .unwrap()
            .unwrap();
        assert_eq!(view.fields.last_name, "Mets");
        assert_eq!(view.addresses.len(), 1);
        assert_eq!(view.last_seq, 4);
    }

    #[test]
    fn edit_of_missing_sub_record_is_refused() {
        let mut view = CustomerView::created_by(&op(
            1,
            None,
            Payload::CustomerCreate(NewCustomer {
                first_name: "A".into(),
                last_name: "B".into(),
                email: None,
                phone: None,
                customer_group: None,
                language: None,
            }),
        ))
        .unwrap();
        let edit = op(2, Some("ATT-9"), Payload::AttributeEdit(Default::default()));
        assert_eq!(view.apply(&edit).unwrap_err().rule, "exists");
    }

    #[test]
    fn sync_state_is_the_worst() {
        use OpState::*;
        assert_eq!(
            SyncState::summarise([Completed, Pending]),
            SyncState::Pending
        );
        assert_eq!(
            SyncState::summarise([Held, Failed, Pending]),
            SyncState::Failed
        );
        assert_eq!(SyncState::summarise([]), SyncState::Synced);
    }
}
