//! Name pairs in the search index (`domain::search`): a search finds exactly the customers
//! whose every query term begins one of their words (names split into words, e-mail,
//! reference), whether the customers' terms are still in the search terms log, merged into the
//! main index, or read back after the store was opened again; and after a store file of an
//! older layout was upgraded at open.
//!
//! A seeded model: customers with names of one to eight words drawn from a small vocabulary
//! (so words begin one another: "mari", "marika"), some e-mails that begin with a name word;
//! random queries of one to three word prefixes, e-mail prefixes and references. Every answer
//! is compared with a plain reading of the rule over every customer.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

mod common;

use outpost::domain::{NewCustomer, search};
use outpost::store::writer::{MergeOptions, WriterHandle};
use outpost::store::{Store, StoreOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SEEDS: u64 = 3;
const CUSTOMERS: usize = 160;
const QUERIES: usize = 150;

const FIRST: [&str; 8] = [
    "Mari",
    "Marika",
    "Mart",
    "Jaan",
    "Õie",
    "Anna Maria",
    "Mari-Liis",
    "Ülle",
];
const LAST: [&str; 7] = [
    "Tamm",
    "Tammik",
    "Kask",
    "Kaskla",
    "Tamm-Kask",
    "de la Cruz Ruiz Mora",
    "Mari",
];

/// A customer as the model knows it.
struct Known {
    customer_ref: String,
    fields: NewCustomer,
}

/// The words a customer is found by, read plainly from its fields: each name word, its
/// e-mail, its reference.
fn words(k: &Known) -> Vec<String> {
    let name = format!("{} {}", k.fields.first_name, k.fields.last_name);
    let mut out: Vec<String> = search::fold(&name)
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect();
    out.extend(k.fields.email.as_deref().map(search::fold));
    out.push(search::fold(&k.customer_ref));
    out
}

/// The customers the rule says `q` finds.
fn expected(model: &[Known], q: &str) -> BTreeSet<String> {
    let terms = search::query_terms(q);
    model
        .iter()
        .filter(|k| {
            let words = words(k);
            !terms.is_empty() && terms.iter().all(|t| words.iter().any(|w| w.starts_with(t)))
        })
        .map(|k| k.customer_ref.clone())
        .collect()
}

fn found(store: &Store, q: &str) -> BTreeSet<String> {
    common::search_refs(store, q, 10_000).into_iter().collect()
}

/// Creates a customer through the writer, as the model knows it.
async fn add(w: &WriterHandle, first: &str, last: &str, email: Option<String>) -> Known {
    let fields = NewCustomer {
        first_name: first.into(),
        last_name: last.into(),
        email,
        phone: None,
        customer_group: None,
        language: None,
    };
    let (customer_ref, _) = common::submit_create(w, fields.clone()).await;
    Known {
        customer_ref,
        fields,
    }
}

/// The view records a store before schema 8 held for `model`'s customers: one for every
/// customer (this build writes none for a create).
fn views_before_schema_8(store: &Store, model: &[Known]) -> Vec<(String, Vec<u8>)> {
    model
        .iter()
        .map(|k| {
            let read = store
                .customer(&k.customer_ref)
                .expect("read")
                .expect("found");
            let json = serde_json::to_vec(&read.view).expect("encode");
            (k.customer_ref.clone(), json)
        })
        .collect()
}

/// Writes `views` (from [`views_before_schema_8`]) into the view table.
fn write_views(tx: &redb::WriteTransaction, views: &[(String, Vec<u8>)]) {
    let mut table = tx
        .open_table(outpost::store::schema::CUSTOMERS)
        .expect("views");
    for (r, json) in views {
        table.insert(r.as_str(), json.as_slice()).expect("view");
    }
}

fn prefix(rng: &mut StdRng, word: &str) -> String {
    let chars: Vec<char> = word.chars().collect();
    let n = rng.gen_range(1..=chars.len());
    chars[..n].iter().collect()
}

fn query(rng: &mut StdRng, model: &[Known]) -> String {
    let k = &model[rng.gen_range(0..model.len())];
    let mut parts = Vec::new();
    for _ in 0..rng.gen_range(1..=3) {
        let part = match rng.gen_range(0..10) {
            0 => prefix(rng, k.fields.email.as_deref().unwrap_or("x@example.ee")),
            1 => k.customer_ref.clone(),
            // Now and then a word of some other customer, or none at all.
            2 => {
                let other = LAST[rng.gen_range(0..LAST.len())];
                prefix(rng, other)
            }
            _ => {
                let name = format!("{} {}", k.fields.first_name, k.fields.last_name);
                let words: Vec<&str> = name.split([' ', '-']).collect();
                let word = words[rng.gen_range(0..words.len())];
                prefix(rng, word)
            }
        };
        parts.push(part);
    }
    parts.join(" ")
}

fn check(store: &Store, model: &[Known], queries: &[String], when: &str) {
    let mut quick = 0;
    for q in queries {
        assert_eq!(found(store, q), expected(model, q), "{when}: query {q:?}");
        // The quick search answers only what it can answer whole: the same customers in the
        // same order as the search, or nothing.
        let limit = outpost::store::read::QUICK_SEARCH_LIMIT;
        let refs = |found: Vec<outpost::store::CustomerRead>| -> Vec<String> {
            found.into_iter().map(|r| r.view.customer_ref).collect()
        };
        if let Some(answer) = store.search_quick(q, limit).expect("quick search") {
            let full = store.search(q, limit).expect("search");
            assert_eq!(refs(answer), refs(full), "{when}: quick search of {q:?}");
            quick += 1;
        }
    }
    // Both ways are taken: narrow queries answered quickly, broad ones given up.
    assert!(quick > 0, "{when}: no query was answered quickly");
    assert!(
        quick < queries.len(),
        "{when}: every query was answered quickly"
    );
}

async fn run_seed(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("outpost.redb");
    let options = StoreOptions::new(8 << 20);
    let store = Store::open(&path, &options).expect("open");
    let merge = MergeOptions {
        start_at_entries: rng.gen_range(20..200),
        chunk_entries: rng.gen_range(5..50),
        idle_after: Duration::from_millis(rng.gen_range(1..10)),
    };
    let w = common::start_writer(&store, merge);
    let mut model = Vec::new();
    for i in 0..CUSTOMERS {
        let first = FIRST[rng.gen_range(0..FIRST.len())];
        let last = LAST[rng.gen_range(0..LAST.len())];
        let email = match rng.gen_range(0..3) {
            0 => None,
            1 => Some(format!("{}.{i}@example.ee", first.to_lowercase())),
            _ => Some(format!("c{i}@example.ee")),
        };
        model.push(add(&w.0, first, last, email).await);
    }
    let queries: Vec<String> = (0..QUERIES).map(|_| query(&mut rng, &model)).collect();
    // Some terms merged, some still in the log.
    check(&store, &model, &queries, &format!("seed {seed}, log"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while store.search_log_entries() > 0 {
        assert!(Instant::now() < deadline, "seed {seed}: never merged");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    check(&store, &model, &queries, &format!("seed {seed}, merged"));
    drop(w.0);
    w.1.join().expect("writer");
    drop(store);
    let store = Store::open(&path, &options).expect("open again");
    check(&store, &model, &queries, &format!("seed {seed}, reopened"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn searches_find_exactly_the_customers_whose_words_the_query_begins() {
    for seed in 0..SEEDS {
        run_seed(seed).await;
    }
}

/// A store of the layout before name pairs (schema 4: names as plain terms) is upgraded at
/// open: key records and the main index are rebuilt from the views, whatever they held, the
/// old log rows go, and searches answer by the rule again; the version is written last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quick_search_gives_up_a_query_it_cannot_answer_whole() {
    use outpost::store::read::QUICK_SEARCH_CANDIDATES;
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(
        &dir.path().join("outpost.redb"),
        &StoreOptions::new(8 << 20),
    )
    .expect("open");
    // Nothing merges: every term stays in the in-memory log.
    let merge = MergeOptions {
        start_at_entries: 1_000_000,
        chunk_entries: 1_000,
        idle_after: Duration::from_secs(3_600),
    };
    let w = common::start_writer(&store, merge);
    // More customers than a quick search takes from one source, all found by "tamm mari"
    // through an e-mail (a plain term of the log), none through a name pair.
    let many = QUICK_SEARCH_CANDIDATES + 8;
    let mut refs = Vec::new();
    for i in 0..many {
        let k = add(&w.0, "Jaan", "Tamm", Some(format!("mari.{i}@example.ee"))).await;
        refs.push(k.customer_ref);
    }
    let narrow = add(&w.0, "Õie", "Kask", Some("oie@example.ee".into())).await;
    assert!(store.search_log_entries() > 0, "the terms are in the log");
    let found = common::search_refs(&store, "tamm mari", 100);
    assert_eq!(found.len(), many, "the search finds them all");
    assert!(
        store
            .search_quick("tamm mari", 20)
            .expect("quick")
            .is_none(),
        "a source held more than the quick search takes: it must give the query up"
    );
    let quick = store
        .search_quick("oie kask", 20)
        .expect("quick")
        .expect("a narrow query is answered");
    let quick: Vec<String> = quick.into_iter().map(|r| r.view.customer_ref).collect();
    assert_eq!(quick, vec![narrow.customer_ref]);
    drop(w.0);
    w.1.join().expect("writer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_from_before_name_pairs_is_rebuilt_at_open() {
    use outpost::store::schema;
    use redb::ReadableDatabase;

    let mut rng = StdRng::seed_from_u64(99);
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("outpost.redb");
    let options = StoreOptions::new(8 << 20);
    let store = Store::open(&path, &options).expect("open");
    let w = common::start_writer(&store, MergeOptions::default());
    let mut model = Vec::new();
    for i in 0..40 {
        let email = Some(format!("c{i}@example.ee"));
        model.push(add(&w.0, FIRST[i % FIRST.len()], LAST[i % LAST.len()], email).await);
    }
    drop(w.0);
    w.1.join().expect("writer");
    let old_views = views_before_schema_8(&store, &model);
    drop(store);
    // Make it a version 4 file: plain name terms in the index and key records, and a log row.
    {
        let db = redb::Database::create(&path).expect("raw open");
        let tx = db.begin_write().expect("write");
        write_views(&tx, &old_views);
        {
            let mut meta = tx.open_table(schema::META).expect("meta");
            meta.insert(schema::SCHEMA_KEY, 4).expect("version");
            // The index as it was then: no time of change in its entries.
            let old_index = redb::TableDefinition::<(&str, &str), ()>::new("search_terms");
            tx.delete_table(schema::SEARCH).expect("drop the index");
            let mut index = tx.open_table(old_index).expect("index");
            let mut keys = tx.open_table(schema::CUSTOMER_KEYS).expect("keys");
            index.retain(|_, _| false).expect("clear");
            for k in &model {
                let old: Vec<String> = words(k);
                for t in &old {
                    index
                        .insert((t.as_str(), k.customer_ref.as_str()), ())
                        .expect("term");
                }
                let record = schema::encode_keys(0, &old);
                keys.insert(k.customer_ref.as_str(), record.as_slice())
                    .expect("key");
            }
            let mut log = tx.open_table(schema::SEARCH_LOG).expect("log");
            let row = schema::TermChange {
                customer_ref: model[0].customer_ref.clone(),
                added: vec!["tamm".into()],
                removed: Vec::new(),
                updated_at_ms: 0,
            };
            log.insert(1, schema::encode_term_change(&row).expect("row").as_slice())
                .expect("log row");
        }
        tx.commit().expect("commit");
    }
    let store = Store::open(&path, &options).expect("open upgraded");
    assert_eq!(store.search_log_entries(), 0, "the old log rows are gone");
    let queries: Vec<String> = (0..100).map(|_| query(&mut rng, &model)).collect();
    check(&store, &model, &queries, "upgraded");
    let mut want = BTreeMap::new();
    for k in &model {
        let view = store
            .customer(&k.customer_ref)
            .expect("read")
            .expect("customer")
            .view;
        want.extend(
            search::terms(&view)
                .into_iter()
                .map(|t| ((t, k.customer_ref.clone()), view.updated_at_ms)),
        );
    }
    drop(store);
    let db = redb::Database::open(&path).expect("raw open");
    let tx = db.begin_read().expect("read");
    let meta = tx.open_table(schema::META).expect("meta");
    let version = meta
        .get(schema::SCHEMA_KEY)
        .expect("get")
        .map(|v| v.value());
    assert_eq!(version, Some(schema::SCHEMA_VERSION));
    let index = tx.open_table(schema::SEARCH).expect("index");
    let have = common::index_entries(&index);
    assert_eq!(
        have, want,
        "the index is exactly the views' terms, with their times of change"
    );
}

/// A store of schema 5 (the tables keyed by customer reference in byte order, where "T10"
/// comes before "T2") is upgraded at open: the same rows under the same names, now in
/// reference order, every customer read and found as before, and new creates go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_with_tables_in_byte_order_is_put_in_reference_order_at_open() {
    use outpost::store::schema;
    use redb::{ReadableDatabase, ReadableTable, TableDefinition};

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("outpost.redb");
    let options = StoreOptions::new(8 << 20);
    let store = Store::open(&path, &options).expect("open");
    let w = common::start_writer(&store, MergeOptions::default());
    let mut model = Vec::new();
    for i in 0..25 {
        let email = Some(format!("c{i}@example.ee"));
        model.push(add(&w.0, FIRST[i % FIRST.len()], LAST[i % LAST.len()], email).await);
    }
    drop(w.0);
    w.1.join().expect("writer");
    let old_views = views_before_schema_8(&store, &model);
    drop(store);

    /// Rewrites a table's rows into a table of the same name keyed as schema 5 kept it.
    fn to_byte_order<K: redb::Key + 'static, V: redb::Value + 'static, OK: redb::Key + 'static>(
        tx: &redb::WriteTransaction,
        now: TableDefinition<K, V>,
        old: TableDefinition<OK, V>,
        rows: impl Fn(&redb::Table<'_, K, V>, &mut redb::Table<'_, OK, V>),
    ) {
        let temp: TableDefinition<OK, V> = TableDefinition::new("downgrading");
        {
            let table = tx.open_table(now).expect("table");
            let mut target = tx.open_table(temp).expect("temp");
            rows(&table, &mut target);
        }
        tx.delete_table(now).expect("delete");
        tx.rename_table(temp, old).expect("rename");
    }
    let mut counts = Vec::new();
    {
        let db = redb::Database::create(&path).expect("raw open");
        let tx = db.begin_write().expect("write");
        write_views(&tx, &old_views);
        for def in [
            schema::CUSTOMERS,
            schema::CUSTOMER_KEYS,
            schema::CUSTOMER_BASES,
        ] {
            let old = TableDefinition::<&str, &[u8]>::new(redb::TableHandle::name(&def));
            to_byte_order(&tx, def, old, |from, to| {
                for row in from.iter().expect("iter") {
                    let (k, v) = row.expect("row");
                    to.insert(k.value(), v.value()).expect("insert");
                }
            });
        }
        let old = TableDefinition::<(&str, u64), u8>::new("customer_operations");
        to_byte_order(&tx, schema::CUSTOMER_OPS, old, |from, to| {
            for row in from.iter().expect("iter") {
                let (k, v) = row.expect("row");
                to.insert(k.value(), v.value()).expect("insert");
            }
        });
        {
            let views = tx
                .open_table(TableDefinition::<&str, &[u8]>::new("customers"))
                .expect("old views");
            let keys: Vec<String> = views
                .iter()
                .expect("iter")
                .map(|r| r.expect("row").0.value().to_string())
                .collect();
            assert_eq!(keys.len(), model.len());
            assert!(keys[1].ends_with("-T10"), "byte order: {keys:?}");
            counts.push(keys.len());
            let mut meta = tx.open_table(schema::META).expect("meta");
            meta.insert(schema::SCHEMA_KEY, 5).expect("version");
        }
        tx.commit().expect("commit");
    }

    // `outpost doctor` on the stopped old store: every customer counted, nothing wrong.
    let summary = outpost::store::backup::inspect(&path).expect("doctor reads the old store");
    assert_eq!(summary.customers, model.len() as u64);
    assert_eq!(summary.schema_version, Some(5));
    assert!(summary.problems.is_empty(), "{:?}", summary.problems);

    let store = Store::open(&path, &options).expect("open upgraded");
    let mut rng = StdRng::seed_from_u64(5);
    let queries: Vec<String> = (0..60).map(|_| query(&mut rng, &model)).collect();
    check(&store, &model, &queries, "upgraded from byte order");
    for k in &model {
        let got = store
            .customer(&k.customer_ref)
            .expect("read")
            .expect("customer");
        assert_eq!(got.view.fields.first_name, k.fields.first_name);
    }
    let w = common::start_writer(&store, MergeOptions::default());
    model.push(add(&w.0, "Uus", "Klient", None).await);
    drop(w.0);
    w.1.join().expect("writer");
    check(&store, &model, &queries, "a create after the upgrade");
    drop(store);

    let db = redb::Database::open(&path).expect("raw open");
    let tx = db.begin_read().expect("read");
    let version = tx
        .open_table(schema::META)
        .expect("meta")
        .get(schema::SCHEMA_KEY)
        .expect("get")
        .map(|v| v.value());
    assert_eq!(version, Some(schema::SCHEMA_VERSION));
    let in_order = |def: TableDefinition<schema::CustomerRef, &[u8]>| -> Vec<String> {
        tx.open_table(def)
            .expect("in reference order")
            .iter()
            .expect("iter")
            .map(|r| r.expect("row").0.value().to_string())
            .collect()
    };
    let mut handed_out: Vec<String> = model.iter().map(|k| k.customer_ref.clone()).collect();
    handed_out.sort_by_key(|r| r.rsplit('T').next().and_then(|n| n.parse::<u64>().ok()));
    assert_eq!(
        in_order(schema::CUSTOMER_KEYS),
        handed_out,
        "every customer, in the order handed out"
    );
    // The create after the upgrade has no view record: its create is its view.
    assert_eq!(
        in_order(schema::CUSTOMERS),
        handed_out[..handed_out.len() - 1],
        "the views the old store held, in reference order"
    );
    let ops = tx
        .open_table(schema::CUSTOMER_OPS)
        .expect("operations by customer");
    for k in &model {
        let key = k.customer_ref.as_str();
        let n = ops
            .range((key, 0)..=(key, u64::MAX))
            .expect("range")
            .count();
        assert_eq!(n, 1, "{key}: its create");
    }
    tx.open_table(schema::CUSTOMER_BASES)
        .expect("in reference order");
    assert_eq!(counts, vec![model.len() - 1]);
}
