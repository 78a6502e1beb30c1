//! Key files: `keys/slot-N.pem` (PKCS#8 private key) for the device keyring,
//! `foreign/slot-N.pem` (SubjectPublicKeyInfo) for the foreign keyring.
//! The PEM carries the key type, so a slot is exactly one file.

use std::fs;
use std::io::ErrorKind;
use std::ops::Range;
use std::path::PathBuf;

use openssl::pkey::{PKey, Private, Public};

use crate::errno::{Errno, Result};
use crate::model::Keyring;
use crate::state::{self, Durability, StateDir, StateLock};

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
        PKey::private_key_from_pem(&pem).map_err(|_| Errno::IO)
    }

    /// The public key of a foreign slot; `ENOENT` if the slot is empty.
    pub fn foreign_key(&self, slot: i32) -> Result<PKey<Public>> {
        let pem = self.read_pem(Keyring::Foreign, slot)?;
        PKey::public_key_from_pem(&pem).map_err(|_| Errno::IO)
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
        state.remove_key(Keyring::Device, 17).unwrap();
        assert_eq!(state.remove_key(Keyring::Device, 17), Err(Errno::NOENT));
        assert_eq!(state.slots(Keyring::Device).unwrap(), vec![16, 18]);
        assert_eq!(state.add_private_key(16..19, &key), Ok(17));
        let back = state.private_key(17).unwrap();
        assert!(back.public_eq(&key));
        assert_eq!(state.private_key(3).err(), Some(Errno::NOENT));
        assert!(state.slots(Keyring::Foreign).unwrap().is_empty());
    }
}
