//! Where the store lives (a file, or any redb storage backend), how it is opened, and how it is
//! reopened after an I/O failure.
//!
//! After redb meets an I/O error (a full disk, a failing device) it refuses every later call
//! with `PreviousIo` until the database is closed and opened again. So the open database sits
//! in a slot: a write that fails on I/O empties the slot, and the next use after a short,
//! growing pause opens the file again (redb repairs it from the last durable commit). While the
//! slot is empty every call fails with the cause remembered — a full disk stays a full disk
//! (507), not a vague "previous I/O error" — and nothing is acknowledged.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use redb::{
    Database, DatabaseError, ReadTransaction, ReadableDatabase, StorageBackend, WriteTransaction,
};

use super::{Store, StoreError, StoreOptions};

/// Opens a fresh handle on a backend's storage (called again for each reopen).
pub type BackendOpener =
    Arc<dyn Fn() -> Result<Box<dyn StorageBackend>, std::io::Error> + Send + Sync>;

/// Where the store's bytes are.
#[derive(Clone)]
pub enum StoreLocation {
    /// A file on disk (the node's normal case).
    File(PathBuf),
    /// Any redb storage backend, e.g. the simulated disk of [`super::faulty`].
    Backend {
        /// What to call it in messages.
        name: String,
        /// Opens a handle on it.
        open: BackendOpener,
    },
}

impl StoreLocation {
    /// The store on a [`super::faulty::FaultyDisk`].
    pub fn faulty(name: impl Into<String>, disk: &Arc<super::faulty::FaultyDisk>) -> Self {
        let disk = Arc::clone(disk);
        StoreLocation::Backend {
            name: name.into(),
            open: Arc::new(move || Ok(Box::new(disk.backend()) as Box<dyn StorageBackend>)),
        }
    }

    /// The name used in messages: the file's path, or the backend's name.
    pub fn describe(&self) -> String {
        match self {
            StoreLocation::File(path) => path.display().to_string(),
            StoreLocation::Backend { name, .. } => name.clone(),
        }
    }
}

impl std::fmt::Debug for StoreLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StoreLocation({})", self.describe())
    }
}

/// A boxed backend, so a backend chosen at run time can be handed to redb.
#[derive(Debug)]
struct Boxed(Box<dyn StorageBackend>);

impl StorageBackend for Boxed {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.0.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.0.read(offset, out)
    }
    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> Result<(), std::io::Error> {
        self.0.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.0.write(offset, data)
    }
    fn close(&self) -> Result<(), std::io::Error> {
        self.0.close()
    }
    fn try_lock_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.0.try_lock_range(start, end)
    }
    fn try_lock_shared_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.0.try_lock_shared_range(start, end)
    }
    fn lock_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<(), redb::BackendError> {
        self.0.lock_range(start, end)
    }
    fn lock_shared_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<(), redb::BackendError> {
        self.0.lock_shared_range(start, end)
    }
    fn unlock_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<(), redb::BackendError> {
        self.0.unlock_range(start, end)
    }
    fn query_lock_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.0.query_lock_range(start, end)
    }
}

/// First pause before reopening after an I/O failure.
const REOPEN_FIRST: Duration = Duration::from_millis(100);
/// Longest pause between reopen attempts (a repair reads the whole file: not too often).
const REOPEN_MAX: Duration = Duration::from_secs(5);
/// A failure this long after the last good reopen starts the pauses over.
const REOPEN_RESET_AFTER: Duration = Duration::from_secs(30);

/// Why the slot is empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    /// The disk was full.
    NoSpace,
    /// Any other I/O failure.
    Io,
}

#[derive(Debug)]
struct Health {
    /// Set while the slot is empty.
    cause: Option<Cause>,
    /// No reopen before this.
    next_attempt: Instant,
    /// Current pause between attempts.
    pause: Duration,
    /// When the last reopen succeeded.
    last_reopen: Option<Instant>,
    /// Reopens that succeeded since the store was opened.
    reopens: u64,
}

/// The open database, or the memory of why there is none.
pub(crate) struct DbSlot {
    pub(super) location: StoreLocation,
    cache_bytes: usize,
    db: RwLock<Option<Arc<Database>>>,
    health: Mutex<Health>,
}

