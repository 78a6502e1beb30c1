//! The perimeter (tamper) circuits and production mode through the `zymkey`
//! binding, as a program on the device reaches them: breaches latched across
//! processes until cleared, waits and their timeouts, self-destruct in
//! production mode only, what each profile offers, and the counters, trace
//! and fault injection of the perimeter calls.

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{device, errno, finish, role, run, spawn, Scratch};
use libc::{EINVAL, EIO, EOPNOTSUPP, EPERM};
use zymkey::{BindingInfo, PerimeterAction, PerimeterEvents};

const NOTIFY: PerimeterAction = PerimeterAction::NOTIFY;
const SELF_DESTRUCT: PerimeterAction = PerimeterAction::SELF_DESTRUCT;

fn state_dir() -> PathBuf {
    PathBuf::from(std::env::var_os("ZKIOT_EMU_DIR").expect("ZKIOT_EMU_DIR"))
}

/// Injects a breach of `channels` dated `time` (epoch seconds), as a test
/// does: one write of `perimeter-next`, then its modification time.
fn inject(state: &Path, channels: &str, time: u32) {
    let path = state.join("perimeter-next");
    std::fs::write(&path, channels).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(UNIX_EPOCH + Duration::from_secs(time.into()))
        .unwrap();
}

fn events(first_breach: &[Option<u32>]) -> PerimeterEvents {
    PerimeterEvents {
        first_breach: first_breach.to_vec(),
    }
}

fn env<'a>(state: &'a Path, model: &'a str) -> [(&'static str, &'a OsStr); 2] {
    [
        ("ZKIOT_EMU_DIR", state.as_os_str()),
        ("ZKIOT_EMU_MODEL", model.as_ref()),
    ]
}

#[test]
fn breaches_are_latched_across_processes_until_cleared() {
    const TEST: &str = "breaches_are_latched_across_processes_until_cleared";
    if let Some(role) = role(TEST) {
        let zk = device();
        match role.as_str() {
            "fresh" => {
                assert_eq!(zk.perimeter_events().unwrap(), events(&[None, None]));
                zk.set_perimeter_event_action(1, NOTIFY).unwrap();
            }
            // The breach happened while no process ran: the first device
            // operation of the next one applies it, with its own time.
            "latched" => {
                assert_eq!(
                    zk.perimeter_events().unwrap(),
                    events(&[None, Some(1_700_000_100)])
                );
                // A later breach leaves a latched channel as it was.
                inject(&state_dir(), "0 1", 1_700_000_200);
                assert_eq!(
                    zk.perimeter_events().unwrap(),
                    events(&[Some(1_700_000_200), Some(1_700_000_100)])
                );
            }
            "clear" => {
                assert!(zk.perimeter_events().unwrap().any());
                zk.clear_perimeter_events().unwrap();
                assert_eq!(zk.perimeter_events().unwrap(), events(&[None, None]));
            }
            "cleared" => {
                assert_eq!(zk.perimeter_events().unwrap(), events(&[None, None]));
                // Rearmed: latched again.
                inject(&state_dir(), "1", 1_700_000_300);
                assert_eq!(
                    zk.perimeter_events().unwrap(),
                    events(&[None, Some(1_700_000_300)])
                );
            }
            other => panic!("role {other}"),
        }
        return;
    }
    let scratch = Scratch::new();
    let state = scratch.state();
    let env = env(&state, "HSM6");
    run(TEST, "fresh", &env);
    inject(&state, "1", 1_700_000_100);
    run(TEST, "latched", &env);
    assert!(!state.join("perimeter-next").exists());
    run(TEST, "clear", &env);
    run(TEST, "cleared", &env);
    let tamper: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("tamper.json")).unwrap()).unwrap();
    assert_eq!(
        tamper["first_breach"],
        serde_json::json!([0, 1_700_000_300])
    );
    assert_eq!(tamper["actions"], serde_json::json!([0, 1]));
}

