//! The tables of the store file and how records are encoded in them.
//!
//! Records are JSON: self-describing, so a newer node reads an older file, and a technician can
//! read a dump. Keys are fixed-width integers or short strings. Beside each customer's view, a
//! small binary key record (when it last changed, and its search terms) lets a search check and
//! rank candidates without decoding their views, from a table small enough to stay cached.
//!
//! A new table must also be listed in `backup::each_table`, or backups would lack it (a test
//! there checks that a fresh store holds exactly the tables listed).

use std::cmp::Ordering;

use redb::{Key, TableDefinition, TypeName, Value};
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
/// Customer reference → materialised customer view; none for a customer created here and not
/// changed since, whose create is its view (`store::views`).
pub const CUSTOMERS: TableDefinition<CustomerRef, &[u8]> = TableDefinition::new("customers");
/// Customer reference → the customer's key record ([`encode_keys`]): what a search checks
/// and ranks candidates by.
pub const CUSTOMER_KEYS: TableDefinition<CustomerRef, &[u8]> =
    TableDefinition::new("customer_keys");
/// (customer reference, sequence number) → the operation's state code: each customer's
/// operations in order, with their states, so a customer's sync state is read without decoding
/// its operations.
pub const CUSTOMER_OPS: TableDefinition<(CustomerRef, u64), u8> =
    TableDefinition::new("customer_operations");
/// (folded search term, customer reference) → the customer's time of change when the term was
/// written: the main search index. A search ranks the customers a range of it proves to match
/// by that time, without reading their key records.
pub const SEARCH: TableDefinition<(&str, &str), i64> = TableDefinition::new("search_terms");
/// Log key → the search terms one write group added and removed ([`encode_term_changes`]; a
/// row before schema 8 holds one write's, [`encode_term_change`]), not yet merged into
/// [`SEARCH`] (see `store::search_log`).
pub const SEARCH_LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("search_terms_log");
/// HQ account number → customer reference.
pub const ACCOUNTS: TableDefinition<&str, &str> = TableDefinition::new("account_numbers");

/// Customer reference → the customer as of its pruned (confirmed) operations: the base that
/// the operations still held are folded onto when a view is rebuilt.
pub const CUSTOMER_BASES: TableDefinition<CustomerRef, &[u8]> =
    TableDefinition::new("customer_bases");

/// CDX job number → the package held (JSON: version, when it arrived, its body).
pub const CDX_JOBS: TableDefinition<u32, &[u8]> = TableDefinition::new("cdx_jobs");

/// Version of the layout above; bumped on change (2: customer operations carry their state;
/// 3: customer key records; 4: the search terms log; 5: name words indexed in pairs; 6: the
/// tables keyed by customer reference order it as [`CustomerRef`] does; 7: each search index
/// entry holds the customer's time of change; 8: a customer created here and not changed since
/// has no view record, and the search terms log holds a row per write group).
pub const SCHEMA_VERSION: u64 = 8;
/// The oldest version this build upgrades in place (4 added a table; 5 rebuilds the search
/// index and key records from the customers' views, see `store::upgrade`).
pub const SCHEMA_UPGRADES_FROM: u64 = 3;
/// The versions whose search terms are rebuilt on upgrade: those before name pairs (5), and
/// before the index held the time of change (7).
pub const TERMS_REBUILT_BEFORE: u64 = 7;

/// The versions whose tables keyed by customer reference are in plain byte order (`&str`), and
/// are copied into [`CustomerRef`] order on upgrade.
pub const REF_ORDER_BEFORE: u64 = 6;

/// A customer reference as a table key: stored as its UTF-8 bytes (as `&str` is), ordered with
/// each run of digits compared as a number, shorter runs first ("S0001-T9" before "S0001-T10").
///
/// Temporary references are handed out in sequence (`S0001-T{seq}`). In byte order each new
/// one lands inside the tree ("T100000" sorts between "T10000" and "T10001"): every create
/// rebuilt a leaf in the middle of three tables and split it in halves that nothing filled
/// again, so those tables held twice the pages and each group commit wrote twice as many. In
/// this order a new reference is the greatest, and redb appends it to a packed leaf.
#[derive(Debug)]
pub struct CustomerRef;

impl Value for CustomerRef {
    type SelfType<'a>
        = &'a str
    where
        Self: 'a;
    type AsBytes<'a>
        = &'a str
    where
        Self: 'a;

    fn fixed_width() -> Option<usize> {
        None
    }

