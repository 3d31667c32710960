//! Backups and offline inspection of the store file.
//!
//! A backup is every table of one read transaction (a snapshot: what was committed when it
//! began, nothing half-written) copied into a fresh redb file. A running node makes it from its
//! open store ([`Store::backup_to`]); with no node running, [`backup_file`] makes the same copy
//! straight from the file, opened read-only. [`inspect`] opens a file read-only and counts what
//! it holds, for `outpost doctor` and for checking a backup once it is written.

use std::collections::BTreeMap;
use std::path::Path;

use redb::{
    Database, Key, ReadOnlyDatabase, ReadTransaction, ReadableDatabase, ReadableTable,
    ReadableTableMetadata, TableDefinition, TableHandle, Value, WriteTransaction,
};
use serde::Serialize;

use super::schema;
use super::{Store, StoreError};
use crate::domain::{OpState, Operation};

/// What a backup copied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackupReport {
    /// Rows copied, by table name.
    pub tables: BTreeMap<String, u64>,
    /// Rows copied in all.
    pub total_rows: u64,
    /// Schema version of the copy.
    pub schema_version: Option<u64>,
    /// Size of the written file, bytes.
    pub bytes: u64,
}

/// What a store file holds, as read by [`inspect`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoreSummary {
    /// Schema version recorded in the file (`None`: never initialised).
    pub schema_version: Option<u64>,
    /// Rows by table name (tables the file lacks are absent).
    pub tables: BTreeMap<String, u64>,
    /// Rows in all.
    pub total_rows: u64,
    /// Operations by state, from the state index.
    pub operations_by_state: BTreeMap<String, u64>,
    /// Customers (materialised views).
    pub customers: u64,
    /// Problems found while reading every record and checking the indexes against them.
    pub problems: Vec<String>,
}

/// Most problems an inspection lists (a badly damaged file would otherwise list every row).
const MAX_PROBLEMS: usize = 20;

/// How often (in rows) a copy reports progress.
const PROGRESS_EVERY: u64 = 1024;

/// Something done to every table of the schema.
trait TableVisitor {
    fn visit<K: Key + 'static, V: Value + 'static>(
        &mut self,
        def: TableDefinition<'static, K, V>,
    ) -> Result<(), StoreError>;
}

/// Every table of [`schema`]. A table added there must be added here too, or backups would
/// silently lack it: [`copy_snapshot`] refuses a source holding a table not listed here, and a
/// test checks that a fresh store holds exactly these.
fn each_table(v: &mut impl TableVisitor) -> Result<(), StoreError> {
    v.visit(schema::META)?;
    v.visit(schema::OPS)?;
    v.visit(schema::OP_IDS)?;
    v.visit(schema::OPS_BY_STATE)?;
    v.visit(schema::CUSTOMERS)?;
    v.visit(schema::CUSTOMER_KEYS)?;
    v.visit(schema::CUSTOMER_OPS)?;
    v.visit(schema::SEARCH)?;
    v.visit(schema::SEARCH_LOG)?;
    v.visit(schema::ACCOUNTS)?;
    v.visit(schema::CUSTOMER_BASES)?;
    v.visit(schema::CDX_JOBS)?;
    Ok(())
}

/// Names of every table a backup copies.
pub fn table_names() -> Vec<String> {
    struct Names(Vec<String>);
    impl TableVisitor for Names {
        fn visit<K: Key + 'static, V: Value + 'static>(
            &mut self,
            def: TableDefinition<'static, K, V>,
        ) -> Result<(), StoreError> {
            self.0.push(def.name().to_string());
            Ok(())
        }
    }
    let mut names = Names(Vec::new());
    // The visitor cannot fail.
    let _ = each_table(&mut names);
    names.0
}

fn t<T>(r: Result<T, impl Into<redb::Error>>) -> Result<T, StoreError> {
    r.map_err(StoreError::db)
}

