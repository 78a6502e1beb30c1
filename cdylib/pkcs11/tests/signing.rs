//! Signing and verifying (PKCS#11 2.40 §5.11–5.12): the length protocol, the ECDSA input
//! rules, multi-part CKM_ECDSA_SHA256, device-call counts, threads and fork.

mod common;

use std::ptr;

use common::raw::{assert_rv, call, rv_name};
use common::Scenario;
use cryptoki::error::RvError;
use cryptoki::mechanism::Mechanism;
use cryptoki_sys::*;

/// A NULL buffer asks the length and signs nothing; a short buffer gets CKR_BUFFER_TOO_SMALL
/// with the length and keeps the operation; then one C_Sign makes exactly one device signature.
#[test]
fn sign_length_protocol() {
    Scenario::zymkey4i().run(|t| {
        let raw = t.raw();
        assert_rv!(raw.initialize_os_locking(), CKR_OK);
        let session = raw.session();
        let key = raw.private_key(session, 0);
        let digest = common::sha256(b"length protocol");
        assert_rv!(raw.sign_init(session, CKM_ECDSA, key), CKR_OK);

        let mut len: CK_ULONG = 0;
        assert_rv!(
            raw.sign(session, &digest, None, &mut len),
            CKR_OK,
            "C_Sign(NULL)"
        );
        assert_eq!(len, 64, "length query answers 64");
        assert_eq!(
            t.device_signatures(),
            0,
            "a length query signs nothing on the device"
        );

        let mut short = [0u8; 10];
        let mut len: CK_ULONG = short.len() as CK_ULONG;
        assert_rv!(
            raw.sign(session, &digest, Some(&mut short), &mut len),
            CKR_BUFFER_TOO_SMALL
        );
        assert_eq!(len, 64, "CKR_BUFFER_TOO_SMALL gives the needed length");
        assert_eq!(
            t.device_signatures(),
            0,
            "a too-small buffer signs nothing on the device"
        );

        let mut signature = [0u8; 64];
        let mut len: CK_ULONG = 64;
        assert_rv!(
            raw.sign(session, &digest, Some(&mut signature), &mut len),
            CKR_OK,
            "C_Sign after CKR_BUFFER_TOO_SMALL: the operation is still active"
        );
        assert_eq!(len, 64);
        assert_eq!(t.device_signatures(), 1, "exactly one device signature");
        assert!(common::verifies(&t.device_ec_point(0), &digest, &signature));

        let mut len: CK_ULONG = 64;
        assert_rv!(
            raw.sign(session, &digest, Some(&mut signature), &mut len),
            CKR_OPERATION_NOT_INITIALIZED,
            "a successful C_Sign ends the operation"
        );

        // libp11 passes a larger buffer (ECDSA_size = 72) and no length query.
        assert_rv!(raw.sign_init(session, CKM_ECDSA, key), CKR_OK);
        let mut large = [0u8; 72];
        let mut len: CK_ULONG = 72;
        assert_rv!(
            raw.sign(session, &digest, Some(&mut large), &mut len),
            CKR_OK
        );
        assert_eq!(len, 64, "the length written is the signature's");
        assert!(common::verifies(
            &t.device_ec_point(0),
            &digest,
            &large[..64]
        ));
        assert_eq!(t.device_signatures(), 2);
    });
}

