//! The kinds of device operation, as counted in `counters.json` and named in
//! the trace file.

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
}

impl Operation {
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