/// Rows per table in `tx`; a table the file lacks is left out.
fn count_rows(tx: &ReadTransaction) -> Result<BTreeMap<String, u64>, StoreError> {
    struct Count<'a> {
        tx: &'a ReadTransaction,
        rows: BTreeMap<String, u64>,
    }
    impl TableVisitor for Count<'_> {
        fn visit<K: Key + 'static, V: Value + 'static>(
            &mut self,
            def: TableDefinition<'static, K, V>,
        ) -> Result<(), StoreError> {
            // Untyped: an older store's tables are counted whatever their key and value types.
            match self.tx.open_untyped_table(def) {
                Ok(table) => {
                    self.rows.insert(def.name().to_string(), t(table.len())?);
                    Ok(())
                }
                Err(redb::TableError::TableDoesNotExist(_)) => Ok(()),
                Err(e) => Err(StoreError::db(e)),
            }
        }
    }
    let mut count = Count {
        tx,
        rows: BTreeMap::new(),
    };
    each_table(&mut count)?;
    Ok(count.rows)
}

/// Copies every table of the snapshot `src` into the fresh file at `dest`.
fn copy_snapshot(
    src: &ReadTransaction,
    dest: &Path,
    mut progress: impl FnMut(u64, u64),
) -> Result<BackupReport, StoreError> {
    let known = table_names();
    for handle in t(src.list_tables())? {
        if !known.iter().any(|n| n == handle.name()) {
            return Err(StoreError::Encoding(format!(
                "table {} is not known to backup (store::backup::each_table)",
                handle.name()
            )));
        }
    }
    let counts = count_rows(src)?;
    let total: u64 = counts.values().sum();
    // `create_new` refuses to overwrite: a backup never replaces a file it did not make.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(dest)
        .map_err(|e| StoreError::db(redb::StorageError::Io(e)))?;
    let backend = t(redb::backends::FileBackend::new(file))?;
    let db = t(Database::builder().create_with_backend(backend))?;
    let mut tx = t(db.begin_write())?;
    t(tx.set_durability(redb::Durability::Immediate))?;
    struct Copy<'a, F: FnMut(u64, u64)> {
        src: &'a ReadTransaction,
        dst: &'a WriteTransaction,
        done: u64,
        total: u64,
        progress: F,
    }
    impl<F: FnMut(u64, u64)> TableVisitor for Copy<'_, F> {
        fn visit<K: Key + 'static, V: Value + 'static>(
            &mut self,
            def: TableDefinition<'static, K, V>,
        ) -> Result<(), StoreError> {
            let from = match self.src.open_table(def) {
                Ok(table) => table,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
                Err(e) => return Err(StoreError::db(e)),
            };
            let mut to = t(self.dst.open_table(def))?;
            for entry in t(from.iter())? {
                let (k, v) = t(entry)?;
                t(to.insert(k.value(), v.value()))?;
                self.done += 1;
                if self.done.is_multiple_of(PROGRESS_EVERY) {
                    (self.progress)(self.done, self.total);
                }
            }
            Ok(())
        }
    }
    let mut copy = Copy {
        src,
        dst: &tx,
        done: 0,
        total,
        progress: &mut progress,
    };
    each_table(&mut copy)?;
    let done = copy.done;
    t(tx.commit())?;
    drop(db);
    progress(done, total);
    let bytes = std::fs::metadata(dest)
        .map_err(|e| StoreError::db(redb::StorageError::Io(e)))?
        .len();
    let schema_version = schema_version(src)?;
    Ok(BackupReport {
        tables: counts,
        total_rows: total,
        schema_version,
        bytes,
    })
}

fn schema_version(tx: &ReadTransaction) -> Result<Option<u64>, StoreError> {
    match tx.open_table(schema::META) {
        Ok(meta) => Ok(t(meta.get(schema::SCHEMA_KEY))?.map(|v| v.value())),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(StoreError::db(e)),
    }
}

