//! An operation as stored, decoded only as far as a change of its state needs.
//!
//! Confirming an operation moves it twice (staged, then completed): decoding and re-encoding
//! its payload each time was a tenth of the backlog drain's writer. Here the payload and the
//! edit's base stay the JSON they were stored as, copied through unparsed.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::StoreError;
use super::schema::decode;
use crate::domain::operation::{Conflict, OpError, Payload};
use crate::domain::{OpState, Operation, OperationId};

/// An [`Operation`]'s stored record with its payload and base left encoded. Its fields and
/// their encoding mirror [`Operation`]'s, so it reads and writes the same records byte for
/// byte (the tests build an operation with every field set: a field added there and not here
/// fails them). Like [`Operation`], it ignores a field it does not know: a record an older
/// build wrote still reads, and is written back without it, as [`Operation`] would.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct OpRecord {
    pub id: OperationId,
    pub seq: u64,
    pub customer_ref: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_id: Option<String>,
    pub payload: Box<RawValue>,
    pub state: OpState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<OpError>,
    pub revision: u32,
    pub accepted_at_ms: i64,
    pub updated_at_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<Conflict>,
}

impl OpRecord {
    /// The whole operation, its payload and base decoded.
    pub fn operation(&self) -> Result<Operation, StoreError> {
        Ok(Operation {
            id: self.id,
            seq: self.seq,
            customer_ref: self.customer_ref.clone(),
            record_id: self.record_id.clone(),
            payload: decode::<Payload>(self.payload.get().as_bytes())?,
            state: self.state,
            error: self.error.clone(),
            revision: self.revision,
            accepted_at_ms: self.accepted_at_ms,
            updated_at_ms: self.updated_at_ms,
            base: match &self.base {
                Some(raw) => Some(decode(raw.get().as_bytes())?),
                None => None,
            },
            conflicts: self.conflicts.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::operation::RecordKind;
    use crate::store::schema::encode;

    fn edit_with_everything() -> Operation {
        let payload = Payload::parse(
            RecordKind::Customer,
            crate::domain::operation::Action::Edit,
            serde_json::json!({"first_name": "Õie", "phone": "+372 5000 0000"}),
        )
        .expect("a customer edit");
        Operation {
            id: OperationId::new_v7(1_796_000_000_000),
            seq: 42,
            customer_ref: "S0001-T42".into(),
            record_id: Some("ADR-7".into()),
            payload,
            state: OpState::Failed,
            error: Some(OpError {
                code: "invalid".into(),
                message: "phone \"x\"".into(),
                field: Some("phone".into()),
            }),
            revision: 3,
            accepted_at_ms: 1_796_000_000_000,
            updated_at_ms: 1_796_000_000_500,
            base: Some(serde_json::json!({"first_name": "Oie", "phone": null})),
            conflicts: vec![Conflict {
                field: "first_name".into(),
                store_value: serde_json::json!("Õie"),
                hq_value: serde_json::json!("Õile"),
            }],
        }
    }

    #[test]
    fn a_record_reads_and_writes_back_the_operations_bytes() {
        let full = edit_with_everything();
        let mut bare = full.clone();
        (bare.record_id, bare.error, bare.base) = (None, None, None);
        bare.conflicts.clear();
        for op in [full, bare] {
            let bytes = encode(&op).expect("encoded");
            let record: OpRecord = decode(&bytes).expect("a record");
            assert_eq!(encode(&record).expect("re-encoded"), bytes);
            assert_eq!(record.operation().expect("decoded"), op);
        }
    }

    #[test]
    fn a_record_writes_back_what_the_operation_would() {
        let mut json: serde_json::Value =
            serde_json::to_value(edit_with_everything()).expect("json");
        json["from_an_older_build"] = serde_json::json!(1);
        let bytes = serde_json::to_vec(&json).expect("bytes");
        let record: OpRecord = decode(&bytes).expect("a record");
        let op: Operation = decode(&bytes).expect("an operation");
        // The same operation, the unknown field dropped (the payload keeps its stored key order).
        let written = encode(&record).expect("record");
        assert_eq!(decode::<Operation>(&written).expect("decoded"), op);
        assert!(!String::from_utf8_lossy(&written).contains("from_an_older_build"));
    }
}
