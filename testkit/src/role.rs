//! Emulator tests in roles: a test starts its test binary again (see [`crate::child`]) to play a
//! named role with the emulator variables it gives, while the parent only prepares and
//! inspects the state directory. The child finds its role with [`role`] at the top of the test
//! function.
//!
//! ```text
//! #[test]
//! fn a_test() {
//!     if role("a_test").is_some() {
//!         return what_the_child_does();
//!     }
//!     let output = run("a_test", "scenario", &[("ZKIOT_EMU_DIR", state.as_os_str())]);
//!     // check `output` and the state directory
//! }
//! ```

use std::ffi::OsStr;

pub use crate::child::Output;
use crate::child::Running;

const ROLE_ENV: &str = "ZKEMU_TEST_ROLE";
const ROLE_MARKER: &str = "zkemu-test-role:";

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
/// module's and emulator's variables cleared and then set from `env`.
pub fn spawn(test: &str, role: &str, env: &[(&str, &OsStr)]) -> Running {
    let mut command = crate::child::command(test);
    command.env(ROLE_ENV, format!("{test}/{role}"));
    for (name, value) in env {
        command.env(name, value);
    }
    Running::spawn(&mut command, format!("child scenario {role:?} of {test}"))
}

/// Waits for a child started by [`spawn`]; panics with its output unless it
/// ran the scenario and succeeded.
pub fn finish(child: Running, role: &str) -> Output {
    let marker = format!("{ROLE_MARKER}{role}");
    child.finish(|output| output.stdout.contains(&marker))
}

/// Runs `test` as `role` in a child process and waits for it.
pub fn run(test: &str, role: &str, env: &[(&str, &OsStr)]) -> Output {
    finish(spawn(test, role, env), role)
}

/// Lines of the child's stdout that start with `prefix`, with it removed.
pub fn reported(output: &Output, prefix: &str) -> Vec<String> {
    output
        .stdout
        .lines()
        .filter_map(|line| line.strip_prefix(prefix).map(str::to_string))
        .collect()
}

/// What the child wrote to stderr.
pub fn stderr(output: &Output) -> String {
    output.stderr.clone()
}
