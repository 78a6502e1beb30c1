//! What the emulator offers tests and benchmarks: counters, the trace file,
//! fault injection, latency, its announcement, and its state directory.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{device, errno, role, run, stderr, Scratch};
use libc::{EINVAL, EIO};
use zymkey::{KeyType, Slot};

fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

#[test]
fn counters_and_trace_record_every_device_call() {
    const TEST: &str = "counters_and_trace_record_every_device_call";
    if role(TEST).is_some() {
        let zk = device();
        zk.model().unwrap();
        zk.serial_number().unwrap();
        zk.firmware_version().unwrap();
        zk.public_key(Slot::device(0)).unwrap();
        let digest = common::digest("counted");
        let sig = zk.sign_digest(0, &digest).unwrap();
        zk.sign_digest(1, &digest).unwrap();
        assert!(zk.verify_digest(Slot::device(0), &digest, &sig).unwrap());
        zk.random(16).unwrap();
        zk.allocated_slots(false).unwrap();
        zk.time(false).unwrap();
        let slot = zk.generate_key(KeyType::NistP256).unwrap();
        zk.remove_key(Slot::device(slot)).unwrap();
        let public = zk.public_key(Slot::device(0)).unwrap();
        let foreign = zk
            .store_foreign_public_key(KeyType::NistP256, &public)
            .unwrap();
        assert!(zk
            .verify_digest(Slot::foreign(foreign), &digest, &sig)
            .unwrap());
        // A failing call is a device call too; the binding then closes the
        // context and opens a new one for the next call.
        assert_eq!(errno(zk.sign_digest(600, &digest)), EINVAL);
        zk.model().unwrap();
        return;
    }
    let scratch = Scratch::new();
    let trace = scratch.file("trace");
    run(
        TEST,
        "scenario",
        &[
            ("ZKIOT_EMU_DIR", scratch.state().as_os_str()),
            ("ZKIOT_EMU_MODEL", "HSM6".as_ref()),
            ("ZKIOT_EMU_TRACE", trace.as_os_str()),
        ],
    );
    let expected_trace = "\
open -
info -
info -
info -
export_pubkey 0
sign 0
sign 1
verify 0
random -
slot_list -
time -
gen_key -
remove_key 16
export_pubkey 0
store_foreign -
verify foreign0
sign 600
close -
open -
info -
close -
";
    assert_eq!(std::fs::read_to_string(&trace).unwrap(), expected_trace);
    assert_eq!(
        common::counters(&scratch.state()),
        counts(&[
            ("open", 2),
            ("close", 2),
            ("info", 4),
            ("export_pubkey", 2),
            ("sign", 3),
            ("verify", 2),
            ("random", 1),
            ("slot_list", 1),
            ("time", 1),
            ("gen_key", 1),
            ("remove_key", 1),
            ("store_foreign", 1),
        ])
    );
}

#[test]
fn fail_next_fails_exactly_one_call() {
    const TEST: &str = "fail_next_fails_exactly_one_call";
    if role(TEST).is_some() {
        let state = std::path::PathBuf::from(std::env::var_os("ZKIOT_EMU_DIR").unwrap());
        let fail_next = state.join("fail-next");
        let zk = device();
        zk.model().unwrap(); // creates the state
        let digest = common::digest("fault");

        std::fs::write(&fail_next, "gen_key\n").unwrap();
        zk.sign_digest(0, &digest).unwrap(); // another operation: not consumed
        assert!(fail_next.exists());
        assert_eq!(errno(zk.generate_key(KeyType::NistP256)), EIO);
        assert!(!fail_next.exists());
        assert_eq!(zk.generate_key(KeyType::NistP256).unwrap(), 16);

        std::fs::write(&fail_next, "sign").unwrap();
        assert_eq!(errno(zk.sign_digest(0, &digest)), EIO);
        zk.sign_digest(0, &digest).unwrap();
        zk.sign_digest(0, &digest).unwrap();
        assert!(!fail_next.exists());
        return;
    }
    let scratch = Scratch::new();
    run(
        TEST,
        "scenario",
        &[
            ("ZKIOT_EMU_DIR", scratch.state().as_os_str()),
            ("ZKIOT_EMU_MODEL", "HSM6".as_ref()),
        ],
    );
    let counters = common::counters(&scratch.state());
    assert_eq!(
        counters["sign"], 4,
        "the failed call is counted: {counters:?}"
    );
    assert_eq!(counters["gen_key"], 2, "{counters:?}");
}