impl Store {
    /// Writes a consistent copy of the whole store (one snapshot) to the new file `path`,
    /// calling `progress(rows_done, rows_total)` as it goes. Writers are not held up: the copy
    /// reads a snapshot. Refuses to overwrite an existing file.
    pub fn backup_to(
        &self,
        path: &Path,
        progress: impl FnMut(u64, u64),
    ) -> Result<BackupReport, StoreError> {
        let tx = self.begin_read()?;
        copy_snapshot(&tx, path, progress)
    }
}

/// Opens the store file at `path` read-only, without changing it. A file a running node holds
/// is [`StoreError::is_in_use`]; a file that is not a redb database is [`StoreError::Damaged`].
pub fn open_read_only(path: &Path) -> Result<ReadOnlyDatabase, StoreError> {
    Database::builder()
        .open_read_only(path)
        .map_err(|e| match e {
            redb::DatabaseError::Storage(redb::StorageError::Io(io))
                if io.kind() != std::io::ErrorKind::InvalidData =>
            {
                StoreError::db(redb::StorageError::Io(io))
            }
            // A file a node left without closing it (power cut, kill -9) is not damaged: the
            // node recovers it at its next start; read-only, redb refuses to.
            redb::DatabaseError::DatabaseAlreadyOpen
            | redb::DatabaseError::LockProtocolMismatch
            | redb::DatabaseError::RepairAborted => StoreError::db(e),
            other => StoreError::Damaged {
                path: path.display().to_string(),
                reason: other.to_string(),
            },
        })
}

/// Makes a backup of the store file at `src` (which no node may hold open) into the new file
/// `dest`, as [`Store::backup_to`] does from a running node. A file its node did not close is
/// recovered first, on a scratch copy beside `dest`; `src` itself is never changed.
pub fn backup_file(
    src: &Path,
    dest: &Path,
    progress: impl FnMut(u64, u64),
) -> Result<BackupReport, StoreError> {
    match open_read_only(src) {
        Ok(db) => {
            let tx = t(db.begin_read())?;
            copy_snapshot(&tx, dest, progress)
        }
        Err(e) if e.needs_recovery() => {
            let scratch_dir = dest
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let recovered = recovered_copy(src, scratch_dir)?;
            let db = open_read_only(recovered.path())?;
            let tx = t(db.begin_read())?;
            copy_snapshot(&tx, dest, progress)
        }
        Err(e) => Err(e),
    }
}

/// A scratch copy of a store file, deleted (with its directory) when dropped.
pub struct ScratchCopy {
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl ScratchCopy {
    /// The copy.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Length and modification time: enough to notice a file that changed under a copy.
fn stamp(path: &Path) -> Result<(u64, Option<std::time::SystemTime>), StoreError> {
    let m = std::fs::metadata(path).map_err(|e| StoreError::db(redb::StorageError::Io(e)))?;
    Ok((m.len(), m.modified().ok()))
}

/// Copies the store file at `path`, which its node did not close cleanly, into `scratch_dir`
/// and lets redb recover the copy, checking every page as it opens it. The original is not
/// changed, so the node still recovers it itself at its next start.
pub fn recovered_copy(path: &Path, scratch_dir: &Path) -> Result<ScratchCopy, StoreError> {
    let io = |e: std::io::Error| StoreError::db(redb::StorageError::Io(e));
    let before = stamp(path)?;
    let dir = tempfile::Builder::new()
        .prefix(".outpost-recover-")
        .tempdir_in(scratch_dir)
        .map_err(io)?;
    let copy = dir.path().join("recovered.redb");
    std::fs::copy(path, &copy).map_err(io)?;
    // Nothing locks a file that needs recovery; a node starting meanwhile would change it.
    if stamp(path)? != before {
        return Err(io(std::io::Error::other(
            "the store file changed while it was being copied (did a node start?); try again",
        )));
    }
    guarded(path, || {
        match Database::builder()
            .set_check_integrity_on_open(true)
            .open(&copy)
        {
            Ok(db) => {
                drop(db);
                Ok(())
            }
            Err(redb::DatabaseError::Storage(redb::StorageError::Io(e)))
                if e.kind() != std::io::ErrorKind::InvalidData =>
            {
                Err(io(e))
            }
            Err(other) => Err(StoreError::Damaged {
                path: path.display().to_string(),
                reason: other.to_string(),
            }),
        }
    })?;
    Ok(ScratchCopy {
        path: copy,
        _dir: dir,
    })
}

/// Opens the store file at `path` read-only and reports what it holds: schema version, rows
/// per table, operations by state, customers. Every record is decoded and the state index is
/// checked against the operations, so a file redb opens but whose content is damaged shows up
/// in [`StoreSummary::problems`].
pub fn inspect(path: &Path) -> Result<StoreSummary, StoreError> {
    guarded(path, || inspect_unguarded(path))
}

/// Runs `f`, turning a panic into [`StoreError::Damaged`]: redb may panic on a file altered
/// behind its back rather than report it, and a technician's tool must say so, not crash.
fn guarded<T>(path: &Path, f: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(StoreError::Damaged {
            path: path.display().to_string(),
            reason: "reading it made redb give up (a page is not what redb wrote)".into(),
        })
    })
}

