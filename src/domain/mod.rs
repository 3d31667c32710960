//! Domain rules: customers, sub-records, operations and validation. Plain Rust, no I/O.

pub mod customer;
pub mod features;
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
