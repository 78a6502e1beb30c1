//! The key store: `keys/slot-N.pem` (PKCS#8 private key) for the device
//! keyring, `foreign/slot-N.pem` (SubjectPublicKeyInfo) for the foreign
//! keyring. The PEM carries the key type, so a slot is exactly one file.
//!
//! Keys are decoded once per process and kept. Every change of a key file
//! (generation, removal, a stored foreign key) happens under the state lock
//! and then bumps the shared number in `key-generation`; a process whose kept
//! keys are from an older generation drops them and reads the files again.
//! Using a key thus costs one atomic load, no file access.

use std::collections::HashMap;
use std::fs;
use std::io::ErrorKind;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use openssl::pkey::{PKey, Private, Public};

use crate::crypto::KeyPair;
use crate::errno::{Errno, Result};
use crate::model::Keyring;
use crate::shared::SharedWords;
use crate::state::{self, StateDir, StateLock};

const KEYS_DIR: &str = "keys";
const FOREIGN_DIR: &str = "foreign";
pub const GENERATION_FILE: &str = "key-generation";

/// The key files of one state directory and the keys decoded from them.
#[derive(Debug)]
pub struct KeyStore {
    dir: StateDir,
    generation: SharedWords,
    decoded: Mutex<Decoded>,
}

/// Keys decoded in this process, valid for one key generation.
#[derive(Default)]
struct Decoded {
    generation: u64,
    private: HashMap<i32, Arc<KeyPair>>,
    foreign: HashMap<i32, PKey<Public>>,
}

impl std::fmt::Debug for Decoded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoded")
            .field("generation", &self.generation)
            .finish()
    }
}

impl KeyStore {
    /// The key store of `dir`, creating its directories where missing.
    pub fn open(dir: StateDir) -> Result<KeyStore> {
        dir.ensure_dirs(&[KEYS_DIR, FOREIGN_DIR])?;
        // A process killed inside write_atomic leaves its temporary file
        // (a private key, for a key being generated): nobody else removes it.
        for keyring in [KEYS_DIR, FOREIGN_DIR] {
            state::remove_orphaned_temporaries(&dir.path(keyring));
        }
        let generation = SharedWords::open(
            &dir.path(GENERATION_FILE),
            "zkemu-key-generation 1",
            1,
            || dir.lock(),
        )?;
        Ok(KeyStore {
            dir,
            generation,
            decoded: Mutex::default(),
        })
    }

    pub fn dir(&self) -> &StateDir {
        &self.dir
    }

    fn keyring_dir(&self, keyring: Keyring) -> PathBuf {
        self.dir.path(match keyring {
            Keyring::Device => KEYS_DIR,
            Keyring::Foreign => FOREIGN_DIR,
        })
    }

    fn key_file(&self, keyring: Keyring, slot: i32) -> PathBuf {
        self.keyring_dir(keyring).join(format!("slot-{slot}.pem"))
    }

