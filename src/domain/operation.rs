//! Operations: one accepted create or edit of one record of one customer, and its sync state.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::customer::{
    Address, AddressPatch, Affiliation, AffiliationPatch, Attribute, AttributePatch, Contact,
    ContactPatch, CustomerPatch, NewCustomer, Validate,
};
use super::validation::FieldError;

/// Unique id of an operation, assigned at acceptance (UUID v7: time-ordered, unique across
/// nodes, so HQ can deduplicate by it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OperationId(pub Uuid);

impl OperationId {
    /// A fresh id; `unix_ms` seeds its time-ordered prefix.
    pub fn new_v7(unix_ms: u64) -> Self {
        let ts = uuid::Timestamp::from_unix(
            uuid::NoContext,
            unix_ms / 1000,
            ((unix_ms % 1000) * 1_000_000) as u32,
        );
        Self(Uuid::new_v7(ts))
    }

    /// The id as a 128-bit key.
    pub fn as_u128(&self) -> u128 {
        self.0.as_u128()
    }
}

impl fmt::Display for OperationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for OperationId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

/// The five kinds of asynchronous record, one per HQ staging table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    /// RETAILASYNCCUSTOMERV2.
    Customer,
    /// RETAILASYNCADDRESSV2.
    Address,
    /// RETAILASYNCCUSTOMERCONTACT.
    Contact,
    /// RETAILASYNCCUSTOMERAFFILIATION.
    Affiliation,
    /// RETAILASYNCCUSTOMERATTRIBUTEV2.
    Attribute,
}

impl RecordKind {
    /// Every kind, in table order.
    pub const ALL: [RecordKind; 5] = [
        RecordKind::Customer,
        RecordKind::Address,
        RecordKind::Contact,
        RecordKind::Affiliation,
        RecordKind::Attribute,
    ];

    /// The HQ staging table that holds records of this kind.
    pub fn hq_table(self) -> &'static str {
        match self {
            RecordKind::Customer => "RETAILASYNCCUSTOMERV2",
            RecordKind::Address => "RETAILASYNCADDRESSV2",
            RecordKind::Contact => "RETAILASYNCCUSTOMERCONTACT",
            RecordKind::Affiliation => "RETAILASYNCCUSTOMERAFFILIATION",
            RecordKind::Attribute => "RETAILASYNCCUSTOMERATTRIBUTEV2",
        }
    }

    /// The lower-case name used in JSON and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Customer => "customer",
            RecordKind::Address => "address",
            RecordKind::Contact => "contact",
            RecordKind::Affiliation => "affiliation",
            RecordKind::Attribute => "attribute",
        }
    }

    /// Prefix of node-assigned sub-record ids of this kind.
    pub fn id_prefix(self) -> &'static str {
        match self {
            RecordKind::Customer => "CUS",
            RecordKind::Address => "ADR",
            RecordKind::Contact => "CON",
            RecordKind::Affiliation => "AFF",
            RecordKind::Attribute => "ATT",
        }
    }
}

/// Whether an operation creates a record or edits one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// A new record.
    Create,
    /// A partial update of an existing record.
    Edit,
}

/// Sync state of an operation, as the sync-status page shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpState {
    /// Queued at the node, not yet staged at HQ.
    Pending,
    /// Staged in HQ's async table; HQ's sync job has not processed it yet.
    Uploaded,
    /// HQ processed it (OnlineOperationCompleted = 1).
    Completed,
    /// HQ refused it; it waits for an operator to edit and re-sync it.
    Failed,
    /// Waiting behind a failed operation on the same customer.
    Held,
}

impl OpState {
    /// Every state.
    pub const ALL: [OpState; 5] = [
        OpState::Pending,
        OpState::Uploaded,
        OpState::Completed,
        OpState::Failed,
        OpState::Held,
    ];

    /// A compact code for index keys.
    pub fn code(self) -> u8 {
        match self {
            OpState::Pending => 0,
            OpState::Uploaded => 1,
            OpState::Completed => 2,
            OpState::Failed => 3,
            OpState::Held => 4,
        }
    }

    /// The lower-case name used in JSON, query strings and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            OpState::Pending => "pending",
            OpState::Uploaded => "uploaded",
            OpState::Completed => "completed",
            OpState::Failed => "failed",
            OpState::Held => "held",
        }
    }
}

impl FromStr for OpState {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        OpState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or(())
    }
}

