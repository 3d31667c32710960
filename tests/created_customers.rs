//! A customer created here and not changed since has no view record: its create is its view
//! (`store::views`; it saves a quarter of the bytes a create writes). It reads and searches as
//! any customer. Its first change or HQ's confirmation writes the record, and so does the
//! pruning of its create, so the customer never goes with the operation. Driven through the
//! real writer on a real redb file, whose tables are read raw while the store is closed.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use outpost::domain::view::SyncState;
use outpost::domain::{CustomerPatch, OperationId, Payload};
use outpost::store::hq_sync::{HqOutcome, HqVerdict};
use outpost::store::schema;
use outpost::store::writer::{MergeOptions, WriterHandle};
use outpost::store::{Command, Outcome, Store, StoreOptions, Submission};
use redb::{ReadableDatabase, ReadableTable};

/// A store and its writer, open on one file.
struct Open {
    store: Store,
    writer: WriterHandle,
    thread: std::thread::JoinHandle<()>,
}

fn open(path: &Path) -> Open {
    let store = Store::open(path, &StoreOptions::new(4 << 20)).expect("open");
    let (writer, thread) = common::start_writer(&store, MergeOptions::default());
    Open {
        store,
        writer,
        thread,
    }
}

impl Open {
    /// Stops the writer and closes the store, so the file can be read raw.
    fn close(self) {
        drop(self.writer);
        self.thread.join().expect("writer");
        drop(self.store);
    }
}

/// The references of the customers with a view record, and of those with a key record.
fn records(path: &PathBuf) -> (BTreeSet<String>, BTreeSet<String>) {
    let db = redb::Database::open(path).expect("raw open");
    let tx = db.begin_read().expect("read");
    let keys_of = |def: redb::TableDefinition<schema::CustomerRef, &[u8]>| -> BTreeSet<String> {
        tx.open_table(def)
            .expect("table")
            .iter()
            .expect("iter")
            .map(|row| row.expect("row").0.value().to_string())
            .collect()
    };
    (keys_of(schema::CUSTOMERS), keys_of(schema::CUSTOMER_KEYS))
}

fn set(refs: &[&str]) -> BTreeSet<String> {
    refs.iter().map(|r| r.to_string()).collect()
}

async fn confirm(w: &WriterHandle, id: OperationId, account: Option<&str>, cursor: u64) {
    w.execute(Command::ApplyOutcomes {
        outcomes: vec![HqOutcome {
            id,
            revision: 0,
            verdict: HqVerdict::Completed {
                account_number: account.map(str::to_string),
                conflicts: Vec::new(),
            },
        }],
        next_cursor: cursor,
        feed_id: 1,
    })
    .await
    .expect("outcome applied");
}

fn found(store: &Store, q: &str) -> Vec<String> {
    store
        .search(q, 20)
        .expect("search")
        .into_iter()
        .map(|c| c.view.customer_ref)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_has_no_view_record_until_it_changes_or_hq_confirms_it() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("outpost.redb");
    let node = open(&path);
    let oie = common::fields("Õie", "Kask", "oie@example.ee");
    let (a, a_id) = common::submit_create(&node.writer, oie.clone()).await;
    let mari = common::fields("Mari", "Tamm", "mari@example.ee");
    let (b, _) = common::submit_create(&node.writer, mari).await;

    let read = node.store.customer(&a).expect("read").expect("found");
    assert_eq!(read.view.fields, oie);
    assert_eq!(read.view.customer_ref, a);
    assert_eq!(read.sync_state, SyncState::Pending);
    assert_eq!(found(&node.store, "oie kask"), vec![a.clone()]);
    assert_eq!(node.store.customer_count().expect("count"), 2);
    node.close();
    let (views, keys) = records(&path);
    assert_eq!(views, set(&[]), "no view record for a create");
    assert_eq!(keys, set(&[&a, &b]), "a key record for each");

    // The first change writes the record, with the change in it.
    let node = open(&path);
    let edit = Submission::Change {
        customer: b.clone(),
        record_id: None,
        payload: Payload::CustomerEdit(CustomerPatch {
            last_name: Some("Saar".into()),
            ..CustomerPatch::default()
        }),
    };
    let accepted = node.writer.execute(Command::Submit(edit)).await;
    assert!(
        matches!(accepted, Ok(Outcome::Accepted { .. })),
        "{accepted:?}"
    );
    let read = node.store.customer(&b).expect("read").expect("found");
    assert_eq!(read.view.fields.last_name, "Saar");
    assert_eq!(found(&node.store, "mari saar"), vec![b.clone()]);
    assert!(found(&node.store, "mari tamm").is_empty());
    node.close();
    assert_eq!(records(&path).0, set(&[&b]));

    // HQ's confirmation writes it too, with the account number HQ gave.
    let node = open(&path);
    confirm(&node.writer, a_id, Some("C000042"), 1).await;
    let read = node
        .store
        .customer("C000042")
        .expect("read")
        .expect("found");
    assert_eq!(read.view.customer_ref, a);
    assert_eq!(read.view.fields, oie);
    assert_eq!(read.sync_state, SyncState::Synced);
    node.close();
    assert_eq!(records(&path).0, set(&[&a, &b]));
}

