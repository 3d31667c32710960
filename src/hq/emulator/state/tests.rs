//! The model on its own: staging, idempotency, ordering, holds, the outcome feed.

use super::*;
use crate::domain::Action;
use crate::domain::customer::{Address, AddressPatch, AddressPurpose, CustomerPatch, NewCustomer};

const STORE: &str = "S0001";

fn new_customer(last_name: &str, group: Option<&str>) -> Payload {
    Payload::CustomerCreate(NewCustomer {
        first_name: "Õie".into(),
        last_name: last_name.into(),
        email: None,
        phone: None,
        customer_group: group.map(str::to_string),
        language: None,
    })
}

fn rename(last_name: &str) -> Payload {
    Payload::CustomerEdit(CustomerPatch {
        last_name: Some(last_name.into()),
        ..Default::default()
    })
}

fn address(city: &str) -> Payload {
    Payload::AddressCreate(Address {
        street: "Narva mnt 5".into(),
        city: city.into(),
        postal_code: "10117".into(),
        country: "EST".into(),
        county: None,
        purpose: AddressPurpose::Home,
        is_primary: true,
    })
}

fn op(seq: u64, customer_ref: &str, record_id: Option<&str>, payload: Payload) -> WireOperation {
    WireOperation {
        operation_id: OperationId::new_v7(seq),
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

fn batch(ops: &[WireOperation]) -> UploadRequest {
    UploadRequest {
        store_id: STORE.into(),
        channel_id: "CH0001".into(),
        batch_id: uuid::Uuid::now_v7(),
        operations: ops.to_vec(),
    }
}

fn stage(hq: &mut HqModel, ops: &[WireOperation]) -> Vec<StageResult> {
    hq.stage(&batch(ops)).unwrap().results
}

fn statuses(results: &[StageResult]) -> Vec<StageStatus> {
    results.iter().map(|r| r.status).collect()
}

fn row_count(hq: &HqModel) -> usize {
    hq.tables().values().map(Vec::len).sum()
}

fn feed(hq: &HqModel) -> Vec<Outcome> {
    hq.outcomes(STORE, 0, 10_000).outcomes
}

fn revised(mut op: WireOperation, revision: u32, payload: Payload) -> WireOperation {
    op.revision = revision;
    op.payload = payload;
    op
}

#[test]
fn a_batch_sent_twice_is_staged_and_applied_once() {
    let mut hq = HqModel::new();
    let ops = [
        op(1, "S0001-T1", None, new_customer("Täht", Some("RETAIL"))),
        op(2, "S0001-T1", Some("ADR-2"), address("Tallinn")),
    ];
    assert_eq!(statuses(&stage(&mut hq, &ops)), [StageStatus::Staged; 2]);
    assert_eq!(statuses(&stage(&mut hq, &ops)), [StageStatus::Staged; 2]);
    assert_eq!(row_count(&hq), 2);
    assert_eq!(hq.tables()["RETAILASYNCCUSTOMERV2"].len(), 1);
    assert_eq!(hq.tables()["RETAILASYNCADDRESSV2"].len(), 1);
    let report = hq.run_sync(None);
    assert_eq!((report.processed, report.completed), (2, 2));
    // The same batch again after it was processed: same answer, nothing new.
    assert_eq!(statuses(&stage(&mut hq, &ops)), [StageStatus::Staged; 2]);
    assert_eq!(hq.run_sync(None), SyncRunReport::default());
    let customers = hq.customers();
    assert_eq!(customers.len(), 1);
    assert_eq!(customers[0].account_number, "C000001");
    assert_eq!(customers[0].addresses.len(), 1);
    assert_eq!(
        customers[0].operation_ids,
        vec![ops[0].operation_id, ops[1].operation_id]
    );
    assert_eq!(feed(&hq).len(), 2);
    let row = hq.table_row(ops[0].operation_id).unwrap();
    assert_eq!(
        (row.online_operation_completed, row.state),
        (1, RowState::Completed)
    );
}

#[test]
fn same_id_and_revision_with_another_payload_is_a_conflict() {
    let mut hq = HqModel::new();
    let first = op(1, "S0001-T1", None, new_customer("Täht", None));
    stage(&mut hq, std::slice::from_ref(&first));
    let other = revised(first.clone(), 0, new_customer("Kask", None));
    let results = stage(&mut hq, &[other]);
    assert_eq!(results[0].status, StageStatus::Rejected);
    assert_eq!(results[0].error.as_ref().unwrap().code, "conflict");
    // The original stands.
    assert_eq!(
        hq.table_row(first.operation_id).unwrap().payload,
        first.payload
    );
    // The same id for another record is a conflict too.
    let mut moved = first.clone();
    moved.customer_ref = "S0001-T9".into();
    assert_eq!(stage(&mut hq, &[moved])[0].status, StageStatus::Rejected);
}

#[test]
fn only_a_failed_operation_takes_a_new_revision() {
    let mut hq = HqModel::new();
    let create = op(1, "S0001-T1", None, new_customer("Täht", Some("GOLD")));
    stage(&mut hq, std::slice::from_ref(&create));
    // Staged, not failed yet: a new revision is refused.
    let early = revised(create.clone(), 1, new_customer("Täht", Some("RETAIL")));
    let r = stage(&mut hq, std::slice::from_ref(&early));
    assert_eq!(r[0].status, StageStatus::Rejected);
    assert_eq!(r[0].error.as_ref().unwrap().code, "conflict");
    assert_eq!(hq.run_sync(None).failed, 1);
    let row = hq.table_row(create.operation_id).unwrap();
    assert_eq!(row.state, RowState::Failed);
    assert_eq!(row.online_operation_completed, 0);
    // Failed: the new revision replaces it and clears the error.
    assert_eq!(
        stage(&mut hq, std::slice::from_ref(&early))[0].status,
        StageStatus::Staged
    );
    let row = hq.table_row(create.operation_id).unwrap();
    assert_eq!(
        (row.revision, row.state, row.error),
        (1, RowState::Staged, None)
    );
    assert_eq!(row.payload, early.payload);
    // A stale retry of revision 0 changes nothing and is answered staged.
    assert_eq!(
        stage(&mut hq, std::slice::from_ref(&create))[0].status,
        StageStatus::Staged
    );
    assert_eq!(hq.table_row(create.operation_id).unwrap().revision, 1);
    assert_eq!(hq.run_sync(None).completed, 1);
    // Completed: a further revision is refused.
    let late = revised(create.clone(), 2, new_customer("Kask", Some("RETAIL")));
    assert_eq!(stage(&mut hq, &[late])[0].status, StageStatus::Rejected);
    assert_eq!(row_count(&hq), 1);
}

#[test]
fn one_customer_is_processed_in_seq_order_whatever_the_staging_order() {
    let mut hq = HqModel::new();
    let create = op(1, "S0001-T1", None, new_customer("Täht", None));
    let e1 = op(2, "S0001-T1", None, rename("Kask"));
    let e2 = op(3, "S0001-T1", None, rename("Mets"));
    stage(&mut hq, &[e2.clone(), create.clone(), e1.clone()]);
    let report = hq.run_sync(None);
    assert_eq!(report.completed, 3);
    let c = &hq.customers()[0];
    assert_eq!(c.fields.last_name, "Mets");
    assert_eq!(
        c.operation_ids,
        vec![create.operation_id, e1.operation_id, e2.operation_id]
    );
    let order: Vec<OperationId> = feed(&hq).iter().map(|o| o.operation_id).collect();
    assert_eq!(order, c.operation_ids);
    assert!(
        feed(&hq)
            .iter()
            .all(|o| o.account_number.as_deref() == Some("C000001"))
    );
}

#[test]
fn a_failure_holds_the_later_operations_of_that_customer_only() {
    let mut hq = HqModel::new();
    let bad = op(1, "S0001-T1", None, new_customer("Täht", Some("GOLD")));
    let edit = op(2, "S0001-T1", None, rename("Kask"));
    let addr = op(3, "S0001-T1", Some("ADR-3"), address("Tartu"));
    let other = op(4, "S0001-T2", None, new_customer("Mets", None));
    stage(
        &mut hq,
        &[bad.clone(), edit.clone(), addr.clone(), other.clone()],
    );
    let report = hq.run_sync(None);
    assert_eq!(
        (
            report.processed,
            report.completed,
            report.failed,
            report.held
        ),
        (2, 1, 1, 2)
    );
    let outcomes = feed(&hq);
    let status_of = |id| outcomes.iter().find(|o| o.operation_id == id).unwrap();
    let failed = status_of(bad.operation_id);
    assert_eq!(failed.status, OutcomeStatus::Failed);
    let err = failed.error.as_ref().unwrap();
    assert_eq!(
        (err.code.as_str(), err.field.as_deref()),
        ("validation", Some("customer_group"))
    );
    for id in [edit.operation_id, addr.operation_id] {
        let held = status_of(id);
        assert_eq!(held.status, OutcomeStatus::Held);
        let reason = held.error.as_ref().unwrap();
        assert_eq!(reason.code, "held");
        assert_eq!(
            reason.message,
            format!("waiting for operation {} which failed", bad.operation_id)
        );
        assert_eq!(hq.table_row(id).unwrap().state, RowState::Held);
    }
    // No head-of-line blocking: the other customer went through.
    assert_eq!(
        status_of(other.operation_id).status,
        OutcomeStatus::Completed
    );
    assert_eq!(hq.customers().len(), 1);
    // Another run changes nothing and reports nothing new.
    assert_eq!(hq.run_sync(None), SyncRunReport::default());
    assert_eq!(feed(&hq).len(), 4);
}

#[test]
fn a_fixed_revision_completes_and_releases_the_held_operations_in_order() {
    let mut hq = HqModel::new();
    let bad = op(1, "S0001-T1", None, new_customer("Täht", Some("GOLD")));
    let edit = op(2, "S0001-T1", None, rename("Kask"));
    let addr = op(3, "S0001-T1", Some("ADR-3"), address("Tartu"));
    stage(&mut hq, &[bad.clone(), edit.clone(), addr.clone()]);
    hq.run_sync(None);
    let before = feed(&hq).len();
    // A new operation for the same customer arrives while it is blocked: held too.
    let edit2 = op(4, "S0001-T1", None, rename("Mets"));
    stage(&mut hq, std::slice::from_ref(&edit2));
    assert_eq!(hq.run_sync(None).held, 1);
    let fixed = revised(bad.clone(), 1, new_customer("Täht", Some("RETAIL")));
    assert_eq!(stage(&mut hq, &[fixed])[0].status, StageStatus::Staged);
    let report = hq.run_sync(None);
    assert_eq!((report.completed, report.failed, report.held), (4, 0, 0));
    let c = &hq.customers()[0];
    assert_eq!(c.fields.last_name, "Mets");
    assert_eq!(c.fields.customer_group.as_deref(), Some("RETAIL"));
    let expected = vec![
        bad.operation_id,
        edit.operation_id,
        addr.operation_id,
        edit2.operation_id,
    ];
    assert_eq!(c.operation_ids, expected);
    let completed: Vec<Outcome> = feed(&hq)[before + 1..].to_vec();
    assert_eq!(
        completed.iter().map(|o| o.operation_id).collect::<Vec<_>>(),
        expected
    );
    assert!(
        completed
            .iter()
            .all(|o| o.status == OutcomeStatus::Completed)
    );
    assert_eq!(completed[0].revision, 1);
}

#[test]
fn an_unknown_customer_group_fails_on_edit_too() {
    let mut hq = HqModel::new();
    let create = op(1, "S0001-T1", None, new_customer("Täht", Some("STAFF")));
    let edit = op(
        2,
        "S0001-T1",
        None,
        Payload::CustomerEdit(CustomerPatch {
            customer_group: Some(Some("VIP".into())),
            ..Default::default()
        }),
    );
    let clear = op(
        3,
        "S0001-T1",
        None,
        Payload::CustomerEdit(CustomerPatch {
            customer_group: Some(None),
            ..Default::default()
        }),
    );
    stage(&mut hq, &[create, edit.clone()]);
    let report = hq.run_sync(None);
    assert_eq!((report.completed, report.failed), (1, 1));
    let row = hq.table_row(edit.operation_id).unwrap();
    assert_eq!(row.error.unwrap().field.as_deref(), Some("customer_group"));
    assert_eq!(
        hq.customers()[0].fields.customer_group.as_deref(),
        Some("STAFF")
    );
    // Clearing the group is fine once the failed edit is fixed.
    let fixed = revised(edit, 1, rename("Kask"));
    stage(&mut hq, &[fixed, clear]);
    assert_eq!(hq.run_sync(None).completed, 2);
    assert_eq!(hq.customers()[0].fields.customer_group, None);
}

#[test]
fn the_reject_rule_poisons_matching_records() {
    let mut hq = HqModel::new();
    let rule = RejectRule {
        field: "last_name".into(),
        equals: "Poison".into(),
    };
    let poisoned = op(1, "S0001-T1", None, new_customer("Poison", None));
    let fine = op(2, "S0001-T2", None, new_customer("Täht", None));
    stage(&mut hq, &[poisoned.clone(), fine]);
    let report = hq.run_sync(Some(&rule));
    assert_eq!((report.completed, report.failed), (1, 1));
    let err = hq.table_row(poisoned.operation_id).unwrap().error.unwrap();
    assert_eq!(
        (err.code.as_str(), err.field.as_deref()),
        ("validation", Some("last_name"))
    );
    // The rule applies to edits too, on the record's own JSON.
    let edit = op(3, "S0001-T2", None, rename("Poison"));
    stage(&mut hq, &[edit]);
    assert_eq!(hq.run_sync(Some(&rule)).failed, 1);
}

#[test]
fn the_outcome_feed_pages_by_cursor() {
    let mut hq = HqModel::new();
    let ops: Vec<WireOperation> = (1..=5)
        .map(|i| op(i, &format!("S0001-T{i}"), None, new_customer("Täht", None)))
        .collect();
    stage(&mut hq, &ops);
    hq.run_sync(None);
    let page = hq.outcomes(STORE, 0, 2);
    assert_eq!(
        page.outcomes.iter().map(|o| o.cursor).collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(page.next_cursor, 2);
    let page = hq.outcomes(STORE, page.next_cursor, 2);
    assert_eq!(
        page.outcomes.iter().map(|o| o.cursor).collect::<Vec<_>>(),
        [3, 4]
    );
    let page = hq.outcomes(STORE, page.next_cursor, 2);
    assert_eq!(page.outcomes.len(), 1);
    assert_eq!(page.next_cursor, 5);
    let page = hq.outcomes(STORE, 5, 2);
    assert!(page.outcomes.is_empty());
    assert_eq!(page.next_cursor, 5);
    // Past the end, and an unknown store: nothing, cursor kept.
    assert_eq!(hq.outcomes(STORE, 99, 2).next_cursor, 99);
    assert!(hq.outcomes("S0002", 0, 10).outcomes.is_empty());
    let ids: Vec<OperationId> = feed(&hq).iter().map(|o| o.operation_id).collect();
    assert_eq!(ids, ops.iter().map(|o| o.operation_id).collect::<Vec<_>>());
}

#[test]
fn feeds_are_per_store() {
    let mut hq = HqModel::new();
    stage(
        &mut hq,
        &[op(1, "S0001-T1", None, new_customer("Täht", None))],
    );
    let mut other = batch(&[op(1, "S0002-T1", None, new_customer("Kask", None))]);
    other.store_id = "S0002".into();
    hq.stage(&other).unwrap();
    hq.run_sync(None);
    assert_eq!(hq.outcomes(STORE, 0, 10).outcomes[0].cursor, 1);
    assert_eq!(hq.outcomes("S0002", 0, 10).outcomes[0].cursor, 1);
    assert_eq!(hq.customers()[1].account_number, "C000002");
}

#[test]
fn an_edit_before_its_create_waits_without_failing() {
    let mut hq = HqModel::new();
    let create = op(1, "S0001-T1", None, new_customer("Täht", None));
    let edit = op(2, "S0001-T1", None, rename("Kask"));
    stage(&mut hq, std::slice::from_ref(&edit));
    let report = hq.run_sync(None);
    assert_eq!((report.processed, report.waiting), (0, 1));
    assert!(feed(&hq).is_empty());
    assert_eq!(
        hq.table_row(edit.operation_id).unwrap().state,
        RowState::Staged
    );
    stage(&mut hq, std::slice::from_ref(&create));
    assert_eq!(hq.run_sync(None).completed, 2);
    assert_eq!(hq.customers()[0].fields.last_name, "Kask");
}

#[test]
fn a_customer_from_hq_is_edited_by_its_account_number() {
    let mut hq = HqModel::new();
    stage(
        &mut hq,
        &[op(1, "S0001-T1", None, new_customer("Täht", None))],
    );
    hq.run_sync(None);
    let edit = op(2, "C000001", None, rename("Kask"));
    stage(&mut hq, &[edit]);
    assert_eq!(hq.run_sync(None).completed, 1);
    assert_eq!(hq.customers()[0].fields.last_name, "Kask");
}

#[test]
fn sub_record_edits_need_the_record_and_contact_values_follow_kind() {
    let mut hq = HqModel::new();
    let create = op(1, "S0001-T1", None, new_customer("Täht", None));
    let addr = op(2, "S0001-T1", Some("ADR-2"), address("Tartu"));
    let move_it = op(
        3,
        "S0001-T1",
        Some("ADR-2"),
        Payload::AddressEdit(AddressPatch {
            city: Some("Pärnu".into()),
            ..Default::default()
        }),
    );
    let ghost = op(4, "S0001-T2", None, new_customer("Mets", None));
    let ghost_edit = op(
        5,
        "S0001-T2",
        Some("ADR-404"),
        Payload::AddressEdit(AddressPatch {
            city: Some("Pärnu".into()),
            ..Default::default()
        }),
    );
    stage(&mut hq, &[create, addr, move_it, ghost, ghost_edit.clone()]);
    let report = hq.run_sync(None);
    assert_eq!((report.completed, report.failed), (4, 1));
    assert_eq!(hq.customers()[0].addresses[0].record.city, "Pärnu");
    let err = hq
        .table_row(ghost_edit.operation_id)
        .unwrap()
        .error
        .unwrap();
    assert_eq!(err.field.as_deref(), Some("record_id"));
}

#[test]
fn structurally_broken_operations_are_rejected_at_upload() {
    let mut hq = HqModel::new();
    let mut wrong_kind = op(1, "S0001-T1", None, new_customer("Täht", None));
    wrong_kind.kind = RecordKind::Address;
    let mut wrong_action = op(2, "S0001-T1", None, new_customer("Täht", None));
    wrong_action.action = Action::Edit;
    let no_record_id = op(3, "S0001-T1", None, address("Tartu"));
    let results = stage(&mut hq, &[wrong_kind, wrong_action, no_record_id]);
    let fields: Vec<Option<String>> = results
        .iter()
        .map(|r| r.error.as_ref().and_then(|e| e.field.clone()))
        .collect();
    assert_eq!(statuses(&results), [StageStatus::Rejected; 3]);
    assert_eq!(
        fields,
        [
            Some("kind".into()),
            Some("action".into()),
            Some("record_id".into())
        ]
    );
    assert_eq!(row_count(&hq), 0);
}

#[test]
fn a_full_hq_refuses_the_whole_batch() {
    let mut hq = HqModel::with_capacity(2, 100);
    let ops: Vec<WireOperation> = (1..=3)
        .map(|i| op(i, "S0001-T1", None, new_customer("Täht", None)))
        .collect();
    assert!(matches!(hq.stage(&batch(&ops)), Err(StageError::Full(_))));
    assert_eq!(row_count(&hq), 0);
    // Retries of rows already staged do not count against the limit.
    stage(&mut hq, &ops[..2]);
    assert_eq!(
        statuses(&stage(&mut hq, &ops[..2])),
        [StageStatus::Staged; 2]
    );
}
