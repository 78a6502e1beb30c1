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
