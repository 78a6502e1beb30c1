//! The device as the token sees it. The shipped module drives a
//! [`zymkey::Zymkey`]; unit tests drive an in-memory device.

use zymkey::{KeyType, Slot, SlotList, Zymkey};

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
}

impl Device for Zymkey {
    fn model(&self) -> zymkey::Result<String> {
        Zymkey::model(self)
    }
    fn serial_number(&self) -> zymkey::Result<String> {
        Zymkey::serial_number(self)
    }
    fn firmware_version(&self) -> zymkey::Result<String> {
        Zymkey::firmware_version(self)
    }
    fn random(&self, len: usize) -> zymkey::Result<Vec<u8>> {
        Zymkey::random(self, len)
    }
    fn sign_digest(&self, slot: i32, digest: &[u8; 32]) -> zymkey::Result<[u8; 64]> {
        Zymkey::sign_digest(self, slot, digest)
    }
    fn public_key(&self, slot: Slot) -> zymkey::Result<Vec<u8>> {
        Zymkey::public_key(self, slot)
    }
    fn allocated_slots(&self, foreign: bool) -> zymkey::Result<SlotList> {
        Zymkey::allocated_slots(self, foreign)
    }
    fn generate_key(&self, key_type: KeyType) -> zymkey::Result<i32> {
        Zymkey::generate_key(self, key_type)
    }
    fn remove_key(&self, slot: Slot) -> zymkey::Result<()> {
        Zymkey::remove_key(self, slot)
    }
    fn close(&self) {
        Zymkey::close(self)
    }
}