#[test]
fn sign_final_length_protocol() {
    Scenario::zymkey4i().run(|t| {
        let raw = t.raw();
        assert_rv!(raw.initialize_os_locking(), CKR_OK);
        let session = raw.session();
        let key = raw.private_key(session, 1);
        let message = b"multi-part message".to_vec();
        assert_rv!(raw.sign_init(session, CKM_ECDSA_SHA256, key), CKR_OK);
        assert_rv!(
            call!(
                raw,
                C_SignUpdate(
                    session,
                    message.as_ptr() as *mut _,
                    message.len() as CK_ULONG
                )
            ),
            CKR_OK
        );
        let mut len: CK_ULONG = 0;
        assert_rv!(
            call!(raw, C_SignFinal(session, ptr::null_mut(), &mut len)),
            CKR_OK,
            "C_SignFinal(NULL)"
        );
        assert_eq!(len, 64);
        let mut short = [0u8; 63];
        let mut len: CK_ULONG = 63;
        assert_rv!(
            call!(raw, C_SignFinal(session, short.as_mut_ptr(), &mut len)),
            CKR_BUFFER_TOO_SMALL
        );
        assert_eq!(len, 64);
        assert_eq!(
            t.device_signatures(),
            0,
            "no device signature for length queries"
        );
        let mut signature = [0u8; 64];
        let mut len: CK_ULONG = 64;
        assert_rv!(
            call!(raw, C_SignFinal(session, signature.as_mut_ptr(), &mut len)),
            CKR_OK
        );
        assert_eq!(t.device_signatures(), 1);
        assert!(common::verifies(
            &t.device_ec_point(1),
            &common::sha256(&message),
            &signature
        ));
    });
}

/// cryptoki's `sign` makes a length query and then signs: one device signature per signature.
#[test]
fn one_device_signature_per_signature() {
    Scenario::zymkey4i().run(|t| {
        let pkcs11 = t.init();
        let session = common::open_session(&pkcs11);
        let point = t.device_ec_point(2);
        for i in 0..5u8 {
            let digest = common::sha256(&[i]);
            let signature = common::sign_ecdsa(&session, 2, &digest);
            assert!(common::verifies(&point, &digest, &signature));
            assert_eq!(
                t.device_signatures(),
                usize::from(i) + 1,
                "after signature {}",
                i + 1
            );
        }
        let ops = t.device_ops();
        let signs: Vec<_> = ops.iter().filter(|line| line.starts_with("sign")).collect();
        assert!(
            signs.iter().all(|line| line.as_str() == "sign 2"),
            "signed with slot 2: {signs:?}"
        );
    });
}

/// CKM_ECDSA takes a digest of any common size: short input is left-padded to 32 bytes, long
/// input keeps its leftmost 32 bytes (what TLS 1.2 hands libp11 with SHA-1/224/384/512).
#[test]
fn ecdsa_input_lengths() {
    Scenario::zymkey4i().run(|t| {
        let pkcs11 = t.init();
        let session = common::open_session(&pkcs11);
        for slot in 0..3u16 {
            let point = t.device_ec_point(slot);
            for len in [20usize, 28, 32, 48, 64] {
                let input: Vec<u8> = (0..len)
                    .map(|i| (i as u8).wrapping_mul(37).wrapping_add(slot as u8 + 1))
                    .collect();
                let signature = common::sign_ecdsa(&session, slot, &input);
                assert_eq!(signature.len(), 64, "raw r‖s");
                let digest = common::ecdsa_digest(&input);
                assert!(
                    common::verifies(&point, &digest, &signature),
                    "slot {slot}, {len}-byte input verifies as its 32-byte digest"
                );
                assert!(
                    common::verifies(&point, &input, &signature),
                    "slot {slot}, {len}-byte input verifies as OpenSSL treats the input"
                );
            }
        }
    });
}