/// Verifies every page checksum of the store file at `path` without changing it: the file is
/// copied into `scratch_dir` (removed afterwards) and the copy opened with redb's full
/// integrity check. `Ok(())` means sound; a bad page is [`StoreError::Damaged`].
pub fn verify_integrity(path: &Path, scratch_dir: &Path) -> Result<(), StoreError> {
    guarded(path, || {
        // Held open (read-only) during the copy, so no node can start writing mid-copy.
        let held = open_read_only(path)?;
        let scratch = tempfile::Builder::new()
            .prefix(".outpost-check-")
            .tempdir_in(scratch_dir)
            .map_err(|e| StoreError::db(redb::StorageError::Io(e)))?;
        let copy = scratch.path().join("check.redb");
        std::fs::copy(path, &copy).map_err(|e| StoreError::db(redb::StorageError::Io(e)))?;
        drop(held);
        let checked = Database::builder()
            .set_check_integrity_on_open(true)
            .open(&copy);
        match checked {
            Ok(db) => {
                drop(db);
                Ok(())
            }
            Err(redb::DatabaseError::Storage(redb::StorageError::Io(io)))
                if io.kind() != std::io::ErrorKind::InvalidData =>
            {
                Err(StoreError::db(redb::StorageError::Io(io)))
            }
            Err(other) => Err(StoreError::Damaged {
                path: path.display().to_string(),
                reason: other.to_string(),
            }),
        }
    })
}

