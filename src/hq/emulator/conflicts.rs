//! Edits against stale data, with no I/O: which fields of a store's customer edit HQ applies,
//! and which it reports as conflicts because HQ's copy changed them too.
//!
//! The rule, per field of the edit: HQ applies it when HQ's current value still equals the
//! value the store saw (`base`), or already equals the new value; otherwise HQ keeps its own
//! value and reports a [`FieldConflict`]. A field the base does not mention, and every field
//! of an edit without a base, is applied (the behaviour before bases existed).

use serde_json::{Map, Value};

use crate::domain::customer::{CustomerPatch, NewCustomer};
use crate::hq::wire::FieldConflict;

/// What HQ does with one customer edit.
#[derive(Debug, Clone, PartialEq)]
pub struct Merge {
    /// The fields to apply (possibly none).
    pub apply: CustomerPatch,
    /// The fields not applied, with both values.
    pub conflicts: Vec<FieldConflict>,
}

/// The edit could not be split (a serialization failure; not expected for these plain types).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot compare the edit with HQ's copy: {0}")]
pub struct MergeError(String);

fn object(value: Result<Value, serde_json::Error>) -> Result<Map<String, Value>, MergeError> {
    match value {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(MergeError(format!("expected an object, got {other}"))),
        Err(e) => Err(MergeError(e.to_string())),
    }
}

/// Splits `patch` against HQ's `current` fields and the store's `base` (see the module
/// comment). A `base` that is not a JSON object is treated as absent.
pub fn merge_customer_edit(
    current: &NewCustomer,
    patch: &CustomerPatch,
    base: Option<&Value>,
) -> Result<Merge, MergeError> {
    let Some(base) = base.and_then(Value::as_object) else {
        return Ok(Merge {
            apply: patch.clone(),
            conflicts: Vec::new(),
        });
    };
    let changes = object(serde_json::to_value(patch))?;
    let hq = object(serde_json::to_value(current))?;
    let mut apply = Map::new();
    let mut conflicts = Vec::new();
    // Bounded: a customer patch has six fields.
    for (field, store_value) in changes {
        // An optional field HQ does not hold serializes as absent: it is null.
        let hq_value = hq.get(&field).cloned().unwrap_or(Value::Null);
        let unchanged_at_hq = base.get(&field).is_none_or(|seen| *seen == hq_value);
        if unchanged_at_hq || hq_value == store_value {
            apply.insert(field, store_value);
        } else {
            conflicts.push(FieldConflict {
                field,
                store_value,
                hq_value,
            });
        }
    }
    let apply =
        serde_json::from_value(Value::Object(apply)).map_err(|e| MergeError(e.to_string()))?;
    Ok(Merge { apply, conflicts })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hq_copy() -> NewCustomer {
        NewCustomer {
            first_name: "Õie".into(),
            last_name: "Kask".into(),
            email: Some("hq@example.ee".into()),
            phone: None,
            customer_group: Some("RETAIL".into()),
            language: None,
        }
    }

    fn patch(v: Value) -> CustomerPatch {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_field_changed_on_both_sides_is_a_conflict_and_one_side_only_is_applied() {
        // The store saw last_name Tamm and email old@; HQ changed last_name to Kask since.
        let p = patch(json!({"last_name": "Mets", "email": "new@example.ee"}));
        let base = json!({"last_name": "Tamm", "email": "hq@example.ee"});
        let m = merge_customer_edit(&hq_copy(), &p, Some(&base)).unwrap();
        assert_eq!(m.apply, patch(json!({"email": "new@example.ee"})));
        assert_eq!(
            m.conflicts,
            vec![FieldConflict {
                field: "last_name".into(),
                store_value: json!("Mets"),
                hq_value: json!("Kask"),
            }]
        );
    }

    #[test]
    fn the_same_change_on_both_sides_is_no_conflict() {
        let p = patch(json!({"last_name": "Kask"}));
        let base = json!({"last_name": "Tamm"});
        let m = merge_customer_edit(&hq_copy(), &p, Some(&base)).unwrap();
        assert_eq!(m.apply, p);
        assert!(m.conflicts.is_empty());
    }

    #[test]
    fn clearing_and_absent_values_compare_as_null() {
        // The store saw no phone and sets one; HQ has none either: applied.
        let p = patch(json!({"phone": "+372 5555 1234", "customer_group": null}));
        let base = json!({"phone": null, "customer_group": "STAFF"});
        let m = merge_customer_edit(&hq_copy(), &p, Some(&base)).unwrap();
        assert_eq!(m.apply, patch(json!({"phone": "+372 5555 1234"})));
        assert_eq!(m.conflicts.len(), 1);
        assert_eq!(m.conflicts[0].field, "customer_group");
        assert_eq!(m.conflicts[0].store_value, Value::Null);
        assert_eq!(m.conflicts[0].hq_value, json!("RETAIL"));
    }

    #[test]
    fn without_a_base_or_a_base_entry_everything_is_applied() {
        let p = patch(json!({"last_name": "Mets", "first_name": "Mari"}));
        let m = merge_customer_edit(&hq_copy(), &p, None).unwrap();
        assert_eq!((m.apply.clone(), m.conflicts.len()), (p.clone(), 0));
        let m = merge_customer_edit(&hq_copy(), &p, Some(&json!({"first_name": "Õie"}))).unwrap();
        assert_eq!((m.apply, m.conflicts.len()), (p.clone(), 0));
        // A base that is not an object counts as none.
        let m = merge_customer_edit(&hq_copy(), &p, Some(&json!("x"))).unwrap();
        assert_eq!(m.conflicts.len(), 0);
    }

    #[test]
    fn every_field_in_conflict_leaves_an_empty_patch() {
        let p = patch(json!({"last_name": "Mets"}));
        let m = merge_customer_edit(&hq_copy(), &p, Some(&json!({"last_name": "Tamm"}))).unwrap();
        assert_eq!(m.apply, CustomerPatch::default());
        assert_eq!(m.conflicts.len(), 1);
    }
}