    fn from_bytes<'a>(data: &'a [u8]) -> &'a str
    where
        Self: 'a,
    {
        <&str as Value>::from_bytes(data)
    }

    fn as_bytes<'a, 'b: 'a>(value: &'a &'b str) -> &'a str
    where
        Self: 'b,
    {
        value
    }

    fn type_name() -> TypeName {
        TypeName::new("outpost::CustomerRef")
    }
}

impl Key for CustomerRef {
    fn compare(data1: &[u8], data2: &[u8]) -> Ordering {
        numeric_order(data1, data2)
    }
}

/// Byte order, but for runs of ASCII digits, which compare by length first and then by their
/// bytes (leading zeros count, so distinct strings never compare equal: a total order, the
/// byte order of the strings with each digit run prefixed by its length).
pub fn numeric_order(a: &[u8], b: &[u8]) -> Ordering {
    // Keys of one table mostly share a long prefix ("S0001-T1000…"): skip it as bytes, back to
    // the start of the digit run it ends in, since the order is decided from there on.
    let same = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let from = a[..same]
        .iter()
        .rposition(|x| !x.is_ascii_digit())
        .map_or(0, |k| k + 1);
    numeric_order_from(&a[from..], &b[from..])
}

/// [`numeric_order`] of two strings that may differ from their first byte.
fn numeric_order_from(a: &[u8], b: &[u8]) -> Ordering {
    let (mut i, mut j) = (0, 0);
    loop {
        let (x, y) = match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) => (*x, *y),
            (x, y) => return x.is_some().cmp(&y.is_some()),
        };
        if x.is_ascii_digit() && y.is_ascii_digit() {
            let run_a = digit_run(&a[i..]);
            let run_b = digit_run(&b[j..]);
            let by_number = run_a.len().cmp(&run_b.len()).then_with(|| run_a.cmp(run_b));
            if by_number.is_ne() {
                return by_number;
            }
            i += run_a.len();
            j += run_b.len();
        } else if x != y {
            return x.cmp(&y);
        } else {
            i += 1;
            j += 1;
        }
    }
}

/// The ASCII digits `bytes` begins with.
fn digit_run(bytes: &[u8]) -> &[u8] {
    let len = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    &bytes[..len]
}

/// Key in [`META`] of the next operation sequence number.
pub const NEXT_SEQ: &str = "next_seq";
/// Key in [`META`] of the schema version.
pub const SCHEMA_KEY: &str = "schema_version";
/// Key in [`META`] of the next [`SEARCH_LOG`] key.
pub const NEXT_SEARCH_LOG: &str = "next_search_log";

/// Encodes a record for storage.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Encoding(e.to_string()))
}

/// Decodes a stored record.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Encoding(e.to_string()))
}

/// Separator of the search terms in a key record (terms are folded to ASCII letters, digits
/// and punctuation, name pairs marked with bytes 1 to 3; never a NUL).
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

    /// Whether every query term matches one of the customer's terms (`search::term_matches`).
    pub fn matches_all(&self, query: &[String]) -> bool {
        query.iter().all(|q| {
            self.terms()
                .any(|t| crate::domain::search::term_matches(t, q.as_bytes()))
        })
    }
}

/// The search terms one write added to and removed from a customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TermChange {
    /// The customer.
    pub customer_ref: String,
    /// Terms the customer has now and did not have before.
    pub added: Vec<String>,
    /// Terms the customer had before and has no longer.
    pub removed: Vec<String>,
    /// The customer's time of change after the write (the index entries' value).
    pub updated_at_ms: i64,
}

/// Encodes a [`TermChange`]: the reference, then the number of added terms and the time of
/// change (i64 LE), then the terms (added first), each string as a u16 LE length and its
/// bytes.
pub fn encode_term_change(change: &TermChange) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::with_capacity(64);
    write_term_change(change, &mut out)?;
    Ok(out)
}

/// Appends the [`encode_term_change`] record of `change` to `out`.
fn write_term_change(change: &TermChange, out: &mut Vec<u8>) -> Result<(), StoreError> {
    let strings = std::iter::once(&change.customer_ref)
        .chain(&change.added)
        .chain(&change.removed);
    let too_long = |what: &str| StoreError::Encoding(format!("term log record: {what} too long"));
    let added = u16::try_from(change.added.len()).map_err(|_| too_long("term list"))?;
    let put = |s: &str, out: &mut Vec<u8>| -> Result<(), StoreError> {
        let len = u16::try_from(s.len()).map_err(|_| too_long("string"))?;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(s.as_bytes());
        Ok(())
    };
    let mut first = true;
    for s in strings {
        put(s, out)?;
        if first {
            out.extend_from_slice(&added.to_le_bytes());
            out.extend_from_slice(&change.updated_at_ms.to_le_bytes());
            first = false;
        }
    }
    Ok(())
}

