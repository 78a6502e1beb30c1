//! Shared harness of the integration tests: every test loads the built `libzkpkcs11.so`, backed
//! by the emulator `libzkemu.so`, and checks it against the PKCS#11 specification.
//!
//! # One process per scenario
//!
//! A PKCS#11 module is a process-wide singleton that reads its environment at `C_Initialize`,
//! while cargo runs the tests of a file as threads of one process. So each test describes a
//! [`Scenario`] (emulated model, configuration, environment) and hands its body to
//! [`Scenario::run`]:
//!
//! - in the test process, `run` starts a child: it re-executes the test binary
//!   (`std::env::current_exe()`) with `--exact <this test> --nocapture`, the scenario's
//!   environment and the marker variable `ZKIOT_TEST_CHILD`, waits for it, and fails the test
//!   with the child's output unless the child exited 0 *and* left its "step done" mark (a
//!   child that matched no test would exit 0 too). It returns the child's output, so a test
//!   may check what the module logged.
//! - in the child, the same test function runs again (libtest names the test thread after the
//!   test, which is how the parent knows what to re-run); `run` finds the marker, runs the
//!   body, leaves the mark and ends the process with status 0. A failed assertion panics and
//!   libtest exits 101.
//!
//! A scenario may run several steps (several `run` calls, each its own process, one after the
//! other, sharing the scenario's directory): that is how a test checks what a second process
//! sees. [`Scenario::run_parallel`] runs one step in several processes at once. A child runs
//! the test function from the top and executes only the step whose number it was given, so
//! code between two `run` calls runs in every process: keep checks of a step's output after
//! the last step, and use [`Scenario::prepare`] for set-up that must happen once.
//!
//! Each scenario has a fresh directory holding the emulator's state (`ZKIOT_EMU_DIR`), the
//! emulator's trace of device operations (`ZKIOT_EMU_TRACE`), the module's configuration file
//! (`ZKIOT_CONF`) and its token store, so scenarios never share a device or a store.
#![allow(dead_code)]

pub mod raw;

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use cryptoki::slot::Slot;
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey, EcPoint};
use openssl::ecdsa::EcdsaSig;
use openssl::nid::Nid;

/// Set in a child process: the number of the step it runs.
const CHILD_MARKER: &str = "ZKIOT_TEST_CHILD";
/// Set in a child process: its index among the processes of a parallel step.
const INSTANCE_VAR: &str = "ZKIOT_TEST_INSTANCE";
/// Set in a child process: the scenario's directory.
const DIR_VAR: &str = "ZKIOT_TEST_DIR";
/// A child that runs longer than this is killed: a hang is a failure, not a wait.
const CHILD_DEADLINE: Duration = Duration::from_secs(300);

/// Variables of the module and the emulator that must not leak in from the caller's shell.
const MODULE_VARS: &[&str] = &[
    "ZKIOT_ZKLIB",
    "ZKIOT_CONF",
    "ZKIOT_EMU_DIR",
    "ZKIOT_EMU_MODEL",
    "ZKIOT_EMU_LATENCY_MS",
    "ZKIOT_EMU_TRACE",
    "ZKIOT_LOG",
    "RUST_LOG",
];

/// DER of the P-256 curve OID, the value of `CKA_EC_PARAMS`.
pub const P256_PARAMS: [u8; 10] = [0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
/// Length of a raw P-256 signature r‖s.
pub const SIGNATURE_LEN: usize = 64;

/// The emulated device model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Model {
    /// Factory keys in slots 0, 1, 2; no key generation.
    Zymkey4i,
    /// Factory keys in slots 0–11; key generation from slot 16.
    Hsm6,
}

impl Model {
    pub fn name(self) -> &'static str {
        match self {
            Model::Zymkey4i => "ZYMKEY4i",
            Model::Hsm6 => "HSM6",
        }
    }

    /// Device slots holding a factory key.
    pub fn factory_slots(self) -> std::ops::Range<u16> {
        match self {
            Model::Zymkey4i => 0..3,
            Model::Hsm6 => 0..12,
        }
    }
}

/// What a child process wrote.
#[derive(Debug, Default)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
}

/// The built libraries under test, found beside the test binary.
pub struct Built {
    pub module: PathBuf,
    pub emulator: PathBuf,
}

