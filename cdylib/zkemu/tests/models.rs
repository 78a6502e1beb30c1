//! The profiles (ZYMKEY4i, HSM6, ZYMKEY5, ZYMKEY5-PREPROD, ZYMKEY5-EDU,
//! HSM60): what each has from the factory, what each can do, and how each
//! refuses what it cannot; and how a state keeps the profile it was created with.

mod common;

use std::ffi::{c_int, c_void, OsStr, OsString};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{device, errno, finish, role, run, spawn, stderr, Scratch};
use libc::{EINVAL, EIO, ENOENT, ENOSPC, EOPNOTSUPP, EPERM, ETIMEDOUT};
use openssl::nid::Nid;
use zymkey::{KeyType, Slot, SlotList};

#[test]
fn zymkey4i_is_the_default_model() {
    const TEST: &str = "zymkey4i_is_the_default_model";
    if role(TEST).is_some() {
        let zk = device();
        assert_eq!(zk.model().unwrap(), "ZYMKEY4i");
        let serial = zk.serial_number().unwrap();
        assert!(
            !serial.is_empty() && serial.len() <= 16 && serial.is_ascii(),
            "{serial:?}"
        );
        assert!(!zk.firmware_version().unwrap().is_empty());
        let host = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!((i64::from(zk.time(false).unwrap()) - host).abs() <= 2);
        assert_eq!(
            zk.allocated_slots(false).unwrap(),
            SlotList {
                capacity: 3,
                slots: vec![0, 1, 2]
            }
        );
        let keys: Vec<Vec<u8>> = (0..3)
            .map(|n| zk.public_key(Slot::device(n)).unwrap())
            .collect();
        assert!(keys.iter().all(|k| k.len() == 64));
        assert!(keys[0] != keys[1] && keys[1] != keys[2] && keys[0] != keys[2]);
        let a = zk.random(32).unwrap();
        let b = zk.random(32).unwrap();
        assert!(a.len() == 32 && a != b);
        println!("serial={serial}");
        return;
    }
    let scratch = Scratch::new();
    let output = run(
        TEST,
        "scenario",
        &[("ZKIOT_EMU_DIR", scratch.state().as_os_str())],
    );
    let identity = std::fs::read_to_string(scratch.state().join("device.json")).unwrap();
    assert!(identity.contains("\"ZYMKEY4i\""), "{identity}");
    let serial = &common::reported(&output, "serial=")[0];
    assert!(identity.contains(serial.as_str()), "{identity}");
}

#[test]
fn zymkey4i_refuses_what_it_does_not_have() {
    const TEST: &str = "zymkey4i_refuses_what_it_does_not_have";
    if role(TEST).is_some() {
        let zk = device();
        assert_eq!(errno(zk.generate_key(KeyType::NistP256)), EOPNOTSUPP);
        assert_eq!(errno(zk.remove_key(Slot::device(0))), EOPNOTSUPP);
        assert_eq!(errno(zk.remove_key(Slot::foreign(0))), EOPNOTSUPP);
        let key = zk.public_key(Slot::device(0)).unwrap();
        assert_eq!(
            errno(zk.store_foreign_public_key(KeyType::NistP256, &key)),
            EOPNOTSUPP
        );
        assert_eq!(errno(zk.allocated_slots(true)), EOPNOTSUPP);
        assert_eq!(errno(zk.public_key(Slot::foreign(0))), EOPNOTSUPP);
        let digest = common::digest("4i");
        let sig = zk.sign_digest(0, &digest).unwrap();
        assert_eq!(
            errno(zk.verify_digest(Slot::foreign(0), &digest, &sig)),
            EOPNOTSUPP
        );
        // Slots outside 0..3 do not exist on this model.
        assert_eq!(errno(zk.sign_digest(3, &digest)), EINVAL);
        assert_eq!(errno(zk.sign_digest(-1, &digest)), EINVAL);
        assert_eq!(errno(zk.public_key(Slot::device(16))), EINVAL);
        // The factory keys are untouched by all of the above.
        assert_eq!(zk.allocated_slots(false).unwrap().slots, vec![0, 1, 2]);
        return;
    }
    let scratch = Scratch::new();
    run(
        TEST,
        "scenario",
        &[("ZKIOT_EMU_DIR", scratch.state().as_os_str())],
    );
}

