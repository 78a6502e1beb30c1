//! Several processes using one state directory at once, as the PKCS#11
//! module, the CLI and tests do: one device, consistent state.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{device, finish, reported, role, spawn, Scratch};
use openssl::nid::Nid;
use zymkey::{KeyType, Slot};

const TEST: &str = "processes_share_one_device";
const WORKERS: usize = 4;
const KEYS_PER_WORKER: usize = 10;
const SIGNATURES_PER_WORKER: usize = 10;

/// Waits for the parent's start signal, so the workers really overlap.
fn wait_for_start() {
    let go = PathBuf::from(std::env::var_os("ZKEMU_TEST_GO").unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !go.exists() {
        assert!(Instant::now() < deadline, "no start signal");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn generate_keys() {
    let zk = device();
    wait_for_start();
    for _ in 0..KEYS_PER_WORKER {
        let slot = zk.generate_key(KeyType::NistP256).unwrap();
        let public = zk.public_key(Slot::device(slot)).unwrap();
        let digest = common::digest(&format!("key {slot}"));
        // Signing right after generation finds the whole key file.
        let sig = zk.sign_digest(slot, &digest).unwrap();
        assert!(common::openssl_verifies(
            Nid::X9_62_PRIME256V1,
            &public,
            &digest,
            &sig
        ));
        println!("slot={slot}");
    }
    println!("serial={}", zk.serial_number().unwrap());
}

fn sign_counting_failures() {
    let zk = device();
    zk.model().unwrap();
    wait_for_start();
    let digest = common::digest("concurrent");
    let mut failures = 0;
    for _ in 0..SIGNATURES_PER_WORKER {
        match zk.sign_digest(0, &digest) {
            Ok(_) => {}
            Err(e) if e.errno() == Some(libc::EIO) => failures += 1,
            Err(e) => panic!("{e}"),
        }
    }
    println!("failures={failures}");
}

/// Runs `role` in every worker at once; returns their outputs.
fn run_workers(scratch: &Scratch, role: &str, trace: &Path) -> Vec<common::Output> {
    let state = scratch.state();
    let go = scratch.file(&format!("go-{role}"));
    let children: Vec<_> = (0..WORKERS)
        .map(|_| {
            spawn(
                TEST,
                role,
                &[
                    ("ZKIOT_EMU_DIR", state.as_os_str()),
                    ("ZKIOT_EMU_MODEL", "HSM6".as_ref()),
                    ("ZKIOT_EMU_TRACE", trace.as_os_str()),
                    ("ZKEMU_TEST_GO", go.as_os_str()),
                ],
            )
        })
        .collect();
    std::fs::write(&go, "").unwrap();
    children
        .into_iter()
        .map(|child| finish(child, role))
        .collect()
}

#[test]
fn processes_share_one_device() {
    match role(TEST).as_deref() {
        Some("generate") => return generate_keys(),
        Some("sign") => return sign_counting_failures(),
        Some(other) => panic!("unknown role {other}"),
        None => {}
    }
    let scratch = Scratch::new();
    let trace = scratch.file("trace");

    // Four processes create the state and generate keys at the same time.
    let outputs = run_workers(&scratch, "generate", &trace);
    let serials: BTreeSet<String> = outputs
        .iter()
        .flat_map(|o| reported(o, "serial="))
        .collect();
    assert_eq!(serials.len(), 1, "one device: {serials:?}");
    let slots: Vec<i32> = outputs
        .iter()
        .flat_map(|o| reported(o, "slot="))
        .map(|s| s.parse().unwrap())
        .collect();
    let distinct: BTreeSet<i32> = slots.iter().copied().collect();
    assert_eq!(slots.len(), WORKERS * KEYS_PER_WORKER);
    assert_eq!(
        distinct,
        (16..16 + (WORKERS * KEYS_PER_WORKER) as i32).collect(),
        "every key got its own slot"
    );
    let key_files = std::fs::read_dir(scratch.state().join("keys"))
        .unwrap()
        .count();
    assert_eq!(key_files, 12 + WORKERS * KEYS_PER_WORKER);

    // Four processes sign at once; one injected fault fails exactly one call.
    std::fs::write(scratch.state().join("fail-next"), "sign").unwrap();
    let outputs = run_workers(&scratch, "sign", &trace);
    let failures: u32 = outputs
        .iter()
        .flat_map(|o| reported(o, "failures="))
        .map(|s| s.parse::<u32>().unwrap())
        .sum();
    assert_eq!(failures, 1);

    let total_signatures = (WORKERS * (KEYS_PER_WORKER + SIGNATURES_PER_WORKER)) as u64;
    let counters = common::counters(&scratch.state());
    assert_eq!(counters["gen_key"], (WORKERS * KEYS_PER_WORKER) as u64);
    assert_eq!(counters["sign"], total_signatures);
    let trace = std::fs::read_to_string(&trace).unwrap();
    let sign_lines = trace.lines().filter(|l| l.starts_with("sign ")).count();
    assert_eq!(sign_lines as u64, total_signatures);
    assert!(
        trace.lines().all(|l| l.split(' ').count() == 2),
        "whole lines only"
    );
}

const THREADS_TEST: &str = "threads_share_one_process";

type OpenFn = unsafe extern "C" fn(*mut *mut std::ffi::c_void) -> i32;
type CloseFn = unsafe extern "C" fn(*mut std::ffi::c_void) -> i32;
type SignFn =
    unsafe extern "C" fn(*mut std::ffi::c_void, *const u8, i32, *mut *mut u8, *mut i32) -> i32;
type GenKeyFn = unsafe extern "C" fn(*mut std::ffi::c_void, i32) -> i32;

/// Threads calling the C ABI directly, each with its own context (the
/// binding would serialise them behind its lock).
fn call_from_threads() {
    let path = common::library_path();
    // SAFETY: loading the emulator runs no foreign initialisers of note.
    let lib = unsafe { libloading::Library::new(&path) }.unwrap();
    // SAFETY: the types are the header's signatures.
    let (open, close, sign, gen_key) = unsafe {
        (
            *lib.get::<OpenFn>(b"zkOpen").unwrap(),
            *lib.get::<CloseFn>(b"zkClose").unwrap(),
            *lib.get::<SignFn>(b"zkGenECDSASigFromDigest").unwrap(),
            *lib.get::<GenKeyFn>(b"zkGenKeyPair").unwrap(),
        )
    };
    std::thread::scope(|scope| {
        for thread in 0..4 {
            scope.spawn(move || {
                let mut ctx = std::ptr::null_mut();
                // SAFETY: every pointer is valid for the call; buffers are freed once.
                unsafe {
                    assert_eq!(open(&mut ctx), 0);
                    for i in 0..25 {
                        let digest = common::digest(&format!("{thread}/{i}"));
                        let mut sig = std::ptr::null_mut();
                        let mut len = 0;
                        assert_eq!(sign(ctx, digest.as_ptr(), 0, &mut sig, &mut len), 0);
                        assert_eq!(len, 64);
                        libc::free(sig.cast());
                        if i % 5 == 0 {
                            assert!(gen_key(ctx, 0) >= 16);
                        }
                    }
                    assert_eq!(close(ctx), 0);
                }
            });
        }
    });
}

#[test]
fn threads_share_one_process() {
    if role(THREADS_TEST).is_some() {
        return call_from_threads();
    }
    let scratch = Scratch::new();
    common::run(
        THREADS_TEST,
        "threads",
        &[
            ("ZKIOT_EMU_DIR", scratch.state().as_os_str()),
            ("ZKIOT_EMU_MODEL", "HSM6".as_ref()),
        ],
    );
    let counters = common::counters(&scratch.state());
    assert_eq!(counters["sign"], 100);
    assert_eq!(counters["gen_key"], 20);
    assert_eq!((counters["open"], counters["close"]), (4, 4));
    let keys = std::fs::read_dir(scratch.state().join("keys"))
        .unwrap()
        .count();
    assert_eq!(keys, 12 + 20);
}

const MIXED_TEST: &str = "processes_and_threads_count_exactly";
const MIXED_PROCESSES: usize = 3;

#[test]
fn processes_and_threads_count_exactly() {
    if role(MIXED_TEST).is_some() {
        wait_for_start();
        return call_from_threads();
    }
    let scratch = Scratch::new();
    let trace = scratch.file("trace");
    let go = scratch.file("go");
    let state = scratch.state();
    let env = [
        ("ZKIOT_EMU_DIR", state.as_os_str()),
        ("ZKIOT_EMU_MODEL", "HSM6".as_ref()),
        ("ZKIOT_EMU_TRACE", trace.as_os_str()),
        ("ZKEMU_TEST_GO", go.as_os_str()),
    ];
    let children: Vec<_> = (0..MIXED_PROCESSES)
        .map(|_| spawn(MIXED_TEST, "threads", &env))
        .collect();
    std::fs::write(&go, "").unwrap();
    for child in children {
        finish(child, "threads");
    }
    let per_process = |n: u64| n * MIXED_PROCESSES as u64;
    let counters = common::counters(&state);
    assert_eq!(counters["sign"], per_process(100), "{counters:?}");
    assert_eq!(counters["gen_key"], per_process(20), "{counters:?}");
    assert_eq!(counters["open"], per_process(4), "{counters:?}");
    assert_eq!(counters["close"], per_process(4), "{counters:?}");
    assert_eq!(counters.len(), 4, "nothing else counted: {counters:?}");
    let trace = std::fs::read_to_string(&trace).unwrap();
    let lines = |operation: &str| {
        trace
            .lines()
            .filter(|l| l.split(' ').next() == Some(operation))
            .count() as u64
    };
    for (operation, count) in &counters {
        assert_eq!(lines(operation), *count, "trace lines of {operation}");
    }
    assert_eq!(trace.lines().count() as u64, counters.values().sum::<u64>());
    let keys = std::fs::read_dir(state.join("keys")).unwrap().count();
    assert_eq!(
        keys,
        12 + MIXED_PROCESSES * 20,
        "every key got its own slot"
    );
}

const REPLACED_TEST: &str = "a_key_replaced_by_another_process_is_used";

#[test]
fn a_key_replaced_by_another_process_is_used() {
    let digest = common::digest("replaced");
    match role(REPLACED_TEST).as_deref() {
        Some("holder") => {
            let zk = device();
            assert_eq!(zk.generate_key(KeyType::NistP256).unwrap(), 16);
            let old = zk.public_key(Slot::device(16)).unwrap();
            let sig = zk.sign_digest(16, &digest).unwrap();
            assert!(common::openssl_verifies(
                Nid::X9_62_PRIME256V1,
                &old,
                &digest,
                &sig
            ));
            // Another process replaces the key in slot 16 meanwhile.
            let dir = std::env::var_os("ZKIOT_EMU_DIR").unwrap();
            let output = common::run(
                REPLACED_TEST,
                "replacer",
                &[("ZKIOT_EMU_DIR", dir.as_os_str())],
            );
            let new = common::hex_decode(&reported(&output, "public=")[0]);
            assert_ne!(new, old);
            assert_eq!(zk.public_key(Slot::device(16)).unwrap(), new);
            let sig = zk.sign_digest(16, &digest).unwrap();
            assert!(common::openssl_verifies(
                Nid::X9_62_PRIME256V1,
                &new,
                &digest,
                &sig
            ));
        }
        Some("replacer") => {
            let zk = device();
            zk.remove_key(Slot::device(16)).unwrap();
            assert_eq!(zk.generate_key(KeyType::NistP256).unwrap(), 16);
            let public = zk.public_key(Slot::device(16)).unwrap();
            println!("public={}", common::hex(&public));
        }
        Some(other) => panic!("unknown role {other}"),
        None => {
            let scratch = Scratch::new();
            common::run(
                REPLACED_TEST,
                "holder",
                &[
                    ("ZKIOT_EMU_DIR", scratch.state().as_os_str()),
                    ("ZKIOT_EMU_MODEL", "HSM6".as_ref()),
                ],
            );
        }
    }
}