fn inspect_unguarded(path: &Path) -> Result<StoreSummary, StoreError> {
    let db = open_read_only(path)?;
    let tx = t(db.begin_read())?;
    let tables = count_rows(&tx)?;
    let total_rows = tables.values().sum();
    let schema_version = schema_version(&tx)?;
    let mut problems = Vec::new();
    let mut note = |p: String| {
        if problems.len() < MAX_PROBLEMS {
            problems.push(p);
        }
    };
    match schema_version {
        None => note("no schema version recorded (the node never finished creating it)".into()),
        Some(v) if v == schema::SCHEMA_VERSION => {}
        // An older layout the node upgrades when it opens the file: not a problem.
        Some(v) if (schema::SCHEMA_UPGRADES_FROM..schema::SCHEMA_VERSION).contains(&v) => {}
        Some(v) => note(format!(
            "schema version {v}, this build reads {}",
            schema::SCHEMA_VERSION
        )),
    }
    let upgradable = schema_version.is_some_and(|v| v < schema::SCHEMA_VERSION);
    for name in table_names() {
        // The upgrade creates the search terms log; an older file lacks it.
        let added_by_upgrade = upgradable && name == schema::SEARCH_LOG.name();
        if !tables.contains_key(&name) && !added_by_upgrade {
            note(format!("table {name} is missing"));
        }
    }
    let mut by_state: BTreeMap<String, u64> = OpState::ALL
        .iter()
        .map(|s| (s.as_str().to_string(), 0))
        .collect();
    if let Ok(ops) = tx.open_table(schema::OPS) {
        let by_state_index = tx.open_table(schema::OPS_BY_STATE).ok();
        let ids = tx.open_table(schema::OP_IDS).ok();
        for entry in t(ops.iter())? {
            let (seq, bytes) = t(entry)?;
            let seq = seq.value();
            let op: Operation = match schema::decode(bytes.value()) {
                Ok(op) => op,
                Err(e) => {
                    note(format!("operation #{seq} cannot be read: {e}"));
                    continue;
                }
            };
            *by_state.entry(op.state.as_str().to_string()).or_default() += 1;
            if let Some(index) = &by_state_index
                && t(index.get((op.state.code(), seq)))?.is_none()
            {
                note(format!(
                    "operation {} ({}) is missing from the state index",
                    op.id,
                    op.state.as_str()
                ));
            }
            if let Some(ids) = &ids
                && t(ids.get(op.id.as_u128()))?.map(|s| s.value()) != Some(seq)
            {
                note(format!("operation {} is missing from the id index", op.id));
            }
        }
        if let Some(index) = &by_state_index {
            let indexed = t(index.len())?;
            let read: u64 = by_state.values().sum();
            if indexed != read {
                note(format!(
                    "the state index lists {indexed} operations, the queue holds {read}"
                ));
            }
        }
    }
    // Every customer has a key record (since schema 3); not every one a view record (8).
    let customers = tables
        .get(schema::CUSTOMER_KEYS.name())
        .or_else(|| tables.get(schema::CUSTOMERS.name()))
        .copied()
        .unwrap_or(0);
    // A store before schema 6 keys its views otherwise: they are counted, not read.
    if let Ok(views) = tx.open_table(schema::CUSTOMERS) {
        for entry in t(views.iter())? {
            let (key, bytes) = t(entry)?;
            if let Err(e) = schema::decode::<crate::domain::view::CustomerView>(bytes.value()) {
                note(format!("customer {} cannot be read: {e}", key.value()));
            }
        }
    }
    // A customer with a key record but no view record is one created here and not changed
    // since: its create must still be there, or the customer cannot be read.
    if let (Ok(keys), Ok(views), Ok(customer_ops), Ok(ops)) = (
        tx.open_table(schema::CUSTOMER_KEYS),
        tx.open_table(schema::CUSTOMERS),
        tx.open_table(schema::CUSTOMER_OPS),
        tx.open_table(schema::OPS),
    ) {
        for entry in t(keys.iter())? {
            let (key, _) = t(entry)?;
            let customer = key.value();
            if t(views.get(customer))?.is_some() {
                continue;
            }
            match super::views::created(&customer_ops, &ops, customer) {
                Ok(Some(_)) => {}
                Ok(None) => note(format!(
                    "customer {customer} has neither a view record nor operations"
                )),
                Err(e) => note(format!("customer {customer} cannot be read: {e}")),
            }
        }
    }
    Ok(StoreSummary {
        schema_version,
        tables,
        total_rows,
        operations_by_state: by_state,
        customers,
        problems,
    })
}

impl StoreError {
    /// Whether the store file is held open by another process (a running node).
    pub fn is_in_use(&self) -> bool {
        matches!(
            self,
            StoreError::Db(redb::Error::DatabaseAlreadyOpen | redb::Error::LockProtocolMismatch)
        )
    }

    /// Whether the store file was left by a node that did not close it (it needs the recovery
    /// redb runs when a node next opens it).
    pub fn needs_recovery(&self) -> bool {
        matches!(self, StoreError::Db(redb::Error::RepairAborted))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreOptions;

    fn options() -> StoreOptions {
        StoreOptions::new(1024 * 1024)
    }

    #[test]
    fn a_fresh_store_holds_exactly_the_tables_backup_copies() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb"), &options()).unwrap();
        let tx = store.begin_read().unwrap();
        let mut held: Vec<String> = tx
            .list_tables()
            .unwrap()
            .map(|h| h.name().to_string())
            .collect();
        held.sort();
        let mut known = table_names();
        known.sort();
        assert_eq!(held, known, "store::backup::each_table is out of step");
    }

