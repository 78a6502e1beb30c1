//! PKCS#11 scenarios: the built `libzkpkcs11.so`, backed by the built emulator `libzkemu.so`,
//! each scenario in child processes of its own (see [`crate::child`]).
//!
//! A test describes a [`Scenario`] (emulated model, configuration, environment) and hands its
//! body to [`Scenario::run`]:
//!
//! - in the test process, `run` starts a child: the test binary again with `--exact <this
//!   test>`, the scenario's environment and the marker variable `ZKIOT_TEST_CHILD`, waits for
//!   it, and fails the test with the child's output unless the child exited 0 *and* left its
//!   "step done" mark. It returns the child's output, so a test may check what the module
//!   logged.
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

use std::cell::Cell;
use std::path::{Path, PathBuf};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};

pub use crate::child::Output;
use crate::child::Running;
use crate::ecdsa::der_ec_point;
use crate::raw::Raw;

/// Set in a child process: the number of the step it runs.
const CHILD_MARKER: &str = "ZKIOT_TEST_CHILD";
/// Set in a child process: its index among the processes of a parallel step.
const INSTANCE_VAR: &str = "ZKIOT_TEST_INSTANCE";
/// Set in a child process: the scenario's directory.
const DIR_VAR: &str = "ZKIOT_TEST_DIR";

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
                self.start(step, 0).finish(self.ran(step, 0))
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
                running
                    .into_iter()
                    .enumerate()
                    .map(|(i, child)| child.finish(self.ran(step, i)))
                    .collect()
            }
        }
    }

    /// In a child: runs the body, marks the step done and ends the process.
    fn run_body(&self, step: usize, instance: usize, body: impl FnOnce(&Ctx)) -> ! {
        let ctx = Ctx {
            dir: self.dir.clone(),
            module: crate::built::module(),
            emulator: crate::built::emulator(),
            model: self.model,
        };
        body(&ctx);
        std::fs::write(done_marker(&self.dir, step, instance), "").expect("mark the step done");
        use std::io::Write;
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
        std::process::exit(0);
    }

    /// Whether the child of `step`, `instance` left its "step done" mark.
    fn ran(&self, step: usize, instance: usize) -> impl FnOnce(&Output) -> bool {
        let done = done_marker(&self.dir, step, instance);
        move |_| done.exists()
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
        // Both libraries must be built before any child starts.
        let (_module, emulator) = (crate::built::module(), crate::built::emulator());
        let test_name = crate::child::current_test();
        let mut command = crate::child::command(&test_name);
        command
            .env(CHILD_MARKER, step.to_string())
            .env(INSTANCE_VAR, instance.to_string())
            .env(DIR_VAR, &self.dir)
            .env("ZKIOT_ZKLIB", &emulator)
            .env("ZKIOT_CONF", self.dir.join("zkiot.toml"))
            .env("ZKIOT_EMU_DIR", self.dir.join("emu"))
            .env("ZKIOT_EMU_MODEL", self.model.name())
            .env("ZKIOT_EMU_TRACE", self.dir.join("trace"))
            .env("RUST_BACKTRACE", "1");
        for (key, value) in &self.env {
            command.env(key, value);
        }
        Running::spawn(
            &mut command,
            format!("step {step}.{instance} of {test_name}"),
        )
    }
}

fn done_marker(dir: &Path, step: usize, instance: usize) -> PathBuf {
    dir.join(format!("step-{step}-{instance}.done"))
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
    pub fn raw(&self) -> Raw {
        Raw::load(&self.module)
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
