//! A simulated disk for the reliability harnesses: an in-memory redb storage backend that can
//! lose power and run out of space.
//!
//! The disk keeps two images, as a real one does: the *durable* image (what the platters or
//! flash hold) and the *volatile* writes made since the last `sync_data` (what sits in the OS
//! page cache). Reads see both. A power cut stops the disk at once (every later call fails, so
//! no commit in flight can be acknowledged) and [`FaultyDisk::surviving_image`] decides which
//! volatile writes made it: none, a random subset of 512-byte sectors, or a prefix in order
//! ending in a torn sector. A full disk refuses growth and writes with
//! [`std::io::ErrorKind::StorageFull`], as `ENOSPC` does, until space returns.
//!
//! This is test equipment that ships in the library so that integration tests, benches and the
//! node (through [`super::StoreLocation::Backend`]) can all use it; production never opens it.

use std::ops::Bound;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rand::Rng;
use redb::StorageBackend;

/// Size of the unit a disk writes atomically: a write is torn or dropped a sector at a time.
pub const SECTOR: usize = 512;

/// Largest image the simulated disk grows to (keeps a runaway test from eating the machine).
pub const MAX_IMAGE_BYTES: u64 = 1 << 30;

/// Which of the writes since the last sync survive a power cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// None: the disk holds exactly what was last synced.
    All,
    /// Each sector written since the last sync survives or not, independently (the page cache
    /// flushes in any order); a length change survives or not likewise.
    RandomSectors,
    /// The writes reached the disk in order up to a random point, and the sector at that point
    /// is torn (only some of its bytes are new).
    TornPrefix,
    /// Every write survived (the cut came just after the page cache was flushed).
    Nothing,
}

impl Loss {
    /// Every kind, for harnesses that draw one per cycle.
    pub const ALL: [Loss; 4] = [
        Loss::All,
        Loss::RandomSectors,
        Loss::TornPrefix,
        Loss::Nothing,
    ];
}

/// What a power cut left on the disk, and what was lost.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CutReport {
    /// Backend write calls since the last sync when the power went.
    pub volatile_writes: usize,
    /// Sectors of those writes that reached the disk.
    pub sectors_kept: usize,
    /// Sectors of those writes that were lost.
    pub sectors_lost: usize,
    /// Whether one sector was torn.
    pub torn: bool,
}

/// Counters of the calls a disk served.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskStats {
    /// `write` calls that succeeded.
    pub writes: u64,
    /// `sync_data` calls that succeeded.
    pub syncs: u64,
    /// Calls refused because the disk was full.
    pub refused_full: u64,
    /// Calls refused because the power was off.
    pub refused_cut: u64,
}

#[derive(Debug, Clone)]
enum Volatile {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

#[derive(Debug, Default)]
struct Images {
    /// What survives a power cut.
    durable: Vec<u8>,
    /// What reads see: `durable` with `volatile` applied.
    current: Vec<u8>,
    /// Changes since the last sync, in the order they were made.
    volatile: Vec<Volatile>,
}

/// A simulated disk. Share it with `Arc`; each [`FaultyDisk::backend`] is one open handle.
#[derive(Debug, Default)]
pub struct FaultyDisk {
    images: Mutex<Images>,
    /// The power is off: every call fails.
    cut: AtomicBool,
    /// The disk is full: growth and writes fail.
    full: AtomicBool,
    /// When non-zero, the power goes off at this mutating call (write, set_len or sync)
    /// counted from the moment it was armed; that call fails.
    cut_countdown: AtomicU64,
    writes: AtomicU64,
    syncs: AtomicU64,
    refused_full: AtomicU64,
    refused_cut: AtomicU64,
}

fn lock(m: &Mutex<Images>) -> MutexGuard<'_, Images> {
    // The images are plain bytes, consistent between calls: a panic elsewhere must not make
    // every later call panic too.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn power_off() -> std::io::Error {
    std::io::Error::other("simulated power cut: the disk is off")
}

fn no_space() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::StorageFull,
        "simulated full disk: no space left on device",
    )
}

fn out_of_range() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        "read or write beyond the end of the simulated disk",
    )
}

fn to_usize(v: u64) -> Result<usize, std::io::Error> {
    if v > MAX_IMAGE_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("simulated disk limited to {MAX_IMAGE_BYTES} bytes"),
        ));
    }
    usize::try_from(v).map_err(|_| out_of_range())
}

fn apply(image: &mut Vec<u8>, change: &Volatile) {
    match change {
        Volatile::SetLen(len) => image.resize(usize::try_from(*len).unwrap_or(0), 0),
        Volatile::Write { offset, data } => {
            let start = usize::try_from(*offset).unwrap_or(usize::MAX);
            if let Some(end) = start.checked_add(data.len())
                && let Some(target) = image.get_mut(start..end)
            {
                target.copy_from_slice(data);
            }
        }
    }
}

impl FaultyDisk {
    /// An empty disk (redb creates a new store on it).
    pub fn new() -> Arc<FaultyDisk> {
        Arc::new(FaultyDisk::default())
    }

