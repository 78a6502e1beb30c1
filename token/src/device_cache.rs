//! What a process learns from the device before it can show the token:
//! model, serial number, firmware version and the key slots in use. It is
//! kept in a file ([`Config::device_cache_path`](zkconf::Config::device_cache_path))
//! so that a later process reads the file instead of making four or five
//! device calls. With the public keys the store keeps, a process that only
//! lists objects makes no device call, and one that signs once makes two
//! (open, sign).
//!
//! # When the file is trusted
//! Only for the device it was read from. A snapshot is tied, by its
//! [`Anchor`], to the Zymkey library, to the kernel's boot id, and to what
//! the library tells of its device without a device call (the emulator's
//! state directory; Zymbit's library tells nothing). A Zymkey can only be
//! swapped with the power off, and a cloned SD image only runs on other
//! hardware after a boot, so within one boot the same library reaches the
//! same Zymkey:
//! - same library, same fingerprint, same boot: trusted, no device call;
//! - same library and fingerprint, another boot (or no readable boot id):
//!   the first process reads the serial number (one device call); the same
//!   serial confirms the snapshot for this boot, another one means another
//!   Zymkey, whose model, firmware and slots are read again (four or five);
//! - another library or fingerprint, or a file that does not parse: absent.
//!
//! The file is replaced atomically, so reading it takes no lock. Whoever
//! fills it from the device, or changes it after generating or removing a
//! key, holds an exclusive `flock` of `<file>.lock` around the read of the
//! device (or of the file) and the write, so no update is lost to another
//! process. Changes made with other tools (Zymbit's own) are not seen here:
//! the token drops the file when a signature does not verify against the
//! cached key, and deleting it makes the next process read the device again.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::device::{Capabilities, Device};
use crate::key::KeySlot;
use crate::lock::FileLock;

/// Where the kernel says which boot this is (a random UUID per boot).
const BOOT_ID_PATH: &str = "/proc/sys/kernel/random/boot_id";

/// What ties a snapshot to one device, known without a device call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    /// The Zymkey library the device is reached through.
    pub library: PathBuf,
    /// The kernel's boot id; `None` where it cannot be read.
    pub boot_id: Option<String>,
    /// What the library tells of its device ([`Device::fingerprint`]).
    pub fingerprint: Option<String>,
}

impl Anchor {
    /// The anchor of `device`, reached through `library`, now.
    pub fn current(library: &Path, device: &dyn Device) -> Anchor {
        Anchor::with_boot_id(library, device, read_boot_id(Path::new(BOOT_ID_PATH)))
    }

    fn with_boot_id(library: &Path, device: &dyn Device, boot_id: Option<String>) -> Anchor {
        Anchor {
            library: library.to_path_buf(),
            boot_id,
            fingerprint: device.fingerprint(),
        }
    }
}

fn read_boot_id(path: &Path) -> Option<String> {
    let id = fs::read_to_string(path).ok()?.trim().to_string();
    (!id.is_empty()).then_some(id)
}

/// A snapshot as far as it can be trusted for an anchor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cached {
    /// Read in this boot from the device this anchor names.
    Trusted(Snapshot),
    /// Read through the same library and fingerprint, but in another boot
    /// (or with no boot id): the device may have been swapped since.
    Unconfirmed(Snapshot),
}