#[test]
fn ecdsa_sha256_single_and_multi_part() {
    Scenario::zymkey4i().run(|t| {
        let pkcs11 = t.init();
        let session = common::open_session(&pkcs11);
        let key = common::private_key(&session, 0);
        let point = t.device_ec_point(0);
        let message: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        let digest = common::sha256(&message);

        let single = session
            .sign(&Mechanism::EcdsaSha256, key, &message)
            .expect("single-part");
        assert!(
            common::verifies(&point, &digest, &single),
            "single-part CKM_ECDSA_SHA256"
        );

        session
            .sign_init(&Mechanism::EcdsaSha256, key)
            .expect("C_SignInit");
        session.sign_update(&message[..1]).expect("C_SignUpdate");
        session.sign_update(&[]).expect("empty C_SignUpdate");
        session
            .sign_update(&message[1..1000])
            .expect("C_SignUpdate");
        session.sign_update(&message[1000..]).expect("C_SignUpdate");
        let multi = session.sign_final().expect("C_SignFinal");
        assert!(
            common::verifies(&point, &digest, &multi),
            "multi-part CKM_ECDSA_SHA256"
        );

        let empty = session
            .sign(&Mechanism::EcdsaSha256, key, &[])
            .expect("empty message");
        assert!(
            common::verifies(&point, &common::sha256(&[]), &empty),
            "empty message"
        );
        assert_eq!(t.device_signatures(), 3);
    });
}

#[test]
fn verify_through_the_module() {
    Scenario::zymkey4i().run(|t| {
        let pkcs11 = t.init();
        let session = common::open_session(&pkcs11);
        let digest = common::sha256(b"verify me");
        let signature = common::sign_ecdsa(&session, 1, &digest);
        let public = common::public_key(&session, 1);
        session
            .verify(&Mechanism::Ecdsa, public, &digest, &signature)
            .expect("C_Verify of a good signature");
        let mut tampered = signature.clone();
        tampered[10] ^= 1;
        let err = session
            .verify(&Mechanism::Ecdsa, public, &digest, &tampered)
            .expect_err("tampered signature");
        assert_eq!(common::rv(err), RvError::SignatureInvalid);
        let err = session
            .verify(&Mechanism::Ecdsa, public, &digest, &signature[..63])
            .expect_err("a short signature");
        assert_eq!(common::rv(err), RvError::SignatureLenRange);
        let other = common::public_key(&session, 2);
        let err = session
            .verify(&Mechanism::Ecdsa, other, &digest, &signature)
            .expect_err("another slot's key");
        assert_eq!(common::rv(err), RvError::SignatureInvalid);
        let message = b"verify a message";
        let signature = session
            .sign(
                &Mechanism::EcdsaSha256,
                common::private_key(&session, 1),
                message,
            )
            .expect("sign");
        session
            .verify(&Mechanism::EcdsaSha256, public, message, &signature)
            .expect("C_Verify with CKM_ECDSA_SHA256");
    });
}

#[test]
fn sign_in_wrong_states() {
    Scenario::zymkey4i().run(|t| {
        let raw = t.raw();
        assert_rv!(raw.initialize_os_locking(), CKR_OK);
        let session = raw.session();
        let key = raw.private_key(session, 0);
        let public = raw.key(session, CKO_PUBLIC_KEY, 0);
        let digest = [3u8; 32];
        let mut signature = [0u8; 64];
        let mut len: CK_ULONG = 64;
        assert_rv!(
            raw.sign(session, &digest, Some(&mut signature), &mut len),
            CKR_OPERATION_NOT_INITIALIZED,
            "C_Sign without C_SignInit"
        );
        assert_rv!(
            call!(raw, C_SignUpdate(session, digest.as_ptr() as *mut _, 32)),
            CKR_OPERATION_NOT_INITIALIZED,
            "C_SignUpdate without C_SignInit"
        );
        let mut len: CK_ULONG = 64;
        assert_rv!(
            call!(raw, C_SignFinal(session, signature.as_mut_ptr(), &mut len)),
            CKR_OPERATION_NOT_INITIALIZED,
            "C_SignFinal without C_SignInit"
        );
        assert_rv!(raw.sign_init(session, CKM_ECDSA, key), CKR_OK);
        assert_rv!(
            raw.sign_init(session, CKM_ECDSA, key),
            CKR_OPERATION_ACTIVE,
            "C_SignInit twice"
        );
        // The first operation is still usable.
        let mut len: CK_ULONG = 64;
        assert_rv!(
            raw.sign(session, &digest, Some(&mut signature), &mut len),
            CKR_OK
        );
        assert!(common::verifies(&t.device_ec_point(0), &digest, &signature));

        assert_rv!(
            raw.sign_init(session, CKM_RSA_PKCS, key),
            CKR_MECHANISM_INVALID,
            "RSA on an EC key"
        );
        assert_rv!(
            raw.sign_init(session, CKM_SHA256, key),
            CKR_MECHANISM_INVALID,
            "a digest mechanism"
        );
        let rv = raw.sign_init(session, CKM_ECDSA, public);
        assert!(
            rv == CKR_KEY_FUNCTION_NOT_PERMITTED || rv == CKR_KEY_TYPE_INCONSISTENT,
            "C_SignInit with a public key: got {}, expected CKR_KEY_FUNCTION_NOT_PERMITTED",
            rv_name(rv)
        );
        // A failed C_SignInit leaves no operation behind.
        let mut len: CK_ULONG = 64;
        assert_rv!(
            raw.sign(session, &digest, Some(&mut signature), &mut len),
            CKR_OPERATION_NOT_INITIALIZED
        );
        assert_eq!(t.device_signatures(), 1);
    });
}

