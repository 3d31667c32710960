//! The search terms log (`store::search_log`): a till's write is found by search as soon as it
//! is acknowledged, before and after its terms are merged into the main index, after the store
//! is closed and opened again, and alongside 1010 downloads that write the index directly; a
//! term a customer no longer has never finds it.
//!
//! A seeded model: random creates and name / e-mail edits through the real writer on a real
//! redb file, with merge thresholds small enough that merges start, run in chunks and finish
//! many times during the run. After every acknowledged write, and at the end, every customer
//! is searched by its current terms and by the terms it had before; once all is merged, the
//! main index itself holds exactly the customers' current terms.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use outpost::domain::search;
use outpost::domain::{CustomerPatch, OperationId, Payload};
use outpost::store::hq_sync::{HqOutcome, HqVerdict};
use outpost::store::writer::{MergeOptions, WriterHandle};
use outpost::store::{Command, Outcome, Store, StoreOptions, Submission, schema};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SEEDS: u64 = 6;
const STEPS: usize = 300;

/// What a customer is now, and the words it was known by before.
#[derive(Debug, Clone)]
struct Model {
    last_name: String,
    email: String,
    old_words: Vec<String>,
}

fn open(path: &std::path::Path) -> Store {
    Store::open(path, &StoreOptions::new(8 << 20)).expect("open store")
}

fn start(store: &Store, merge: MergeOptions) -> (WriterHandle, std::thread::JoinHandle<()>) {
    common::start_writer(store, merge)
}

fn stop(w: (WriterHandle, std::thread::JoinHandle<()>)) {
    drop(w.0);
    w.1.join().expect("writer thread");
}

fn refs(store: &Store, q: &str) -> Vec<String> {
    common::search_refs(store, q, 50)
}

/// Every customer is found by its current last name and e-mail, and not by a word it lost.
fn check_all(store: &Store, model: &BTreeMap<String, Model>, when: &str) {
    for (r, m) in model {
        assert!(
            refs(store, &m.last_name).contains(r),
            "{when}: {r} not found by its last name {}",
            m.last_name
        );
        assert!(
            refs(store, &m.email).contains(r),
            "{when}: {r} not found by its e-mail {}",
            m.email
        );
        for old in &m.old_words {
            assert!(
                !refs(store, old).contains(r),
                "{when}: {r} still found by {old}, which it no longer has"
            );
        }
    }
}

/// With the log merged, the main index holds exactly every customer's current terms, each with
/// the customer's time of change: none missing, none left over from a term a customer lost,
/// none with an older time (searches rank by it); and each customer's key record holds exactly
/// its view's terms.
/// Consumes the store: the file is read on its own.
fn assert_index_exact(store: Store, path: &std::path::Path, customers: &[String], when: &str) {
    assert_eq!(store.search_log_entries(), 0, "{when}: log not merged");
    let mut want = BTreeMap::new();
    let mut terms_of = BTreeMap::new();
    for r in customers {
        let view = store.customer(r).expect("read").expect("customer").view;
        let terms = search::terms(&view);
        want.extend(
            terms
                .iter()
                .map(|t| ((t.clone(), r.clone()), view.updated_at_ms)),
        );
        terms_of.insert(r.clone(), terms);
    }
    drop(store);
    use redb::ReadableDatabase;
    let db = redb::Database::open(path).expect("open the file");
    let tx = db.begin_read().expect("read");
    let keys = tx.open_table(schema::CUSTOMER_KEYS).expect("key records");
    for (r, terms) in &terms_of {
        let bytes = keys.get(r.as_str()).expect("get").expect("key record");
        let record = schema::CustomerKeys::parse(bytes.value()).expect("parse");
        let stored: Vec<String> = record
            .terms()
            .map(|t| String::from_utf8(t.to_vec()).expect("utf-8"))
            .collect();
        assert_eq!(&stored, terms, "{when}: key record of {r}");
    }
    let index = tx.open_table(schema::SEARCH).expect("index");
    let have = common::index_entries(&index);
    let differ = |a: &BTreeMap<(String, String), i64>, b: &BTreeMap<(String, String), i64>| {
        a.iter()
            .filter(|(k, v)| b.get(*k) != Some(*v))
            .take(5)
            .map(|(k, v)| (k.clone(), *v))
            .collect::<Vec<_>>()
    };
    let (missing, left_over) = (differ(&want, &have), differ(&have, &want));
    assert!(
        missing.is_empty() && left_over.is_empty(),
        "{when}: index missing or older {missing:?}, left over or other {left_over:?}"
    );
}