/// The device as a process needs to know it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The device this was read from.
    pub anchor: Anchor,
    pub model: String,
    pub serial: String,
    pub firmware: String,
    /// What the device can do, from its slot list.
    pub caps: Capabilities,
    /// Key slots in use, ascending.
    pub slots: Vec<KeySlot>,
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

    /// The snapshot the file holds for the device of `anchor`, and how far
    /// it can be trusted (see the module's documentation).
    pub fn read(&self, anchor: &Anchor) -> Option<Cached> {
        let text = fs::read_to_string(&self.path).ok()?;
        let snapshot = match toml::from_str::<Snapshot>(&text) {
            Ok(snapshot) => snapshot,
            Err(e) => {
                tracing::debug!(path = %self.path.display(), "device cache ignored: {e}");
                return None;
            }
        };
        let cached = &snapshot.anchor;
        if cached.library != anchor.library || cached.fingerprint != anchor.fingerprint {
            tracing::debug!(path = %self.path.display(), "device cache is for another device");
            return None;
        }
        if cached.boot_id.is_some() && cached.boot_id == anchor.boot_id {
            Some(Cached::Trusted(snapshot))
        } else {
            Some(Cached::Unconfirmed(snapshot))
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

    /// Changes the slots of the snapshot trusted for `anchor`'s device, if
    /// there is one (otherwise the next process reads the device anyway).
    pub fn update_slots(&self, anchor: &Anchor, change: impl FnOnce(&mut Vec<KeySlot>)) {
        let Some(lock) = self.lock() else {
            self.forget();
            return;
        };
        if let Some(Cached::Trusted(mut snapshot)) = self.read(anchor) {
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

    struct Fingerprinted(Option<&'static str>);

    impl Device for Fingerprinted {
        fn model(&self) -> zymkey::Result<String> {
            unreachable!("an anchor makes no device call")
        }
        fn serial_number(&self) -> zymkey::Result<String> {
            unreachable!()
        }
        fn firmware_version(&self) -> zymkey::Result<String> {
            unreachable!()
        }
        fn random(&self, _: usize) -> zymkey::Result<Vec<u8>> {
            unreachable!()
        }
        fn sign_digest(&self, _: i32, _: &[u8; 32]) -> zymkey::Result<[u8; 64]> {
            unreachable!()
        }
        fn public_key(&self, _: zymkey::Slot) -> zymkey::Result<Vec<u8>> {
            unreachable!()
        }
        fn allocated_slots(&self, _: bool) -> zymkey::Result<zymkey::SlotList> {
            unreachable!()
        }
        fn generate_key(&self, _: zymkey::KeyType) -> zymkey::Result<i32> {
            unreachable!()
        }
        fn remove_key(&self, _: zymkey::Slot) -> zymkey::Result<()> {
            unreachable!()
        }
        fn close(&self) {}
        fn fingerprint(&self) -> Option<String> {
            self.0.map(str::to_string)
        }
    }

    fn anchor(library: &str, boot: Option<&str>, fingerprint: Option<&'static str>) -> Anchor {
        Anchor::with_boot_id(
            Path::new(library),
            &Fingerprinted(fingerprint),
            boot.map(str::to_string),
        )
    }

    fn snapshot(anchor: Anchor) -> Snapshot {
        Snapshot {
            anchor,
            model: "HSM6".into(),
            serial: "EMU-1".into(),
            firmware: "zkemu-1".into(),
            caps: Capabilities {
                key_store: true,
                key_slots: 512,
            },
            slots: vec![
                KeySlot {
                    number: 0,
                    foreign: false,
                },
                KeySlot {
                    number: 3,
                    foreign: true,
                },
            ],
        }
    }

    fn write(cache: &DeviceCache, snapshot: &Snapshot) {
        let lock = cache.lock().unwrap();
        cache.write(&lock, snapshot);
    }

    #[test]
    fn trusted_only_for_its_library_fingerprint_and_boot() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DeviceCache::new(dir.path().join("sub/store.device.toml"));
        let here = anchor("/lib/zk.so", Some("boot-1"), None);
        assert_eq!(cache.read(&here), None);
        write(&cache, &snapshot(here.clone()));
        assert_eq!(
            cache.read(&here),
            Some(Cached::Trusted(snapshot(here.clone())))
        );
        assert_eq!(cache.read(&anchor("/other.so", Some("boot-1"), None)), None);
        assert_eq!(
            cache.read(&anchor("/lib/zk.so", Some("boot-1"), Some("/emu\nEMU-2"))),
            None,
            "another emulated device"
        );
        assert!(matches!(
            cache.read(&anchor("/lib/zk.so", Some("boot-2"), None)),
            Some(Cached::Unconfirmed(_))
        ));
        assert!(matches!(
            cache.read(&anchor("/lib/zk.so", None, None)),
            Some(Cached::Unconfirmed(_))
        ));
        // Written without a boot id, a snapshot is never trusted outright.
        let unknown = anchor("/lib/zk.so", None, None);
        write(&cache, &snapshot(unknown.clone()));
        assert!(matches!(cache.read(&unknown), Some(Cached::Unconfirmed(_))));
    }

    #[test]
    fn the_boot_id_is_the_kernels() {
        let id = read_boot_id(Path::new(BOOT_ID_PATH)).expect("Linux has a boot id");
        assert_eq!(id.len(), 36, "{id}");
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_boot_id(&dir.path().join("absent")), None);
        fs::write(dir.path().join("empty"), "\n").unwrap();
        assert_eq!(read_boot_id(&dir.path().join("empty")), None);
    }

    #[test]
    fn update_and_forget() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DeviceCache::new(dir.path().join("sub/store.device.toml"));
        let here = anchor("/lib/zk.so", Some("boot-1"), None);
        write(&cache, &snapshot(here.clone()));
        cache.update_slots(&here, |slots| {
            slots.push(KeySlot {
                number: 16,
                foreign: false,
            });
            slots.retain(|s| !s.foreign);
        });
        let Some(Cached::Trusted(updated)) = cache.read(&here) else {
            panic!("still trusted");
        };
        let numbers: Vec<u32> = updated.slots.iter().map(|s| s.number).collect();
        assert_eq!(numbers, [0, 16]);
        // A snapshot of another boot is left for its confirmation.
        let other_boot = anchor("/lib/zk.so", Some("boot-2"), None);
        cache.update_slots(&other_boot, |slots| slots.clear());
        let Some(Cached::Unconfirmed(kept)) = cache.read(&other_boot) else {
            panic!("unconfirmed");
        };
        assert_eq!(kept.slots.len(), 2);
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&cache.path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        cache.forget();
        assert_eq!(cache.read(&here), None);
        fs::write(&cache.path, "not = [toml").unwrap();
        assert_eq!(cache.read(&here), None);
    }
}