    /// A disk whose durable content is `image` (e.g. what survived the previous cut).
    pub fn from_image(image: Vec<u8>) -> Arc<FaultyDisk> {
        Arc::new(FaultyDisk {
            images: Mutex::new(Images {
                current: image.clone(),
                durable: image,
                volatile: Vec::new(),
            }),
            ..FaultyDisk::default()
        })
    }

    /// A new open handle on this disk, for redb.
    pub fn backend(self: &Arc<Self>) -> FaultyBackend {
        FaultyBackend {
            disk: Arc::clone(self),
        }
    }

    /// Cuts the power now: every later call fails, so nothing in flight completes.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
    }

    /// Cuts the power at the `n`-th mutating call from now (`n` ≥ 1; that call fails).
    pub fn cut_after(&self, n: u64) {
        self.cut_countdown.store(n.max(1), Ordering::SeqCst);
    }

    /// Whether the power is off.
    pub fn is_cut(&self) -> bool {
        self.cut.load(Ordering::SeqCst)
    }

    /// Fills the disk (`true`) or frees space again (`false`).
    pub fn set_full(&self, full: bool) {
        self.full.store(full, Ordering::SeqCst);
    }

    /// What the calls so far did.
    pub fn stats(&self) -> DiskStats {
        DiskStats {
            writes: self.writes.load(Ordering::Relaxed),
            syncs: self.syncs.load(Ordering::Relaxed),
            refused_full: self.refused_full.load(Ordering::Relaxed),
            refused_cut: self.refused_cut.load(Ordering::Relaxed),
        }
    }

    /// The durable image: what a power cut that loses every unsynced write would leave.
    pub fn durable_image(&self) -> Vec<u8> {
        lock(&self.images).durable.clone()
    }

    /// What reads see now (durable plus unsynced writes).
    pub fn current_image(&self) -> Vec<u8> {
        lock(&self.images).current.clone()
    }

    /// The image that survives the power cut under `loss`, drawing from `rng`. Call it after
    /// [`FaultyDisk::cut`] (before, the answer may be stale at once).
    pub fn surviving_image(&self, loss: Loss, rng: &mut impl Rng) -> (Vec<u8>, CutReport) {
        let images = lock(&self.images);
        let mut image = images.durable.clone();
        let mut report = CutReport {
            volatile_writes: images
                .volatile
                .iter()
                .filter(|v| matches!(v, Volatile::Write { .. }))
                .count(),
            ..CutReport::default()
        };
        // Sector-sized pieces of every volatile write, in order; length changes as they came.
        let mut pieces: Vec<Volatile> = Vec::new();
        for change in &images.volatile {
            match change {
                Volatile::SetLen(_) => pieces.push(change.clone()),
                Volatile::Write { offset, data } => {
                    let mut at = 0usize;
                    while at < data.len() {
                        // Pieces end on sector boundaries of the disk, not of the write.
                        let abs = *offset as usize + at;
                        let end = (abs / SECTOR + 1) * SECTOR - *offset as usize;
                        let end = end.min(data.len());
                        pieces.push(Volatile::Write {
                            offset: abs as u64,
                            data: data[at..end].to_vec(),
                        });
                        at = end;
                    }
                }
            }
        }
        let sectors = pieces
            .iter()
            .filter(|p| matches!(p, Volatile::Write { .. }))
            .count();
        match loss {
            Loss::All => report.sectors_lost = sectors,
            Loss::Nothing => {
                for p in &pieces {
                    apply(&mut image, p);
                }
                report.sectors_kept = sectors;
            }
            Loss::RandomSectors => {
                for p in &pieces {
                    if rng.gen_bool(0.5) {
                        apply(&mut image, p);
                        if matches!(p, Volatile::Write { .. }) {
                            report.sectors_kept += 1;
                        }
                    } else if matches!(p, Volatile::Write { .. }) {
                        report.sectors_lost += 1;
                    }
                }
            }
            Loss::TornPrefix => {
                let cut_at = if pieces.is_empty() {
                    0
                } else {
                    rng.gen_range(0..pieces.len())
                };
                for p in &pieces[..cut_at] {
                    apply(&mut image, p);
                    if matches!(p, Volatile::Write { .. }) {
                        report.sectors_kept += 1;
                    }
                }
                if let Some(Volatile::Write { offset, data }) = pieces.get(cut_at) {
                    // A torn sector: only a prefix of its new bytes landed.
                    let keep = rng.gen_range(0..data.len());
                    apply(
                        &mut image,
                        &Volatile::Write {
                            offset: *offset,
                            data: data[..keep].to_vec(),
                        },
                    );
                    report.torn = true;
                }
                report.sectors_lost = sectors - report.sectors_kept;
            }
        }
        (image, report)
    }

    /// Counts one mutating call against the armed cut; cuts the power when it comes due.
    fn tick(&self) -> Result<(), std::io::Error> {
        if self.cut.load(Ordering::SeqCst) {
            self.refused_cut.fetch_add(1, Ordering::Relaxed);
            return Err(power_off());
        }
        let left = self.cut_countdown.load(Ordering::SeqCst);
        if left > 0 {
            if left == 1 {
                self.cut.store(true, Ordering::SeqCst);
                self.cut_countdown.store(0, Ordering::SeqCst);
                self.refused_cut.fetch_add(1, Ordering::Relaxed);
                return Err(power_off());
            }
            self.cut_countdown.store(left - 1, Ordering::SeqCst);
        }
        Ok(())
    }

    fn check_power(&self) -> Result<(), std::io::Error> {
        if self.cut.load(Ordering::SeqCst) {
            self.refused_cut.fetch_add(1, Ordering::Relaxed);
            return Err(power_off());
        }
        Ok(())
    }

    fn check_space(&self) -> Result<(), std::io::Error> {
        if self.full.load(Ordering::SeqCst) {
            self.refused_full.fetch_add(1, Ordering::Relaxed);
            return Err(no_space());
        }
        Ok(())
    }
}