/// Decodes a record written by [`encode_term_change`].
pub fn decode_term_change(bytes: &[u8]) -> Result<TermChange, StoreError> {
    let bad = || StoreError::Encoding("term log record".into());
    let mut rest = bytes;
    let take_u16 = |rest: &mut &[u8]| -> Result<usize, StoreError> {
        let (n, tail) = rest.split_first_chunk::<2>().ok_or_else(bad)?;
        *rest = tail;
        Ok(usize::from(u16::from_le_bytes(*n)))
    };
    let take_str = |rest: &mut &[u8], len: usize| -> Result<String, StoreError> {
        if rest.len() < len {
            return Err(bad());
        }
        let (s, tail) = rest.split_at(len);
        *rest = tail;
        String::from_utf8(s.to_vec()).map_err(|_| bad())
    };
    let len = take_u16(&mut rest)?;
    let customer_ref = take_str(&mut rest, len)?;
    let n_added = take_u16(&mut rest)?;
    let (time, tail) = rest.split_first_chunk::<8>().ok_or_else(bad)?;
    let updated_at_ms = i64::from_le_bytes(*time);
    rest = tail;
    let mut added = Vec::with_capacity(n_added);
    let mut removed = Vec::new();
    while !rest.is_empty() {
        let len = take_u16(&mut rest)?;
        let s = take_str(&mut rest, len)?;
        if added.len() < n_added {
            added.push(s);
        } else {
            removed.push(s);
        }
    }
    if added.len() < n_added {
        return Err(bad());
    }
    Ok(TermChange {
        customer_ref,
        added,
        removed,
        updated_at_ms,
    })
}

/// Encodes the term changes of one write group as one log row: two zero bytes (a reference is
/// never empty, so a row of one change never begins so), then each change as its length (u32
/// LE) and its [`encode_term_change`] record. One row a group, not one a change: a create no
/// longer adds a row of its own to the log's table.
pub fn encode_term_changes(changes: &[TermChange]) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::with_capacity(2 + changes.len() * 96);
    out.extend_from_slice(&GROUP_ROW.to_le_bytes());
    for change in changes {
        // Each record straight into the row, its length filled in after it.
        let at = out.len();
        out.extend_from_slice(&[0; 4]);
        write_term_change(change, &mut out)?;
        let len = u32::try_from(out.len() - at - 4)
            .map_err(|_| StoreError::Encoding("term log record too long".into()))?;
        out[at..at + 4].copy_from_slice(&len.to_le_bytes());
    }
    Ok(out)
}

/// The first two bytes of a group's log row ([`encode_term_changes`]).
const GROUP_ROW: u16 = 0;