/// HQ confirmed the create without an account number, and the create is pruned: the record is
/// written before the operation goes, or the customer would go with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pruned_create_leaves_its_customer() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("outpost.redb");
    let node = open(&path);
    let oie = common::fields("Õie", "Kask", "oie@example.ee");
    let (a, a_id) = common::submit_create(&node.writer, oie.clone()).await;
    confirm(&node.writer, a_id, None, 1).await;
    let pruned = node
        .writer
        .execute(Command::Prune {
            confirmed_before_ms: i64::MAX,
            max: 10,
        })
        .await
        .expect("pruned");
    assert!(matches!(pruned, Outcome::Synced(1)), "{pruned:?}");
    let left: u64 = node
        .store
        .operation_counts()
        .expect("counts")
        .iter()
        .map(|(_, n)| n)
        .sum();
    assert_eq!(left, 0, "the create is gone");

    let read = node.store.customer(&a).expect("read").expect("still there");
    assert_eq!(read.view.fields, oie);
    assert_eq!(read.sync_state, SyncState::Synced);
    assert_eq!(found(&node.store, "oie kask"), vec![a.clone()]);
    node.close();
    assert_eq!(records(&path), (set(&[&a]), set(&[&a])));
}

/// HQ refused a real-time create: the operation is forgotten, and the customer with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discarded_create_leaves_no_customer() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("outpost.redb");
    let node = open(&path);
    let id = OperationId::new_v7(outpost::store::now_ms() as u64);
    let sub = Submission::NewCustomer(common::fields("Õie", "Kask", "oie@example.ee"));
    let accepted = node.writer.execute(Command::SubmitAs(id, sub)).await;
    let Ok(Outcome::Accepted { customer_ref, .. }) = accepted else {
        panic!("unexpected {accepted:?}");
    };
    assert!(node.store.customer(&customer_ref).expect("read").is_some());
    node.writer
        .execute(Command::Discard { id })
        .await
        .expect("discarded");
    assert!(node.store.customer(&customer_ref).expect("read").is_none());
    assert!(found(&node.store, "oie kask").is_empty());
    assert_eq!(node.store.customer_count().expect("count"), 0);
    node.close();
    assert_eq!(records(&path), (set(&[]), set(&[])));
}

/// HQ's 1010 download carries a customer created here before HQ's confirmation of the create
/// reaches the node: HQ's copy becomes the base, and the create, still unconfirmed, stays on
/// top of it until HQ answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_of_an_unconfirmed_create_keeps_the_create_on_top() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("outpost.redb");
    let node = open(&path);
    let oie = common::fields("Õie", "Kask", "oie@example.ee");
    let (a, _) = common::submit_create(&node.writer, oie.clone()).await;
    let now = outpost::store::now_ms();
    let copy = common::hq_copy(
        "C000042",
        Some(&a),
        common::fields("Õie", "Kask-Tamm", "oie@example.ee"),
        now,
    );
    common::download(&node.writer, 1, vec![copy], now).await;
    let read = node.store.customer(&a).expect("read").expect("found");
    assert_eq!(read.view.fields, oie, "the create, unconfirmed, on top");
    assert_eq!(read.view.account_number.as_deref(), Some("C000042"));
    assert_eq!(read.sync_state, SyncState::Pending);
    assert_eq!(found(&node.store, "oie kask"), vec![a.clone()]);
    assert_eq!(node.store.customer_count().expect("count"), 1);
    node.close();
}
