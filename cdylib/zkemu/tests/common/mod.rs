//! Shared by the integration tests: where the freshly built library is, how a
//! scenario runs in a child process of its own, and checks with OpenSSL.
//!
//! The emulator reads its environment at `zkOpen`, and environment variables
//! belong to the whole process, so every scenario runs in a child process: the
//! test binary started again with `--exact <test>` and the scenario's
//! environment, while the parent only prepares and inspects the state directory.

#![allow(dead_code)] // each test binary uses a different part

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey, EcPoint};
use openssl::ecdsa::EcdsaSig;
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::pkey_ctx::PkeyCtx;
use zymkey::Zymkey;

const ROLE_ENV: &str = "ZKEMU_TEST_ROLE";
const ROLE_MARKER: &str = "zkemu-test-role:";

/// `libzkemu.so` of this build. Tests run from `target/<profile>/deps/`, where
/// `cargo test` (re)builds the library; `cargo build` copies it one level up.
pub fn library_path() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let deps = exe
        .parent()
        .expect("test executable in target/<profile>/deps");
    let candidates = [deps.join("libzkemu.so"), deps.join("../libzkemu.so")];
    candidates
        .iter()
        .find(|path| path.exists())
        .unwrap_or_else(|| panic!("libzkemu.so not built: looked for {candidates:?}"))
        .clone()
}

/// The emulator through the `zymkey` binding, as the token uses it.
pub fn device() -> Zymkey {
    Zymkey::load(&library_path()).expect("load libzkemu.so")
}

/// The role this process was started for by [`spawn`] for `test`; `None` in
/// the parent (the normal test run).
pub fn role(test: &str) -> Option<String> {
    let value = std::env::var(ROLE_ENV).ok()?;
    let (for_test, role) = value.split_once('/')?;
    if for_test != test {
        return None;
    }
    // Lets the parent check that the filter really selected this test.
    println!("{ROLE_MARKER}{role}");
    Some(role.to_string())
}

/// Starts this test binary again, running only `test` as `role`, with the
/// emulator variables cleared and then set from `env`.
pub fn spawn(test: &str, role: &str, env: &[(&str, &OsStr)]) -> std::process::Child {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE_ENV, format!("{test}/{role}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("ZKIOT_") {
            command.env_remove(name);
        }
    }
    for (name, value) in env {
        command.env(name, value);
    }
    command.spawn().expect("start child test process")
}

/// Waits for a child started by [`spawn`]; panics with its output unless it
/// ran the scenario and succeeded.
pub fn finish(child: std::process::Child, role: &str) -> Output {
    let output = child.wait_with_output().expect("child test process");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains(&format!("{ROLE_MARKER}{role}")),
        "child scenario {role:?} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status
    );
    output
}

/// Runs `test` as `role` in a child process and waits for it.
pub fn run(test: &str, role: &str, env: &[(&str, &OsStr)]) -> Output {
    finish(spawn(test, role, env), role)
}

/// Lines of the child's stdout that start with `prefix`, with it removed.
pub fn reported(output: &Output, prefix: &str) -> Vec<String> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.strip_prefix(prefix).map(str::to_string))
        .collect()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
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

/// Verifies a raw r‖s signature the way a TLS peer or a CA does: as a DER
/// ECDSA-Sig-Value, with the raw X‖Y public key made into an EC key.
pub fn openssl_verifies(curve: Nid, public_xy: &[u8], digest: &[u8; 32], rs: &[u8; 64]) -> bool {
    assert_eq!(public_xy.len(), 64, "raw X||Y public key");
    let group = EcGroup::from_curve_name(curve).unwrap();
    let mut ctx = openssl::bn::BigNumContext::new().unwrap();
    let sec1 = [&[0x04], public_xy].concat();
    let point = EcPoint::from_bytes(&group, &sec1, &mut ctx).expect("public key on the curve");
    let key = PKey::from_ec_key(EcKey::from_public_key(&group, &point).unwrap()).unwrap();
    let der = EcdsaSig::from_private_components(
        BigNum::from_slice(&rs[..32]).unwrap(),
        BigNum::from_slice(&rs[32..]).unwrap(),
    )
    .unwrap()
    .to_der()
    .unwrap();
    let mut verifier = PkeyCtx::new(&key).unwrap();
    verifier.verify_init().unwrap();
    verifier.verify(digest, &der).unwrap_or(false)
}

/// Whether s is in the upper half of the P-256 group order.
pub fn is_high_s(rs: &[u8; 64]) -> bool {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    let mut order = BigNum::new().unwrap();
    group
        .order(&mut order, &mut openssl::bn::BigNumContext::new().unwrap())
        .unwrap();
    let mut half = BigNum::new().unwrap();
    half.rshift1(&order).unwrap();
    BigNum::from_slice(&rs[32..]).unwrap() > half
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
