//! The two models: what each has from the factory, what each can do, and how
//! each refuses what it cannot.

mod common;

use common::{device, errno, role, run, stderr, Scratch};
use libc::{EINVAL, ENOENT, ENOSPC, EOPNOTSUPP, EPERM};
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
