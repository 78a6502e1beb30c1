//! `tests/c/zk_abi_check.c`: a C program written against `zk_app_utils.h`,
//! linked with `-lzkemu`, that checks the ABI conventions from the C side.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::Scratch;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The C compiler: `$CC`, else `cc`; `None` if there is none.
fn c_compiler() -> Option<String> {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let works = Command::new(&cc)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    works.then_some(cc)
}

/// Compiles the check program with `extra` flags; `false` if the compiler
/// rejects the flags themselves (checked by the caller for required flags).
fn compile(cc: &str, output: &Path, extra: &[&str]) -> bool {
    let root = workspace_root();
    let lib_dir = common::library_path().parent().unwrap().to_path_buf();
    let status = Command::new(cc)
        .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"])
        .args(extra)
        .arg("-I")
        .arg(root.join("include"))
        .arg(root.join("tests/c/zk_abi_check.c"))
        .arg("-L")
        .arg(&lib_dir)
        .arg("-lzkemu")
        .arg("-o")
        .arg(output)
        .status()
        .expect("run the C compiler");
    status.success()
}

fn run_check(program: &Path, state: &Path, model: &str) -> String {
    let lib_dir = common::library_path().parent().unwrap().to_path_buf();
    let output = Command::new(program)
        .env("LD_LIBRARY_PATH", &lib_dir)
        .env("ZKIOT_EMU_DIR", state)
        .env("ZKIOT_EMU_MODEL", model)
        .env_remove("ZKIOT_EMU_TRACE")
        .env_remove("ZKIOT_EMU_LATENCY_MS")
        .output()
        .expect("run zk_abi_check");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success() && stdout.starts_with("OK "),
        "zk_abi_check ({model}) failed: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn c_program_uses_the_abi() {
    let Some(cc) = c_compiler() else {
        eprintln!("SKIPPED c_program_uses_the_abi: no C compiler (set CC or install cc)");
        return;
    };
    let scratch = Scratch::new();
    let program = scratch.file("zk_abi_check");
    assert!(
        compile(&cc, &program, &[]),
        "zk_abi_check.c does not compile"
    );

    for model in ["ZYMKEY4i", "HSM6"] {
        let state = scratch.file(model);
        let stdout = run_check(&program, &state, model);
        assert!(stdout.contains(&format!("model={model} ")), "{stdout}");
        let counters = common::counters(&state);
        // Two good signatures and one refused for its slot; the NULL digest
        // never reached the device.
        assert_eq!(counters["sign"], 3, "{counters:?}");
        assert_eq!(counters["verify"], 4, "{counters:?}");
        assert_eq!(counters["close"], 1, "{counters:?}");
        assert_eq!(counters["perimeter"], 6, "{counters:?}");
    }
}

/// The same program under AddressSanitizer: every buffer the library hands out
/// is malloc'd and freed exactly once by the caller's free(), with no leak.
#[test]
fn c_program_frees_every_buffer_under_asan() {
    let Some(cc) = c_compiler() else {
        eprintln!("SKIPPED c_program_frees_every_buffer_under_asan: no C compiler");
        return;
    };
    let scratch = Scratch::new();
    let program = scratch.file("zk_abi_check_asan");
    if !compile(&cc, &program, &["-fsanitize=address", "-g"]) {
        eprintln!("SKIPPED c_program_frees_every_buffer_under_asan: {cc} has no AddressSanitizer");
        return;
    }
    run_check(&program, &scratch.file("state"), "HSM6");
}