/// The record an operation carries, typed by kind and action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum Payload {
    /// A new customer.
    CustomerCreate(NewCustomer),
    /// An edit of a customer.
    CustomerEdit(CustomerPatch),
    /// A new address.
    AddressCreate(Address),
    /// An edit of an address.
    AddressEdit(AddressPatch),
    /// A new contact.
    ContactCreate(Contact),
    /// An edit of a contact.
    ContactEdit(ContactPatch),
    /// A new affiliation.
    AffiliationCreate(Affiliation),
    /// An edit of an affiliation.
    AffiliationEdit(AffiliationPatch),
    /// A new attribute.
    AttributeCreate(Attribute),
    /// An edit of an attribute.
    AttributeEdit(AttributePatch),
}

impl Payload {
    /// Which HQ table the record belongs in.
    pub fn kind(&self) -> RecordKind {
        match self {
            Payload::CustomerCreate(_) | Payload::CustomerEdit(_) => RecordKind::Customer,
            Payload::AddressCreate(_) | Payload::AddressEdit(_) => RecordKind::Address,
            Payload::ContactCreate(_) | Payload::ContactEdit(_) => RecordKind::Contact,
            Payload::AffiliationCreate(_) | Payload::AffiliationEdit(_) => RecordKind::Affiliation,
            Payload::AttributeCreate(_) | Payload::AttributeEdit(_) => RecordKind::Attribute,
        }
    }

    /// Create or edit.
    pub fn action(&self) -> Action {
        match self {
            Payload::CustomerCreate(_)
            | Payload::AddressCreate(_)
            | Payload::ContactCreate(_)
            | Payload::AffiliationCreate(_)
            | Payload::AttributeCreate(_) => Action::Create,
            _ => Action::Edit,
        }
    }

    /// Checks the record's own fields.
    pub fn validate(&self) -> Result<(), FieldError> {
        match self {
            Payload::CustomerCreate(r) => r.validate(),
            Payload::CustomerEdit(r) => r.validate(),
            Payload::AddressCreate(r) => r.validate(),
            Payload::AddressEdit(r) => r.validate(),
            Payload::ContactCreate(r) => r.validate(),
            Payload::ContactEdit(r) => r.validate(),
            Payload::AffiliationCreate(r) => r.validate(),
            Payload::AffiliationEdit(r) => r.validate(),
            Payload::AttributeCreate(r) => r.validate(),
            Payload::AttributeEdit(r) => r.validate(),
        }
    }

    /// The record alone, in the shape the till sent it.
    pub fn record_json(&self) -> serde_json::Value {
        let value = match self {
            Payload::CustomerCreate(r) => serde_json::to_value(r),
            Payload::CustomerEdit(r) => serde_json::to_value(r),
            Payload::AddressCreate(r) => serde_json::to_value(r),
            Payload::AddressEdit(r) => serde_json::to_value(r),
            Payload::ContactCreate(r) => serde_json::to_value(r),
            Payload::ContactEdit(r) => serde_json::to_value(r),
            Payload::AffiliationCreate(r) => serde_json::to_value(r),
            Payload::AffiliationEdit(r) => serde_json::to_value(r),
            Payload::AttributeCreate(r) => serde_json::to_value(r),
            Payload::AttributeEdit(r) => serde_json::to_value(r),
        };
        // Plain structs of strings, bools and enums always serialize.
        value.unwrap_or(serde_json::Value::Null)
    }

    /// Parses a record of the given kind and action from the shape the till sends, and checks
    /// it. Field paths in errors are relative to the record.
    pub fn parse(
        kind: RecordKind,
        action: Action,
        record: serde_json::Value,
    ) -> Result<Payload, FieldError> {
        fn typed<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T, FieldError> {
            serde_path_to_error::deserialize(v).map_err(|e| {
                let path = e.path().to_string();
                super::validation::from_serde(&path, &e.into_inner().to_string())
            })
        }
        if !record.is_object() {
            return Err(FieldError::new(
                "body",
                "type",
                "the record must be a JSON object",
            ));
        }
        let payload = match (kind, action) {
            (RecordKind::Customer, Action::Create) => Payload::CustomerCreate(typed(record)?),
            (RecordKind::Customer, Action::Edit) => Payload::CustomerEdit(typed(record)?),
            (RecordKind::Address, Action::Create) => Payload::AddressCreate(typed(record)?),
            (RecordKind::Address, Action::Edit) => Payload::AddressEdit(typed(record)?),
            (RecordKind::Contact, Action::Create) => Payload::ContactCreate(typed(record)?),
            (RecordKind::Contact, Action::Edit) => Payload::ContactEdit(typed(record)?),
            (RecordKind::Affiliation, Action::Create) => Payload::AffiliationCreate(typed(record)?),
            (RecordKind::Affiliation, Action::Edit) => Payload::AffiliationEdit(typed(record)?),
            (RecordKind::Attribute, Action::Create) => Payload::AttributeCreate(typed(record)?),
            (RecordKind::Attribute, Action::Edit) => Payload::AttributeEdit(typed(record)?),
        };
        payload.validate()?;
        Ok(payload)
    }
}