#[test]
fn a_wait_returns_for_a_breach_on_a_notify_channel_or_times_out() {
    const TEST: &str = "a_wait_returns_for_a_breach_on_a_notify_channel_or_times_out";
    if let Some(role) = role(TEST) {
        let zk = device();
        match role.as_str() {
            "timeouts" => {
                zk.set_perimeter_event_action(0, NOTIFY).unwrap();
                assert!(!zk.wait_for_perimeter_event(Duration::ZERO).unwrap());
                let start = Instant::now();
                assert!(!zk
                    .wait_for_perimeter_event(Duration::from_millis(150))
                    .unwrap());
                assert!(start.elapsed() >= Duration::from_millis(150));
                // Channel 1 does not notify: its breach is latched, not seen.
                inject(&state_dir(), "1", 1_700_000_000);
                assert!(!zk
                    .wait_for_perimeter_event(Duration::from_millis(50))
                    .unwrap());
                assert!(zk.perimeter_events().unwrap().first_breach[1].is_some());
            }
            "waiter" => {
                // Opened before the breach, which the parent injects once
                // every waiter says it is there.
                zk.model().unwrap();
                let here = state_dir().join(format!("waiting-{}", std::process::id()));
                std::fs::write(here, "").unwrap();
                let start = Instant::now();
                assert!(zk
                    .wait_for_perimeter_event(Duration::from_secs(60))
                    .unwrap());
                assert!(start.elapsed() < Duration::from_secs(30));
                assert!(zk.perimeter_events().unwrap().first_breach[0].is_some());
                // Seen once.
                assert!(!zk.wait_for_perimeter_event(Duration::ZERO).unwrap());
            }
            other => panic!("role {other}"),
        }
        return;
    }
    let scratch = Scratch::new();
    let state = scratch.state();
    let env = env(&state, "ZYMKEY4i");
    run(TEST, "timeouts", &env);
    // Timeouts are no failures: one context served every call.
    let counters = common::counters(&state);
    assert_eq!(
        (counters["open"], counters["close"]),
        (1, 1),
        "{counters:?}"
    );
    assert_eq!(counters["perimeter"], 5, "{counters:?}");

    // Two processes wait; a breach injected while they do ends both waits.
    let waiters: Vec<_> = (0..2).map(|_| spawn(TEST, "waiter", &env)).collect();
    let started = Instant::now();
    while waiting(&state) < 2 {
        assert!(started.elapsed() < Duration::from_secs(60), "no waiters");
        std::thread::sleep(Duration::from_millis(20));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32;
    inject(&state, "0", now);
    for waiter in waiters {
        finish(waiter, "waiter");
    }
}

/// How many waiters said they are waiting.
fn waiting(state: &Path) -> usize {
    std::fs::read_dir(state)
        .unwrap()
        .filter(|entry| {
            entry
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("waiting-")
        })
        .count()
}

#[test]
fn self_destruct_destroys_the_keys_in_production_mode_only() {
    const TEST: &str = "self_destruct_destroys_the_keys_in_production_mode_only";
    if let Some(role) = role(TEST) {
        let zk = device();
        let digest = common::digest("tamper");
        match role.as_str() {
            "developer" => {
                assert_eq!(
                    zk.binding_info().unwrap(),
                    BindingInfo {
                        locked: false,
                        bound: true
                    }
                );
                zk.set_perimeter_event_action(0, NOTIFY | SELF_DESTRUCT)
                    .unwrap();
                inject(&state_dir(), "0", 1_700_000_000);
                assert!(zk.perimeter_events().unwrap().any());
                zk.sign_digest(0, &digest).unwrap();
            }
            "production" => {
                zk.lock_binding().unwrap();
                assert!(zk.binding_info().unwrap().locked);
                zk.set_perimeter_event_action(1, NOTIFY | SELF_DESTRUCT)
                    .unwrap();
                // Once armed after the lock, it stays.
                assert_eq!(
                    errno(zk.set_perimeter_event_action(1, PerimeterAction::NONE)),
                    EPERM
                );
                zk.sign_digest(0, &digest).unwrap();
                inject(&state_dir(), "1", 1_700_000_001);
                assert_eq!(errno(zk.sign_digest(0, &digest)), EIO);
            }
            "destroyed" => {
                let digest = common::digest("after");
                assert_eq!(errno(zk.sign_digest(0, &digest)), EIO);
                assert_eq!(errno(zk.public_key(zymkey::Slot::device(0))), EIO);
                assert_eq!(errno(zk.allocated_slots(false)), EIO);
                assert_eq!(errno(zk.generate_key(zymkey::KeyType::NistP256)), EIO);
                assert_eq!(errno(zk.random(8)), EIO);
                // What is left answers: the breach is there to report.
                assert_eq!(zk.model().unwrap(), "HSM6");
                assert!(zk.binding_info().unwrap().locked);
                assert_eq!(
                    zk.perimeter_events().unwrap(),
                    events(&[None, Some(1_700_000_001)])
                );
                zk.clear_perimeter_events().unwrap();
                assert_eq!(errno(zk.sign_digest(0, &digest)), EIO);
            }
            other => panic!("role {other}"),
        }
        return;
    }
    let scratch = Scratch::new();
    let developer = scratch.file("developer");
    run(TEST, "developer", &env(&developer, "HSM6"));
    assert_eq!(key_files(&developer), 12);

    let production = scratch.file("production");
    run(TEST, "production", &env(&production, "HSM6"));
    assert_eq!(key_files(&production), 0);
    run(TEST, "destroyed", &env(&production, "HSM6"));
}

fn key_files(state: &Path) -> usize {
    ["keys", "foreign"]
        .iter()
        .map(|dir| std::fs::read_dir(state.join(dir)).unwrap().count())
        .sum()
}

#[test]
fn a_zymkey4i_self_destructs_once_its_lock_tab_is_cut() {
    const TEST: &str = "a_zymkey4i_self_destructs_once_its_lock_tab_is_cut";
    if role(TEST).is_some() {
        let zk = device();
        assert_eq!(errno(zk.lock_binding()), EOPNOTSUPP);
        assert_eq!(errno(zk.binding_info()), EOPNOTSUPP);
        zk.set_perimeter_event_action(0, SELF_DESTRUCT).unwrap();
        assert_eq!(
            errno(zk.set_perimeter_event_action(0, NOTIFY)),
            EPERM,
            "production mode: one setting after the lock"
        );
        inject(&state_dir(), "0", 1_700_000_000);
        assert_eq!(errno(zk.sign_digest(0, &common::digest("4i"))), EIO);
        return;
    }
    let scratch = Scratch::new();
    let state = scratch.state();
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("lock-tab-cut"), "").unwrap();
    run(TEST, "scenario", &env(&state, "ZYMKEY4i"));
    assert_eq!(key_files(&state), 0);
}