    /// Allocated slots of a keyring, ascending.
    pub fn slots(&self, keyring: Keyring) -> Result<Vec<i32>> {
        let mut slots = Vec::new();
        for entry in fs::read_dir(self.keyring_dir(keyring))? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if state::is_temporary(&name) {
                continue;
            }
            if let Some(slot) = name
                .strip_prefix("slot-")
                .and_then(|rest| rest.strip_suffix(".pem"))
                .and_then(|n| n.parse::<i32>().ok())
            {
                slots.push(slot);
            }
        }
        slots.sort_unstable();
        Ok(slots)
    }

    fn read_pem(&self, keyring: Keyring, slot: i32) -> Result<Vec<u8>> {
        fs::read(self.key_file(keyring, slot)).map_err(|e| match e.kind() {
            ErrorKind::NotFound => Errno::NOENT,
            _ => Errno::IO,
        })
    }

    /// The decoded keys, emptied first if another change of the key files
    /// happened since they were decoded.
    fn decoded(&self) -> std::sync::MutexGuard<'_, Decoded> {
        let current = self.generation.get(0).load(Ordering::Acquire);
        // The map is replaced whole on change: a panic elsewhere leaves it valid.
        let mut decoded = self.decoded.lock().unwrap_or_else(|p| p.into_inner());
        if decoded.generation != current {
            *decoded = Decoded {
                generation: current,
                ..Decoded::default()
            };
        }
        decoded
    }

    /// The key pair of a device slot; `ENOENT` if the slot is empty.
    pub fn private_key(&self, slot: i32) -> Result<Arc<KeyPair>> {
        let generation = {
            let decoded = self.decoded();
            if let Some(pair) = decoded.private.get(&slot) {
                return Ok(pair.clone());
            }
            decoded.generation
        };
        let pem = self.read_pem(Keyring::Device, slot)?;
        let key = PKey::private_key_from_pem(&pem).map_err(|_| Errno::IO)?;
        let pair = Arc::new(KeyPair::new(key)?);
        let mut decoded = self.decoded();
        // Kept only if no change happened while the file was read.
        if decoded.generation == generation {
            decoded.private.insert(slot, pair.clone());
        }
        Ok(pair)
    }

    /// The public key of a foreign slot; `ENOENT` if the slot is empty.
    pub fn foreign_key(&self, slot: i32) -> Result<PKey<Public>> {
        let generation = {
            let decoded = self.decoded();
            if let Some(key) = decoded.foreign.get(&slot) {
                return Ok(key.clone());
            }
            decoded.generation
        };
        let pem = self.read_pem(Keyring::Foreign, slot)?;
        let key = PKey::public_key_from_pem(&pem).map_err(|_| Errno::IO)?;
        let mut decoded = self.decoded();
        if decoded.generation == generation {
            decoded.foreign.insert(slot, key.clone());
        }
        Ok(key)
    }

    /// Records a change of the key files, made under `_lock`.
    fn changed(&self, _lock: &StateLock) {
        self.generation.get(0).fetch_add(1, Ordering::Release);
    }

    /// Writes a device key into a given slot (factory keys at creation).
    pub fn put_private_key(&self, lock: &StateLock, slot: i32, key: &PKey<Private>) -> Result<()> {
        let pem = key.private_key_to_pem_pkcs8()?;
        state::write_atomic(&self.key_file(Keyring::Device, slot), &pem)?;
        self.changed(lock);
        Ok(())
    }

    /// Stores a device key in the lowest free slot of `range`; `ENOSPC` if none.
    pub fn add_private_key(&self, range: Range<i32>, key: &PKey<Private>) -> Result<i32> {
        let pem = key.private_key_to_pem_pkcs8()?;
        self.add(Keyring::Device, range, &pem)
    }

    /// Stores a foreign public key in the lowest free slot of `range`.
    pub fn add_foreign_key(&self, range: Range<i32>, key: &PKey<Public>) -> Result<i32> {
        let pem = key.public_key_to_pem()?;
        self.add(Keyring::Foreign, range, &pem)
    }

    fn add(&self, keyring: Keyring, range: Range<i32>, pem: &[u8]) -> Result<i32> {
        let lock = self.dir.lock()?;
        let used = self.slots(keyring)?;
        let slot = range
            .into_iter()
            .find(|s| used.binary_search(s).is_err())
            .ok_or(Errno::NOSPC)?;
        state::write_atomic(&self.key_file(keyring, slot), pem)?;
        self.changed(&lock);
        Ok(slot)
    }

    /// Deletes a slot's key; `ENOENT` if the slot is empty.
    pub fn remove_key(&self, keyring: Keyring, slot: i32) -> Result<()> {
        let lock = self.dir.lock()?;
        match fs::remove_file(self.key_file(keyring, slot)) {
            Ok(()) => {
                self.changed(&lock);
                state::sync_dir(&self.keyring_dir(keyring))
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Err(Errno::NOENT),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes every key file, of both keyrings: what a self-destruct
    /// leaves of the key store. Done under `lock`; an empty store stays empty.
    pub fn destroy_all(&self, lock: &StateLock) -> Result<()> {
        for keyring in [Keyring::Device, Keyring::Foreign] {
            let dir = self.keyring_dir(keyring);
            for entry in fs::read_dir(&dir)? {
                match fs::remove_file(entry?.path()) {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => return Err(e.into()),
                }
            }
            state::sync_dir(&dir)?;
        }
        self.changed(lock);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{self, KeyType};

    fn store(dir: &tempfile::TempDir) -> KeyStore {
        KeyStore::open(StateDir::new(dir.path().to_path_buf())).unwrap()
    }

    #[test]
    fn lowest_free_slot_and_full_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        let key = crypto::generate(KeyType::NistP256).unwrap();
        assert_eq!(store.add_private_key(16..19, &key), Ok(16));
        assert_eq!(store.add_private_key(16..19, &key), Ok(17));
        assert_eq!(store.add_private_key(16..19, &key), Ok(18));
        assert_eq!(store.add_private_key(16..19, &key), Err(Errno::NOSPC));
        assert!(store.private_key(17).unwrap().key.public_eq(&key));
        store.remove_key(Keyring::Device, 17).unwrap();
        assert_eq!(store.remove_key(Keyring::Device, 17), Err(Errno::NOENT));
        assert_eq!(store.private_key(17).err(), Some(Errno::NOENT));
        assert_eq!(store.slots(Keyring::Device).unwrap(), vec![16, 18]);
        // A new key in the slot is seen, not the decoded old one.
        let new_key = crypto::generate(KeyType::NistP256).unwrap();
        assert_eq!(store.add_private_key(16..19, &new_key), Ok(17));
        let back = store.private_key(17).unwrap();
        assert!(back.key.public_eq(&new_key) && !back.key.public_eq(&key));
        assert_eq!(store.private_key(3).err(), Some(Errno::NOENT));
        assert!(store.slots(Keyring::Foreign).unwrap().is_empty());
    }

    #[test]
    fn destroying_empties_both_keyrings() {
        let dir = tempfile::tempdir().unwrap();
        let (here, there) = (store(&dir), store(&dir));
        let key = crypto::generate(KeyType::NistP256).unwrap();
        let lock = here.dir().lock().unwrap();
        here.put_private_key(&lock, 0, &key).unwrap();
        drop(lock);
        assert_eq!(here.add_private_key(16..17, &key), Ok(16));
        let public = PKey::public_key_from_pem(&key.public_key_to_pem().unwrap()).unwrap();
        assert_eq!(here.add_foreign_key(0..1, &public), Ok(0));
        assert!(there.private_key(0).is_ok());

        let lock = here.dir().lock().unwrap();
        here.destroy_all(&lock).unwrap();
        here.destroy_all(&lock).unwrap();
        drop(lock);
        for keyring in [Keyring::Device, Keyring::Foreign] {
            assert!(here.slots(keyring).unwrap().is_empty());
        }
        // A key another process had decoded is gone there too.
        assert_eq!(there.private_key(0).err(), Some(Errno::NOENT));
        assert_eq!(there.foreign_key(0).err(), Some(Errno::NOENT));
    }

    #[test]
    fn a_change_in_another_store_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let (here, there) = (store(&dir), store(&dir));
        let old = crypto::generate(KeyType::NistP256).unwrap();
        assert_eq!(here.add_private_key(16..17, &old), Ok(16));
        assert!(here.private_key(16).unwrap().key.public_eq(&old));
        // Another process (here: another mapping of the same files) replaces it.
        there.remove_key(Keyring::Device, 16).unwrap();
        assert_eq!(here.private_key(16).err(), Some(Errno::NOENT));
        let new = crypto::generate(KeyType::NistP256).unwrap();
        assert_eq!(there.add_private_key(16..17, &new), Ok(16));
        assert!(here.private_key(16).unwrap().key.public_eq(&new));
    }
}