#[test]
fn latency_delays_every_operation() {
    const TEST: &str = "latency_delays_every_operation";
    const LATENCY_MS: u64 = 200;
    if let Some(role) = role(TEST) {
        let zk = device();
        zk.model().unwrap();
        let digest = common::digest("slow");
        let start = Instant::now();
        for slot in 0..3 {
            zk.sign_digest(slot, &digest).unwrap();
        }
        let elapsed = start.elapsed();
        let three = Duration::from_millis(3 * LATENCY_MS);
        if role == "slow" {
            assert!(elapsed >= three, "{elapsed:?}");
            assert!(elapsed < three * 5, "{elapsed:?}");
        } else {
            assert!(elapsed < three, "{elapsed:?} without latency");
        }
        return;
    }
    let scratch = Scratch::new();
    let state = scratch.state();
    let latency = LATENCY_MS.to_string();
    run(
        TEST,
        "slow",
        &[
            ("ZKIOT_EMU_DIR", state.as_os_str()),
            ("ZKIOT_EMU_LATENCY_MS", latency.as_ref()),
        ],
    );
    run(TEST, "fast", &[("ZKIOT_EMU_DIR", state.as_os_str())]);
}

#[test]
fn bad_latency_is_refused() {
    const TEST: &str = "bad_latency_is_refused";
    if role(TEST).is_some() {
        assert_eq!(errno(device().model()), EINVAL);
        return;
    }
    let scratch = Scratch::new();
    let output = run(
        TEST,
        "scenario",
        &[
            ("ZKIOT_EMU_DIR", scratch.state().as_os_str()),
            ("ZKIOT_EMU_LATENCY_MS", "fast".as_ref()),
        ],
    );
    assert!(
        stderr(&output).contains("ZKIOT_EMU_LATENCY_MS=\"fast\""),
        "{}",
        stderr(&output)
    );
}

#[test]
fn announces_itself_once_per_process() {
    const TEST: &str = "announces_itself_once_per_process";
    if role(TEST).is_some() {
        let zk = device();
        zk.model().unwrap();
        zk.close();
        zk.model().unwrap();
        let another = device();
        another.serial_number().unwrap();
        return;
    }
    let scratch = Scratch::new();
    let state = scratch.state();
    let output = run(
        TEST,
        "scenario",
        &[
            ("ZKIOT_EMU_DIR", state.as_os_str()),
            ("ZKIOT_EMU_MODEL", "HSM6".as_ref()),
        ],
    );
    let banner = format!(
        "zkemu: Zymkey emulator (HSM6 reporting \"HSM6\", 12 factory slots, state {}): \
         keys are plain files, not a security boundary",
        state.display()
    );
    let err = stderr(&output);
    assert_eq!(err.lines().filter(|l| *l == banner).count(), 1, "{err}");
    assert_eq!(common::counters(&state)["open"], 3);
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn state_directory_layout_and_permissions() {
    const TEST: &str = "state_directory_layout_and_permissions";
    if role(TEST).is_some() {
        let zk = device();
        assert_eq!(zk.generate_key(KeyType::Secp256k1).unwrap(), 16);
        let public = zk.public_key(Slot::device(3)).unwrap();
        zk.store_foreign_public_key(KeyType::NistP256, &public)
            .unwrap();
        return;
    }
    let scratch = Scratch::new();
    let state = scratch.state();
    run(
        TEST,
        "scenario",
        &[
            ("ZKIOT_EMU_DIR", state.as_os_str()),
            ("ZKIOT_EMU_MODEL", "HSM6".as_ref()),
        ],
    );
    for dir in [state.clone(), state.join("keys"), state.join("foreign")] {
        assert_eq!(mode(&dir), 0o700, "{}", dir.display());
    }
    let mut names: Vec<String> = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "counters",
            "device.json",
            "foreign",
            "key-generation",
            "keys",
            "lock",
            "perimeter-signals"
        ]
    );
    assert_eq!(mode(&state.join("perimeter-signals")), 0o600);
    let keys: Vec<_> = std::fs::read_dir(state.join("keys"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(keys.len(), 13);
    for key in keys.iter().chain([&state.join("foreign/slot-0.pem")]) {
        assert_eq!(mode(key), 0o600, "{}", key.display());
    }
    let pem = std::fs::read(state.join("keys/slot-16.pem")).unwrap();
    let key = openssl::pkey::PKey::private_key_from_pem(&pem).unwrap();
    assert_eq!(
        key.ec_key().unwrap().group().curve_name(),
        Some(openssl::nid::Nid::SECP256K1)
    );
    let identity: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("device.json")).unwrap()).unwrap();
    assert_eq!(identity["model"], "HSM6");
    assert!(identity["serial"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(identity["firmware"].as_str().is_some_and(|s| !s.is_empty()));
}

#[test]
fn default_state_directory() {
    const TEST: &str = "default_state_directory";
    if role(TEST).is_some() {
        assert_eq!(device().model().unwrap(), "ZYMKEY4i");
        return;
    }
    let scratch = Scratch::new();
    let xdg = scratch.file("xdg");
    run(TEST, "scenario", &[("XDG_STATE_HOME", xdg.as_os_str())]);
    assert!(xdg.join("zkiot-emu/device.json").exists());

    let home = scratch.file("home");
    run(
        TEST,
        "scenario",
        &[("XDG_STATE_HOME", "".as_ref()), ("HOME", home.as_os_str())],
    );
    assert!(home.join(".local/state/zkiot-emu/device.json").exists());
    assert_eq!(mode(&home.join(".local/state/zkiot-emu")), 0o700);
}
