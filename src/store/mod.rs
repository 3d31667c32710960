//! The redb store: one file holding the operation queue, the customer views and their search
//! index. One writer thread owns every write ([`writer`]); reads run anywhere ([`read`]).

pub mod backend;
pub mod backup;
pub mod cdx;
pub mod faulty;
pub mod gather;
pub mod hq_sync;
mod op_record;
mod prepare;
pub mod prune;
pub mod read;
pub mod schema;
mod seal;
pub(crate) mod search_log;
pub mod stats;
pub(crate) mod tables;
mod upgrade;
mod views;
pub mod writer;

use std::path::Path;
use std::sync::Arc;

use redb::ReadableTable;

pub use backend::StoreLocation;
pub use read::{CustomerRead, OpFilter};
pub use writer::{Command, CommandError, Outcome, Submission, WriterHandle};

/// A failure of the store itself (not of a request's content).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// redb reported an error.
    #[error("store: {0}")]
    Db(#[from] redb::Error),
    /// The disk is full: nothing was committed.
    #[error("store: no space left on device")]
    NoSpace,
    /// A stored record could not be encoded or decoded.
    #[error("store: record encoding: {0}")]
    Encoding(String),
    /// The writer has stopped (the node is shutting down).
    #[error("store: writer stopped")]
    WriterStopped,
    /// The file exists but is not a usable Outpost store.
    #[error(
        "store file {path} is damaged or not an Outpost store ({reason}); it was left untouched. \
         Restore it from a backup made with `outpost backup`, or move it aside to start empty"
    )]
    Damaged {
        /// The file.
        path: String,
        /// What redb said.
        reason: String,
    },
}

impl StoreError {
    /// Wraps any redb error, recognising a full disk.
    pub fn db(e: impl Into<redb::Error>) -> StoreError {
        let e: redb::Error = e.into();
        let no_space = match &e {
            redb::Error::Io(io) => is_no_space(io),
            // A backend may hand redb its own error type with the I/O error inside.
            redb::Error::Backend(inner) => inner
                .downcast_ref::<std::io::Error>()
                .is_some_and(is_no_space),
            _ => false,
        };
        if no_space {
            return StoreError::NoSpace;
        }
        StoreError::Db(e)
    }
}

/// Whether an I/O error means the disk (or the user's quota) is full, however it was wrapped.
fn is_no_space(io: &std::io::Error) -> bool {
    // ENOSPC and EDQUOT on Linux; kept by number too, in case a wrapper lost the kind.
    const ENOSPC: i32 = 28;
    const EDQUOT: i32 = 122;
    matches!(
        io.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    ) || matches!(io.raw_os_error(), Some(ENOSPC | EDQUOT))
        || io
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<std::io::Error>())
            .is_some_and(is_no_space)
}

/// Options for opening the store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// redb page cache, bytes.
    pub cache_bytes: usize,
    /// Whether each commit also saves the allocator state, so that opening the file after an
    /// unclean stop skips redb's full repair (see `docs/performance.md`, P8).
    pub quick_repair: bool,
    /// Most reads running at once on the blocking pool ([`Store::read`]); more wait their turn.
    pub max_concurrent_reads: usize,
}

/// redb's page cache unless configured otherwise. At a million customers neither the views nor
/// the search index fit any cache P7's 200 MB allows, so a name search reads most of its twenty
/// views from the disk's cache: 128 MiB against 64 took the P5 mix's p99 down about 5% for
/// about 64 MiB more resident (`docs/performance.md`, step 46).
pub const DEFAULT_CACHE_BYTES: usize = 96 * 1024 * 1024;

/// Reads running at once unless configured otherwise: enough to keep two cores busy while one
/// read waits for the disk.
pub const DEFAULT_CONCURRENT_READS: usize = 8;

impl StoreOptions {
    /// The node's choice: redb's default, quick repair off. Quick repair saves the allocator
    /// state with every commit, which cost 16–25% of the write and drain throughput (P2, P4),
    /// while the full repair after `kill -9` walks a million-customer file (2.1 GB) in about
    /// 1.4 s, well inside the 5 s restart target (figures in `docs/performance.md`, P8).
    pub fn new(cache_bytes: usize) -> Self {
        StoreOptions {
            cache_bytes,
            quick_repair: false,
            max_concurrent_reads: DEFAULT_CONCURRENT_READS,
        }
    }
}

/// The open store file. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Arc<backend::DbSlot>,
    quick_repair: bool,
    held: Arc<cdx::HeldCache>,
    search_log: Arc<search_log::SearchLog>,
    reads: Arc<tokio::sync::Semaphore>,
}

impl Store {
    /// Opens (or creates) the store at `path` and makes sure every table exists.
    /// A damaged file is reported, never replaced.
    pub fn open(path: &Path, options: &StoreOptions) -> Result<Store, StoreError> {
        Store::open_with(StoreLocation::File(path.to_path_buf()), options)
    }

