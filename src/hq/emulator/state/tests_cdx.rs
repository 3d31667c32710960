//! The model on its own: 1010 versions and pages, admin changes at HQ, real-time calls and
//! their idempotency with uploads, and edits against stale data.

use serde_json::json;

use super::*;
use crate::domain::customer::{CustomerPatch, NewCustomer};
use crate::hq::wire::{RtsRequest, RtsResponse};

const STORE: &str = "S0001";

fn fields(last_name: &str) -> NewCustomer {
    NewCustomer {
        first_name: "Õie".into(),
        last_name: last_name.into(),
        email: None,
        phone: None,
        customer_group: Some("RETAIL".into()),
        language: None,
    }
}

fn patch(v: serde_json::Value) -> CustomerPatch {
    serde_json::from_value(v).unwrap()
}

fn op(seq: u64, customer_ref: &str, record_id: Option<&str>, payload: Payload) -> WireOperation {
    WireOperation {
        operation_id: OperationId::new_v7(1_000 + seq),
        revision: 0,
        seq,
        customer_ref: customer_ref.into(),
        kind: payload.kind(),
        action: payload.action(),
        record_id: record_id.map(str::to_string),
        payload,
        accepted_at_ms: seq as i64,
        base: None,
    }
}

fn edit(
    seq: u64,
    customer_ref: &str,
    p: serde_json::Value,
    base: Option<serde_json::Value>,
) -> WireOperation {
    let mut o = op(seq, customer_ref, None, Payload::CustomerEdit(patch(p)));
    o.base = base;
    o
}

fn upload(hq: &mut HqModel, ops: &[WireOperation]) -> Vec<StageStatus> {
    let req = UploadRequest {
        store_id: STORE.into(),
        channel_id: "CH0001".into(),
        batch_id: uuid::Uuid::now_v7(),
        operations: ops.to_vec(),
    };
    hq.stage(&req)
        .unwrap()
        .results
        .iter()
        .map(|r| r.status)
        .collect()
}

fn rts(hq: &mut HqModel, op: &WireOperation) -> Result<RtsResponse, RtsError> {
    hq.real_time(
        &RtsRequest {
            store_id: STORE.into(),
            channel_id: "CH0001".into(),
            operation: op.clone(),
        },
        None,
    )
}

fn feed(hq: &HqModel) -> Vec<Outcome> {
    hq.outcomes(STORE, 0, 10_000).outcomes
}