/// A failed C_Sign/C_Verify ends the operation (§5.11, §5.13): only CKR_BUFFER_TOO_SMALL
/// and a successful length query keep it. C_SignInit/C_VerifyInit with no mechanism
/// cancel the active operation (PKCS#11 3.0).
#[test]
fn a_failed_call_ends_the_operation() {
    Scenario::zymkey4i().run(|t| {
        let raw = t.raw();
        assert_rv!(raw.initialize_os_locking(), CKR_OK);
        let session = raw.session();
        let key = raw.private_key(session, 0);
        let public = raw.key(session, CKO_PUBLIC_KEY, 0);
        let digest = [3u8; 32];
        let mut signature = [0u8; 64];
        let ended = |what: &str| {
            assert_rv!(
                raw.sign_init(session, CKM_ECDSA, key),
                CKR_OK,
                "C_SignInit after {what}"
            );
            assert_rv!(
                call!(raw, C_SignInit(session, ptr::null_mut(), key)),
                CKR_OK
            );
        };

        // Arguments refused before the token sees them.
        assert_rv!(raw.sign_init(session, CKM_ECDSA, key), CKR_OK);
        let mut len: CK_ULONG = 64;
        assert_rv!(
            call!(
                raw,
                C_Sign(
                    session,
                    ptr::null_mut(),
                    5,
                    signature.as_mut_ptr(),
                    &mut len
                )
            ),
            CKR_ARGUMENTS_BAD
        );
        ended("C_Sign with a NULL input");
        assert_rv!(raw.sign_init(session, CKM_ECDSA, key), CKR_OK);
        assert_rv!(
            call!(
                raw,
                C_Sign(
                    session,
                    digest.as_ptr() as *mut _,
                    32,
                    signature.as_mut_ptr(),
                    ptr::null_mut()
                )
            ),
            CKR_ARGUMENTS_BAD
        );
        ended("C_Sign with a NULL length");
        // A failure inside the token: an empty CKM_ECDSA input.
        assert_rv!(raw.sign_init(session, CKM_ECDSA, key), CKR_OK);
        let mut len: CK_ULONG = 64;
        assert_ne!(
            call!(
                raw,
                C_Sign(
                    session,
                    digest.as_ptr() as *mut _,
                    0,
                    signature.as_mut_ptr(),
                    &mut len
                )
            ),
            CKR_OK
        );
        ended("C_Sign with an empty input");
        // C_Sign after C_SignUpdate.
        assert_rv!(raw.sign_init(session, CKM_ECDSA_SHA256, key), CKR_OK);
        assert_rv!(
            call!(raw, C_SignUpdate(session, digest.as_ptr() as *mut _, 32)),
            CKR_OK
        );
        let mut len: CK_ULONG = 64;
        assert_rv!(
            raw.sign(session, &digest, Some(&mut signature), &mut len),
            CKR_OPERATION_ACTIVE
        );
        ended("C_Sign after C_SignUpdate");
        // C_SignUpdate and C_SignFinal refusing their arguments.
        assert_rv!(raw.sign_init(session, CKM_ECDSA_SHA256, key), CKR_OK);
        assert_rv!(
            call!(raw, C_SignUpdate(session, ptr::null_mut(), 5)),
            CKR_ARGUMENTS_BAD
        );
        ended("C_SignUpdate with a NULL input");
        assert_rv!(raw.sign_init(session, CKM_ECDSA_SHA256, key), CKR_OK);
        assert_rv!(
            call!(
                raw,
                C_SignFinal(session, signature.as_mut_ptr(), ptr::null_mut())
            ),
            CKR_ARGUMENTS_BAD
        );
        ended("C_SignFinal with a NULL length");

        // What keeps the operation: a length query and a short buffer.
        assert_rv!(raw.sign_init(session, CKM_ECDSA, key), CKR_OK);
        let mut len: CK_ULONG = 0;
        assert_rv!(raw.sign(session, &digest, None, &mut len), CKR_OK);
        let mut short = [0u8; 10];
        let mut len: CK_ULONG = 10;
        assert_rv!(
            raw.sign(session, &digest, Some(&mut short), &mut len),
            CKR_BUFFER_TOO_SMALL
        );
        let mut len: CK_ULONG = 64;
        assert_rv!(
            raw.sign(session, &digest, Some(&mut signature), &mut len),
            CKR_OK
        );
        assert!(common::verifies(&t.device_ec_point(0), &digest, &signature));

        // C_SignInit(session, NULL) cancels; with no operation it is a no-op.
        assert_rv!(raw.sign_init(session, CKM_ECDSA, key), CKR_OK);
        assert_rv!(
            call!(raw, C_SignInit(session, ptr::null_mut(), key)),
            CKR_OK
        );
        let mut len: CK_ULONG = 64;
        assert_rv!(
            raw.sign(session, &digest, Some(&mut signature), &mut len),
            CKR_OPERATION_NOT_INITIALIZED,
            "C_Sign after a cancel"
        );
        assert_rv!(
            call!(raw, C_SignInit(session, ptr::null_mut(), key)),
            CKR_OK
        );

        // The same for verification.
        let verify_ended = |what: &str| {
            assert_rv!(
                call!(
                    raw,
                    C_VerifyInit(
                        session,
                        &mut CK_MECHANISM {
                            mechanism: CKM_ECDSA,
                            pParameter: ptr::null_mut(),
                            ulParameterLen: 0
                        },
                        public
                    )
                ),
                CKR_OK,
                "C_VerifyInit after {what}"
            );
            assert_rv!(
                call!(raw, C_VerifyInit(session, ptr::null_mut(), public)),
                CKR_OK
            );
        };
        let mut ecdsa = CK_MECHANISM {
            mechanism: CKM_ECDSA,
            pParameter: ptr::null_mut(),
            ulParameterLen: 0,
        };
        let mut ecdsa_sha256 = CK_MECHANISM {
            mechanism: CKM_ECDSA_SHA256,
            ..ecdsa
        };
        assert_rv!(
            call!(raw, C_VerifyInit(session, &mut ecdsa, public)),
            CKR_OK
        );
        assert_rv!(
            call!(
                raw,
                C_Verify(session, ptr::null_mut(), 5, signature.as_mut_ptr(), 64)
            ),
            CKR_ARGUMENTS_BAD
        );
        verify_ended("C_Verify with a NULL input");
        assert_rv!(
            call!(raw, C_VerifyInit(session, &mut ecdsa_sha256, public)),
            CKR_OK
        );
        assert_rv!(
            call!(raw, C_VerifyUpdate(session, digest.as_ptr() as *mut _, 32)),
            CKR_OK
        );
        assert_rv!(
            call!(
                raw,
                C_Verify(
                    session,
                    digest.as_ptr() as *mut _,
                    32,
                    signature.as_mut_ptr(),
                    64
                )
            ),
            CKR_OPERATION_ACTIVE
        );
        verify_ended("C_Verify after C_VerifyUpdate");
        assert_rv!(
            call!(raw, C_VerifyInit(session, &mut ecdsa_sha256, public)),
            CKR_OK
        );
        assert_rv!(
            call!(raw, C_VerifyFinal(session, ptr::null_mut(), 64)),
            CKR_ARGUMENTS_BAD
        );
        verify_ended("C_VerifyFinal with a NULL signature");
        assert_eq!(t.device_signatures(), 1);
    });
}

