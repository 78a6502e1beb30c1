//! Key files: `keys/slot-N.pem` (PKCS#8 private key) for the device keyring,
//! `foreign/slot-N.pem` (SubjectPublicKeyInfo) for the foreign keyring.
//! The PEM carries the key type, so a slot is exactly one file.

use std::collections::HashMap;
use std::fs;
use std::io::ErrorKind;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Mutex;

use openssl::pkey::{PKey, Private, Public};

use crate::errno::{Errno, Result};
use crate::model::Keyring;
use crate::state::{self, Durability, StateDir, StateLock};

/// Parsed keys of one keyring in this process, by slot. The key file is still
/// read on every use (another process may have replaced it), but parsing PEM
/// costs far more than signing, so a parsed key is reused while its file holds
/// the same bytes.
pub struct KeyCache<T> {
    entries: Mutex<HashMap<i32, ParsedKey<T>>>,
}

struct ParsedKey<T> {
    pem: Vec<u8>,
    key: PKey<T>,
}

impl<T> Default for KeyCache<T> {
    fn default() -> Self {
        KeyCache {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl<T> std::fmt::Debug for KeyCache<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyCache")
    }
}

impl<T> KeyCache<T> {
    fn key(
        &self,
        slot: i32,
        pem: Vec<u8>,
        parse: impl FnOnce(&[u8]) -> Result<PKey<T>>,
    ) -> Result<PKey<T>> {
        // Entries are replaced whole: a panic elsewhere leaves the map valid.
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(parsed) = entries.get(&slot).filter(|parsed| parsed.pem == pem) {
            return Ok(parsed.key.clone());
        }
        let key = parse(&pem)?;
        entries.insert(
            slot,
            ParsedKey {
                pem,
                key: key.clone(),
            },
        );
        Ok(key)
    }
}

impl StateDir {
    fn keyring_dir(&self, keyring: Keyring) -> PathBuf {
        self.path(match keyring {
            Keyring::Device => state::KEYS_DIR,
            Keyring::Foreign => state::FOREIGN_DIR,
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

    /// The key pair of a device slot; `ENOENT` if the slot is empty.
    pub fn private_key(&self, slot: i32) -> Result<PKey<Private>> {
        let pem = self.read_pem(Keyring::Device, slot)?;
        self.private_keys.key(slot, pem, |pem| {
            PKey::private_key_from_pem(pem).map_err(|_| Errno::IO)
        })
    }

    /// The public key of a foreign slot; `ENOENT` if the slot is empty.
    pub fn foreign_key(&self, slot: i32) -> Result<PKey<Public>> {
        let pem = self.read_pem(Keyring::Foreign, slot)?;
        self.foreign_keys.key(slot, pem, |pem| {
            PKey::public_key_from_pem(pem).map_err(|_| Errno::IO)
        })
    }

    /// Writes a device key into a given slot (factory keys at creation).
    pub fn put_private_key(&self, _lock: &StateLock, slot: i32, key: &PKey<Private>) -> Result<()> {
        let pem = key.private_key_to_pem_pkcs8()?;
        state::write_atomic(
            &self.key_file(Keyring::Device, slot),
            &pem,
            Durability::Synced,
        )
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
        let _lock = self.lock()?;
        let used = self.slots(keyring)?;
        let slot = range
            .into_iter()
            .find(|s| used.binary_search(s).is_err())
            .ok_or(Errno::NOSPC)?;
        state::write_atomic(&self.key_file(keyring, slot), pem, Durability::Synced)?;
        Ok(slot)
    }

    /// Deletes a slot's key; `ENOENT` if the slot is empty.
    pub fn remove_key(&self, keyring: Keyring, slot: i32) -> Result<()> {
        let _lock = self.lock()?;
        match fs::remove_file(self.key_file(keyring, slot)) {
            Ok(()) => state::sync_dir(&self.keyring_dir(keyring)),
            Err(e) if e.kind() == ErrorKind::NotFound => Err(Errno::NOENT),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{self, KeyType};

    #[test]
    fn lowest_free_slot_and_full_store() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path().to_path_buf());
        state.ensure_dirs().unwrap();
        let key = crypto::generate(KeyType::NistP256).unwrap();
        assert_eq!(state.add_private_key(16..19, &key), Ok(16));
        assert_eq!(state.add_private_key(16..19, &key), Ok(17));
        assert_eq!(state.add_private_key(16..19, &key), Ok(18));
        assert_eq!(state.add_private_key(16..19, &key), Err(Errno::NOSPC));
        assert!(state.private_key(17).unwrap().public_eq(&key));
        state.remove_key(Keyring::Device, 17).unwrap();
        assert_eq!(state.remove_key(Keyring::Device, 17), Err(Errno::NOENT));
        assert_eq!(state.private_key(17).err(), Some(Errno::NOENT));
        assert_eq!(state.slots(Keyring::Device).unwrap(), vec![16, 18]);
        // A new key in the slot is seen, not the parsed old one.
        let new_key = crypto::generate(KeyType::NistP256).unwrap();
        assert_eq!(state.add_private_key(16..19, &new_key), Ok(17));
        let back = state.private_key(17).unwrap();
        assert!(back.public_eq(&new_key) && !back.public_eq(&key));
        assert_eq!(state.private_key(3).err(), Some(Errno::NOENT));
        assert!(state.slots(Keyring::Foreign).unwrap().is_empty());
    }
}
