//! The kinds of device operation, as counted in `counters` and named in the
//! trace file.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// `zkOpen`.
    Open,
    /// `zkClose`.
    Close,
    /// `zkGetRandBytes`.
    Random,
    /// `zkGenECDSASigFromDigest`, `zkGenECDSASigFromDigestWithRecID`.
    Sign,
    /// `zkVerifyECDSASigFromDigest`, `zkVerifyECDSASigFromDigestWithForeignKeySlot`.
    Verify,
    /// `zkExportPubKey`, `zkGetECDSAPubKey`.
    ExportPubKey,
    /// `zkGetAllocSlotsList`.
    SlotList,
    /// `zkGenKeyPair`.
    GenKey,
    /// `zkRemoveKey`.
    RemoveKey,
    /// `zkStoreForeignPubKey`.
    StoreForeign,
    /// `zkGetModelNumberString`, `zkGetSerialNumberString`, `zkGetFirmwareVersionString`.
    Info,
    /// `zkGetTime`.
    Time,
    /// `zkSetTapSensitivity`, `zkWaitForTap`, `zkGetAccelerometerData`.
    Accelerometer,
    /// `zkSetPerimeterEventAction`, `zkGetPerimeterDetectInfo`,
    /// `zkClearPerimeterDetectEvents`, `zkWaitForPerimeterEvent` and the
    /// three `zkSetDigitalPerimeterDetect…` settings.
    Perimeter,
    /// `zkLockBinding`, `zkGetCurrentBindingInfo`.
    Binding,
}

impl Operation {
    /// Every operation, in the order of the counters file. New operations
    /// go last: a counters file made with fewer names is then extended with
    /// its counts in place (see [`crate::counters`]).
    pub const ALL: [Operation; 15] = [
        Operation::Open,
        Operation::Close,
        Operation::Random,
        Operation::Sign,
        Operation::Verify,
        Operation::ExportPubKey,
        Operation::SlotList,
        Operation::GenKey,
        Operation::RemoveKey,
        Operation::StoreForeign,
        Operation::Info,
        Operation::Time,
        Operation::Accelerometer,
        Operation::Perimeter,
        Operation::Binding,
    ];

    /// Whether the operation is a round trip to the secure element, which
    /// the latency stands for; opening and closing a context only talk to
    /// Zymbit's daemon.
    pub fn reaches_secure_element(self) -> bool {
        !matches!(self, Operation::Open | Operation::Close)
    }

    /// Position in [`Operation::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn name(self) -> &'static str {
        match self {
            Operation::Open => "open",
            Operation::Close => "close",
            Operation::Random => "random",
            Operation::Sign => "sign",
            Operation::Verify => "verify",
            Operation::ExportPubKey => "export_pubkey",
            Operation::SlotList => "slot_list",
            Operation::GenKey => "gen_key",
            Operation::RemoveKey => "remove_key",
            Operation::StoreForeign => "store_foreign",
            Operation::Info => "info",
            Operation::Time => "time",
            Operation::Accelerometer => "accelerometer",
            Operation::Perimeter => "perimeter",
            Operation::Binding => "binding",
        }
    }
}

/// The slot an operation is about, as written in the trace: `N` for device
/// slot N, `foreignN` for foreign slot N, `-` for none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    None,
    Device(i32),
    Foreign(i32),
}

impl Target {
    pub fn slot(slot: i32, foreign: bool) -> Target {
        if foreign {
            Target::Foreign(slot)
        } else {
            Target::Device(slot)
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::None => f.write_str("-"),
            Target::Device(n) => write!(f, "{n}"),
            Target::Foreign(n) => write!(f, "foreign{n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_is_the_position_in_all() {
        for (i, op) in Operation::ALL.into_iter().enumerate() {
            assert_eq!(op.index(), i, "{}", op.name());
        }
    }
}