/// CKM_ECDSA is single-part only.
#[test]
fn ecdsa_is_single_part() {
    Scenario::zymkey4i().run(|t| {
        let raw = t.raw();
        assert_rv!(raw.initialize_os_locking(), CKR_OK);
        let session = raw.session();
        let key = raw.private_key(session, 0);
        assert_rv!(raw.sign_init(session, CKM_ECDSA, key), CKR_OK);
        let data = [1u8; 32];
        let rv = call!(raw, C_SignUpdate(session, data.as_ptr() as *mut _, 32));
        assert!(
            rv == CKR_FUNCTION_NOT_SUPPORTED
                || rv == CKR_OPERATION_NOT_INITIALIZED
                || rv == CKR_MECHANISM_INVALID,
            "C_SignUpdate with CKM_ECDSA: got {}",
            rv_name(rv)
        );
        assert_eq!(t.device_signatures(), 0);
    });
}

/// 8 threads, each with its own session, 25 signatures each: all verify, one device
/// signature each.
#[test]
fn threads_sign_concurrently() {
    Scenario::zymkey4i().run(|t| {
        let pkcs11 = t.init();
        let points: Vec<Vec<u8>> = (0..3).map(|slot| t.device_ec_point(slot)).collect();
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..8u8)
                .map(|thread| {
                    let pkcs11 = &pkcs11;
                    let points = &points;
                    scope.spawn(move || {
                        let session = common::open_session(pkcs11);
                        let slot = u16::from(thread % 3);
                        for i in 0..25u8 {
                            let digest = common::sha256(&[thread, i]);
                            let signature = common::sign_ecdsa(&session, slot, &digest);
                            assert!(
                                common::verifies(&points[slot as usize], &digest, &signature),
                                "thread {thread} signature {i}"
                            );
                        }
                    })
                })
                .collect();
            for worker in workers {
                worker.join().expect("signing thread");
            }
        });
        assert_eq!(
            t.device_signatures(),
            200,
            "one device signature per signature"
        );
    });
}

