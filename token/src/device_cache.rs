//! What a process learns from the device before it can show the token:
//! model, serial number, firmware version and the key slots in use. None of
//! it changes unless keys are generated or removed, so it is kept in a file
//! ([`Config::device_cache_path`](zkconf::Config::device_cache_path)) and a later process reads
//! the file instead of making four or five device calls. With the public keys
//! the store keeps, a process that only lists objects makes no device call,
//! and one that signs once makes two (open, sign).
//!
//! The file is replaced atomically, so reading it takes no lock. Whoever
//! fills it from the device, or changes it after generating or removing a
//! key, holds an exclusive `flock` of `<file>.lock` around the read of the
//! device (or of the file) and the write, so no update is lost to another
//! process. A file for another Zymkey library, or one that does not parse,
//! counts as absent. Changes made with other tools (Zymbit's own) are not
//! seen here: the token drops the file when a signature does not verify
//! against the cached key, and deleting it makes the next process read the
//! device again.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::key::KeySlot;
use crate::lock::FileLock;

/// The device as a process needs to know it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The Zymkey library this was read through.
    pub library: PathBuf,
    pub model: String,
    pub serial: String,
    pub firmware: String,
    /// Key slots in use, ascending.
    pub slots: Vec<CachedSlot>,
}

/// A key slot, as written in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CachedSlot {
    pub number: u32,
    pub foreign: bool,
}

impl From<KeySlot> for CachedSlot {
    fn from(slot: KeySlot) -> CachedSlot {
        CachedSlot {
            number: slot.number,
            foreign: slot.foreign,
        }
    }
}

impl From<CachedSlot> for KeySlot {
    fn from(slot: CachedSlot) -> KeySlot {
        KeySlot {
            number: slot.number,
            foreign: slot.foreign,
        }
    }
}

/// The cache file of one store.
#[derive(Debug, Clone)]
pub struct DeviceCache {
    path: PathBuf,
}

impl DeviceCache {
    pub fn new(path: PathBuf) -> DeviceCache {
        DeviceCache { path }
    }

    /// The snapshot of `library`'s device, if the file holds one.
    pub fn read(&self, library: &Path) -> Option<Snapshot> {
        let text = fs::read_to_string(&self.path).ok()?;
        match toml::from_str::<Snapshot>(&text) {
            Ok(snapshot) if snapshot.library == library => Some(snapshot),
            Ok(_) => None,
            Err(e) => {
                tracing::debug!(path = %self.path.display(), "device cache ignored: {e}");
                None
            }
        }
    }

    /// Takes the file's lock, waiting for other processes; `None` (said in
    /// the log) where the directory cannot be written.
    pub fn lock(&self) -> Option<FileLock> {
        let mut name = self.path.file_name()?.to_os_string();
        name.push(".lock");
        FileLock::exclusive(&self.path.with_file_name(name))
            .map_err(
                |e| tracing::debug!(path = %self.path.display(), "device cache not locked: {e}"),
            )
            .ok()
    }

    /// Replaces the file with `snapshot` (mode 0600). A failure only costs
    /// later processes device calls, so it is logged, not returned.
    pub fn write(&self, _lock: &FileLock, snapshot: &Snapshot) {
        let result = (|| -> Result<(), Box<dyn std::error::Error>> {
            let text = toml::to_string(snapshot)?;
            let temp = self
                .path
                .with_extension(format!("tmp.{}", std::process::id()));
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&temp)?;
            file.write_all(text.as_bytes())?;
            fs::rename(&temp, &self.path)?;
            Ok(())
        })();
        if let Err(e) = result {
            tracing::warn!(path = %self.path.display(), "device cache not written: {e}");
        }
    }

    /// Changes the slots of the cached snapshot of `library`'s device, if there
    /// is one (otherwise the next process reads the device anyway).
    pub fn update_slots(&self, library: &Path, change: impl FnOnce(&mut Vec<CachedSlot>)) {
        let Some(lock) = self.lock() else {
            self.forget();
            return;
        };
        if let Some(mut snapshot) = self.read(library) {
            change(&mut snapshot.slots);
            snapshot.slots.sort_unstable();
            snapshot.slots.dedup();
            self.write(&lock, &snapshot);
        }
    }

    /// Drops the file: the next process reads the device.
    pub fn forget(&self) {
        match fs::remove_file(&self.path) {
            Ok(()) => tracing::info!(path = %self.path.display(), "device cache dropped"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(path = %self.path.display(), "device cache not dropped: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(library: &str) -> Snapshot {
        Snapshot {
            library: PathBuf::from(library),
            model: "HSM6".into(),
            serial: "EMU-1".into(),
            firmware: "zkemu-1".into(),
            slots: vec![
                CachedSlot {
                    number: 0,
                    foreign: false,
                },
                CachedSlot {
                    number: 3,
                    foreign: true,
                },
            ],
        }
    }

    #[test]
    fn round_trip_update_and_forget() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DeviceCache::new(dir.path().join("sub/store.device.toml"));
        assert_eq!(cache.read(Path::new("/lib/zk.so")), None);
        let lock = cache.lock().unwrap();
        cache.write(&lock, &snapshot("/lib/zk.so"));
        drop(lock);
        assert_eq!(
            cache.read(Path::new("/lib/zk.so")),
            Some(snapshot("/lib/zk.so"))
        );
        assert_eq!(cache.read(Path::new("/other.so")), None, "another library");
        cache.update_slots(Path::new("/lib/zk.so"), |slots| {
            slots.push(CachedSlot {
                number: 16,
                foreign: false,
            });
            slots.retain(|s| !s.foreign);
        });
        let numbers: Vec<u32> = cache
            .read(Path::new("/lib/zk.so"))
            .unwrap()
            .slots
            .iter()
            .map(|s| s.number)
            .collect();
        assert_eq!(numbers, [0, 16]);
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&cache.path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        cache.forget();
        assert_eq!(cache.read(Path::new("/lib/zk.so")), None);
        fs::write(&cache.path, "not = [toml").unwrap();
        assert_eq!(cache.read(Path::new("/lib/zk.so")), None);
    }
}