fn refused(r: Result<RtsResponse, RtsError>) -> OpError {
    match r {
        Err(RtsError::Refused(e)) => e,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn accounts(page: &crate::hq::wire::CustomersPage) -> Vec<(u64, String)> {
    page.customers
        .iter()
        .map(|c| (c.version, c.account_number.clone()))
        .collect()
}

#[test]
fn every_customer_change_bumps_the_1010_version() {
    let mut hq = HqModel::new();
    assert_eq!(hq.customer_version(), 0);
    let create = op(1, "S0001-T1", None, Payload::CustomerCreate(fields("Täht")));
    upload(&mut hq, std::slice::from_ref(&create));
    hq.run_sync(None);
    assert_eq!(hq.customer_version(), 1);
    let address = Payload::AddressCreate(crate::domain::Address {
        street: "Narva mnt 5".into(),
        city: "Tallinn".into(),
        postal_code: "10117".into(),
        country: "EST".into(),
        county: None,
        purpose: crate::domain::customer::AddressPurpose::Home,
        is_primary: true,
    });
    upload(
        &mut hq,
        &[
            edit(2, "S0001-T1", json!({"last_name": "Kask"}), None),
            op(3, "S0001-T1", Some("ADR-3"), address),
        ],
    );
    hq.run_sync(None);
    assert_eq!(hq.customer_version(), 3);
    let c = hq.customer_record("C000001").unwrap();
    assert_eq!(c.version, 3);
    assert_eq!(c.origin_store_id.as_deref(), Some(STORE));
    assert_eq!(c.origin_customer_ref.as_deref(), Some("S0001-T1"));
    // Admin changes at HQ, and real-time calls, bump it too.
    let made = hq.admin_create_customer(fields("Mets")).unwrap();
    assert_eq!((made.version, made.origin_store_id), (4, None));
    assert_eq!(made.account_number, "C000002");
    let patched = hq
        .admin_patch_customer("C000002", &patch(json!({"first_name": "Mari"})))
        .unwrap();
    assert_eq!(
        (patched.version, patched.fields.first_name.as_str()),
        (5, "Mari")
    );
    rts(
        &mut hq,
        &edit(4, "C000002", json!({"last_name": "Saar"}), None),
    )
    .unwrap();
    assert_eq!(hq.customer_version(), 6);
    // A refused operation changes nothing.
    let bad = edit(5, "C000002", json!({"customer_group": "GOLD"}), None);
    assert_eq!(
        refused(rts(&mut hq, &bad)).field.as_deref(),
        Some("customer_group")
    );
    assert_eq!(hq.customer_version(), 6);
    assert!(matches!(
        hq.admin_patch_customer("C999999", &patch(json!({"first_name": "X"}))),
        Err(AdminError::NotFound(_))
    ));
    let bad_group = NewCustomer {
        customer_group: Some("GOLD".into()),
        ..fields("Mets")
    };
    assert!(matches!(
        hq.admin_create_customer(bad_group),
        Err(AdminError::Invalid(e)) if e.field.as_deref() == Some("customer_group")
    ));
    assert!(matches!(
        hq.admin_patch_customer("C000002", &CustomerPatch::default()),
        Err(AdminError::Invalid(_))
    ));
    assert_eq!(hq.customer_version(), 6);
}

#[test]
fn job_1010_pages_in_version_then_account_order_and_increments_from_a_version() {
    let mut hq = HqModel::new();
    for i in 0..5 {
        hq.admin_create_customer(fields(&format!("Kask{}", "a".repeat(i))))
            .unwrap();
    }
    // C000002 changes: it moves to the end.
    hq.admin_patch_customer("C000002", &patch(json!({"first_name": "Mari"})))
        .unwrap();
    let full = hq.customers_page(0, None, 2, 42);
    assert!(full.full);
    assert_eq!((full.version, full.generated_at_ms), (6, 42));
    assert_eq!(
        accounts(&full),
        [(1, "C000001".to_string()), (3, "C000003".to_string())]
    );
    let next = full.next.clone().unwrap();
    assert_eq!(
        (next.after_version, next.after_account.as_str()),
        (3, "C000003")
    );
    let second = hq.customers_page(next.after_version, Some(&next.after_account), 2, 0);
    assert!(!second.full);
    assert_eq!(
        accounts(&second),
        [(4, "C000004".to_string()), (5, "C000005".to_string())]
    );
    let n = second.next.clone().unwrap();
    let last = hq.customers_page(n.after_version, Some(&n.after_account), 2, 0);
    assert_eq!(accounts(&last), [(6, "C000002".to_string())]);
    assert_eq!(last.next, None);
    // Incremental from the version the node holds: only what changed since.
    assert!(hq.customers_page(6, None, 10, 0).customers.is_empty());
    hq.admin_patch_customer("C000004", &patch(json!({"last_name": "Tamm"})))
        .unwrap();
    let inc = hq.customers_page(6, None, 10, 0);
    assert_eq!(accounts(&inc), [(7, "C000004".to_string())]);
    assert_eq!((inc.full, inc.version, inc.next), (false, 7, None));
    // An exact page: no next when nothing remains. Limits are brought into range.
    assert_eq!(hq.customers_page(0, None, 5, 0).next, None);
    assert_eq!(hq.customers_page(0, None, 0, 0).customers.len(), 1);
    assert!(
        hq.customers_page(u64::MAX, None, 10, 0)
            .customers
            .is_empty()
    );
    // An empty account is the same as none.
    assert_eq!(
        accounts(&hq.customers_page(6, Some(""), 10, 0)),
        [(7, "C000004".to_string())]
    );
}

#[test]
fn a_real_time_create_answers_the_account_and_a_repeat_answers_the_same() {
    let mut hq = HqModel::new();
    let create = op(1, "S0001-T1", None, Payload::CustomerCreate(fields("Täht")));
    let first = rts(&mut hq, &create).unwrap();
    assert_eq!(first.account_number, "C000001");
    assert_eq!(first.customer.fields.last_name, "Täht");
    assert_eq!(
        first.customer.origin_customer_ref.as_deref(),
        Some("S0001-T1")
    );
    let again = rts(&mut hq, &create).unwrap();
    assert_eq!(again, first);
    assert_eq!(hq.customers().len(), 1);
    assert_eq!(hq.customers()[0].operation_ids, vec![create.operation_id]);
    let row = hq.table_row(create.operation_id).unwrap();
    assert_eq!(
        (row.state, row.source, row.online_operation_completed),
        (RowState::Completed, RowSource::RealTime, 1)
    );
    // The same id with another payload is a conflict.
    let other = WireOperation {
        payload: Payload::CustomerCreate(fields("Kask")),
        ..create.clone()
    };
    assert_eq!(refused(rts(&mut hq, &other)).code, "conflict");
    // An edit in real time of the customer it created (by its reference).
    let e = rts(
        &mut hq,
        &edit(2, "S0001-T1", json!({"last_name": "Kask"}), None),
    )
    .unwrap();
    assert_eq!(e.customer.fields.last_name, "Kask");
    assert_eq!(feed(&hq).len(), 2);
}

#[test]
fn an_operation_applied_in_real_time_then_uploaded_is_applied_once_and_reported_completed() {
    let mut hq = HqModel::new();
    let create = op(1, "S0001-T1", None, Payload::CustomerCreate(fields("Täht")));
    rts(&mut hq, &create).unwrap();
    let before = feed(&hq).len();
    // The RTS answer was lost; the node queued the operation and uploads it.
    assert_eq!(
        upload(&mut hq, std::slice::from_ref(&create)),
        [StageStatus::Staged]
    );
    assert_eq!(hq.run_sync(None), SyncRunReport::default());
    assert_eq!(hq.customers().len(), 1);
    assert_eq!(hq.customers()[0].operation_ids.len(), 1);
    let outcomes = feed(&hq);
    assert_eq!(outcomes.len(), before + 1);
    let last = outcomes.last().unwrap();
    assert_eq!(last.operation_id, create.operation_id);
    assert_eq!(last.status, OutcomeStatus::Completed);
    assert_eq!(last.account_number.as_deref(), Some("C000001"));
    // A retried upload reports nothing more.
    upload(&mut hq, std::slice::from_ref(&create));
    assert_eq!(feed(&hq).len(), before + 1);
    assert_eq!(hq.tables()["RETAILASYNCCUSTOMERV2"].len(), 1);
}

#[test]
fn a_real_time_call_for_an_uploaded_operation_processes_it_now() {
    let mut hq = HqModel::new();
    let create = op(1, "S0001-T1", None, Payload::CustomerCreate(fields("Täht")));
    upload(&mut hq, std::slice::from_ref(&create));
    let answer = rts(&mut hq, &create).unwrap();
    assert_eq!(answer.account_number, "C000001");
    assert_eq!(hq.run_sync(None), SyncRunReport::default());
    assert_eq!(hq.customers().len(), 1);
    // A new real-time edit waits for that customer's uploaded rows: they go first.
    let queued = edit(2, "S0001-T1", json!({"last_name": "Kask"}), None);
    upload(&mut hq, std::slice::from_ref(&queued));
    let now = edit(3, "S0001-T1", json!({"last_name": "Mets"}), None);
    let answer = rts(&mut hq, &now).unwrap();
    assert_eq!(answer.customer.fields.last_name, "Mets");
    assert_eq!(
        hq.customers()[0].operation_ids,
        vec![create.operation_id, queued.operation_id, now.operation_id]
    );
}

#[test]
fn a_refused_real_time_call_applies_and_records_nothing() {
    let mut hq = HqModel::new();
    let bad = op(
        1,
        "S0001-T1",
        None,
        Payload::CustomerCreate(NewCustomer {
            customer_group: Some("GOLD".into()),
            ..fields("Täht")
        }),
    );
    let e = refused(rts(&mut hq, &bad));
    assert_eq!(
        (e.code.as_str(), e.field.as_deref()),
        ("validation", Some("customer_group"))
    );
    assert!(hq.customers().is_empty() && hq.table_row(bad.operation_id).is_none());
    assert!(feed(&hq).is_empty());
    // An edit of a customer HQ does not hold.
    let e = refused(rts(
        &mut hq,
        &edit(2, "S0001-T9", json!({"last_name": "Kask"}), None),
    ));
    assert_eq!(e.field.as_deref(), Some("customer_ref"));
    // The reject fault rule refuses in real time too.
    let rule = RejectRule {
        field: "last_name".into(),
        equals: "Poison".into(),
    };
    let poison = op(
        3,
        "S0001-T3",
        None,
        Payload::CustomerCreate(fields("Poison")),
    );
    let req = RtsRequest {
        store_id: STORE.into(),
        channel_id: "CH0001".into(),
        operation: poison,
    };
    let e = refused(hq.real_time(&req, Some(&rule)));
    assert_eq!(e.field.as_deref(), Some("last_name"));
    // A sub-record edit of a record HQ does not hold.
    rts(
        &mut hq,
        &op(4, "S0001-T4", None, Payload::CustomerCreate(fields("Täht"))),
    )
    .unwrap();
    let e = refused(rts(
        &mut hq,
        &op(
            5,
            "S0001-T4",
            Some("ADR-9"),
            Payload::AddressEdit(crate::domain::AddressPatch {
                city: Some("Tartu".into()),
                ..Default::default()
            }),
        ),
    ));
    assert_eq!(e.field.as_deref(), Some("record_id"));
    // A base that is not an object is refused before anything else.
    let mut odd = edit(
        6,
        "S0001-T4",
        json!({"last_name": "Kask"}),
        Some(json!("Täht")),
    );
    odd.base = Some(json!(["x"]));
    assert_eq!(refused(rts(&mut hq, &odd)).field.as_deref(), Some("base"));
}

#[test]
fn a_real_time_call_behind_a_failed_upload_is_held() {
    let mut hq = HqModel::new();
    let bad = op(
        1,
        "S0001-T1",
        None,
        Payload::CustomerCreate(NewCustomer {
            customer_group: Some("GOLD".into()),
            ..fields("Täht")
        }),
    );
    upload(&mut hq, std::slice::from_ref(&bad));
    hq.run_sync(None);
    let e = refused(rts(
        &mut hq,
        &edit(2, "S0001-T1", json!({"last_name": "Kask"}), None),
    ));
    assert_eq!(e.code, "held");
    // The failed operation itself, called in real time, answers its error.
    assert_eq!(
        refused(rts(&mut hq, &bad)).field.as_deref(),
        Some("customer_group")
    );
    // A fixed revision in real time is applied at once.
    let fixed = WireOperation {
        revision: 1,
        payload: Payload::CustomerCreate(fields("Täht")),
        ..bad.clone()
    };
    assert_eq!(rts(&mut hq, &fixed).unwrap().account_number, "C000001");
}

#[test]
fn a_stale_edit_applies_one_sided_fields_and_reports_two_sided_ones() {
    let mut hq = HqModel::new();
    let create = op(
        1,
        "S0001-T1",
        None,
        Payload::CustomerCreate(NewCustomer {
            email: Some("old@example.ee".into()),
            ..fields("Tamm")
        }),
    );
    upload(&mut hq, std::slice::from_ref(&create));
    hq.run_sync(None);
    // A call-centre renames the customer at HQ.
    hq.admin_patch_customer("C000001", &patch(json!({"last_name": "Kask"})))
        .unwrap();
    // The store, with its stale copy, changes last name and e-mail.
    let stale = edit(
        2,
        "S0001-T1",
        json!({"last_name": "Mets", "email": "new@example.ee"}),
        Some(json!({"last_name": "Tamm", "email": "old@example.ee"})),
    );
    upload(&mut hq, std::slice::from_ref(&stale));
    assert_eq!(hq.run_sync(None).completed, 1);
    let c = hq.customer_record("C000001").unwrap();
    assert_eq!(
        c.fields.last_name, "Kask",
        "HQ's change is never silently overwritten"
    );
    assert_eq!(c.fields.email.as_deref(), Some("new@example.ee"));
    let outcome = feed(&hq).pop().unwrap();
    assert_eq!(outcome.status, OutcomeStatus::Completed);
    assert_eq!(
        outcome.conflicts,
        vec![crate::hq::wire::FieldConflict {
            field: "last_name".into(),
            store_value: json!("Mets"),
            hq_value: json!("Kask"),
        }]
    );
    assert_eq!(hq.table_row(stale.operation_id).unwrap().conflicts.len(), 1);
    // One side only: applied, no conflict.
    let fresh = edit(
        3,
        "S0001-T1",
        json!({"last_name": "Saar"}),
        Some(json!({"last_name": "Kask"})),
    );
    upload(&mut hq, std::slice::from_ref(&fresh));
    hq.run_sync(None);
    assert!(feed(&hq).pop().unwrap().conflicts.is_empty());
    assert_eq!(
        hq.customer_record("C000001").unwrap().fields.last_name,
        "Saar"
    );
    // In real time too, and a repeat answers the same conflicts.
    hq.admin_patch_customer("C000001", &patch(json!({"first_name": "Mari"})))
        .unwrap();
    let rt = edit(
        4,
        "S0001-T1",
        json!({"first_name": "Anu"}),
        Some(json!({"first_name": "Õie"})),
    );
    let answer = rts(&mut hq, &rt).unwrap();
    assert_eq!(answer.conflicts.len(), 1);
    assert_eq!(answer.conflicts[0].hq_value, json!("Mari"));
    assert_eq!(answer.customer.fields.first_name, "Mari");
    assert_eq!(rts(&mut hq, &rt).unwrap().conflicts, answer.conflicts);
    assert_eq!(feed(&hq).pop().unwrap().conflicts, answer.conflicts);
}
