//! A test run again in a child process of its own.
//!
//! The PKCS#11 module is a process-wide singleton that reads its environment at
//! `C_Initialize`, and the emulator reads its own at `zkOpen`, while cargo runs the tests of a
//! file as threads of one process. So a test that needs its own environment starts its test
//! binary again (`std::env::current_exe()`) with `--exact <test>`, the environment it wants,
//! and a marker variable by which the child knows it is the child; the parent waits for it and
//! checks that it both succeeded and ran the body it was started for (a child whose filter
//! matched no test exits 0 too). [`crate::scenario`] and [`crate::role`] are the two ways the
//! tests say what the child runs.

use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A child that runs longer than this is killed: a hang is a failure, not a wait.
pub const CHILD_DEADLINE: Duration = Duration::from_secs(300);

/// What a child process wrote.
#[derive(Debug, Default)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
}

/// The command that runs only `test` of this test binary, in one thread, its output captured.
/// Every variable of the module and the emulator (`ZKIOT_*`, and `RUST_LOG`) is cleared, so
/// that none leaks in from the caller's shell; the caller sets what the child needs.
pub fn command(test: &str) -> Command {
    let mut command = Command::new(std::env::current_exe().expect("path of the test binary"));
    command
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, _) in std::env::vars_os() {
        let name_text = name.to_string_lossy();
        if name_text.starts_with("ZKIOT_") || name_text == "RUST_LOG" {
            command.env_remove(&name);
        }
    }
    command
}

/// The name libtest gave the current test's thread: the test's name, what [`command`] wants.
pub fn current_test() -> String {
    std::thread::current()
        .name()
        .filter(|name| *name != "main")
        .expect("libtest names the test thread after the test")
        .to_owned()
}

/// A child process under way.
pub struct Running {
    what: String,
    pid: u32,
    receiver: mpsc::Receiver<std::io::Result<std::process::Output>>,
}

impl Running {
    /// Starts `command`; `what` names the child in failure messages.
    pub fn spawn(command: &mut Command, what: impl Into<String>) -> Running {
        let what = what.into();
        let child = command
            .spawn()
            .unwrap_or_else(|err| panic!("start {what}: {err}"));
        let pid = child.id();
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = sender.send(child.wait_with_output());
        });
        Running {
            what,
            pid,
            receiver,
        }
    }

    /// Waits for the child (killing it after [`CHILD_DEADLINE`]); fails the test with its
    /// output unless it exited 0 and `ran` finds that it ran its body.
    pub fn finish(self, ran: impl FnOnce(&Output) -> bool) -> Output {
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
        let output = Output { stdout, stderr };
        // A child that matched no test would exit 0 too: make sure the body ran.
        assert!(
            ran(&output),
            "{what} did not run its body (is the test name right?):\n--- stdout ---\n{}\n--- stderr ---\n{}",
            output.stdout,
            output.stderr
        );
        output
    }
}