    fn init_schema(&self) -> Result<(), StoreError> {
        let tx = self.begin_write()?;
        let mut rebuild_terms = false;
        {
            let mut meta = tx.open_table(schema::META).map_err(StoreError::db)?;
            let version = meta
                .get(schema::SCHEMA_KEY)
                .map_err(StoreError::db)?
                .map(|v| v.value());
            match version {
                None => {
                    meta.insert(schema::SCHEMA_KEY, schema::SCHEMA_VERSION)
                        .map_err(StoreError::db)?;
                }
                Some(v) if v == schema::SCHEMA_VERSION => {}
                Some(v) if (schema::SCHEMA_UPGRADES_FROM..schema::SCHEMA_VERSION).contains(&v) => {
                    if v < schema::REF_ORDER_BEFORE {
                        // In this transaction, before the tables are opened as they are now.
                        upgrade::order_tables_by_ref(&tx)?;
                    }
                    if v < schema::TERMS_REBUILT_BEFORE {
                        // The version is written once the terms are rebuilt: an upgrade cut
                        // short starts over at the next open. The old index (of another value
                        // type before 7) goes now, before the tables are opened as they are.
                        tx.delete_table(schema::SEARCH).map_err(StoreError::db)?;
                        rebuild_terms = true;
                    } else {
                        // Otherwise the newer layout only adds tables, opened below.
                        meta.insert(schema::SCHEMA_KEY, schema::SCHEMA_VERSION)
                            .map_err(StoreError::db)?;
                    }
                }
                Some(v) => {
                    return Err(StoreError::Damaged {
                        path: self.location(),
                        reason: format!(
                            "schema version {v}, this build reads {}",
                            schema::SCHEMA_VERSION
                        ),
                    });
                }
            }
            tx.open_table(schema::OPS).map_err(StoreError::db)?;
            tx.open_table(schema::OP_IDS).map_err(StoreError::db)?;
            tx.open_table(schema::OPS_BY_STATE)
                .map_err(StoreError::db)?;
            tx.open_table(schema::CUSTOMERS).map_err(StoreError::db)?;
            tx.open_table(schema::CUSTOMER_KEYS)
                .map_err(StoreError::db)?;
            tx.open_table(schema::CUSTOMER_OPS)
                .map_err(StoreError::db)?;
            tx.open_table(schema::SEARCH).map_err(StoreError::db)?;
            tx.open_table(schema::SEARCH_LOG).map_err(StoreError::db)?;
            tx.open_table(schema::ACCOUNTS).map_err(StoreError::db)?;
            tx.open_table(schema::CDX_JOBS).map_err(StoreError::db)?;
            tx.open_table(schema::CUSTOMER_BASES)
                .map_err(StoreError::db)?;
        }
        tx.commit().map_err(StoreError::db)?;
        if rebuild_terms {
            upgrade::rebuild_terms(self)?;
        }
        self.reload_search_log()
    }

    /// Reads the search terms log back into memory (at open, and after a reopen).
    pub(crate) fn reload_search_log(&self) -> Result<(), StoreError> {
        self.search_log.load(&self.begin_read()?)
    }

    /// The underlying database, for the writer of this module.
    pub(crate) fn db(&self) -> backend::DbRef {
        self.db.handle()
    }

    /// The store file (`None` for a store on another backend, such as a simulated disk).
    pub fn path(&self) -> Option<&Path> {
        match &self.db.location {
            StoreLocation::File(path) => Some(path.as_path()),
            StoreLocation::Backend { .. } => None,
        }
    }

    /// Starts a durable write transaction, with quick repair as configured.
    pub(crate) fn begin_write(&self) -> Result<redb::WriteTransaction, StoreError> {
        let mut tx = self.db().begin_write().map_err(StoreError::db)?;
        tx.set_durability(redb::Durability::Immediate)
            .map_err(StoreError::db)?;
        tx.set_quick_repair(self.quick_repair);
        Ok(tx)
    }

    /// Runs `read` (reads of this store) on tokio's blocking pool, at most
    /// [`StoreOptions::max_concurrent_reads`] at once; the others wait for a turn without a
    /// thread. Bounding the threads that read at once bounds the memory the allocator keeps
    /// for them (with glibc's arenas, 64 tills searching at once held over 100 MB more, P7).
    pub async fn read<T, F>(&self, read: F) -> Result<T, tokio::task::JoinError>
    where
        F: FnOnce(&Store) -> T + Send + 'static,
        T: Send + 'static,
    {
        // The semaphore is never closed, so a permit always comes.
        let permit = self.reads.clone().acquire_owned().await.ok();
        let store = self.clone();
        tokio::task::spawn_blocking(move || {
            let _turn = permit;
            read(&store)
        })
        .await
    }

    /// Starts a read transaction.
    pub(crate) fn begin_read(&self) -> Result<redb::ReadTransaction, StoreError> {
        self.db.begin_read()
    }
}

/// Milliseconds since the Unix epoch, from the system clock.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