#[test]
fn what_each_profile_offers() {
    const TEST: &str = "what_each_profile_offers";
    if let Some(profile) = role(TEST) {
        let zk = device();
        assert_eq!(zk.perimeter_events().unwrap().channels(), 2);
        for channel in [0, 1] {
            zk.set_perimeter_event_action(channel, NOTIFY).unwrap();
        }
        assert_eq!(errno(zk.set_perimeter_event_action(2, NOTIFY)), EINVAL);
        let digital = [
            zk.set_digital_perimeter_lp_period(1000),
            zk.set_digital_perimeter_lp_max_bits(8),
            zk.set_digital_perimeter_delays(10, 20),
        ];
        let has_digital = matches!(profile.as_str(), "HSM6" | "HSM60");
        for result in digital {
            match has_digital {
                true => result.unwrap(),
                false => assert_eq!(errno(result), EOPNOTSUPP, "{profile}"),
            }
        }
        if has_digital {
            assert_eq!(errno(zk.set_digital_perimeter_delays(20, 10)), EINVAL);
            assert_eq!(errno(zk.set_digital_perimeter_lp_period(-1)), EINVAL);
        }
        let lockable = !matches!(profile.as_str(), "ZYMKEY4i" | "ZYMKEY5-EDU");
        match (profile.as_str(), lockable) {
            ("ZYMKEY4i", _) => assert_eq!(errno(zk.binding_info()), EOPNOTSUPP),
            _ => assert!(!zk.binding_info().unwrap().locked, "{profile}"),
        }
        match lockable {
            true => {
                zk.lock_binding().unwrap();
                assert!(zk.binding_info().unwrap().locked, "{profile}");
            }
            false => assert_eq!(errno(zk.lock_binding()), EOPNOTSUPP, "{profile}"),
        }
        return;
    }
    let scratch = Scratch::new();
    let children: Vec<_> = [
        "ZYMKEY4i",
        "HSM6",
        "ZYMKEY5",
        "ZYMKEY5-PREPROD",
        "ZYMKEY5-EDU",
        "HSM60",
    ]
    .into_iter()
    .map(|profile| {
        let state = scratch.file(profile);
        let child = spawn(TEST, profile, &env(&state, profile));
        (profile, state, child)
    })
    .collect();
    for (profile, state, child) in children {
        finish(child, profile);
        let counters = common::counters(&state);
        // Refused calls count: they reach the device.
        let expected = if matches!(profile, "HSM6" | "HSM60") {
            9
        } else {
            7
        };
        assert_eq!(counters["perimeter"], expected, "{profile}: {counters:?}");
    }
}

#[test]
fn perimeter_calls_are_traced_and_can_fail_on_request() {
    const TEST: &str = "perimeter_calls_are_traced_and_can_fail_on_request";
    if role(TEST).is_some() {
        let state = state_dir();
        let zk = device();
        std::fs::write(state.join("fail-next"), "perimeter").unwrap();
        assert_eq!(errno(zk.perimeter_events()), EIO);
        zk.perimeter_events().unwrap();
        std::fs::write(state.join("fail-next"), "binding").unwrap();
        assert_eq!(errno(zk.binding_info()), EIO);
        assert!(!zk.wait_for_perimeter_event(Duration::ZERO).unwrap());
        return;
    }
    let scratch = Scratch::new();
    let trace = scratch.file("trace");
    let state = scratch.state();
    std::fs::create_dir_all(&state).unwrap();
    let [dir, model] = env(&state, "HSM60");
    run(
        TEST,
        "scenario",
        &[dir, model, ("ZKIOT_EMU_TRACE", trace.as_os_str())],
    );
    let trace = std::fs::read_to_string(trace).unwrap();
    // Each failure closes the binding's context; the next call opens another.
    assert_eq!(
        trace.lines().collect::<Vec<_>>(),
        [
            "open -",
            "perimeter -",
            "close -",
            "open -",
            "perimeter -",
            "binding -",
            "close -",
            "open -",
            "perimeter -",
            "close -"
        ]
    );
    let counters = common::counters(&state);
    assert_eq!(
        (counters["perimeter"], counters["binding"]),
        (3, 1),
        "{counters:?}"
    );
}