/// Decodes a log row: a group's changes ([`encode_term_changes`]), or the one change of a row
/// written before schema 8 ([`encode_term_change`]).
pub fn decode_term_changes(bytes: &[u8]) -> Result<Vec<TermChange>, StoreError> {
    let Some((first, mut rest)) = bytes.split_first_chunk::<2>() else {
        return Err(StoreError::Encoding("term log record".into()));
    };
    if u16::from_le_bytes(*first) != GROUP_ROW {
        return decode_term_change(bytes).map(|change| vec![change]);
    }
    let mut changes = Vec::new();
    while !rest.is_empty() {
        let bad = || StoreError::Encoding("term log group record".into());
        let (len, tail) = rest.split_first_chunk::<4>().ok_or_else(bad)?;
        let len = usize::try_from(u32::from_le_bytes(*len)).map_err(|_| bad())?;
        if tail.len() < len {
            return Err(bad());
        }
        let (record, tail) = tail.split_at(len);
        changes.push(decode_term_change(record)?);
        rest = tail;
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(customer_ref: &str, added: &[&str], removed: &[&str], time: i64) -> TermChange {
        TermChange {
            customer_ref: customer_ref.into(),
            added: added.iter().map(|t| t.to_string()).collect(),
            removed: removed.iter().map(|t| t.to_string()).collect(),
            updated_at_ms: time,
        }
    }

    #[test]
    fn a_group_row_reads_back_as_its_changes_and_an_older_row_as_one() {
        let group = vec![
            change("S0001-T7", &["oie", "kask"], &["x"], 7),
            change("S0001-T8", &[], &["tamm"], 8),
            change("C000042", &["c000042"], &[], 9),
        ];
        let row = encode_term_changes(&group).unwrap();
        assert_eq!(decode_term_changes(&row).unwrap(), group);
        assert_eq!(
            decode_term_changes(&encode_term_changes(&[]).unwrap()).unwrap(),
            Vec::new()
        );
        // A row as schema 7 wrote it: one change, its reference first.
        let older = encode_term_change(&group[0]).unwrap();
        assert_eq!(decode_term_changes(&older).unwrap(), vec![group[0].clone()]);
    }

    #[test]
    fn a_cut_group_row_is_an_encoding_error_not_a_panic() {
        let group = vec![
            change("S0001-T7", &["oie"], &["x"], 7),
            change("S0001-T8", &["tamm"], &[], 8),
        ];
        let row = encode_term_changes(&group).unwrap();
        let first_len = 2 + 4 + encode_term_change(&group[0]).unwrap().len();
        for cut in 0..row.len() {
            // A cut at the end of a change reads as the changes before it; any other fails.
            match decode_term_changes(&row[..cut]) {
                Ok(read) => assert!(
                    (cut == 2 && read.is_empty()) || (cut == first_len && read == group[..1]),
                    "cut at {cut} read {read:?}"
                ),
                Err(StoreError::Encoding(_)) => {}
                Err(e) => panic!("cut at {cut}: {e}"),
            }
        }
    }

    #[test]
    fn a_term_change_reads_back_as_written() {
        let change = TermChange {
            customer_ref: "S0001-T7".into(),
            added: vec!["oie".into(), "taht".into(), "".into()],
            removed: vec!["37251234567".into()],
            updated_at_ms: 1_780_000_000_123,
        };
        let bytes = encode_term_change(&change).unwrap();
        assert_eq!(decode_term_change(&bytes).unwrap(), change);
        let empty = TermChange {
            customer_ref: "C1".into(),
            added: vec![],
            removed: vec![],
            updated_at_ms: -1,
        };
        assert_eq!(
            decode_term_change(&encode_term_change(&empty).unwrap()).unwrap(),
            empty
        );
    }

    /// The order [`numeric_order`] stands for: each digit run prefixed by its length.
    fn with_run_lengths(s: &str) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = s.as_bytes();
        while let Some(first) = rest.first() {
            let run = if first.is_ascii_digit() {
                digit_run(rest).len()
            } else {
                0
            };
            if run > 0 {
                out.extend_from_slice(format!("{run:04}").as_bytes());
                out.extend_from_slice(&rest[..run]);
                rest = &rest[run..];
            } else {
                out.push(*first);
                rest = &rest[1..];
            }
        }
        out
    }

    #[test]
    fn temporary_references_sort_in_the_order_they_are_handed_out() {
        let refs: Vec<String> = (1..=2_000).map(|n| format!("S0001-T{n}")).collect();
        assert!(
            refs.windows(2)
                .all(|w| numeric_order(w[0].as_bytes(), w[1].as_bytes()).is_lt())
        );
        assert!(numeric_order(b"S0001-T1", b"S0002-T1").is_lt());
        assert!(numeric_order(b"T01", b"T1").is_gt(), "leading zeros count");
        assert!(numeric_order(b"T1", b"T1a").is_lt());
        assert!(numeric_order(b"C000001", b"C000002").is_lt());
        assert_eq!(numeric_order(b"", b""), Ordering::Equal);
    }

    proptest::proptest! {
        /// A total order, equal only for equal strings: the byte order of the strings with
        /// each digit run prefixed by its length.
        #[test]
        fn numeric_order_is_the_order_of_the_run_prefixed_strings(
            shared in "[0-9a-cT-]{0,8}",
            a in "[0-9a-cT-]{0,12}",
            b in "[0-9a-cT-]{0,12}",
        ) {
            // Most pairs share a prefix, as the keys of a table do (digits on both sides of
            // where they part included).
            let (a, b) = (format!("{shared}{a}"), format!("{shared}{b}"));
            let want = with_run_lengths(&a).cmp(&with_run_lengths(&b));
            proptest::prop_assert_eq!(numeric_order(a.as_bytes(), b.as_bytes()), want);
            proptest::prop_assert_eq!(want.is_eq(), a == b);
        }
    }

    #[test]
    fn a_cut_term_change_is_an_encoding_error_not_a_panic() {
        let change = TermChange {
            customer_ref: "S0001-T7".into(),
            added: vec!["oie".into()],
            removed: vec!["x".into()],
            updated_at_ms: 7,
        };
        let bytes = encode_term_change(&change).unwrap();
        for cut in 0..bytes.len() - 1 {
            // Every prefix either fails or (at a record boundary) reads as fewer removals.
            if let Ok(c) = decode_term_change(&bytes[..cut]) {
                assert!(c.removed.is_empty());
            }
        }
    }
}
