//! Signatures in the device's format, checked by OpenSSL, and keys that are
//! the same in every process using one state directory.

mod common;

use common::{device, errno, hex, reported, role, run, Scratch};
use libc::EINVAL;
use openssl::nid::Nid;
use zymkey::Slot;

/// Signs with every factory slot and checks each signature with OpenSSL
/// (as DER, against the exported raw public key) and with the device.
fn sign_and_verify_every_factory_slot() {
    let zk = device();
    let slots = zk.allocated_slots(false).unwrap().slots;
    for slot in slots {
        let public = zk.public_key(Slot::device(slot)).unwrap();
        assert_eq!(public.len(), 64);
        let digest = common::digest(&format!("message for slot {slot}"));
        let sig = zk.sign_digest(slot, &digest).unwrap();
        assert!(common::openssl_verifies(
            Nid::X9_62_PRIME256V1,
            &public,
            &digest,
            &sig
        ));
        assert!(zk.verify_digest(Slot::device(slot), &digest, &sig).unwrap());

        let mut flipped = sig;
        flipped[17] ^= 0x01;
        assert!(!common::openssl_verifies(
            Nid::X9_62_PRIME256V1,
            &public,
            &digest,
            &flipped
        ));
        assert!(!zk
            .verify_digest(Slot::device(slot), &digest, &flipped)
            .unwrap());
        let other = common::digest("another message");
        assert!(!zk.verify_digest(Slot::device(slot), &other, &sig).unwrap());
        // Another slot's key does not verify it.
        let next = if slot == 0 { 1 } else { 0 };
        assert!(!zk.verify_digest(Slot::device(next), &digest, &sig).unwrap());
        // Only raw 64-byte r||s is a signature.
        assert_eq!(
            errno(zk.verify_digest(Slot::device(slot), &digest, &sig[..63])),
            EINVAL
        );
    }
}

#[test]
fn zymkey4i_signatures_verify_with_openssl() {
    const TEST: &str = "zymkey4i_signatures_verify_with_openssl";
    if role(TEST).is_some() {
        sign_and_verify_every_factory_slot();
        return;
    }
    let scratch = Scratch::new();
    run(
        TEST,
        "scenario",
        &[
            ("ZKIOT_EMU_DIR", scratch.state().as_os_str()),
            ("ZKIOT_EMU_MODEL", "ZYMKEY4i".as_ref()),
        ],
    );
}

#[test]
fn hsm6_signatures_verify_with_openssl() {
    const TEST: &str = "hsm6_signatures_verify_with_openssl";
    if role(TEST).is_some() {
        sign_and_verify_every_factory_slot();
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
fn signatures_are_not_normalised_to_low_s() {
    const TEST: &str = "signatures_are_not_normalised_to_low_s";
    if role(TEST).is_some() {
        let zk = device();
        let public = zk.public_key(Slot::device(0)).unwrap();
        let digest = common::digest("low-s");
        let sigs: Vec<[u8; 64]> = (0..64)
            .map(|_| zk.sign_digest(0, &digest).unwrap())
            .collect();
        // A fresh nonce every time, and s falls in either half of the order
        // (all 64 in one half by chance: probability 2^-63).
        assert!(sigs.windows(2).all(|w| w[0] != w[1]));
        let high = sigs.iter().filter(|s| common::is_high_s(s)).count();
        assert!(high > 0 && high < sigs.len(), "{high} of 64 high-S");
        assert!(sigs.iter().all(|s| common::openssl_verifies(
            Nid::X9_62_PRIME256V1,
            &public,
            &digest,
            s
        )));
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
fn keys_and_identity_persist_across_processes() {
    const TEST: &str = "keys_and_identity_persist_across_processes";
    if let Some(role) = role(TEST) {
        let zk = device();
        if role == "first" {
            assert_eq!(zk.generate_key(zymkey::KeyType::NistP256).unwrap(), 16);
        }
        println!("serial={}", zk.serial_number().unwrap());
        println!("firmware={}", zk.firmware_version().unwrap());
        for slot in [0, 5, 11, 16] {
            println!(
                "key{slot}={}",
                hex(&zk.public_key(Slot::device(slot)).unwrap())
            );
        }
        // A signature made in this process verifies in the other one.
        let digest = common::digest("made in one process");
        if role == "first" {
            println!("sig={}", hex(&zk.sign_digest(16, &digest).unwrap()));
        } else {
            let sig = std::env::var("SIG_FROM_FIRST").unwrap();
            let sig: Vec<u8> = (0..sig.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&sig[i..i + 2], 16).unwrap())
                .collect();
            assert!(zk.verify_digest(Slot::device(16), &digest, &sig).unwrap());
        }
        return;
    }
    let scratch = Scratch::new();
    let state = scratch.state();
    let env = [
        ("ZKIOT_EMU_DIR", state.as_os_str()),
        ("ZKIOT_EMU_MODEL", "HSM6".as_ref()),
    ];
    let first = run(TEST, "first", &env);
    let sig = reported(&first, "sig=").remove(0);
    let mut second_env = env.to_vec();
    second_env.push(("SIG_FROM_FIRST", sig.as_ref()));
    let second = run(TEST, "second", &second_env);
    for prefix in ["serial=", "firmware=", "key0=", "key5=", "key11=", "key16="] {
        let a = reported(&first, prefix);
        assert_eq!(a.len(), 1, "{prefix}");
        assert_eq!(a, reported(&second, prefix), "{prefix}");
    }

    // Another state directory is another device.
    let other = Scratch::new();
    let third = run(
        TEST,
        "first",
        &[
            ("ZKIOT_EMU_DIR", other.state().as_os_str()),
            ("ZKIOT_EMU_MODEL", "HSM6".as_ref()),
        ],
    );
    for prefix in ["serial=", "key0=", "key16="] {
        assert_ne!(
            reported(&first, prefix),
            reported(&third, prefix),
            "{prefix}"
        );
    }
}