/// A handle on the open database for one call; [`DbRef::begin_write`] fails as redb would
/// (`PreviousIo`) while the database awaits its reopen.
pub(crate) struct DbRef(Option<Arc<Database>>);

impl DbRef {
    /// Starts a write transaction.
    pub(crate) fn begin_write(&self) -> Result<WriteTransaction, redb::Error> {
        match &self.0 {
            Some(db) => db.begin_write().map_err(redb::Error::from),
            None => Err(redb::Error::PreviousIo),
        }
    }
}

/// Whether `e` is an I/O failure after which redb must be reopened.
fn io_failure(e: &StoreError) -> Option<Cause> {
    match e {
        StoreError::NoSpace => Some(Cause::NoSpace),
        StoreError::Db(redb::Error::Io(_) | redb::Error::PreviousIo | redb::Error::Backend(_)) => {
            Some(Cause::Io)
        }
        _ => None,
    }
}

fn lock_health(m: &Mutex<Health>) -> MutexGuard<'_, Health> {
    // Plain data, consistent between calls.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl DbSlot {
    fn read_slot(&self) -> std::sync::RwLockReadGuard<'_, Option<Arc<Database>>> {
        // The slot holds an Option: consistent whatever panicked while it was held.
        self.db.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_slot(&self) -> std::sync::RwLockWriteGuard<'_, Option<Arc<Database>>> {
        self.db.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The database for the writer, reopened first if it is due.
    pub(crate) fn handle(&self) -> DbRef {
        self.reopen_if_due();
        DbRef(self.read_slot().clone())
    }

    /// A read transaction, reopening the database first if it is due.
    pub(crate) fn begin_read(&self) -> Result<ReadTransaction, StoreError> {
        self.reopen_if_due();
        let slot = self.read_slot();
        match slot.as_ref() {
            // Under the guard, never cloned: a reopen must be able to drop the last handle.
            // While the store waits for space to reopen, reads say why too: a write's own
            // reads (the mode decision) then refuse it as 507, like its commit would.
            Some(db) => db.begin_read().map_err(|e| self.explain(StoreError::db(e))),
            None => Err(self.explain(StoreError::db(redb::Error::PreviousIo))),
        }
    }

    /// `e` with a `PreviousIo` replaced by the failure that caused it (a full disk stays a
    /// full disk for the callers that come after the first).
    fn explain(&self, e: StoreError) -> StoreError {
        let cause = lock_health(&self.health).cause;
        match (&e, cause) {
            (StoreError::Db(redb::Error::PreviousIo), Some(Cause::NoSpace)) => StoreError::NoSpace,
            _ => e,
        }
    }

    /// After a failed write: on an I/O failure, closes the database so that it can be reopened
    /// (at once, and later again until it works). Returns the error to report.
    pub(crate) fn after_write_failure(&self, e: StoreError) -> StoreError {
        let e = self.explain(e);
        let Some(cause) = io_failure(&e) else {
            return e;
        };
        if self.read_slot().is_none() {
            // The database is already closed and waiting for its reopen: this write failed for
            // that reason, not for a new one, and must not push the reopen further away (a
            // steady stream of writes would otherwise keep it from ever happening).
            return e;
        }
        {
            let mut health = lock_health(&self.health);
            let now = Instant::now();
            if health.cause.is_none() {
                let calm = health
                    .last_reopen
                    .is_none_or(|t| now.duration_since(t) > REOPEN_RESET_AFTER);
                if calm {
                    health.pause = REOPEN_FIRST;
                }
                tracing::warn!(
                    store = %self.location.describe(),
                    error = %e,
                    "store write failed on I/O; the store will be reopened"
                );
            }
            // A full disk is the more useful thing to tell the till than what followed it.
            if health.cause != Some(Cause::NoSpace) {
                health.cause = Some(cause);
            }
            health.next_attempt = now + health.pause;
            health.pause = (health.pause * 2).min(REOPEN_MAX);
        }
        // Closing it now lets the next attempt open the file again (redb holds a lock on it).
        let old = self.write_slot().take();
        drop(old);
        e
    }

    fn reopen_if_due(&self) {
        {
            let health = lock_health(&self.health);
            if health.cause.is_none() || Instant::now() < health.next_attempt {
                return;
            }
        }
        let mut slot = self.write_slot();
        let mut health = lock_health(&self.health);
        // Someone else may have reopened it while this caller waited for the lock.
        if health.cause.is_none() || slot.is_some() || Instant::now() < health.next_attempt {
            return;
        }
        match open_database(&self.location, self.cache_bytes) {
            Ok(db) => {
                *slot = Some(Arc::new(db));
                health.cause = None;
                health.last_reopen = Some(Instant::now());
                health.reopens += 1;
                tracing::info!(store = %self.location.describe(), "store reopened after an I/O failure");
            }
            Err(e) => {
                health.next_attempt = Instant::now() + health.pause;
                health.pause = (health.pause * 2).min(REOPEN_MAX);
                tracing::warn!(
                    store = %self.location.describe(),
                    error = %e,
                    retry_in_ms = health.pause.as_millis() as u64,
                    "store reopen failed; will retry"
                );
            }
        }
    }

    /// How many times the store was reopened after an I/O failure.
    pub(crate) fn reopens(&self) -> u64 {
        lock_health(&self.health).reopens
    }
}

