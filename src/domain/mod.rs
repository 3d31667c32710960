//! Domain rules: customers, sub-records, operations and validation. Plain Rust, no I/O.

pub mod customer;
pub mod features;
pub mod findings;
pub mod mode;
pub mod operation;
pub mod search;
pub mod validation;
pub mod view;

pub use customer::{
    Address, AddressPatch, Affiliation, AffiliationPatch, Attribute, AttributePatch, Contact,
    ContactKind, ContactPatch, CustomerPatch, NewCustomer,
};
pub use operation::{Action, OpState, Operation, OperationId, Payload, RecordKind};
pub use validation::FieldError;
pub use view::{CustomerView, SubRecord, SyncState};

/// Unix milliseconds as an RFC 3339 UTC timestamp (pure formatting; empty if out of range).
pub fn rfc3339(unix_ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}