fn word(rng: &mut StdRng) -> String {
    // Few distinct words, so that customers share terms and edits come back to old ones.
    const SYLLABLES: [&str; 6] = ["ka", "su", "mi", "tal", "re", "vo"];
    (0..3)
        .map(|_| SYLLABLES[rng.gen_range(0..SYLLABLES.len())])
        .collect()
}

async fn create(w: &WriterHandle, last: &str, email: &str) -> String {
    create_op(w, last, email).await.0
}

async fn create_op(w: &WriterHandle, last: &str, email: &str) -> (String, OperationId) {
    common::submit_create(w, common::fields("Õie", last, email)).await
}

async fn edit(w: &WriterHandle, customer: &str, patch: CustomerPatch) -> OperationId {
    let out = w
        .execute(Command::Submit(Submission::Change {
            customer: customer.into(),
            record_id: None,
            payload: Payload::CustomerEdit(patch),
        }))
        .await
        .expect("edit acknowledged");
    match out {
        Outcome::Accepted { operation_id, .. } => operation_id,
        other => panic!("unexpected outcome {other:?}"),
    }
}

/// Forgets old words the customer has again.
fn tidy(m: &mut Model) {
    let (last, email) = (m.last_name.clone(), m.email.clone());
    m.old_words.retain(|w| *w != last && *w != email);
    m.old_words.sort();
    m.old_words.dedup();
}