/// Opens the database at `location`, mapping redb's answers: a file that is not a usable redb
/// store is [`StoreError::Damaged`]; a busy or unreadable one is an I/O error. redb is asked to
/// verify every page's checksum, so damage anywhere is found now, not by a later read.
fn open_database(location: &StoreLocation, cache_bytes: usize) -> Result<Database, StoreError> {
    // The full walk of redb's integrity check, unless the file is the one a clean stop sealed.
    let check = match location {
        StoreLocation::File(path) => {
            let sealed = super::seal::take(path);
            if sealed {
                tracing::info!(store = %location.describe(), "store file matches its clean-stop seal; integrity walk skipped");
            }
            !sealed
        }
        StoreLocation::Backend { .. } => true,
    };
    let mut builder = Database::builder();
    builder
        .set_cache_size(cache_bytes)
        .set_check_integrity_on_open(check);
    let damaged = |reason: String| StoreError::Damaged {
        path: location.describe(),
        reason,
    };
    // redb may panic on some damaged files (its own checks are assertions in debug builds); a
    // panic here must become the clear "damaged" error, not a crash with a backtrace.
    let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match location {
        StoreLocation::File(path) => builder.create(path),
        StoreLocation::Backend { open, .. } => match open() {
            Ok(backend) => builder.create_with_backend(Boxed(backend)),
            Err(e) => Err(DatabaseError::Storage(redb::StorageError::Io(e))),
        },
    }));
    let opened = match opened {
        Ok(result) => result,
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "redb panicked while opening it".into());
            return Err(damaged(what));
        }
    };
    opened.map_err(|e| match e {
        DatabaseError::Storage(redb::StorageError::Io(io))
            if io.kind() != std::io::ErrorKind::InvalidData =>
        {
            StoreError::db(redb::StorageError::Io(io))
        }
        DatabaseError::DatabaseAlreadyOpen
        | DatabaseError::LockProtocolMismatch
        | DatabaseError::TransactionInProgress => StoreError::db(e),
        other => damaged(other.to_string()),
    })
}

impl Store {
    /// Opens (or creates) the store at `location` and makes sure every table exists. A damaged
    /// store is reported ([`StoreError::Damaged`]), never replaced.
    pub fn open_with(location: StoreLocation, options: &StoreOptions) -> Result<Store, StoreError> {
        if let StoreLocation::File(path) = &location {
            create_parent(path)?;
        }
        let db = open_database(&location, options.cache_bytes)?;
        let store = Store {
            db: Arc::new(DbSlot {
                location,
                cache_bytes: options.cache_bytes,
                db: RwLock::new(Some(Arc::new(db))),
                health: Mutex::new(Health {
                    cause: None,
                    next_attempt: Instant::now(),
                    pause: REOPEN_FIRST,
                    last_reopen: None,
                    reopens: 0,
                }),
            }),
            quick_repair: options.quick_repair,
            held: Arc::default(),
            search_log: Arc::default(),
            reads: Arc::new(tokio::sync::Semaphore::new(
                options.max_concurrent_reads.max(1),
            )),
        };
        store.init_schema()?;
        Ok(store)
    }

