//! The tables of the store file and how records are encoded in them.
//!
//! Records are JSON: self-describing, so a newer node reads an older file, and a technician can
//! read a dump. Keys are fixed-width integers or short strings. Beside each customer's view, a
//! small binary key record (when it last changed, and its search terms) lets a search check and
//! rank candidates without decoding their views, from a table small enough to stay cached.
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
/// Customer reference → the customer's key record ([`encode_keys`]): what a search checks
/// and ranks candidates by.
pub const CUSTOMER_KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("customer_keys");
/// (customer reference, sequence number) → the operation's state code: each customer's
/// operations in order, with their states, so a customer's sync state is read without decoding
/// its operations.
pub const CUSTOMER_OPS: TableDefinition<(&str, u64), u8> =
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

/// Version of the layout above; bumped on incompatible change (2: customer operations carry
/// their state; 3: customer key records).
pub const SCHEMA_VERSION: u64 = 3;

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

/// Separator of the search terms in a key record (terms are folded to ASCII letters, digits
/// and punctuation; never a NUL).
const TERM_SEP: u8 = 0;

/// Encodes a customer's key record: `updated_at_ms` (i64 LE), then its search terms, each
/// followed by a NUL.
pub fn encode_keys(updated_at_ms: i64, terms: &[String]) -> Vec<u8> {
    let terms_len: usize = terms.iter().map(|t| t.len() + 1).sum();
    let mut out = Vec::with_capacity(8 + terms_len);
    out.extend_from_slice(&updated_at_ms.to_le_bytes());
    for t in terms {
        out.extend_from_slice(t.as_bytes());
        out.push(TERM_SEP);
    }
    out
}

/// A customer's key record, parsed.
pub struct CustomerKeys<'a> {
    /// When the view last changed (Unix ms).
    pub updated_at_ms: i64,
    terms: &'a [u8],
}

impl<'a> CustomerKeys<'a> {
    /// Parses a stored key record.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, StoreError> {
        let (at, terms) = bytes
            .split_first_chunk::<8>()
            .ok_or_else(|| StoreError::Encoding("customer key record".into()))?;
        Ok(CustomerKeys {
            updated_at_ms: i64::from_le_bytes(*at),
            terms,
        })
    }

    /// The customer's search terms, as indexed.
    pub fn terms(&self) -> impl Iterator<Item = &'a [u8]> + use<'a> {
        self.terms
            .split(|b| *b == TERM_SEP)
            .filter(|t| !t.is_empty())
    }

    /// Whether every query term is a prefix of one of the customer's terms.
    pub fn matches_all(&self, query: &[String]) -> bool {
        query
            .iter()
            .all(|q| self.terms().any(|t| t.starts_with(q.as_bytes())))
    }
}
