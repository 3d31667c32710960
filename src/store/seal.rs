//! The clean-stop seal: a small file beside the store recording the length and hash of the
//! store file as the node left it after closing it cleanly.
//!
//! The node opens its store with redb's integrity check, which walks every page of every tree:
//! about 2 s for a million customers. After a clean stop that walk only re-proves what the
//! node knew when it closed the file, so the node writes a seal then, and at the next start
//! hashes the file sequentially (a fraction of the walk's time) and skips the walk when the
//! bytes are the ones it sealed. Anything else — no seal, a seal that does not parse, a file
//! changed by a byte since — gets the full check, as before: the seal can only ever save time,
//! never trust a file the check would refuse. The seal is removed at open, before anything is
//! written, so a later crash leaves none behind.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::Xxh3;

/// Where the seal of the store file at `store` lives.
fn seal_path(store: &Path) -> PathBuf {
    let mut name = store.as_os_str().to_owned();
    name.push(".clean");
    PathBuf::from(name)
}

/// Length and XXH3-128 hash of the file at `path`, read sequentially.
fn fingerprint(path: &Path) -> io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len: u64 = 0;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    Ok(format!("outpost-seal-1 {len} {:032x}", hasher.digest128()))
}

/// Seals the store file at `store`, which must be closed: written beside it, then renamed into
/// place, so a seal is whole or absent.
pub(crate) fn write(store: &Path) -> io::Result<()> {
    let seal = fingerprint(store)?;
    let path = seal_path(store);
    let mut tmp = path.clone().into_os_string();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut f = File::create(&tmp)?;
        f.write_all(seal.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path)
}

/// Whether the store file at `store` is byte for byte the file a clean stop sealed. The seal is
/// removed whatever the answer: from now on the file may change.
pub(crate) fn take(store: &Path) -> bool {
    let path = seal_path(store);
    let Ok(seal) = std::fs::read_to_string(&path) else {
        return false;
    };
    if let Err(e) = std::fs::remove_file(&path) {
        // A seal that cannot be removed would outlive the changes to come; the hash would no
        // longer match them, but trust nothing that cannot be cleaned up.
        tracing::warn!(seal = %path.display(), error = %e, "clean-stop seal not removed; full check");
        return false;
    }
    match fingerprint(store) {
        Ok(now) => now == seal,
        Err(e) => {
            tracing::warn!(error = %e, "store file not readable for its seal check; full check");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_sealed_bytes_pass_and_a_seal_is_used_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("outpost.redb");
        let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&store, &bytes).unwrap();

        assert!(!take(&store), "no seal: full check");

        write(&store).unwrap();
        assert!(take(&store), "sealed and unchanged");
        assert!(!seal_path(&store).exists(), "the seal is gone after open");
        assert!(!take(&store), "a seal counts once");

        // One byte changed after the seal, anywhere: full check.
        for at in [0, 1_234_567, bytes.len() - 1] {
            write(&store).unwrap();
            let mut changed = bytes.clone();
            changed[at] ^= 0x40;
            std::fs::write(&store, &changed).unwrap();
            assert!(!take(&store), "byte {at} changed");
            std::fs::write(&store, &bytes).unwrap();
        }

        // Longer or shorter: full check.
        write(&store).unwrap();
        std::fs::write(&store, &bytes[..bytes.len() - 4096]).unwrap();
        assert!(!take(&store));
        std::fs::write(&store, &bytes).unwrap();

        // A damaged seal: full check.
        write(&store).unwrap();
        let seal = seal_path(&store);
        let text = std::fs::read_to_string(&seal).unwrap();
        std::fs::write(&seal, &text[..text.len() / 2]).unwrap();
        assert!(!take(&store));
    }
}