    /// Closes the store file and, when it is a file on disk that nothing else holds open,
    /// seals it (`store::seal`) so that the next open can skip redb's integrity walk. Every
    /// clone of this store is closed with it. Returns whether the file was sealed.
    pub fn close(self) -> Result<bool, StoreError> {
        let Some(db) = self.db.write_slot().take() else {
            return Ok(false);
        };
        // A handle still in use (a read in flight) keeps the file open: no seal, and the next
        // open does the full check.
        let Ok(db) = Arc::try_unwrap(db) else {
            return Ok(false);
        };
        db.close().map_err(StoreError::db)?;
        match &self.db.location {
            StoreLocation::File(path) => {
                super::seal::write(path).map_err(|e| StoreError::db(redb::StorageError::Io(e)))?;
                Ok(true)
            }
            StoreLocation::Backend { .. } => Ok(false),
        }
    }

    /// Where the store lives, as messages name it.
    pub fn location(&self) -> String {
        self.db.location.describe()
    }

    /// How many times the store was reopened after an I/O failure (for tests and diagnostics).
    pub fn reopens(&self) -> u64 {
        self.db.reopens()
    }

    /// Called by the writer with a failed group's error: recognises an I/O failure, closes the
    /// database for its reopen, and returns the error to report.
    pub(crate) fn after_write_failure(&self, e: StoreError) -> StoreError {
        self.db.after_write_failure(e)
    }
}

fn create_parent(path: &Path) -> Result<(), StoreError> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::db(redb::StorageError::Io(e)))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Error, ErrorKind};

    fn full() -> Error {
        Error::new(ErrorKind::StorageFull, "no space left on device")
    }

    fn is_no_space(e: StoreError) -> bool {
        matches!(e, StoreError::NoSpace)
    }

    #[test]
    fn a_full_disk_is_recognised_however_redb_wraps_it() {
        use redb::{CommitError, StorageError, TableError, TransactionError};
        assert!(is_no_space(StoreError::db(StorageError::Io(full()))));
        assert!(is_no_space(StoreError::db(CommitError::Storage(
            StorageError::Io(full())
        ))));
        assert!(is_no_space(StoreError::db(TransactionError::Storage(
            StorageError::Io(full())
        ))));
        assert!(is_no_space(StoreError::db(TableError::Storage(
            StorageError::Io(full())
        ))));
        assert!(is_no_space(StoreError::db(DatabaseError::Storage(
            StorageError::Io(full())
        ))));
        assert!(is_no_space(StoreError::db(StorageError::Backend(
            Box::new(full())
        ))));
        // By number (ENOSPC, EDQUOT), and inside another I/O error.
        assert!(is_no_space(StoreError::db(StorageError::Io(
            Error::from_raw_os_error(28)
        ))));
        assert!(is_no_space(StoreError::db(StorageError::Io(
            Error::from_raw_os_error(122)
        ))));
        assert!(is_no_space(StoreError::db(StorageError::Io(Error::other(
            full()
        )))));
        assert!(!is_no_space(StoreError::db(StorageError::Io(
            Error::other("broken")
        ))));
        assert!(!is_no_space(StoreError::db(StorageError::PreviousIo)));
    }

    #[test]
    fn a_previous_io_error_after_a_full_disk_reads_as_a_full_disk() {
        let disk = crate::store::faulty::FaultyDisk::new();
        let store = Store::open_with(
            StoreLocation::faulty("disk", &disk),
            &StoreOptions::new(1 << 20),
        )
        .unwrap();
        disk.set_full(true);
        let e = store.after_write_failure(StoreError::NoSpace);
        assert!(is_no_space(e));
        // The slot is empty until space returns: every later failure says why.
        let e = store.after_write_failure(StoreError::db(redb::Error::PreviousIo));
        assert!(is_no_space(e));
        assert!(matches!(store.begin_read(), Err(StoreError::NoSpace)));
        assert!(matches!(
            store.db().begin_write(),
            Err(redb::Error::PreviousIo)
        ));
        // An error that is not I/O leaves the store alone.
        let e = store.after_write_failure(StoreError::Encoding("x".into()));
        assert!(matches!(e, StoreError::Encoding(_)));
    }
}