/// Steps of the forked child, reported through its exit status.
const FORK_STEPS: &[&str] = &[
    "ok",
    "C_Initialize(NULL) in the child did not return CKR_OK",
    "C_GetSlotList in the child failed",
    "C_OpenSession in the child failed",
    "finding the key in the child failed",
    "C_Sign in the child failed",
    "the child's signature did not verify",
    "the child panicked",
];

/// After fork(), libp11 calls C_Initialize(NULL) in the child without C_Finalize: the module
/// must answer CKR_OK and work in the child.
#[test]
fn initialize_in_a_forked_child() {
    Scenario::zymkey4i().run(|t| {
        let raw = t.raw();
        assert_rv!(raw.initialize_os_locking(), CKR_OK);
        let session = raw.session();
        let key = raw.private_key(session, 0);
        let point = t.device_ec_point(0);
        raw.sign_once(session, CKM_ECDSA, key, &[1u8; 32])
            .expect("sign before fork");

        // SAFETY: the child only calls the module, computes and leaves with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork");
        if pid == 0 {
            let step = std::panic::catch_unwind(|| {
                if raw.initialize_null() != CKR_OK {
                    return 1;
                }
                let Ok(slots) = raw.slots(true) else { return 2 };
                let Some(&slot) = slots.first() else { return 2 };
                let Ok(child_session) = raw.open_session(slot, CKF_SERIAL_SESSION) else {
                    return 3;
                };
                let mut class = CKO_PRIVATE_KEY;
                let mut label = *b"slot0";
                let mut template = [
                    common::raw::ulong_attribute(CKA_CLASS, &mut class),
                    common::raw::bytes_attribute(CKA_LABEL, &mut label),
                ];
                let found = match raw.find(child_session, &mut template) {
                    Ok(found) if found.len() == 1 => found,
                    _ => return 4,
                };
                let digest = [0xC5u8; 32];
                let Ok(signature) = raw.sign_once(child_session, CKM_ECDSA, found[0], &digest)
                else {
                    return 5;
                };
                if !common::verifies(&point, &digest, &signature) {
                    return 6;
                }
                0
            })
            .unwrap_or(7);
            // SAFETY: leave the forked child without running the parent's destructors.
            unsafe { libc::_exit(step) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(waited, pid, "waitpid");
        assert!(
            libc::WIFEXITED(status),
            "the forked child crashed (status {status:#x})"
        );
        let code = libc::WEXITSTATUS(status) as usize;
        assert_eq!(
            code,
            0,
            "forked child: {}",
            FORK_STEPS.get(code).unwrap_or(&"unknown")
        );

        // The parent goes on as before.
        let signature = raw
            .sign_once(session, CKM_ECDSA, key, &[2u8; 32])
            .expect("sign after fork");
        assert!(common::verifies(&point, &[2u8; 32], &signature));
        assert_eq!(t.device_signatures(), 3, "parent, child, parent");
    });
}

/// A device failure in the middle of an operation is CKR_DEVICE_ERROR, and the next
/// signature works.
#[test]
fn device_error_then_next_signature_works() {
    Scenario::zymkey4i().run(|t| {
        let raw = t.raw();
        assert_rv!(raw.initialize_os_locking(), CKR_OK);
        let session = raw.session();
        let key = raw.private_key(session, 0);
        let point = t.device_ec_point(0);
        let digest = [0x42u8; 32];

        t.fail_next_signature();
        assert_rv!(raw.sign_init(session, CKM_ECDSA, key), CKR_OK);
        let mut len: CK_ULONG = 0;
        assert_rv!(
            raw.sign(session, &digest, None, &mut len),
            CKR_OK,
            "length query before the failure"
        );
        let mut signature = [0u8; 64];
        let mut len: CK_ULONG = 64;
        assert_rv!(
            raw.sign(session, &digest, Some(&mut signature), &mut len),
            CKR_DEVICE_ERROR,
            "C_Sign when the device fails"
        );
        let mut len: CK_ULONG = 64;
        assert_rv!(
            raw.sign(session, &digest, Some(&mut signature), &mut len),
            CKR_OPERATION_NOT_INITIALIZED,
            "a failed C_Sign ends the operation"
        );

        let signature = raw
            .sign_once(session, CKM_ECDSA, key, &digest)
            .unwrap_or_else(|rv| panic!("the next signature: {}", rv_name(rv)));
        assert!(common::verifies(&point, &digest, &signature));

        // The same for a multi-part signature.
        t.fail_next_signature();
        assert_rv!(raw.sign_init(session, CKM_ECDSA_SHA256, key), CKR_OK);
        assert_rv!(
            call!(raw, C_SignUpdate(session, digest.as_ptr() as *mut _, 32)),
            CKR_OK
        );
        let mut out = [0u8; 64];
        let mut len: CK_ULONG = 64;
        assert_rv!(
            call!(raw, C_SignFinal(session, out.as_mut_ptr(), &mut len)),
            CKR_DEVICE_ERROR
        );
        let signature = raw
            .sign_once(session, CKM_ECDSA_SHA256, key, &digest)
            .unwrap_or_else(|rv| panic!("the next signature: {}", rv_name(rv)));
        assert!(common::verifies(
            &point,
            &common::sha256(&digest),
            &signature
        ));
    });
}

/// Every signature mechanism the token advertises signs, and the signature verifies over the
/// mechanism's hash (longer hashes keep their leftmost 32 bytes, as OpenSSL does).
#[test]
fn every_advertised_signature_mechanism_verifies() {
    use cryptoki::mechanism::MechanismType;
    use openssl::hash::{hash, MessageDigest};

    Scenario::zymkey4i().run(|t| {
        let pkcs11 = t.init();
        let slot = common::token_slot(&pkcs11);
        let advertised = pkcs11.get_mechanism_list(slot).expect("C_GetMechanismList");
        let session = common::open_session(&pkcs11);
        let key = common::private_key(&session, 0);
        let public = common::public_key(&session, 0);
        let point = t.device_ec_point(0);
        let message = b"every advertised mechanism".repeat(7);
        let hashed = [
            (
                Mechanism::EcdsaSha1,
                MechanismType::ECDSA_SHA1,
                MessageDigest::sha1(),
            ),
            (
                Mechanism::EcdsaSha224,
                MechanismType::ECDSA_SHA224,
                MessageDigest::sha224(),
            ),
            (
                Mechanism::EcdsaSha256,
                MechanismType::ECDSA_SHA256,
                MessageDigest::sha256(),
            ),
            (
                Mechanism::EcdsaSha384,
                MechanismType::ECDSA_SHA384,
                MessageDigest::sha384(),
            ),
            (
                Mechanism::EcdsaSha512,
                MechanismType::ECDSA_SHA512,
                MessageDigest::sha512(),
            ),
        ];
        let mut signed = 0;
        for (mechanism, kind, digest) in hashed {
            if !advertised.contains(&kind) {
                continue;
            }
            let info = pkcs11
                .get_mechanism_info(slot, kind)
                .expect("C_GetMechanismInfo");
            assert!(info.sign(), "{kind} advertises CKF_SIGN");
            let hashed = hash(digest, &message).unwrap();
            let single = session
                .sign(&mechanism, key, &message)
                .expect("single-part");
            assert!(
                common::verifies(&point, &hashed, &single),
                "{kind} single-part"
            );
            session.sign_init(&mechanism, key).expect("C_SignInit");
            for chunk in message.chunks(17) {
                session.sign_update(chunk).expect("C_SignUpdate");
            }
            let multi = session.sign_final().expect("C_SignFinal");
            assert!(
                common::verifies(&point, &hashed, &multi),
                "{kind} multi-part"
            );
            session
                .verify(&mechanism, public, &message, &single)
                .expect("C_Verify");
            signed += 2;
        }
        assert_eq!(
            t.device_signatures(),
            signed,
            "one device signature per signature"
        );
    });
}

/// Signatures from several processes at once: each process signs, all verify.
#[test]
fn processes_sign_concurrently() {
    let scenario = Scenario::zymkey4i();
    scenario.run_parallel(4, |t, index| {
        let pkcs11 = t.init();
        let session = common::open_session(&pkcs11);
        let point = t.device_ec_point(0);
        for i in 0..10u8 {
            let digest = common::sha256(&[index as u8, i]);
            let signature = common::sign_ecdsa(&session, 0, &digest);
            assert!(
                common::verifies(&point, &digest, &signature),
                "process {index}, signature {i}"
            );
        }
    });
    scenario.run(|t| {
        assert_eq!(
            t.device_signatures(),
            40,
            "one device signature per signature, in all processes"
        );
    });
}
