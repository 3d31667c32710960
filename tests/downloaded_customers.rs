//! Customers whose view is their base keep no base record: those that came down with job 1010
//! and were never changed here, and local creates HQ confirmed with nothing after them (it
//! saves writing every customer of a download, and every confirmed create, twice). Their first
//! local change must keep that base: the operator's fixes and HQ's refusals rebuild the view
//! from it. Driven through the real writer on a real redb file.

mod common;

use outpost::domain::operation::OpError;
use outpost::domain::{CustomerPatch, OperationId, Payload};
use outpost::store::cdx::HqCopy;
use outpost::store::hq_sync::{HqOutcome, HqVerdict};
use outpost::store::writer::{self, MergeOptions, WriterHandle, WriterOptions};
use outpost::store::{Command, Outcome, Store, StoreOptions, Submission};

const NOW: i64 = 1_700_000_000_000;

fn copy(last_name: &str, email: &str) -> HqCopy {
    common::hq_copy(
        "C000042",
        None,
        common::fields("Õie", last_name, email),
        NOW,
    )
}

async fn download(w: &WriterHandle, version: u64, copy: HqCopy) {
    common::download(w, version, vec![copy], NOW).await;
}

async fn rename(w: &WriterHandle, id: Option<OperationId>, last_name: &str) -> OperationId {
    let sub = Submission::Change {
        customer: "C000042".into(),
        record_id: None,
        payload: Payload::CustomerEdit(CustomerPatch {
            last_name: Some(last_name.into()),
            ..CustomerPatch::default()
        }),
    };
    let command = match id {
        Some(id) => Command::SubmitAs(id, sub),
        None => Command::Submit(sub),
    };
    match w.execute(command).await.expect("edit accepted") {
        Outcome::Accepted { operation_id, .. } => operation_id,
        other => panic!("unexpected {other:?}"),
    }
}

/// HQ's verdict on one operation, as the outcome puller applies it.
async fn apply_outcome(
    w: &WriterHandle,
    id: OperationId,
    revision: u32,
    verdict: HqVerdict,
    next_cursor: u64,
) {
    w.execute(Command::ApplyOutcomes {
        outcomes: vec![HqOutcome {
            id,
            revision,
            verdict,
        }],
        next_cursor,
        feed_id: 1,
    })
    .await
    .expect("outcome applied");
}

/// HQ refuses the rename `edit` ("Tamm!"), and the operator fixes its last name to "Tamm".
async fn refuse_then_fix(w: &WriterHandle, edit: OperationId, next_cursor: u64) {
    let refusal = HqVerdict::Failed(OpError {
        code: "validation".into(),
        message: "last name has a character HQ does not take".into(),
        field: Some("last_name".into()),
    });
    apply_outcome(w, edit, 0, refusal, next_cursor).await;
    w.execute(Command::EditPayload {
        id: edit,
        record: serde_json::json!({ "last_name": "Tamm" }),
    })
    .await
    .expect("payload fixed");
}

fn completed() -> HqVerdict {
    HqVerdict::Completed {
        account_number: Some("C000042".into()),
        conflicts: Vec::new(),
    }
}

fn start(dir: &std::path::Path) -> (Store, WriterHandle, std::thread::JoinHandle<()>) {
    let store = Store::open(&dir.join("outpost.redb"), &StoreOptions::new(4 << 20)).expect("open");
    let (w, t) = writer::spawn(
        store.clone(),
        WriterOptions {
            store_id: "S0001".into(),
            queue: 16,
            group_commit_max: 8,
            merge: MergeOptions::default(),
            group_wait: std::time::Duration::from_micros(500),
            replies_on: Some(tokio::runtime::Handle::current()),
        },
    )
    .expect("writer");
    (store, w, t)
}

fn view(store: &Store) -> (String, String) {
    let c = store.customer("C000042").expect("read").expect("customer");
    (
        c.view.fields.last_name,
        c.view.fields.email.unwrap_or_default(),
    )
}

/// HQ refuses the first local edit of a downloaded customer; the operator fixes its payload and
/// re-syncs; HQ confirms; a later download of the same copy changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_of_a_downloaded_customer_can_be_fixed_and_confirmed() {
    let dir = tempfile::tempdir().expect("dir");
    let (store, w, t) = start(dir.path());
    download(&w, 1, copy("Kask", "oie@example.ee")).await;
    let edit = rename(&w, None, "Tamm!").await;
    assert_eq!(view(&store).0, "Tamm!");

    // The operator's fix is applied on the customer as HQ sent it.
    refuse_then_fix(&w, edit, 1).await;
    assert_eq!(view(&store), ("Tamm".into(), "oie@example.ee".into()));

    w.execute(Command::Resync { id: edit })
        .await
        .expect("re-sync");
    apply_outcome(&w, edit, 1, completed(), 2).await;
    assert_eq!(view(&store).0, "Tamm");
    // HQ's next download carries the confirmed name and a new e-mail.
    download(&w, 2, copy("Tamm", "uus@example.ee")).await;
    assert_eq!(view(&store), ("Tamm".into(), "uus@example.ee".into()));
    drop(w);
    t.join().expect("writer");
}

/// A real-time edit HQ refuses is forgotten: the customer is again as HQ sent it, and a
/// download with local changes waiting rebuilds on top of HQ's copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_real_time_edit_of_a_downloaded_customer_leaves_hqs_copy() {
    let dir = tempfile::tempdir().expect("dir");
    let (store, w, t) = start(dir.path());
    download(&w, 1, copy("Kask", "oie@example.ee")).await;
    let id = OperationId::new_v7(NOW as u64);
    rename(&w, Some(id), "Mets").await;
    assert_eq!(view(&store).0, "Mets");
    w.execute(Command::Discard { id }).await.expect("discarded");
    assert_eq!(view(&store), ("Kask".into(), "oie@example.ee".into()));

    // A queued edit, then HQ's newer copy: the edit stays on top of the new copy.
    rename(&w, None, "Saar").await;
    download(&w, 2, copy("Kask", "uus@example.ee")).await;
    assert_eq!(view(&store), ("Saar".into(), "uus@example.ee".into()));
    drop(w);
    t.join().expect("writer");
}

/// A customer created here and confirmed by HQ, with nothing after it, keeps no base record
/// either: its first edit keeps the view as the base, so an operator's fix of that edit is
/// applied on the customer as HQ confirmed it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_of_a_confirmed_local_create_can_be_fixed() {
    let dir = tempfile::tempdir().expect("dir");
    let (store, w, t) = start(dir.path());
    let (customer_ref, created) = match w
        .execute(Command::Submit(Submission::NewCustomer(common::fields(
            "Õie",
            "Kask",
            "oie@example.ee",
        ))))
        .await
        .expect("create accepted")
    {
        Outcome::Accepted {
            customer_ref,
            operation_id,
            ..
        } => (customer_ref, operation_id),
        other => panic!("unexpected {other:?}"),
    };
    apply_outcome(&w, created, 0, completed(), 1).await;
    // Found by its account number now, as the other tests address it.
    assert_eq!(view(&store).0, "Kask");
    let edit = rename(&w, None, "Tamm!").await;
    refuse_then_fix(&w, edit, 2).await;
    let read = store
        .customer(&customer_ref)
        .expect("read")
        .expect("customer");
    assert_eq!(read.view.fields.last_name, "Tamm");
    assert_eq!(read.view.account_number.as_deref(), Some("C000042"));
    drop(w);
    t.join().expect("writer");
}