/// Why HQ refused an operation, or why it is held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpError {
    /// Machine-readable code, e.g. `validation` or `held`.
    pub code: String,
    /// HQ's message, or the reason the node holds the operation.
    pub message: String,
    /// The field HQ named, when it named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// One accepted create or edit, as the node keeps it until HQ confirms it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Operation {
    /// Unique id, assigned at acceptance.
    pub id: OperationId,
    /// Acceptance order at this node; per-customer order follows it.
    pub seq: u64,
    /// The customer's temporary reference at this node.
    pub customer_ref: String,
    /// The sub-record the operation creates or edits; `None` for the customer record itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_id: Option<String>,
    /// The record, typed by kind and action.
    pub payload: Payload,
    /// Sync state.
    pub state: OpState,
    /// HQ's error for a failed operation, or the hold reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<OpError>,
    /// Bumped each time an operator edits the payload; HQ accepts a new revision of a failed
    /// operation under the same id.
    pub revision: u32,
    /// When the node accepted it (Unix milliseconds).
    pub accepted_at_ms: i64,
    /// When its state or payload last changed (Unix milliseconds).
    pub updated_at_ms: i64,
    /// For a customer edit: the values the patched fields had in the node's copy at acceptance,
    /// so HQ can tell a field changed on both sides (a conflict) from one changed here only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<serde_json::Value>,
    /// Fields HQ did not apply because HQ's copy had changed them too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<Conflict>,
}

/// A field an edit changed here while HQ's copy changed it too; HQ kept its own value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conflict {
    /// The field.
    pub field: String,
    /// The value the store's edit wanted.
    pub store_value: serde_json::Value,
    /// The value HQ kept.
    pub hq_value: serde_json::Value,
}

impl Operation {
    /// The HQ table kind.
    pub fn kind(&self) -> RecordKind {
        self.payload.kind()
    }

    /// Create or edit.
    pub fn action(&self) -> Action {
        self.payload.action()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips_and_parses_by_kind() {
        let p = Payload::parse(
            RecordKind::Address,
            Action::Create,
            serde_json::json!({"street":"Narva mnt 5","city":"Tallinn","postal_code":"10117","country":"EST"}),
        )
        .unwrap();
        assert_eq!(
            (p.kind(), p.action()),
            (RecordKind::Address, Action::Create)
        );
        let back: Payload = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back, p);
        assert_eq!(p.record_json()["country"], "EST");
    }

    #[test]
    fn parse_names_the_nested_field() {
        let err = Payload::parse(
            RecordKind::Address,
            Action::Create,
            serde_json::json!({"street":"x","city":"y","postal_code":"10117","country":"ee"}),
        )
        .unwrap_err();
        assert_eq!(err.field, "country");
        let err = Payload::parse(
            RecordKind::Customer,
            Action::Create,
            serde_json::json!({"first_name": 5, "last_name": "x"}),
        )
        .unwrap_err();
        assert_eq!((err.field.as_str(), err.rule), ("first_name", "type"));
    }

    #[test]
    fn missing_and_unknown_fields_are_named() {
        let err = Payload::parse(
            RecordKind::Customer,
            Action::Create,
            serde_json::json!({"first_name": "A"}),
        )
        .unwrap_err();
        assert_eq!((err.field.as_str(), err.rule), ("last_name", "required"));
        let err = Payload::parse(
            RecordKind::Attribute,
            Action::Create,
            serde_json::json!({"name": "a", "value": "b", "colour": "red"}),
        )
        .unwrap_err();
        assert_eq!((err.field.as_str(), err.rule), ("colour", "unknown_field"));
        let err = Payload::parse(RecordKind::Customer, Action::Create, serde_json::json!([1]))
            .unwrap_err();
        assert_eq!((err.field.as_str(), err.rule), ("body", "type"));
    }

    #[test]
    fn states_parse_from_their_names() {
        for s in OpState::ALL {
            assert_eq!(s.as_str().parse::<OpState>(), Ok(s));
        }
        assert!("done".parse::<OpState>().is_err());
    }
}