#[test]
fn hsm6_generates_and_removes_keys() {
    const TEST: &str = "hsm6_generates_and_removes_keys";
    if role(TEST).is_some() {
        let zk = device();
        assert_eq!(zk.model().unwrap(), "HSM6");
        assert_eq!(
            zk.allocated_slots(false).unwrap(),
            SlotList {
                capacity: 512,
                slots: (0..12).collect()
            }
        );
        assert_eq!(zk.generate_key(KeyType::NistP256).unwrap(), 16);
        assert_eq!(zk.generate_key(KeyType::Secp256k1).unwrap(), 17);
        assert_eq!(zk.generate_key(KeyType::Ed25519).unwrap(), 18);
        assert_eq!(zk.generate_key(KeyType::X25519).unwrap(), 19);
        let digest = common::digest("hsm6");

        for (slot, curve) in [(16, Nid::X9_62_PRIME256V1), (17, Nid::SECP256K1)] {
            let public = zk.public_key(Slot::device(slot)).unwrap();
            let sig = zk.sign_digest(slot, &digest).unwrap();
            assert!(common::openssl_verifies(curve, &public, &digest, &sig));
            assert!(zk.verify_digest(Slot::device(slot), &digest, &sig).unwrap());
        }
        for slot in [18, 19] {
            assert_eq!(zk.public_key(Slot::device(slot)).unwrap().len(), 32);
            assert_eq!(errno(zk.sign_digest(slot, &digest)), EINVAL);
            assert_eq!(
                errno(zk.verify_digest(Slot::device(slot), &digest, &[0; 64])),
                EINVAL
            );
        }

        zk.remove_key(Slot::device(17)).unwrap();
        assert_eq!(errno(zk.remove_key(Slot::device(17))), ENOENT);
        assert_eq!(errno(zk.sign_digest(17, &digest)), ENOENT);
        assert_eq!(errno(zk.public_key(Slot::device(17))), ENOENT);
        assert!(!zk.allocated_slots(false).unwrap().slots.contains(&17));
        // The lowest free slot is reused.
        assert_eq!(zk.generate_key(KeyType::NistP256).unwrap(), 17);

        // Factory keys stay; reserved and unallocated slots are empty; others do not exist.
        assert_eq!(errno(zk.remove_key(Slot::device(0))), EPERM);
        assert_eq!(errno(zk.remove_key(Slot::device(11))), EPERM);
        assert_eq!(errno(zk.remove_key(Slot::device(12))), ENOENT);
        assert_eq!(errno(zk.sign_digest(12, &digest)), ENOENT);
        assert_eq!(errno(zk.remove_key(Slot::device(300))), ENOENT);
        assert_eq!(errno(zk.remove_key(Slot::device(512))), EINVAL);
        assert_eq!(errno(zk.sign_digest(512, &digest)), EINVAL);
        assert_eq!(
            zk.allocated_slots(false).unwrap().slots,
            (0..12).chain(16..20).collect::<Vec<_>>()
        );
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
    let keys: Vec<_> = std::fs::read_dir(scratch.state().join("keys"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(keys.len(), 16, "{keys:?}");
    assert!(keys.contains(&"slot-19.pem".to_string()));
}

#[test]
fn hsm6_foreign_keyring() {
    const TEST: &str = "hsm6_foreign_keyring";
    if role(TEST).is_some() {
        let zk = device();
        assert_eq!(
            zk.allocated_slots(true).unwrap(),
            SlotList {
                capacity: 128,
                slots: vec![]
            }
        );
        let key0 = zk.public_key(Slot::device(0)).unwrap();
        assert_eq!(
            zk.store_foreign_public_key(KeyType::NistP256, &key0)
                .unwrap(),
            0
        );
        // Also accepted with the SEC1 0x04 prefix; stored without it.
        let key1 = zk.public_key(Slot::device(1)).unwrap();
        let prefixed = [&[0x04], key1.as_slice()].concat();
        assert_eq!(
            zk.store_foreign_public_key(KeyType::NistP256, &prefixed)
                .unwrap(),
            1
        );
        assert_eq!(zk.public_key(Slot::foreign(0)).unwrap(), key0);
        assert_eq!(zk.public_key(Slot::foreign(1)).unwrap(), key1);
        assert_eq!(zk.allocated_slots(true).unwrap().slots, vec![0, 1]);
        // Separate namespace: device slots are unchanged.
        assert_eq!(zk.allocated_slots(false).unwrap().slots.len(), 12);

        let digest = common::digest("foreign");
        let sig = zk.sign_digest(0, &digest).unwrap();
        assert!(zk.verify_digest(Slot::foreign(0), &digest, &sig).unwrap());
        assert!(!zk.verify_digest(Slot::foreign(1), &digest, &sig).unwrap());
        let mut flipped = sig;
        flipped[5] ^= 0x10;
        assert!(!zk
            .verify_digest(Slot::foreign(0), &digest, &flipped)
            .unwrap());

        let mut off_curve = key0.clone();
        off_curve[63] ^= 1;
        assert_eq!(
            errno(zk.store_foreign_public_key(KeyType::NistP256, &off_curve)),
            EINVAL
        );
        assert_eq!(
            errno(zk.store_foreign_public_key(KeyType::NistP256, &key0[..63])),
            EINVAL
        );
        let ed = zk
            .store_foreign_public_key(KeyType::Ed25519, &[9u8; 32])
            .unwrap();
        assert_eq!(ed, 2);
        assert_eq!(zk.public_key(Slot::foreign(ed)).unwrap(), vec![9u8; 32]);
        assert_eq!(
            errno(zk.verify_digest(Slot::foreign(ed), &digest, &sig)),
            EINVAL
        );

        zk.remove_key(Slot::foreign(0)).unwrap();
        assert_eq!(errno(zk.remove_key(Slot::foreign(0))), ENOENT);
        assert_eq!(errno(zk.public_key(Slot::foreign(0))), ENOENT);
        assert_eq!(
            errno(zk.verify_digest(Slot::foreign(0), &digest, &sig)),
            ENOENT
        );
        assert_eq!(errno(zk.public_key(Slot::foreign(128))), EINVAL);
        assert_eq!(errno(zk.remove_key(Slot::foreign(-1))), EINVAL);

        // Fill the keyring: 128 slots, then ENOSPC.
        for expected in std::iter::once(0).chain(3..128) {
            assert_eq!(
                zk.store_foreign_public_key(KeyType::NistP256, &key0)
                    .unwrap(),
                expected
            );
        }
        assert_eq!(
            errno(zk.store_foreign_public_key(KeyType::NistP256, &key0)),
            ENOSPC
        );
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
}

#[test]
fn hsm6_key_store_fills_up() {
    const TEST: &str = "hsm6_key_store_fills_up";
    if role(TEST).is_some() {
        let zk = device();
        for expected in 16..512 {
            assert_eq!(zk.generate_key(KeyType::NistP256).unwrap(), expected);
        }
        assert_eq!(errno(zk.generate_key(KeyType::NistP256)), ENOSPC);
        assert_eq!(zk.allocated_slots(false).unwrap().slots.len(), 12 + 496);
        zk.remove_key(Slot::device(200)).unwrap();
        assert_eq!(zk.generate_key(KeyType::Secp256k1).unwrap(), 200);
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
}

#[test]
fn model_is_fixed_when_the_state_is_created() {
    const TEST: &str = "model_is_fixed_when_the_state_is_created";
    if role(TEST).is_some() {
        assert_eq!(device().model().unwrap(), "HSM6");
        return;
    }
    let scratch = Scratch::new();
    let dir = scratch.state();
    run(
        TEST,
        "create",
        &[
            ("ZKIOT_EMU_DIR", dir.as_os_str()),
            ("ZKIOT_EMU_MODEL", "HSM6".as_ref()),
        ],
    );
    let reopened = run(
        TEST,
        "reopen",
        &[
            ("ZKIOT_EMU_DIR", dir.as_os_str()),
            ("ZKIOT_EMU_MODEL", "ZYMKEY4i".as_ref()),
        ],
    );
    let err = stderr(&reopened);
    assert!(
        err.contains("ZKIOT_EMU_MODEL=ZYMKEY4i ignored") && err.contains("created as HSM6"),
        "{err}"
    );
}

#[test]
fn unknown_model_is_refused() {
    const TEST: &str = "unknown_model_is_refused";
    if role(TEST).is_some() {
        let error = device().model().unwrap_err();
        assert_eq!(
            error,
            zymkey::Error::Device {
                function: "zkOpen",
                errno: EINVAL
            }
        );
        return;
    }
    let scratch = Scratch::new();
    let output = run(
        TEST,
        "scenario",
        &[
            ("ZKIOT_EMU_DIR", scratch.state().as_os_str()),
            ("ZKIOT_EMU_MODEL", "HSM4".as_ref()),
        ],
    );
    let err = stderr(&output);
    assert!(
        err.contains("ZKIOT_EMU_MODEL=\"HSM4\"")
            && err.contains("ZYMKEY4i, HSM6, ZYMKEY5, ZYMKEY5-PREPROD, ZYMKEY5-EDU or HSM60"),
        "{err}"
    );
    assert!(!scratch.state().exists(), "no state for a refused model");
}

// ---------------------------------------------------------------------------
// Profiles: ZYMKEY4i, HSM6, ZYMKEY5, ZYMKEY5-PREPROD, ZYMKEY5-EDU, HSM60.

/// Each profile: its name, the model string it reports by default, and
/// whether it has an accelerometer.
const PROFILES: [(&str, &str, bool); 6] = [
    ("ZYMKEY4i", "ZYMKEY4i", true),
    ("HSM6", "HSM6", true),
    ("ZYMKEY5", "ZYMKEY5", false),
    ("ZYMKEY5-PREPROD", "HSM6", false),
    ("ZYMKEY5-EDU", "HSM6", false),
    ("HSM60", "HSM60", true),
];

fn profile(name: &str) -> (&'static str, &'static str, bool) {
    *PROFILES
        .iter()
        .find(|p| p.0 == name)
        .unwrap_or_else(|| panic!("no profile {name}"))
}

/// `zkAccelAxisDataType`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Default)]
struct AxisData {
    g: f64,
    tap_direction: c_int,
}

type Ctx = *mut c_void;

/// The tap and accelerometer calls, straight through the C ABI (the
/// `zymkey` binding has none of them), on a context of its own.
struct Accelerometer {
    _lib: libloading::Library,
    ctx: Ctx,
    close: unsafe extern "C" fn(Ctx) -> c_int,
    set_tap_sensitivity: unsafe extern "C" fn(Ctx, c_int, f32) -> c_int,
    wait_for_tap: unsafe extern "C" fn(Ctx, u32) -> c_int,
    data: unsafe extern "C" fn(Ctx, *mut AxisData, *mut AxisData, *mut AxisData) -> c_int,
}

impl Accelerometer {
    fn open() -> Accelerometer {
        // SAFETY: loading the emulator runs no foreign initialisers of note.
        let lib = unsafe { libloading::Library::new(common::library_path()) }.unwrap();
        // SAFETY: the types are the header's signatures.
        let (open, close, set_tap_sensitivity, wait_for_tap, data) = unsafe {
            (
                *lib.get::<unsafe extern "C" fn(*mut Ctx) -> c_int>(b"zkOpen")
                    .unwrap(),
                *lib.get(b"zkClose").unwrap(),
                *lib.get(b"zkSetTapSensitivity").unwrap(),
                *lib.get(b"zkWaitForTap").unwrap(),
                *lib.get(b"zkGetAccelerometerData").unwrap(),
            )
        };
        let mut ctx = std::ptr::null_mut();
        // SAFETY: `ctx` is valid for writing one context.
        assert_eq!(unsafe { open(&mut ctx) }, 0);
        Accelerometer {
            _lib: lib,
            ctx,
            close,
            set_tap_sensitivity,
            wait_for_tap,
            data,
        }
    }

    fn set_tap_sensitivity(&self, axis: c_int, percent: f32) -> c_int {
        // SAFETY: plain values on an open context.
        unsafe { (self.set_tap_sensitivity)(self.ctx, axis, percent) }
    }

    fn wait_for_tap(&self, timeout_ms: u32) -> c_int {
        // SAFETY: plain values on an open context.
        unsafe { (self.wait_for_tap)(self.ctx, timeout_ms) }
    }

    /// X, Y, Z, or the return code; the outputs are set (to zero) either way.
    fn data(&self) -> Result<[AxisData; 3], c_int> {
        let poison = AxisData {
            g: -9.0,
            tap_direction: 7,
        };
        let mut axes = [poison; 3];
        let [x, y, z] = &mut axes;
        // SAFETY: three distinct, writable zkAccelAxisDataType.
        let code = unsafe { (self.data)(self.ctx, x, y, z) };
        match code {
            0 => Ok(axes),
            _ => {
                assert_eq!(axes, [AxisData::default(); 3], "outputs cleared on failure");
                Err(code)
            }
        }
    }
}

impl Drop for Accelerometer {
    fn drop(&mut self) {
        // SAFETY: the context is open and closed once.
        unsafe { (self.close)(self.ctx) };
    }
}

const ZK_ACCEL_AXIS_X: c_int = 0;
const ZK_ACCEL_AXIS_ALL: c_int = 3;

/// Accelerometer calls each profile's scenario makes: what a profile with
/// one does, and the three refused calls of one without.
const ACCELEROMETER_CALLS: u64 = 9;
const REFUSED_ACCELEROMETER_CALLS: u64 = 3;

/// The tap and accelerometer calls of a profile with an accelerometer: a
/// device at rest that sees a tap only when one is injected.
fn accelerometer_at_rest(state: &Path) {
    let accel = Accelerometer::open();
    assert_eq!(accel.set_tap_sensitivity(ZK_ACCEL_AXIS_ALL, 50.0), 0);
    assert_eq!(accel.set_tap_sensitivity(ZK_ACCEL_AXIS_X, 0.0), 0);
    assert_eq!(accel.set_tap_sensitivity(4, 50.0), -EINVAL);
    assert_eq!(accel.set_tap_sensitivity(ZK_ACCEL_AXIS_X, 100.5), -EINVAL);
    let at_rest = |g| AxisData {
        g,
        tap_direction: 0,
    };
    assert_eq!(accel.data(), Ok([at_rest(0.0), at_rest(0.0), at_rest(1.0)]));

    assert_eq!(accel.wait_for_tap(0), -ETIMEDOUT);
    let start = Instant::now();
    assert_eq!(accel.wait_for_tap(150), -ETIMEDOUT);
    assert!(start.elapsed() >= Duration::from_millis(150));

    // A tap injected before the call ends it at once, and only that call.
    std::fs::write(state.join("tap-next"), "").unwrap();
    let start = Instant::now();
    assert_eq!(accel.wait_for_tap(60_000), 0);
    assert!(start.elapsed() < Duration::from_secs(10));
    assert!(!state.join("tap-next").exists());
    assert_eq!(accel.wait_for_tap(0), -ETIMEDOUT);
}

/// The same calls on a ZYMKEY5, which lists no accelerometer: all refused,
/// whatever the arguments, and an injected tap stays unused.
fn no_accelerometer(state: &Path) {
    let accel = Accelerometer::open();
    std::fs::write(state.join("tap-next"), "").unwrap();
    assert_eq!(
        accel.set_tap_sensitivity(ZK_ACCEL_AXIS_ALL, 50.0),
        -EOPNOTSUPP
    );
    assert_eq!(accel.wait_for_tap(60_000), -EOPNOTSUPP);
    assert_eq!(accel.data(), Err(-EOPNOTSUPP));
    assert!(state.join("tap-next").exists());
}

fn state_dir() -> PathBuf {
    PathBuf::from(std::env::var_os("ZKIOT_EMU_DIR").expect("ZKIOT_EMU_DIR"))
}

/// What a profile with `factory` factory slots offers, as the module sees
/// it: model string, slot list, key generation of each type from slot 16,
/// factory keys kept, the foreign keyring, and the accelerometer.
fn profile_scenario(name: &str, factory: i32) {
    let (_, model, has_accelerometer) = profile(name);
    let zk = device();
    assert_eq!(zk.model().unwrap(), model);
    let digest = common::digest(name);
    let factory_slots: Vec<i32> = (0..factory).collect();
    for slot in [0, factory - 1] {
        let public = zk.public_key(Slot::device(slot)).unwrap();
        let sig = zk.sign_digest(slot, &digest).unwrap();
        assert!(common::openssl_verifies(
            Nid::X9_62_PRIME256V1,
            &public,
            &digest,
            &sig
        ));
    }
    if name == "ZYMKEY4i" {
        assert_eq!(
            zk.allocated_slots(false).unwrap(),
            SlotList {
                capacity: 3,
                slots: factory_slots
            }
        );
        assert_eq!(errno(zk.generate_key(KeyType::NistP256)), EOPNOTSUPP);
        assert_eq!(errno(zk.allocated_slots(true)), EOPNOTSUPP);
    } else {
        assert_eq!(
            zk.allocated_slots(false).unwrap(),
            SlotList {
                capacity: 512,
                slots: factory_slots.clone()
            }
        );
        let types = [
            KeyType::NistP256,
            KeyType::Secp256k1,
            KeyType::Ed25519,
            KeyType::X25519,
        ];
        for (key_type, expected) in types.into_iter().zip(16..) {
            assert_eq!(zk.generate_key(key_type).unwrap(), expected, "{key_type:?}");
        }
        for (slot, curve) in [(16, Nid::X9_62_PRIME256V1), (17, Nid::SECP256K1)] {
            let public = zk.public_key(Slot::device(slot)).unwrap();
            let sig = zk.sign_digest(slot, &digest).unwrap();
            assert!(common::openssl_verifies(curve, &public, &digest, &sig));
        }
        for slot in [18, 19] {
            assert_eq!(zk.public_key(Slot::device(slot)).unwrap().len(), 32);
            assert_eq!(errno(zk.sign_digest(slot, &digest)), EINVAL);
        }
        assert_eq!(
            zk.allocated_slots(false).unwrap(),
            SlotList {
                capacity: 512,
                slots: factory_slots.iter().copied().chain(16..20).collect()
            }
        );
        // Factory keys stay; the rest of 0-15 is reserved and empty.
        assert_eq!(errno(zk.remove_key(Slot::device(factory - 1))), EPERM);
        if factory < 16 {
            assert_eq!(errno(zk.sign_digest(factory, &digest)), ENOENT);
            assert_eq!(errno(zk.remove_key(Slot::device(factory))), ENOENT);
        }
        assert_eq!(errno(zk.public_key(Slot::device(511))), ENOENT);
        assert_eq!(errno(zk.public_key(Slot::device(512))), EINVAL);

        assert_eq!(
            zk.allocated_slots(true).unwrap(),
            SlotList {
                capacity: 128,
                slots: vec![]
            }
        );
        let k1 = zk.public_key(Slot::device(17)).unwrap();
        assert_eq!(
            zk.store_foreign_public_key(KeyType::Secp256k1, &k1)
                .unwrap(),
            0
        );
        let sig = zk.sign_digest(17, &digest).unwrap();
        assert!(zk.verify_digest(Slot::foreign(0), &digest, &sig).unwrap());
        assert_eq!(errno(zk.public_key(Slot::foreign(128))), EINVAL);
    }
    if has_accelerometer {
        accelerometer_at_rest(&state_dir());
    } else {
        no_accelerometer(&state_dir());
    }
}

fn identity(state: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(state.join("device.json")).unwrap()).unwrap()
}

#[test]
fn every_profile_with_12_and_14_factory_slots() {
    const TEST: &str = "every_profile_with_12_and_14_factory_slots";
    if let Some(role) = role(TEST) {
        let (name, factory) = role.split_once('/').unwrap();
        return profile_scenario(name, factory.parse().unwrap());
    }
    let scratch = Scratch::new();
    let mut runs = Vec::new();
    for (name, _, _) in PROFILES {
        let counts: &[i32] = if name == "ZYMKEY4i" { &[3] } else { &[12, 14] };
        for &factory in counts {
            let state = scratch.file(&format!("{name}-{factory}"));
            let mut env = vec![
                ("ZKIOT_EMU_DIR", state.clone().into_os_string()),
                ("ZKIOT_EMU_MODEL", name.into()),
            ];
            if name != "ZYMKEY4i" {
                env.push(("ZKIOT_EMU_FACTORY_SLOTS", factory.to_string().into()));
            }
            let env: Vec<(&str, &OsStr)> = env.iter().map(|(k, v)| (*k, v.as_os_str())).collect();
            let role = format!("{name}/{factory}");
            runs.push((name, factory, state, spawn(TEST, &role, &env), role));
        }
    }
    for (name, factory, state, child, role) in runs {
        finish(child, &role);
        let (_, model, has_accelerometer) = profile(name);
        let identity = identity(&state);
        assert_eq!(identity["profile"], name, "{identity}");
        assert_eq!(identity["model"], model, "{identity}");
        assert_eq!(identity["factory_slots"], factory, "{identity}");
        let counters = common::counters(&state);
        let expected = if has_accelerometer {
            ACCELEROMETER_CALLS
        } else {
            REFUSED_ACCELEROMETER_CALLS
        };
        assert_eq!(counters["accelerometer"], expected, "{role}: {counters:?}");
    }
}

#[test]
fn accelerometer_calls_are_traced_and_can_fail_on_request() {
    const TEST: &str = "accelerometer_calls_are_traced_and_can_fail_on_request";
    if role(TEST).is_some() {
        let state = state_dir();
        let accel = Accelerometer::open();
        std::fs::write(state.join("fail-next"), "accelerometer").unwrap();
        assert_eq!(accel.data(), Err(-EIO));
        assert!(accel.data().is_ok());
        assert_eq!(accel.wait_for_tap(0), -ETIMEDOUT);
        return;
    }
    let scratch = Scratch::new();
    let trace = scratch.file("trace");
    run(
        TEST,
        "scenario",
        &[
            ("ZKIOT_EMU_DIR", scratch.state().as_os_str()),
            ("ZKIOT_EMU_MODEL", "HSM60".as_ref()),
            ("ZKIOT_EMU_TRACE", trace.as_os_str()),
        ],
    );
    let trace = std::fs::read_to_string(trace).unwrap();
    assert_eq!(
        trace.lines().collect::<Vec<_>>(),
        [
            "open -",
            "accelerometer -",
            "accelerometer -",
            "accelerometer -",
            "close -"
        ]
    );
    assert_eq!(common::counters(&scratch.state())["accelerometer"], 3);
}

#[test]
fn zymkey5_model_string_comes_from_the_environment() {
    const TEST: &str = "zymkey5_model_string_comes_from_the_environment";
    if let Some(expected) = role(TEST) {
        assert_eq!(device().model().unwrap(), expected);
        return;
    }
    let scratch = Scratch::new();
    let zk5 = scratch.file("zk5");
    let env = |model: &str, string: &str| {
        vec![
            ("ZKIOT_EMU_DIR", zk5.as_os_str().to_owned()),
            ("ZKIOT_EMU_MODEL", OsString::from(model)),
            ("ZKIOT_EMU_MODEL_STRING", OsString::from(string)),
        ]
    };
    let run_with = |role: &str, env: &[(&str, OsString)]| {
        let env: Vec<(&str, &OsStr)> = env.iter().map(|(k, v)| (*k, v.as_os_str())).collect();
        run(TEST, role, &env)
    };
    run_with("ZYMKEY FIVE", &env("ZYMKEY5", "ZYMKEY FIVE"));
    assert_eq!(identity(&zk5)["model"], "ZYMKEY FIVE");
    assert_eq!(identity(&zk5)["profile"], "ZYMKEY5");
    // Later opens report the recorded string, whatever the variable says.
    let reopened = run_with("ZYMKEY FIVE", &env("ZYMKEY5", "ZK5"));
    assert!(
        stderr(&reopened).contains("ZKIOT_EMU_MODEL_STRING=\"ZK5\" ignored"),
        "{}",
        stderr(&reopened)
    );
    run_with("ZYMKEY FIVE", &[("ZKIOT_EMU_DIR", zk5.clone().into())]);

    // Other profiles have a fixed string: the variable is ignored, with a note.
    for (name, model) in [
        ("HSM6", "HSM6"),
        ("ZYMKEY5-PREPROD", "HSM6"),
        ("HSM60", "HSM60"),
    ] {
        let state = scratch.file(name);
        let output = run_with(
            model,
            &[
                ("ZKIOT_EMU_DIR", state.clone().into()),
                ("ZKIOT_EMU_MODEL", name.into()),
                ("ZKIOT_EMU_MODEL_STRING", "ZYMKEY5".into()),
            ],
        );
        assert!(
            stderr(&output).contains("ZKIOT_EMU_MODEL_STRING=\"ZYMKEY5\" ignored"),
            "{}",
            stderr(&output)
        );
        assert_eq!(identity(&state)["model"], model);
    }
}

#[test]
fn a_state_keeps_its_profile_when_reopened_as_another() {
    const TEST: &str = "a_state_keeps_its_profile_when_reopened_as_another";
    if let Some(role) = role(TEST) {
        let zk = device();
        match role.as_str() {
            "zymkey5" => {
                assert_eq!(zk.model().unwrap(), "ZK5-TEST");
                assert_eq!(
                    zk.allocated_slots(false).unwrap(),
                    SlotList {
                        capacity: 512,
                        slots: (0..14).collect()
                    }
                );
                no_accelerometer(&state_dir());
            }
            "preprod" | "preprod-again" => {
                assert_eq!(zk.model().unwrap(), "HSM6");
                assert_eq!(zk.allocated_slots(false).unwrap().capacity, 512);
                let expected = if role == "preprod" { 16 } else { 17 };
                assert_eq!(zk.generate_key(KeyType::Ed25519).unwrap(), expected);
                assert_eq!(
                    Accelerometer::open().set_tap_sensitivity(0, 1.0),
                    -EOPNOTSUPP
                );
            }
            other => panic!("role {other}"),
        }
        return;
    }
    let scratch = Scratch::new();
    let zk5 = scratch.file("zk5");
    let created = [
        ("ZKIOT_EMU_DIR", zk5.as_os_str()),
        ("ZKIOT_EMU_MODEL", "ZYMKEY5".as_ref()),
        ("ZKIOT_EMU_MODEL_STRING", "ZK5-TEST".as_ref()),
        ("ZKIOT_EMU_FACTORY_SLOTS", "14".as_ref()),
    ];
    run(TEST, "zymkey5", &created);
    std::fs::remove_file(zk5.join("tap-next")).unwrap();
    let reopened = run(
        TEST,
        "zymkey5",
        &[
            ("ZKIOT_EMU_DIR", zk5.as_os_str()),
            ("ZKIOT_EMU_MODEL", "HSM60".as_ref()),
            ("ZKIOT_EMU_MODEL_STRING", "OTHER".as_ref()),
            ("ZKIOT_EMU_FACTORY_SLOTS", "12".as_ref()),
        ],
    );
    let err = stderr(&reopened);
    for note in [
        "ZKIOT_EMU_MODEL=HSM60 ignored: the state in",
        "was created as ZYMKEY5",
        "ZKIOT_EMU_MODEL_STRING=\"OTHER\" ignored",
        "ZKIOT_EMU_FACTORY_SLOTS=12 ignored",
        "with 14 factory slots",
    ] {
        assert!(err.contains(note), "{note:?} not in:\n{err}");
    }
    assert_eq!(std::fs::read_dir(zk5.join("keys")).unwrap().count(), 14);

    let preprod = scratch.file("preprod");
    run(
        TEST,
        "preprod",
        &[
            ("ZKIOT_EMU_DIR", preprod.as_os_str()),
            ("ZKIOT_EMU_MODEL", "ZYMKEY5-PREPROD".as_ref()),
        ],
    );
    // The next open, asked for a ZYMKEY4i, still has the key store (slot 16
    // taken, so the next key goes to 17) and no accelerometer.
    let output = run(
        TEST,
        "preprod-again",
        &[
            ("ZKIOT_EMU_DIR", preprod.as_os_str()),
            ("ZKIOT_EMU_MODEL", "ZYMKEY4i".as_ref()),
        ],
    );
    assert!(
        stderr(&output).contains("ZKIOT_EMU_MODEL=ZYMKEY4i ignored"),
        "{}",
        stderr(&output)
    );
    assert_eq!(identity(&preprod)["profile"], "ZYMKEY5-PREPROD");
}

#[test]
fn a_device_json_from_before_profiles_still_opens() {
    const TEST: &str = "a_device_json_from_before_profiles_still_opens";
    if let Some(role) = role(TEST) {
        let zk = device();
        match role.as_str() {
            "create" => {
                zk.model().unwrap();
            }
            "HSM6" => {
                assert_eq!(zk.model().unwrap(), "HSM6");
                assert_eq!(
                    zk.allocated_slots(false).unwrap(),
                    SlotList {
                        capacity: 512,
                        slots: (0..12).collect()
                    }
                );
                assert_eq!(zk.generate_key(KeyType::Secp256k1).unwrap(), 16);
                assert_eq!(errno(zk.remove_key(Slot::device(11))), EPERM);
                assert_eq!(errno(zk.remove_key(Slot::device(12))), ENOENT);
                accelerometer_at_rest(&state_dir());
            }
            "ZYMKEY4i" => {
                assert_eq!(zk.model().unwrap(), "ZYMKEY4i");
                assert_eq!(
                    zk.allocated_slots(false).unwrap(),
                    SlotList {
                        capacity: 3,
                        slots: vec![0, 1, 2]
                    }
                );
                assert_eq!(errno(zk.generate_key(KeyType::NistP256)), EOPNOTSUPP);
            }
            other => panic!("role {other}"),
        }
        return;
    }
    let scratch = Scratch::new();
    for name in ["HSM6", "ZYMKEY4i"] {
        let state = scratch.file(name);
        run(
            TEST,
            "create",
            &[
                ("ZKIOT_EMU_DIR", state.as_os_str()),
                ("ZKIOT_EMU_MODEL", name.as_ref()),
            ],
        );
        // device.json as the emulator wrote it before profiles: the model
        // names the device, and there is no factory slot count.
        let mut old = identity(&state);
        let fields = old.as_object_mut().unwrap();
        assert!(fields.remove("profile").is_some() && fields.remove("factory_slots").is_some());
        let old = serde_json::to_vec_pretty(&old).unwrap();
        std::fs::write(state.join("device.json"), &old).unwrap();
        // Reopened as another profile: the old state still decides.
        run(
            TEST,
            name,
            &[
                ("ZKIOT_EMU_DIR", state.as_os_str()),
                ("ZKIOT_EMU_MODEL", "ZYMKEY5".as_ref()),
            ],
        );
        assert_eq!(
            std::fs::read(state.join("device.json")).unwrap(),
            old,
            "left as it was"
        );
    }
}

#[test]
fn an_unknown_profile_in_device_json_is_an_io_error() {
    const TEST: &str = "an_unknown_profile_in_device_json_is_an_io_error";
    if let Some(role) = role(TEST) {
        let zk = device();
        if role == "broken" {
            assert_eq!(
                zk.model().unwrap_err(),
                zymkey::Error::Device {
                    function: "zkOpen",
                    errno: EIO
                }
            );
        } else {
            zk.model().unwrap();
        }
        return;
    }
    let scratch = Scratch::new();
    let state = scratch.state();
    run(TEST, "create", &[("ZKIOT_EMU_DIR", state.as_os_str())]);
    for (field, value) in [
        ("profile", serde_json::json!("HSM4")),
        ("factory_slots", serde_json::json!(12)),
    ] {
        let mut broken = identity(&state);
        let good = broken.clone();
        broken[field] = value;
        std::fs::write(state.join("device.json"), broken.to_string()).unwrap();
        run(TEST, "broken", &[("ZKIOT_EMU_DIR", state.as_os_str())]);
        std::fs::write(state.join("device.json"), good.to_string()).unwrap();
    }
}

#[test]
fn factory_slot_count_outside_1_to_16_is_refused() {
    const TEST: &str = "factory_slot_count_outside_1_to_16_is_refused";
    if let Some(role) = role(TEST) {
        let zk = device();
        match role.as_str() {
            "refused" => assert_eq!(
                zk.model().unwrap_err(),
                zymkey::Error::Device {
                    function: "zkOpen",
                    errno: EINVAL
                }
            ),
            "zymkey4i" => {
                assert_eq!(zk.allocated_slots(false).unwrap().slots, vec![0, 1, 2]);
            }
            "sixteen" => {
                assert_eq!(
                    zk.allocated_slots(false).unwrap().slots,
                    (0..16).collect::<Vec<_>>()
                );
                assert_eq!(zk.generate_key(KeyType::NistP256).unwrap(), 16);
                assert_eq!(errno(zk.remove_key(Slot::device(15))), EPERM);
            }
            other => panic!("role {other}"),
        }
        return;
    }
    let scratch = Scratch::new();
    let state = scratch.state();
    for count in ["0", "17", "-1", "12 slots"] {
        let output = run(
            TEST,
            "refused",
            &[
                ("ZKIOT_EMU_DIR", state.as_os_str()),
                ("ZKIOT_EMU_MODEL", "HSM60".as_ref()),
                ("ZKIOT_EMU_FACTORY_SLOTS", count.as_ref()),
            ],
        );
        let err = stderr(&output);
        assert!(
            err.contains(&format!("ZKIOT_EMU_FACTORY_SLOTS={count:?}")) && err.contains("1 to 16"),
            "{err}"
        );
        assert!(!state.exists(), "no state for a refused count");
    }
    // Refused whatever the profile, even one that would not use it.
    run(
        TEST,
        "refused",
        &[
            ("ZKIOT_EMU_DIR", state.as_os_str()),
            ("ZKIOT_EMU_FACTORY_SLOTS", "99".as_ref()),
        ],
    );
    // A valid count means nothing to a ZYMKEY4i: three slots, and a note.
    let output = run(
        TEST,
        "zymkey4i",
        &[
            ("ZKIOT_EMU_DIR", state.as_os_str()),
            ("ZKIOT_EMU_FACTORY_SLOTS", "14".as_ref()),
        ],
    );
    assert!(
        stderr(&output).contains("ZKIOT_EMU_FACTORY_SLOTS=14 ignored"),
        "{}",
        stderr(&output)
    );
    assert_eq!(identity(&state)["factory_slots"], 3);
    // 16, the whole reserved range, is the most.
    let sixteen = scratch.file("sixteen");
    run(
        TEST,
        "sixteen",
        &[
            ("ZKIOT_EMU_DIR", sixteen.as_os_str()),
            ("ZKIOT_EMU_MODEL", "ZYMKEY5-EDU".as_ref()),
            ("ZKIOT_EMU_FACTORY_SLOTS", "16".as_ref()),
        ],
    );
}

#[test]
fn zymkey5_key_store_reaches_slot_511() {
    const TEST: &str = "zymkey5_key_store_reaches_slot_511";
    if role(TEST).is_some() {
        let zk = device();
        for expected in 16..512 {
            assert_eq!(zk.generate_key(KeyType::NistP256).unwrap(), expected);
        }
        assert_eq!(errno(zk.generate_key(KeyType::Secp256k1)), ENOSPC);
        let list = zk.allocated_slots(false).unwrap();
        assert_eq!((list.capacity, list.slots.len()), (512, 14 + 496));
        assert_eq!(list.slots.last(), Some(&511));
        let digest = common::digest("511");
        let sig = zk.sign_digest(511, &digest).unwrap();
        assert!(zk.verify_digest(Slot::device(511), &digest, &sig).unwrap());
        return;
    }
    let scratch = Scratch::new();
    run(
        TEST,
        "scenario",
        &[
            ("ZKIOT_EMU_DIR", scratch.state().as_os_str()),
            ("ZKIOT_EMU_MODEL", "ZYMKEY5".as_ref()),
            ("ZKIOT_EMU_FACTORY_SLOTS", "14".as_ref()),
        ],
    );
}