/// One open handle on a [`FaultyDisk`]: what redb is given.
#[derive(Debug, Clone)]
pub struct FaultyBackend {
    disk: Arc<FaultyDisk>,
}

impl StorageBackend for FaultyBackend {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.disk.check_power()?;
        Ok(lock(&self.disk.images).current.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.disk.check_power()?;
        let images = lock(&self.disk.images);
        let start = to_usize(offset)?;
        let end = start.checked_add(out.len()).ok_or_else(out_of_range)?;
        let source = images.current.get(start..end).ok_or_else(out_of_range)?;
        out.copy_from_slice(source);
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        // Checked under the lock, so the cut and the change cannot interleave.
        let mut images = lock(&self.disk.images);
        self.disk.tick()?;
        let new_len = to_usize(len)?;
        if new_len > images.current.len() {
            self.disk.check_space()?;
        }
        images.current.resize(new_len, 0);
        images.volatile.push(Volatile::SetLen(len));
        Ok(())
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        let mut images = lock(&self.disk.images);
        self.disk.tick()?;
        if !images.volatile.is_empty() {
            // A full disk may refuse at flush time what it took into the cache.
            self.disk.check_space()?;
        }
        let volatile = std::mem::take(&mut images.volatile);
        for change in &volatile {
            apply(&mut images.durable, change);
        }
        self.disk.syncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        let mut images = lock(&self.disk.images);
        self.disk.tick()?;
        self.disk.check_space()?;
        let start = to_usize(offset)?;
        let end = start.checked_add(data.len()).ok_or_else(out_of_range)?;
        let target = images
            .current
            .get_mut(start..end)
            .ok_or_else(out_of_range)?;
        target.copy_from_slice(data);
        images.volatile.push(Volatile::Write {
            offset,
            data: data.to_vec(),
        });
        self.disk.writes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn close(&self) -> Result<(), std::io::Error> {
        self.disk.check_power()
    }

    // Locks are not simulated: one process, one handle at a time (redb then runs in its
    // exclusive-writer mode, as the node does).
    fn try_lock_range(
        &self,
        _start: Bound<u64>,
        _end: Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        Err(redb::BackendError::Unsupported)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn unsynced_writes_are_lost_or_kept_by_loss_kind() {
        let disk = FaultyDisk::new();
        let b = disk.backend();
        b.set_len(2048).unwrap();
        b.write(0, &[1u8; 1024]).unwrap();
        b.sync_data().unwrap();
        b.write(1024, &[2u8; 1024]).unwrap();
        let mut got = [0u8; 4];
        b.read(1024, &mut got).unwrap();
        assert_eq!(got, [2u8; 4], "reads see unsynced writes");
        disk.cut();
        assert!(b.read(0, &mut got).is_err(), "a cut disk answers nothing");
        let mut rng = StdRng::seed_from_u64(1);
        let (img, report) = disk.surviving_image(Loss::All, &mut rng);
        assert_eq!(&img[..1024], &[1u8; 1024][..]);
        assert_eq!(&img[1024..], &[0u8; 1024][..]);
        assert_eq!(report.sectors_lost, 2);
        let (img, _) = disk.surviving_image(Loss::Nothing, &mut rng);
        assert_eq!(&img[1024..], &[2u8; 1024][..]);
        let (img, report) = disk.surviving_image(Loss::TornPrefix, &mut rng);
        assert!(report.torn);
        assert_eq!(img.len(), 2048);
        assert!(
            img[1024..].windows(2).all(|w| w[0] >= w[1]),
            "new bytes form a prefix"
        );
    }

    #[test]
    fn countdown_cuts_at_the_chosen_call_and_full_refuses_growth() {
        let disk = FaultyDisk::new();
        let b = disk.backend();
        b.set_len(512).unwrap();
        disk.cut_after(2);
        b.write(0, &[1]).unwrap();
        assert!(b.sync_data().is_err());
        assert!(disk.is_cut());

        let disk = FaultyDisk::new();
        let b = disk.backend();
        disk.set_full(true);
        let e = b.set_len(512).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::StorageFull);
        disk.set_full(false);
        b.set_len(512).unwrap();
        assert_eq!(disk.stats().refused_full, 1);
    }
}
