//! Shared by the emulator's integration tests: the emulator through the `zymkey` binding, its
//! counters, and small helpers. The emulator reads its environment at `zkOpen`, and
//! environment variables belong to the whole process, so every scenario runs in a child
//! process in a role of the test kit (`testkit::role`), while the parent only prepares and
//! inspects the state directory.

#![allow(dead_code, unused_imports)] // each test binary uses a different part

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use zymkey::Zymkey;

pub use testkit::built::emulator as library_path;
pub use testkit::ecdsa::{is_high_s, openssl_verifies};
pub use testkit::role::{finish, reported, role, run, spawn, stderr, Output};

/// The emulator through the `zymkey` binding, as the token uses it.
pub fn device() -> Zymkey {
    Zymkey::load(&library_path()).expect("load libzkemu.so")
}

/// The counters the emulator keeps in `dir`, by name; zero counts left out.
/// The file's header line names the counts; they follow from byte 256.
pub fn counters(dir: &Path) -> BTreeMap<String, u64> {
    const FIRST_COUNT: usize = 256;
    let bytes = std::fs::read(dir.join("counters")).expect("counters file");
    let header_end = bytes.iter().position(|b| *b == b'\n').expect("header line");
    let header = std::str::from_utf8(&bytes[..header_end]).expect("text header");
    let names = header
        .strip_prefix("zkemu-counters 1 ")
        .unwrap_or_else(|| panic!("unknown counters header {header:?}"));
    names
        .split(' ')
        .enumerate()
        .map(|(i, name)| {
            let at = FIRST_COUNT + 8 * i;
            let count = u64::from_ne_bytes(bytes[at..at + 8].try_into().expect("whole counts"));
            (name.to_string(), count)
        })
        .filter(|(_, count)| *count > 0)
        .collect()
}

/// The positive errno of a failed device call.
pub fn errno<T: std::fmt::Debug>(result: zymkey::Result<T>) -> i32 {
    let error = result.expect_err("the call should fail");
    error
        .errno()
        .unwrap_or_else(|| panic!("not a device error: {error:?}"))
}

pub fn digest(text: &str) -> [u8; 32] {
    openssl::sha::sha256(text.as_bytes())
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn hex_decode(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

/// A fresh directory holding the state directory `emu` (not yet created) and
/// room for other files (trace).
pub struct Scratch {
    pub root: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Scratch {
        Scratch {
            root: tempfile::tempdir().unwrap(),
        }
    }
    pub fn state(&self) -> PathBuf {
        self.root.path().join("emu")
    }
    pub fn file(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }
}