async fn run_seed(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("outpost.redb");
    let merge = MergeOptions {
        start_at_entries: rng.gen_range(1..40),
        chunk_entries: rng.gen_range(1..30),
        idle_after: Duration::from_millis(rng.gen_range(1..20)),
    };
    let mut store = open(&path);
    let mut w = start(&store, merge);
    let mut model: BTreeMap<String, Model> = BTreeMap::new();
    for step in 0..STEPS {
        match rng.gen_range(0..10) {
            0..4 => {
                let (last, email) = (word(&mut rng), format!("c{step}@example.ee"));
                let r = create(&w.0, &last, &email).await;
                model.insert(
                    r,
                    Model {
                        last_name: last,
                        email,
                        old_words: Vec::new(),
                    },
                );
            }
            4..8 if !model.is_empty() => {
                let i = rng.gen_range(0..model.len());
                let (r, m) = model.iter_mut().nth(i).expect("customer");
                let new_last = word(&mut rng);
                let mut patch = CustomerPatch {
                    last_name: Some(new_last.clone()),
                    ..CustomerPatch::default()
                };
                m.old_words
                    .push(std::mem::replace(&mut m.last_name, new_last));
                if rng.gen_bool(0.5) {
                    let new_email = format!("e{step}@example.ee");
                    patch.email = Some(Some(new_email.clone()));
                    m.old_words.push(std::mem::replace(&mut m.email, new_email));
                }
                tidy(m);
                edit(&w.0, r, patch).await;
                // Found by its new terms at once, not by the old ones.
                let m = m.clone();
                let found = refs(&store, &m.last_name);
                assert!(found.contains(r), "seed {seed} step {step}: {r} not found");
                for old in &m.old_words {
                    assert!(!refs(&store, old).contains(r), "seed {seed}: {r} by {old}");
                }
            }
            8 => {
                // Close and open again: the log is read back from the file.
                stop(w);
                drop(store);
                store = open(&path);
                w = start(&store, merge);
                check_all(&store, &model, &format!("seed {seed} step {step} reopened"));
            }
            _ => {
                // Quiet for a while: the writer merges the log by itself.
                tokio::time::sleep(merge.idle_after * 3).await;
            }
        }
    }
    check_all(&store, &model, &format!("seed {seed} end"));
    // Left alone, the writer merges everything; nothing is lost by it.
    let deadline = Instant::now() + Duration::from_secs(20);
    while store.search_log_entries() > 0 {
        assert!(Instant::now() < deadline, "seed {seed}: log never merged");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    check_all(&store, &model, &format!("seed {seed} merged"));
    stop(w);
    let customers: Vec<String> = model.keys().cloned().collect();
    assert_index_exact(store, &path, &customers, &format!("seed {seed}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn searches_find_acknowledged_writes_through_merges_and_reopens() {
    for seed in 0..SEEDS {
        run_seed(seed).await;
    }
}

/// A 1010 download writes the main index directly while the log still holds older local
/// changes of the same customers: the merge afterwards must not undo what HQ's copy says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_after_a_download_keeps_what_the_download_wrote() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(&dir.path().join("outpost.redb"));
    // Nothing merges until asked to: the log holds every local change.
    let merge = MergeOptions {
        start_at_entries: 1_000_000,
        chunk_entries: 3,
        idle_after: Duration::from_secs(3600),
    };
    let w = start(&store, merge);
    let (r, created) = create_op(&w.0, "Kask", "oie@example.ee").await;
    // Locally renamed: the log says "kask" was removed, "tamm" added.
    let renamed = edit(
        &w.0,
        &r,
        CustomerPatch {
            last_name: Some("Tamm".into()),
            ..CustomerPatch::default()
        },
    )
    .await;
    // HQ confirms both, then its 1010 copy names the customer Kask again (someone at HQ
    // renamed it back): with nothing left unconfirmed the view is HQ's copy, written straight
    // into the main index by the bulk apply ("kask" in, "tamm" out), while the log still says
    // "kask" out, "tamm" in.
    let completed = |id| HqOutcome {
        id,
        revision: 0,
        verdict: HqVerdict::Completed {
            account_number: Some("C000001".into()),
            conflicts: Vec::new(),
        },
    };
    w.0.execute(Command::ApplyOutcomes {
        outcomes: vec![completed(created), completed(renamed)],
        next_cursor: 2,
        feed_id: 1,
    })
    .await
    .expect("outcomes applied");
    let now = 1_700_000_000_000;
    let copy = common::hq_copy(
        "C000001",
        Some(&r),
        common::fields("Õie", "Kask", "oie@example.ee"),
        now,
    );
    common::download(&w.0, 1, vec![copy], now).await;
    stop(w);
    let view = store.customer(&r).expect("read").expect("customer").view;
    assert_eq!(view.fields.last_name, "Kask", "the view is HQ's copy");
    assert!(store.search_log_entries() > 0, "nothing merged yet");
    // Now merge everything, in chunks of three terms.
    let merge_now = MergeOptions {
        start_at_entries: 1,
        chunk_entries: 3,
        idle_after: Duration::from_millis(1),
    };
    let w = start(&store, merge_now);
    let deadline = Instant::now() + Duration::from_secs(20);
    while store.search_log_entries() > 0 {
        assert!(Instant::now() < deadline, "log never merged");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop(w);
    assert!(
        refs(&store, "kask").contains(&r),
        "HQ's name lost by the merge"
    );
    assert!(refs(&store, "C000001").contains(&r));
    assert!(refs(&store, "oie@example").contains(&r));
    assert!(
        !refs(&store, "tamm").contains(&r),
        "found by a name it lost"
    );
    assert_index_exact(
        store,
        &dir.path().join("outpost.redb"),
        &[r],
        "after the download",
    );
}

/// HQ confirms creates and edits with account numbers: each customer is found by its account
/// number at once and after the merge, and its key record and the main index hold exactly the
/// terms its view has (the account number's term is added without computing the others again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmed_customers_are_found_by_their_account_numbers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("outpost.redb");
    let store = open(&path);
    let merge = MergeOptions {
        start_at_entries: 7,
        chunk_entries: 5,
        idle_after: Duration::from_millis(2),
    };
    let w = start(&store, merge);
    let mut customers = Vec::new();
    let mut outcomes = Vec::new();
    for i in 0..40 {
        let (r, id) = create_op(&w.0, &format!("Kask{i}"), &format!("c{i}@example.ee")).await;
        outcomes.push((id, r.clone(), format!("C{:06}", 100 + i)));
        if i % 3 == 0 {
            // Edited before HQ answers: the edit is confirmed with the same account number.
            let patch = CustomerPatch {
                last_name: Some(format!("Tamm{i}")),
                ..CustomerPatch::default()
            };
            let edited = edit(&w.0, &r, patch).await;
            outcomes.push((edited, r.clone(), format!("C{:06}", 100 + i)));
        }
        customers.push(r);
    }
    let batch = outcomes
        .iter()
        .map(|(id, _, account)| HqOutcome {
            id: *id,
            revision: 0,
            verdict: HqVerdict::Completed {
                account_number: Some(account.clone()),
                conflicts: Vec::new(),
            },
        })
        .collect();
    w.0.execute(Command::ApplyOutcomes {
        outcomes: batch,
        next_cursor: outcomes.len() as u64,
        feed_id: 1,
    })
    .await
    .expect("outcomes applied");
    for (_, r, account) in &outcomes {
        assert!(refs(&store, account).contains(r), "{r} by {account}");
        let view = store
            .customer(account)
            .expect("read")
            .expect("by account")
            .view;
        assert_eq!(&view.customer_ref, r);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while store.search_log_entries() > 0 {
        assert!(Instant::now() < deadline, "log never merged");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for (_, r, account) in &outcomes {
        assert!(refs(&store, account).contains(r), "{r} by {account} merged");
    }
    stop(w);
    assert_index_exact(store, &path, &customers, "confirmed");
}

/// Results come most recently changed first, whether a customer's terms are still in the log or
/// merged into the main index (whose entries carry the time a search ranks by): an edit that
/// changes no name or e-mail word of the query still brings the customer to the top.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_come_most_recently_changed_first_before_and_after_the_merge() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("outpost.redb");
    let store = open(&path);
    let queries = ["Kask", "Õie Kask", "oie kas"];
    let order =
        |store: &Store| -> Vec<Vec<String>> { queries.iter().map(|q| refs(store, q)).collect() };
    let merged = |store: &Store| {
        let t = Instant::now();
        while store.search_log_entries() > 0 && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(store.search_log_entries(), 0, "the log merges when idle");
    };
    let held = MergeOptions {
        start_at_entries: 1_000_000,
        chunk_entries: 2,
        idle_after: Duration::from_secs(3600),
    };
    let w = start(&store, held);
    let mut made = Vec::new();
    for i in 0..4 {
        made.push(create(&w.0, "Kask", &format!("k{i}@example.ee")).await);
        // A later time of change for each (times are in milliseconds).
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let newest_first: Vec<String> = made.iter().rev().cloned().collect();
    assert!(store.search_log_entries() > 0, "held in the log");
    assert_eq!(order(&store), vec![newest_first.clone(); 3], "from the log");
    stop(w);
    let merge_now = MergeOptions {
        start_at_entries: 1,
        chunk_entries: 2,
        idle_after: Duration::from_millis(1),
    };
    let w = start(&store, merge_now);
    merged(&store);
    assert_eq!(order(&store), vec![newest_first; 3], "from the index");
    // The oldest customer changes its e-mail: its name terms are the same, its time is not.
    let patch = CustomerPatch {
        email: Some(Some("moved@example.ee".into())),
        ..CustomerPatch::default()
    };
    edit(&w.0, &made[0], patch).await;
    let want: Vec<String> = [&made[0], &made[3], &made[2], &made[1]]
        .into_iter()
        .cloned()
        .collect();
    assert_eq!(order(&store), vec![want.clone(); 3], "right after the edit");
    merged(&store);
    assert_eq!(order(&store), vec![want; 3], "after its merge");
    assert!(refs(&store, "k0@example.ee").is_empty(), "the old e-mail");
    assert_eq!(refs(&store, "moved@"), vec![made[0].clone()]);
    stop(w);
    assert_index_exact(store, &path, &made, "ranking");
}
