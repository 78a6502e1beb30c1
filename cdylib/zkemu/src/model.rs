//! The device models the emulator can be, and what each one can do.

use std::fmt;
use std::ops::Range;

use crate::errno::{Errno, Result};

/// A Zymbit module, as named by `zkGetModelNumberString` and `ZKIOT_EMU_MODEL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Model {
    /// Three factory P-256 keys in slots 0–2; no key generation, no foreign keyring.
    Zymkey4i,
    /// Twelve factory P-256 keys in slots 0–11 (0–15 reserved), generated keys from
    /// slot 16 up to a 512-slot store, and a 128-slot foreign public-key keyring.
    Hsm6,
}

/// Where a slot number lives: the device's own key pairs, or the foreign keyring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keyring {
    Device,
    Foreign,
}

impl Model {
    pub const DEFAULT: Model = Model::Zymkey4i;

    pub fn name(self) -> &'static str {
        match self {
            Model::Zymkey4i => "ZYMKEY4i",
            Model::Hsm6 => "HSM6",
        }
    }

    /// The model named exactly `name` (`ZYMKEY4i` or `HSM6`).
    pub fn from_name(name: &str) -> Option<Model> {
        [Model::Zymkey4i, Model::Hsm6]
            .into_iter()
            .find(|m| m.name() == name)
    }

    /// Slots that hold a P-256 key from the factory.
    pub fn factory_slots(self) -> Range<i32> {
        match self {
            Model::Zymkey4i => 0..3,
            Model::Hsm6 => 0..12,
        }
    }

    /// Slots reserved for the factory: never handed out by key generation.
    fn reserved_slots(self) -> Range<i32> {
        match self {
            Model::Zymkey4i => 0..3,
            Model::Hsm6 => 0..16,
        }
    }

    /// Number of slots of a keyring (`max_num_keys` of `zkGetAllocSlotsList`);
    /// valid slot numbers are `0..capacity`.
    pub fn capacity(self, keyring: Keyring) -> Result<i32> {
        match (self, keyring) {
            (Model::Zymkey4i, Keyring::Device) => Ok(3),
            (Model::Zymkey4i, Keyring::Foreign) => Err(Errno::OPNOTSUPP),
            (Model::Hsm6, Keyring::Device) => Ok(512),
            (Model::Hsm6, Keyring::Foreign) => Ok(128),
        }
    }

    /// The slots new keys of a keyring are allocated from, lowest free first.
    pub fn allocatable_slots(self, keyring: Keyring) -> Result<Range<i32>> {
        match keyring {
            Keyring::Device if !self.can_generate_keys() => Err(Errno::OPNOTSUPP),
            Keyring::Device => Ok(self.reserved_slots().end..self.capacity(keyring)?),
            Keyring::Foreign => Ok(0..self.capacity(keyring)?),
        }
    }

    pub fn can_generate_keys(self) -> bool {
        matches!(self, Model::Hsm6)
    }

    pub fn is_factory_slot(self, slot: i32) -> bool {
        self.factory_slots().contains(&slot)
    }

    /// Checks that `slot` is a slot number of the keyring: out of range is
    /// `EINVAL` (an empty slot inside the range is the caller's `ENOENT`).
    pub fn check_slot(self, keyring: Keyring, slot: i32) -> Result<()> {
        if (0..self.capacity(keyring)?).contains(&slot) {
            Ok(())
        } else {
            Err(Errno::INVAL)
        }
    }
}

impl fmt::Display for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_exact() {
        assert_eq!(Model::from_name("ZYMKEY4i"), Some(Model::Zymkey4i));
        assert_eq!(Model::from_name("HSM6"), Some(Model::Hsm6));
        assert_eq!(Model::from_name("zymkey4i"), None);
        assert_eq!(Model::from_name("HSM4"), None);
    }

    #[test]
    fn slot_ranges() {
        assert_eq!(Model::Hsm6.allocatable_slots(Keyring::Device), Ok(16..512));
        assert_eq!(Model::Hsm6.allocatable_slots(Keyring::Foreign), Ok(0..128));
        assert_eq!(
            Model::Zymkey4i.allocatable_slots(Keyring::Device),
            Err(Errno::OPNOTSUPP)
        );
        assert_eq!(Model::Zymkey4i.check_slot(Keyring::Device, 2), Ok(()));
        assert_eq!(
            Model::Zymkey4i.check_slot(Keyring::Device, 3),
            Err(Errno::INVAL)
        );
        assert_eq!(
            Model::Hsm6.check_slot(Keyring::Device, -1),
            Err(Errno::INVAL)
        );
        assert_eq!(Model::Hsm6.check_slot(Keyring::Foreign, 127), Ok(()));
        assert_eq!(
            Model::Hsm6.check_slot(Keyring::Foreign, 128),
            Err(Errno::INVAL)
        );
        assert!(Model::Hsm6.is_factory_slot(11) && !Model::Hsm6.is_factory_slot(12));
    }
}
