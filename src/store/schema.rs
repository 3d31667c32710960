//! The tables of the store file and how records are encoded in them.
//!
//! Records are JSON: self-describing, so a newer node reads an older file, and a technician can
//! read a dump. Keys are fixed-width integers or short strings.
//!
//! A new table must also be listed in `backup::each_table`, or backups would lack it (a test
//! there checks that a fresh store holds exactly the tables listed).

use redb::TableDefinition;
use serde::{Serialize, de::DeserializeOwned};

use super::StoreError;

/// Counters: `next_seq`, `schema_version`.
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Operations by acceptance sequence number.
pub const OPS: TableDefinition<u64, &[u8]> = TableDefinition::new("operations");
/// Operation id → sequence number.
pub const OP_IDS: TableDefinition<u128, u64> = TableDefinition::new("operation_ids");
/// (state code, sequence number): operations by state, in acceptance order.
pub const OPS_BY_STATE: TableDefinition<(u8, u64), ()> =
    TableDefinition::new("operations_by_state");
/// Customer reference → materialised customer view.
pub const CUSTOMERS: TableDefinition<&str, &[u8]> = TableDefinition::new("customers");
/// (customer reference, sequence number): each customer's operations in order.
pub const CUSTOMER_OPS: TableDefinition<(&str, u64), ()> =
    TableDefinition::new("customer_operations");
/// (folded search term, customer reference).
pub const SEARCH: TableDefinition<(&str, &str), ()> = TableDefinition::new("search_terms");
/// HQ account number → customer reference.
pub const ACCOUNTS: TableDefinition<&str, &str> = TableDefinition::new("account_numbers");

/// Customer reference → the customer as of its pruned (confirmed) operations: the base that
/// the operations still held are folded onto when a view is rebuilt.
pub const CUSTOMER_BASES: TableDefinition<&str, &[u8]> = TableDefinition::new("customer_bases");

/// CDX job number → the package held (JSON: version, when it arrived, its body).
pub const CDX_JOBS: TableDefinition<u32, &[u8]> = TableDefinition::new("cdx_jobs");

/// Version of the layout above; bumped on incompatible change.
pub const SCHEMA_VERSION: u64 = 1;

/// Key in [`META`] of the next operation sequence number.
pub const NEXT_SEQ: &str = "next_seq";
/// Key in [`META`] of the schema version.
pub const SCHEMA_KEY: &str = "schema_version";

/// Encodes a record for storage.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Encoding(e.to_string()))
}

/// Decodes a stored record.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Encoding(e.to_string()))
}