/// Locates `libzkpkcs11.so` and `libzkemu.so` in the target directory of this test binary
/// (`target/<profile>/deps/<test>` → `target/<profile>/`).
pub fn built() -> Built {
    let exe = std::env::current_exe().expect("path of the test binary");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps");
    let module = profile_dir.join("libzkpkcs11.so");
    let emulator = profile_dir.join("libzkemu.so");
    assert!(
        module.exists(),
        "{} is missing: build it with `cargo build -p zkpkcs11` (or `cargo build --workspace`)",
        module.display()
    );
    assert!(
        emulator.exists(),
        "{} is missing: the emulator is not built by `cargo test -p zkpkcs11`; run `cargo build --workspace` first",
        emulator.display()
    );
    Built { module, emulator }
}

/// A test's set-up: the emulated device, the module's configuration and environment.
pub struct Scenario {
    model: Model,
    config: String,
    env: Vec<(String, String)>,
    dir: PathBuf,
    /// Owns the directory in the test process; `None` in a child.
    _tempdir: Option<tempfile::TempDir>,
    /// In a child: the step to run.
    child_step: Option<usize>,
    next_step: Cell<usize>,
}

impl Scenario {
    pub fn new(model: Model) -> Scenario {
        match std::env::var(CHILD_MARKER) {
            Ok(step) => Scenario {
                model,
                config: String::new(),
                env: Vec::new(),
                dir: PathBuf::from(std::env::var(DIR_VAR).expect("child knows its directory")),
                _tempdir: None,
                child_step: Some(step.parse().expect("step number")),
                next_step: Cell::new(0),
            },
            Err(_) => {
                let tempdir = tempfile::Builder::new()
                    .prefix("zkpkcs11-test-")
                    .tempdir()
                    .expect("scenario directory");
                let dir = tempdir.path().to_path_buf();
                std::fs::create_dir(dir.join("emu")).expect("emulator directory");
                Scenario {
                    model,
                    config: String::new(),
                    env: Vec::new(),
                    dir,
                    _tempdir: Some(tempdir),
                    child_step: None,
                    next_step: Cell::new(0),
                }
            }
        }
    }

    pub fn zymkey4i() -> Scenario {
        Scenario::new(Model::Zymkey4i)
    }

    pub fn hsm6() -> Scenario {
        Scenario::new(Model::Hsm6)
    }

    /// Adds lines to the module's configuration file (which always names the scenario's store).
    pub fn config(mut self, lines: &str) -> Scenario {
        self.config.push_str(lines);
        self.config.push('\n');
        self
    }

