//! The device as the token sees it. The shipped module drives a
//! [`zymkey::Zymkey`]; unit tests drive an in-memory device.
//!
//! Calls into Zymbit's library hold the fork gate ([`crate::fork`]): a
//! fork() waits for a device call in progress, so a child never inherits
//! the library in the middle of one (its locks held, a request half sent).

use std::path::PathBuf;

use zkconf::Config;
use zymkey::{KeyType, Slot, SlotList, Zymkey};

use crate::fork;

/// The Zymkey library to load: `ZKIOT_ZKLIB`, else `zklib`, else Zymbit's path.
pub(crate) fn library_path(config: &Config) -> PathBuf {
    zymkey::library_path(config.zklib.as_deref())
}

/// Device operations the token uses.
pub trait Device: Send + Sync {
    fn model(&self) -> zymkey::Result<String>;
    fn serial_number(&self) -> zymkey::Result<String>;
    fn firmware_version(&self) -> zymkey::Result<String>;
    fn random(&self, len: usize) -> zymkey::Result<Vec<u8>>;
    fn sign_digest(&self, slot: i32, digest: &[u8; 32]) -> zymkey::Result<[u8; 64]>;
    fn public_key(&self, slot: Slot) -> zymkey::Result<Vec<u8>>;
    fn allocated_slots(&self, foreign: bool) -> zymkey::Result<SlotList>;
    fn generate_key(&self, key_type: KeyType) -> zymkey::Result<i32>;
    fn remove_key(&self, slot: Slot) -> zymkey::Result<()>;
    /// Releases the device connection (the next call reopens it).
    fn close(&self);
    /// What the library tells, with no device operation, of which device it
    /// reaches (only the emulator tells anything: see
    /// [`zymkey::Zymkey::device_fingerprint`]).
    fn fingerprint(&self) -> Option<String> {
        None
    }
}

impl Device for Zymkey {
    fn model(&self) -> zymkey::Result<String> {
        let _gate = fork::enter();
        Zymkey::model(self)
    }
    fn serial_number(&self) -> zymkey::Result<String> {
        let _gate = fork::enter();
        Zymkey::serial_number(self)
    }
    fn firmware_version(&self) -> zymkey::Result<String> {
        let _gate = fork::enter();
        Zymkey::firmware_version(self)
    }
    fn random(&self, len: usize) -> zymkey::Result<Vec<u8>> {
        let _gate = fork::enter();
        Zymkey::random(self, len)
    }
    fn sign_digest(&self, slot: i32, digest: &[u8; 32]) -> zymkey::Result<[u8; 64]> {
        let _gate = fork::enter();
        Zymkey::sign_digest(self, slot, digest)
    }
    fn public_key(&self, slot: Slot) -> zymkey::Result<Vec<u8>> {
        let _gate = fork::enter();
        Zymkey::public_key(self, slot)
    }
    fn allocated_slots(&self, foreign: bool) -> zymkey::Result<SlotList> {
        let _gate = fork::enter();
        Zymkey::allocated_slots(self, foreign)
    }
    fn generate_key(&self, key_type: KeyType) -> zymkey::Result<i32> {
        let _gate = fork::enter();
        Zymkey::generate_key(self, key_type)
    }
    fn remove_key(&self, slot: Slot) -> zymkey::Result<()> {
        let _gate = fork::enter();
        Zymkey::remove_key(self, slot)
    }
    fn close(&self) {
        let _gate = fork::enter();
        Zymkey::close(self)
    }
    fn fingerprint(&self) -> Option<String> {
        let _gate = fork::enter();
        Zymkey::device_fingerprint(self)
    }
}

/// What the device can do, as its answer to the slot list says (read with
/// the rest of the device's identity, so it costs no device call of its own
/// and is kept in the device cache). The model string is only shown: a
/// pre-production ZYMKEY5 calls itself "HSM6", and the production strings
/// of ZYMKEY5 and HSM60 are not published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Capabilities {
    /// Has a key store: generates and removes keys, has a foreign keyring
    /// (HSM6, SCM, ZYMKEY5, HSM60): the device's key slot list has room
    /// beyond the factory's slots.
    pub(crate) key_store: bool,
    /// Size of the device's key store, as the slot list reports it (0
    /// when the device has no slot list).
    pub(crate) key_slots: u32,
}

impl Capabilities {
    /// Slots below this number are the factory's (Zymbit: generated keys
    /// start at 16); on a device without a key store, all of them are.
    pub(crate) const FIRST_FREE_SLOT: u32 = 16;
    /// The factory slots of a device that lists none (ZYMKEY4i, HSM4:
    /// three P-256 keys, as documented).
    pub(crate) const UNLISTED_FACTORY_SLOTS: u32 = 3;

    /// From the device's answer to the slot list of its own keys.
    pub(crate) fn from_slot_list(list: &zymkey::Result<zymkey::SlotList>) -> Capabilities {
        let key_slots = list
            .as_ref()
            .map(|l| u32::try_from(l.capacity).unwrap_or(u32::MAX))
            .unwrap_or(0);
        Capabilities {
            key_store: key_slots > Capabilities::FIRST_FREE_SLOT,
            key_slots,
        }
    }

    /// The first slot a generated key can take.
    pub(crate) fn first_free_slot(self) -> u32 {
        if self.key_store {
            Capabilities::FIRST_FREE_SLOT
        } else {
            u32::MAX
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_follow_the_slot_list_not_the_model() {
        let list = |capacity| {
            Ok(zymkey::SlotList {
                capacity,
                slots: vec![0, 1, 2],
            })
        };
        let zymkey4i = Capabilities::from_slot_list(&list(3));
        assert!(!zymkey4i.key_store);
        assert_eq!(zymkey4i.first_free_slot(), u32::MAX);
        let key_store = Capabilities::from_slot_list(&list(512));
        assert!(key_store.key_store);
        assert_eq!(key_store.key_slots, 512);
        assert_eq!(key_store.first_free_slot(), 16);
        let unlisted = Capabilities::from_slot_list(&Err(zymkey::Error::Unsupported {
            function: "zkGetAllocSlotsList",
        }));
        assert!(!unlisted.key_store);
        assert_eq!(unlisted.key_slots, 0);
    }
}