    #[test]
    fn backup_copies_every_row_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb"), &options()).unwrap();
        let out = dir.path().join("b.redb");
        let mut calls = 0;
        let report = store.backup_to(&out, |_, _| calls += 1).unwrap();
        assert!(calls >= 1);
        assert_eq!(report.schema_version, Some(schema::SCHEMA_VERSION));
        assert_eq!(report.total_rows, report.tables.values().sum::<u64>());
        let summary = inspect(&out).unwrap();
        assert_eq!(summary.tables, report.tables);
        assert!(summary.problems.is_empty(), "{:?}", summary.problems);
        assert!(store.backup_to(&out, |_, _| {}).is_err());
    }

    #[test]
    fn a_file_held_by_a_store_is_in_use_and_garbage_is_damaged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let store = Store::open(&path, &options()).unwrap();
        let e = inspect(&path).unwrap_err();
        assert!(e.is_in_use(), "{e}");
        drop(store);
        inspect(&path).unwrap();
        let junk = dir.path().join("junk.redb");
        std::fs::write(&junk, vec![7u8; 8192]).unwrap();
        let e = inspect(&junk).unwrap_err();
        assert!(matches!(e, StoreError::Damaged { .. }), "{e}");
        verify_integrity(&path, dir.path()).unwrap();
    }

    #[test]
    fn a_customer_without_its_view_record_or_its_create_is_reported() {
        use crate::domain::{NewCustomer, Operation, Payload};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let store = Store::open(&path, &options()).unwrap();
        let create = Operation {
            id: crate::domain::OperationId::new_v7(1),
            seq: 1,
            customer_ref: "S0001-T1".into(),
            record_id: None,
            payload: Payload::CustomerCreate(NewCustomer {
                first_name: "Õie".into(),
                last_name: "Kask".into(),
                email: None,
                phone: None,
                customer_group: None,
                language: None,
            }),
            state: crate::domain::OpState::Pending,
            error: None,
            revision: 0,
            accepted_at_ms: 1,
            updated_at_ms: 1,
            base: None,
            conflicts: Vec::new(),
        };
        // Two customers created here with no view record; only the first has its create.
        let tx = store.db().begin_write().unwrap();
        {
            let mut ops = tx.open_table(schema::OPS).unwrap();
            ops.insert(1, schema::encode(&create).unwrap().as_slice())
                .unwrap();
            let mut customer_ops = tx.open_table(schema::CUSTOMER_OPS).unwrap();
            customer_ops.insert(("S0001-T1", 1), 0).unwrap();
            let mut keys = tx.open_table(schema::CUSTOMER_KEYS).unwrap();
            for customer in ["S0001-T1", "S0001-T2"] {
                keys.insert(customer, schema::encode_keys(1, &[]).as_slice())
                    .unwrap();
            }
        }
        tx.commit().unwrap();
        drop(store);
        let problems: Vec<String> = inspect(&path)
            .unwrap()
            .problems
            .into_iter()
            .filter(|p| p.starts_with("customer "))
            .collect();
        assert_eq!(
            problems,
            vec!["customer S0001-T2 has neither a view record nor operations".to_string()]
        );
    }

    #[test]
    fn a_flipped_byte_fails_the_integrity_check() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let store = Store::open(&path, &options()).unwrap();
        let marker = b"MARKER-0123456789-MARKER";
        let tx = store.db().begin_write().unwrap();
        {
            let mut t = tx.open_table(schema::CUSTOMERS).unwrap();
            t.insert("x", marker.as_slice()).unwrap();
        }
        tx.commit().unwrap();
        drop(store);
        verify_integrity(&path, dir.path()).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes
            .windows(marker.len())
            .position(|w| w == marker)
            .expect("the committed record is in the file");
        bytes[at + 3] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        let e = verify_integrity(&path, dir.path()).unwrap_err();
        assert!(matches!(e, StoreError::Damaged { .. }), "{e}");
    }
}