    /// Sets (or overrides) an environment variable of the child.
    pub fn env(mut self, key: &str, value: impl AsRef<std::ffi::OsStr>) -> Scenario {
        let value = value.as_ref().to_string_lossy().into_owned();
        self.env.push((key.to_owned(), value));
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The token store the configuration names.
    pub fn store_path(&self) -> PathBuf {
        self.dir.join("store.sqlite3")
    }

    /// Runs `prepare` once, in the test process only.
    pub fn prepare(&self, prepare: impl FnOnce(&Path)) {
        if self.child_step.is_none() {
            prepare(&self.dir);
        }
    }

    /// Runs `body` in a child process set up as this scenario describes (see the module
    /// documentation). In the test process, returns what the child wrote once it succeeded.
    pub fn run(&self, body: impl FnOnce(&Ctx)) -> Output {
        let step = self.next_step.get();
        self.next_step.set(step + 1);
        match self.child_step {
            Some(wanted) if wanted == step => self.run_body(step, 0, |ctx| body(ctx)),
            Some(_) => Output::default(),
            None => {
                self.write_config();
                self.start(step, 0).finish()
            }
        }
    }

    /// Runs `body` in `count` child processes at once (one step); each gets its index.
    pub fn run_parallel(&self, count: usize, body: impl Fn(&Ctx, usize)) -> Vec<Output> {
        let step = self.next_step.get();
        self.next_step.set(step + 1);
        match self.child_step {
            Some(wanted) if wanted == step => {
                let instance = std::env::var(INSTANCE_VAR)
                    .expect("instance number")
                    .parse()
                    .expect("instance number");
                self.run_body(step, instance, |ctx| body(ctx, instance))
            }
            Some(_) => Vec::new(),
            None => {
                self.write_config();
                let running: Vec<Running> = (0..count).map(|i| self.start(step, i)).collect();
                running.into_iter().map(Running::finish).collect()
            }
        }
    }

    /// In a child: runs the body, marks the step done and ends the process.
    fn run_body(&self, step: usize, instance: usize, body: impl FnOnce(&Ctx)) -> ! {
        let built = built();
        let ctx = Ctx {
            dir: self.dir.clone(),
            module: built.module,
            emulator: built.emulator,
            model: self.model,
        };
        body(&ctx);
        std::fs::write(done_marker(&self.dir, step, instance), "").expect("mark the step done");
        use std::io::Write;
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
        std::process::exit(0);
    }

    /// Writes the module's configuration file, atomically: a child that read a half-written
    /// file would fall back to the system's default store.
    fn write_config(&self) {
        let config = format!(
            "store = {}\n{}",
            toml_string(&self.store_path()),
            self.config
        );
        let partial = self.dir.join("zkiot.toml.partial");
        std::fs::write(&partial, config).expect("write the module configuration");
        std::fs::rename(&partial, self.dir.join("zkiot.toml"))
            .expect("install the module configuration");
    }

    fn start(&self, step: usize, instance: usize) -> Running {
        let built = built();
        let test_name = std::thread::current()
            .name()
            .filter(|name| *name != "main")
            .expect("libtest names the test thread after the test")
            .to_owned();
        let conf = self.dir.join("zkiot.toml");

        let mut command = Command::new(std::env::current_exe().expect("test binary"));
        command
            .args(["--exact", &test_name, "--nocapture", "--test-threads=1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for var in MODULE_VARS {
            command.env_remove(var);
        }
        command
            .env(CHILD_MARKER, step.to_string())
            .env(INSTANCE_VAR, instance.to_string())
            .env(DIR_VAR, &self.dir)
            .env("ZKIOT_ZKLIB", &built.emulator)
            .env("ZKIOT_CONF", &conf)
            .env("ZKIOT_EMU_DIR", self.dir.join("emu"))
            .env("ZKIOT_EMU_MODEL", self.model.name())
            .env("ZKIOT_EMU_TRACE", self.dir.join("trace"))
            .env("RUST_BACKTRACE", "1");
        for (key, value) in &self.env {
            command.env(key, value);
        }

        let child = command.spawn().expect("start the scenario's child process");
        let pid = child.id();
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = sender.send(child.wait_with_output());
        });
        Running {
            what: format!("step {step}.{instance} of {test_name}"),
            done: done_marker(&self.dir, step, instance),
            pid,
            receiver,
        }
    }
}

fn done_marker(dir: &Path, step: usize, instance: usize) -> PathBuf {
    dir.join(format!("step-{step}-{instance}.done"))
}

/// A child process under way.
struct Running {
    what: String,
    done: PathBuf,
    pid: u32,
    receiver: mpsc::Receiver<std::io::Result<std::process::Output>>,
}

impl Running {
    /// Waits for the child; fails the test with its output unless it ran its body to the end.
    fn finish(self) -> Output {
        let what = &self.what;
        let output = match self.receiver.recv_timeout(CHILD_DEADLINE) {
            Ok(output) => output.expect("collect the child's output"),
            Err(_) => {
                // SAFETY: `pid` is our own child, which has not been reaped yet.
                unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGKILL) };
                panic!("{what} did not finish within {CHILD_DEADLINE:?}");
            }
        };
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(
            output.status.success(),
            "{what} failed ({}):\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
            output.status
        );
        // A child that matched no test would exit 0 too: make sure the body ran to its end.
        assert!(
            self.done.exists(),
            "{what} did not run its body (is the test name right?):\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
        );
        Output { stdout, stderr }
    }
}

fn toml_string(path: &Path) -> String {
    let text = path.to_str().expect("UTF-8 path");
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// What a scenario's body works with, in the child process.
pub struct Ctx {
    pub dir: PathBuf,
    pub module: PathBuf,
    pub emulator: PathBuf,
    pub model: Model,
}

impl Ctx {
    pub fn store_path(&self) -> PathBuf {
        self.dir.join("store.sqlite3")
    }

    pub fn emu_dir(&self) -> PathBuf {
        self.dir.join("emu")
    }

    /// Device operations recorded so far by the emulator's trace, all kinds.
    pub fn device_ops(&self) -> Vec<String> {
        match std::fs::read_to_string(self.dir.join("trace")) {
            Ok(text) => text.lines().map(str::to_owned).collect(),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(err) => panic!("read the emulator's trace: {err}"),
        }
    }

    /// Device signatures so far (trace lines `sign <slot>`).
    pub fn device_signatures(&self) -> usize {
        self.device_ops()
            .iter()
            .filter(|line| line.split_whitespace().next() == Some("sign"))
            .count()
    }

    /// Makes exactly the next device signature fail.
    pub fn fail_next_signature(&self) {
        std::fs::write(self.emu_dir().join("fail-next"), "sign").expect("write fail-next");
    }

    /// Loads the module without initialising it.
    pub fn load(&self) -> Pkcs11 {
        Pkcs11::new(&self.module).expect("load libzkpkcs11.so")
    }

    /// Loads and initialises the module as libp11 does (`CKF_OS_LOCKING_OK`).
    pub fn init(&self) -> Pkcs11 {
        let pkcs11 = self.load();
        pkcs11
            .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .expect("C_Initialize");
        pkcs11
    }

    /// The module's raw function list, for the calls the safe API cannot express.
    pub fn raw(&self) -> raw::Raw {
        raw::Raw::load(&self.module)
    }

    /// The emulated device, opened directly through the `zymkey` binding: the reference the
    /// module's answers are checked against.
    pub fn device(&self) -> zymkey::Zymkey {
        zymkey::Zymkey::load(&self.emulator).expect("load the emulator directly")
    }

    /// The public key of a device slot as `CKA_EC_POINT` must carry it: `04 41 04‖X‖Y`.
    pub fn device_ec_point(&self, slot: u16) -> Vec<u8> {
        let xy = self
            .device()
            .public_key(zymkey::Slot::device(i32::from(slot)))
            .expect("public key from the device");
        assert_eq!(xy.len(), 64, "raw X‖Y from the device");
        der_ec_point(&xy)
    }
}

/// `CKA_EC_POINT` of a raw X‖Y: a DER OCTET STRING around the uncompressed point.
pub fn der_ec_point(xy: &[u8]) -> Vec<u8> {
    let mut point = vec![0x04, 0x41, 0x04];
    point.extend_from_slice(xy);
    point
}

/// `CKA_ID` of device slot `n`: two bytes, big-endian.
pub fn slot_id(n: u16) -> Vec<u8> {
    n.to_be_bytes().to_vec()
}

/// `CKA_LABEL` of device slot `n`.
pub fn slot_label(n: u16) -> Vec<u8> {
    format!("slot{n}").into_bytes()
}

/// The one slot with a token.
pub fn token_slot(pkcs11: &Pkcs11) -> Slot {
    let slots = pkcs11.get_slots_with_token().expect("C_GetSlotList(TRUE)");
    assert_eq!(slots.len(), 1, "exactly one slot with a token: {slots:?}");
    slots[0]
}

pub fn open_session(pkcs11: &Pkcs11) -> Session {
    pkcs11
        .open_ro_session(token_slot(pkcs11))
        .expect("C_OpenSession")
}

pub fn open_rw_session(pkcs11: &Pkcs11) -> Session {
    pkcs11
        .open_rw_session(token_slot(pkcs11))
        .expect("C_OpenSession(RW)")
}

/// The CKR of a failed call made through the safe API.
pub fn rv(err: Error) -> RvError {
    match err {
        Error::Pkcs11(rv, _) => rv,
        other => panic!("expected a PKCS#11 return value, got {other:?}"),
    }
}

pub fn find(session: &Session, template: &[Attribute]) -> Vec<ObjectHandle> {
    session
        .find_objects(template)
        .unwrap_or_else(|err| panic!("C_FindObjects({template:?}): {err}"))
}

/// The key object of `class` for device slot `slot`, found by class and `CKA_ID`.
pub fn key(session: &Session, class: ObjectClass, slot: u16) -> ObjectHandle {
    let found = find(
        session,
        &[Attribute::Class(class), Attribute::Id(slot_id(slot))],
    );
    assert_eq!(found.len(), 1, "one {class} object for slot {slot}");
    found[0]
}

pub fn private_key(session: &Session, slot: u16) -> ObjectHandle {
    key(session, ObjectClass::PRIVATE_KEY, slot)
}

pub fn public_key(session: &Session, slot: u16) -> ObjectHandle {
    key(session, ObjectClass::PUBLIC_KEY, slot)
}

/// Reads one attribute, which must be present.
pub fn attribute(session: &Session, object: ObjectHandle, kind: AttributeType) -> Attribute {
    let mut attributes = session
        .get_attributes(object, &[kind])
        .unwrap_or_else(|err| panic!("C_GetAttributeValue({kind}): {err}"));
    assert_eq!(attributes.len(), 1, "{kind} answered");
    attributes.remove(0)
}

pub fn bytes_attribute(session: &Session, object: ObjectHandle, kind: AttributeType) -> Vec<u8> {
    match attribute(session, object, kind) {
        Attribute::EcPoint(v)
        | Attribute::EcParams(v)
        | Attribute::Id(v)
        | Attribute::Label(v)
        | Attribute::Value(v)
        | Attribute::Subject(v)
        | Attribute::Application(v) => v,
        other => panic!("{kind} is not a byte string: {other:?}"),
    }
}

pub fn ec_point(session: &Session, object: ObjectHandle) -> Vec<u8> {
    bytes_attribute(session, object, AttributeType::EcPoint)
}

pub fn bool_attribute(session: &Session, object: ObjectHandle, kind: AttributeType) -> bool {
    match attribute(session, object, kind) {
        Attribute::Sign(v)
        | Attribute::Verify(v)
        | Attribute::Sensitive(v)
        | Attribute::Extractable(v)
        | Attribute::AlwaysAuthenticate(v)
        | Attribute::Token(v)
        | Attribute::Private(v)
        | Attribute::Destroyable(v)
        | Attribute::Modifiable(v) => v,
        other => panic!("{kind} is not a boolean: {other:?}"),
    }
}

/// The 32-byte digest the device signs for a `CKM_ECDSA` input: shorter input is left-padded
/// with zeros, longer input keeps its leftmost 32 bytes.
pub fn ecdsa_digest(input: &[u8]) -> [u8; 32] {
    let mut digest = [0u8; 32];
    if input.len() >= 32 {
        digest.copy_from_slice(&input[..32]);
    } else {
        digest[32 - input.len()..].copy_from_slice(input);
    }
    digest
}

/// Checks a raw r‖s P-256 signature of `digest` with OpenSSL against a `CKA_EC_POINT` value.
pub fn verifies(ec_point: &[u8], digest: &[u8], signature: &[u8]) -> bool {
    assert_eq!(signature.len(), SIGNATURE_LEN, "raw r‖s signature length");
    assert_eq!(
        &ec_point[..3],
        &[0x04, 0x41, 0x04],
        "DER OCTET STRING of an uncompressed point"
    );
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("P-256");
    let mut bn_ctx = openssl::bn::BigNumContext::new().expect("BN_CTX");
    let point = EcPoint::from_bytes(&group, &ec_point[2..], &mut bn_ctx).expect("point on P-256");
    let key = EcKey::from_public_key(&group, &point).expect("public key");
    let r = BigNum::from_slice(&signature[..32]).expect("r");
    let s = BigNum::from_slice(&signature[32..]).expect("s");
    let sig = EcdsaSig::from_private_components(r, s).expect("ECDSA signature");
    sig.verify(digest, &key).expect("ECDSA_do_verify")
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    openssl::sha::sha256(data)
}

/// Signs `data` with `CKM_ECDSA` and the private key of `slot`, through the safe API.
pub fn sign_ecdsa(session: &Session, slot: u16, data: &[u8]) -> Vec<u8> {
    let key = private_key(session, slot);
    session
        .sign(&Mechanism::Ecdsa, key, data)
        .unwrap_or_else(|err| panic!("C_Sign(CKM_ECDSA): {err}"))
}
