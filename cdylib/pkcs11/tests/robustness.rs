//! Robustness: every exported function answers NULL pointers, invalid handles and wrong states
//! with the right CKR and never crashes; bad set-ups (missing Zymkey library, corrupt token
//! store) give clear errors and lose nothing.

mod common;

use std::ptr;

use common::raw::{assert_rv, call, rv_name, sweep, Handles, Pointers};
use common::Scenario;
use cryptoki_sys::*;

/// Functions the module implements; every other one answers CKR_FUNCTION_NOT_SUPPORTED.
const IMPLEMENTED: &[&str] = &[
    "C_GetInfo",
    "C_GetFunctionList",
    "C_GetSlotList",
    "C_GetSlotInfo",
    "C_GetTokenInfo",
    "C_GetMechanismList",
    "C_GetMechanismInfo",
    "C_OpenSession",
    "C_CloseSession",
    "C_CloseAllSessions",
    "C_GetSessionInfo",
    "C_Login",
    "C_Logout",
    "C_CreateObject",
    "C_DestroyObject",
    "C_GetAttributeValue",
    "C_FindObjectsInit",
    "C_FindObjects",
    "C_FindObjectsFinal",
    "C_SignInit",
    "C_Sign",
    "C_SignUpdate",
    "C_SignFinal",
    "C_VerifyInit",
    "C_Verify",
    "C_GenerateKeyPair",
    "C_GenerateRandom",
];

fn implemented(name: &str) -> bool {
    IMPLEMENTED.contains(&name)
}

/// Functions whose first argument is a slot rather than a session.
fn takes_slot(name: &str) -> bool {
    matches!(
        name,
        "C_GetSlotInfo"
            | "C_GetTokenInfo"
            | "C_GetMechanismList"
            | "C_GetMechanismInfo"
            | "C_InitToken"
            | "C_OpenSession"
            | "C_CloseAllSessions"
    )
}

/// Checks every answer of a sweep; reports all the wrong ones at once.
fn check(results: &[(&'static str, CK_RV)], expected: impl Fn(&str) -> Vec<CK_RV>) {
    let mut wrong = Vec::new();
    for &(name, rv) in results {
        let allowed = expected(name);
        if !allowed.contains(&rv) {
            let allowed: Vec<String> = allowed.iter().map(|&rv| rv_name(rv)).collect();
            wrong.push(format!(
                "{name}: got {}, expected {}",
                rv_name(rv),
                allowed.join(" or ")
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} wrong answers:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

/// The answer of an implemented function, or of any function when unsupported ones may say so.
fn or_not_supported(name: &str, rv: CK_RV) -> Vec<CK_RV> {
    if implemented(name) {
        vec![rv]
    } else {
        vec![rv, CKR_FUNCTION_NOT_SUPPORTED]
    }
}

#[test]
fn function_list_is_complete() {
    Scenario::zymkey4i().run(|t| {
        let raw = t.raw();
        let missing: Vec<&str> = common::raw::entries(raw.f)
            .into_iter()
            .filter(|(_, present)| !present)
            .map(|(name, _)| name)
            .collect();
        assert!(
            missing.is_empty(),
            "NULL entries in the function list: {missing:?}"
        );
        assert_eq!(raw.f.version.major, 2, "a PKCS#11 2.x function list");
        assert_eq!(raw.f.version.minor, 40, "a PKCS#11 2.40 function list");
        assert_rv!(
            call!(raw, C_GetFunctionList(ptr::null_mut())),
            CKR_ARGUMENTS_BAD,
            "C_GetFunctionList(NULL)"
        );
    });
}

fn check_not_initialized(results: &[(&'static str, CK_RV)], pointers: Pointers) {
    check(results, |name| match name {
        "C_GetFunctionList" if pointers == Pointers::Null => vec![CKR_ARGUMENTS_BAD],
        "C_GetFunctionList" => vec![CKR_OK],
        _ => or_not_supported(name, CKR_CRYPTOKI_NOT_INITIALIZED),
    });
}

#[test]
fn every_function_before_initialize_is_not_initialized() {
    Scenario::zymkey4i().run(|t| {
        let raw = t.raw();
        let handles = Handles {
            slot: 0,
            session: 1,
            object: 1,
        };
        check_not_initialized(&sweep(&raw, handles, Pointers::Valid), Pointers::Valid);
        check_not_initialized(&sweep(&raw, handles, Pointers::Null), Pointers::Null);
        assert_rv!(
            raw.finalize(),
            CKR_CRYPTOKI_NOT_INITIALIZED,
            "C_Finalize before C_Initialize"
        );
        // Nothing above broke the module.
        assert_rv!(raw.initialize_os_locking(), CKR_OK);
        raw.session();
    });
}

#[test]
fn every_function_after_finalize_is_not_initialized() {
    Scenario::zymkey4i().run(|t| {
        let raw = t.raw();
        assert_rv!(raw.initialize_os_locking(), CKR_OK);
        let slot = raw.token_slot();
        let session = raw.session();
        let object = raw.private_key(session, 0);
        assert_rv!(raw.finalize(), CKR_OK);
        let handles = Handles {
            slot,
            session,
            object,
        };
        check_not_initialized(&sweep(&raw, handles, Pointers::Valid), Pointers::Valid);
        check_not_initialized(&sweep(&raw, handles, Pointers::Null), Pointers::Null);
    });
}

/// NULL for every pointer argument, with valid handles: CKR_ARGUMENTS_BAD everywhere.
#[test]
fn every_function_answers_null_pointers() {
    Scenario::zymkey4i().run(|t| {
        let raw = t.raw();
        assert_rv!(raw.initialize_os_locking(), CKR_OK);
        let slot = raw.token_slot();
        let session = raw.session();
        let object = raw.private_key(session, 0);
        let results = sweep(
            &raw,
            Handles {
                slot,
                session,
                object,
            },
            Pointers::Null,
        );
        check(&results, |name| match name {
            // No operation is active: either answer is right.
            "C_FindObjects" | "C_Sign" | "C_SignUpdate" | "C_SignFinal" | "C_Verify" => {
                vec![CKR_ARGUMENTS_BAD, CKR_OPERATION_NOT_INITIALIZED]
            }
            // A NULL PIN means "protected authentication path"; without a PIN any login is fine.
            "C_Login" => vec![CKR_OK, CKR_ARGUMENTS_BAD],
            // No mechanism cancels the active operation (PKCS#11 3.0), here none.
            "C_SignInit" | "C_VerifyInit" => vec![CKR_OK],
            // Not a function of this era (PKCS#11 2.40 §5.16).
            "C_GetFunctionStatus" | "C_CancelFunction" => {
                vec![CKR_FUNCTION_NOT_PARALLEL, CKR_FUNCTION_NOT_SUPPORTED]
            }
            _ if implemented(name) => vec![CKR_ARGUMENTS_BAD],
            _ => vec![
                CKR_ARGUMENTS_BAD,
                CKR_FUNCTION_NOT_SUPPORTED,
                CKR_OPERATION_NOT_INITIALIZED,
            ],
        });
        // The module is unharmed.
        raw.sign_once(session, CKM_ECDSA, object, &[1u8; 32])
            .expect("sign after the sweep");
    });
}

/// NULL pointers inside active operations: CKR_ARGUMENTS_BAD. Each check uses a fresh
/// session, since whether a failed call ends the operation is the module's choice.
#[test]
fn null_pointers_in_active_operations() {
    Scenario::zymkey4i().run(|t| {
        let raw = t.raw();
        assert_rv!(raw.initialize_os_locking(), CKR_OK);
        let key = raw.private_key(raw.session(), 0);
        let public = raw.key(raw.session(), CKO_PUBLIC_KEY, 0);
        let data = [7u8; 32];
        let mut signature = [0u8; 64];
        let mut len: CK_ULONG = 64;

        let session = raw.session();
        assert_rv!(raw.sign_init(session, CKM_ECDSA, key), CKR_OK);
        assert_rv!(
            call!(
                raw,
                C_Sign(
                    session,
                    data.as_ptr() as *mut _,
                    32,
                    signature.as_mut_ptr(),
                    ptr::null_mut()
                )
            ),
            CKR_ARGUMENTS_BAD,
            "C_Sign with a NULL length pointer"
        );
        let session = raw.session();
        assert_rv!(raw.sign_init(session, CKM_ECDSA, key), CKR_OK);
        assert_rv!(
            call!(
                raw,
                C_Sign(
                    session,
                    ptr::null_mut(),
                    32,
                    signature.as_mut_ptr(),
                    &mut len
                )
            ),
            CKR_ARGUMENTS_BAD,
            "C_Sign with NULL data"
        );
        let session = raw.session();
        assert_rv!(raw.sign_init(session, CKM_ECDSA_SHA256, key), CKR_OK);
        assert_rv!(
            call!(raw, C_SignUpdate(session, ptr::null_mut(), 32)),
            CKR_ARGUMENTS_BAD,
            "C_SignUpdate with NULL data"
        );
        let session = raw.session();
        assert_rv!(raw.sign_init(session, CKM_ECDSA_SHA256, key), CKR_OK);
        assert_rv!(
            call!(
                raw,
                C_SignFinal(session, signature.as_mut_ptr(), ptr::null_mut())
            ),
            CKR_ARGUMENTS_BAD,
            "C_SignFinal with a NULL length pointer"
        );
        assert_eq!(
            t.device_signatures(),
            0,
            "no device signature for bad arguments"
        );

        let session = raw.session();
        let mut empty: [CK_ATTRIBUTE; 0] = [];
        assert_rv!(
            call!(raw, C_FindObjectsInit(session, empty.as_mut_ptr(), 0)),
            CKR_OK
        );
        let mut count: CK_ULONG = 0;
        assert_rv!(
            call!(raw, C_FindObjects(session, ptr::null_mut(), 1, &mut count)),
            CKR_ARGUMENTS_BAD,
            "C_FindObjects with a NULL handle array"
        );
        let mut handle = CK_INVALID_HANDLE;
        assert_rv!(
            call!(raw, C_FindObjects(session, &mut handle, 1, ptr::null_mut())),
            CKR_ARGUMENTS_BAD,
            "C_FindObjects with a NULL count"
        );

        let session = raw.session();
        let mut mechanism = CK_MECHANISM {
            mechanism: CKM_ECDSA,
            pParameter: ptr::null_mut(),
            ulParameterLen: 0,
        };
        assert_rv!(
            call!(raw, C_VerifyInit(session, &mut mechanism, public)),
            CKR_OK
        );
        assert_rv!(
            call!(
                raw,
                C_Verify(session, data.as_ptr() as *mut _, 32, ptr::null_mut(), 64)
            ),
            CKR_ARGUMENTS_BAD,
            "C_Verify with a NULL signature"
        );

        let session = raw.session();
        let mut attribute = [CK_ATTRIBUTE {
            type_: CKA_LABEL,
            pValue: ptr::null_mut(),
            ulValueLen: 0,
        }];
        assert_rv!(
            call!(
                raw,
                C_GetAttributeValue(session, key, attribute.as_mut_ptr(), 1)
            ),
            CKR_OK,
            "a NULL pValue is a length query"
        );
        assert_eq!(attribute[0].ulValueLen, 5);
        assert_rv!(
            call!(raw, C_GetAttributeValue(session, key, ptr::null_mut(), 1)),
            CKR_ARGUMENTS_BAD,
            "a NULL template"
        );
        // The module is unharmed.
        raw.sign_once(session, CKM_ECDSA, key, &data)
            .expect("sign afterwards");
    });
}

/// Invalid session, slot and object handles, with valid pointers.
#[test]
fn every_function_answers_invalid_handles() {
    Scenario::zymkey4i().run(|t| {
        let raw = t.raw();
        assert_rv!(raw.initialize_os_locking(), CKR_OK);
        let session = raw.session();
        let handles = Handles {
            slot: 0xBAD0,
            session: 0x0BAD_5E55,
            object: 0xBAD0_B1EC,
        };
        let results = sweep(&raw, handles, Pointers::Valid);
        check(&results, |name| match name {
            "C_GetInfo" | "C_GetFunctionList" | "C_GetSlotList" => vec![CKR_OK],
            "C_WaitForSlotEvent" => vec![CKR_NO_EVENT, CKR_FUNCTION_NOT_SUPPORTED],
            "C_GetFunctionStatus" | "C_CancelFunction" => {
                vec![
                    CKR_SESSION_HANDLE_INVALID,
                    CKR_FUNCTION_NOT_PARALLEL,
                    CKR_FUNCTION_NOT_SUPPORTED,
                ]
            }
            _ if takes_slot(name) => or_not_supported(name, CKR_SLOT_ID_INVALID),
            _ => or_not_supported(name, CKR_SESSION_HANDLE_INVALID),
        });
        // The real session is untouched.
        let key = raw.private_key(session, 0);
        raw.sign_once(session, CKM_ECDSA, key, &[1u8; 32])
            .expect("sign after the sweep");
    });
}

/// Invalid object and key handles in a valid session.
#[test]
fn invalid_object_handles() {
    Scenario::zymkey4i().run(|t| {
        let raw = t.raw();
        assert_rv!(raw.initialize_os_locking(), CKR_OK);
        let slot = raw.token_slot();
        let session = raw
            .open_session(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION)
            .expect("RW session");
        let bad: CK_OBJECT_HANDLE = 0xBAD0_B1EC;
        for object in [bad, CK_INVALID_HANDLE] {
            let mut label = [0u8; 16];
            let mut template = [common::raw::bytes_attribute(CKA_LABEL, &mut label)];
            assert_rv!(
                call!(
                    raw,
                    C_GetAttributeValue(session, object, template.as_mut_ptr(), 1)
                ),
                CKR_OBJECT_HANDLE_INVALID,
                "C_GetAttributeValue({object:#x})"
            );
            assert_rv!(
                call!(raw, C_DestroyObject(session, object)),
                CKR_OBJECT_HANDLE_INVALID,
                "C_DestroyObject({object:#x})"
            );
            assert_rv!(
                raw.sign_init(session, CKM_ECDSA, object),
                CKR_KEY_HANDLE_INVALID,
                "C_SignInit({object:#x})"
            );
            let mut mechanism = CK_MECHANISM {
                mechanism: CKM_ECDSA,
                pParameter: ptr::null_mut(),
                ulParameterLen: 0,
            };
            assert_rv!(
                call!(raw, C_VerifyInit(session, &mut mechanism, object)),
                CKR_KEY_HANDLE_INVALID,
                "C_VerifyInit({object:#x})"
            );
            let mut size: CK_ULONG = 0;
            let rv = call!(raw, C_GetObjectSize(session, object, &mut size));
            assert!(
                rv == CKR_OBJECT_HANDLE_INVALID || rv == CKR_FUNCTION_NOT_SUPPORTED,
                "C_GetObjectSize({object:#x}): {}",
                rv_name(rv)
            );
        }
        // Slot handles.
        let mut token = CK_TOKEN_INFO::default();
        assert_rv!(
            call!(raw, C_GetTokenInfo(slot + 1, &mut token)),
            CKR_SLOT_ID_INVALID
        );
        assert_rv!(
            raw.open_session(slot + 1, CKF_SERIAL_SESSION)
                .err()
                .unwrap_or(CKR_OK),
            CKR_SLOT_ID_INVALID
        );
        // An object handle is not a session handle and vice versa.
        let key = raw.private_key(session, 0);
        let mut info = CK_SESSION_INFO::default();
        if key != session {
            assert_rv!(
                call!(raw, C_GetSessionInfo(key, &mut info)),
                CKR_SESSION_HANDLE_INVALID
            );
        }
    });
}

/// The Zymkey library is missing: C_Initialize still succeeds (a consumer can list slots),
/// the slot shows no token, and the log names the path tried and how to point elsewhere.
#[test]
fn missing_zymkey_library() {
    let missing = "/nonexistent/zkiot-test/libzk_app_utils.so";
    let output = Scenario::zymkey4i().env("ZKIOT_ZKLIB", missing).run(|t| {
        let pkcs11 = t.init();
        let slots = pkcs11.get_all_slots().expect("C_GetSlotList(FALSE)");
        assert_eq!(slots.len(), 1, "the slot is still listed");
        assert!(
            pkcs11
                .get_slots_with_token()
                .expect("C_GetSlotList(TRUE)")
                .is_empty(),
            "no token present"
        );
        let info = pkcs11.get_slot_info(slots[0]).expect("C_GetSlotInfo");
        assert!(!info.token_present(), "CKF_TOKEN_PRESENT clear");
        let err = pkcs11.get_token_info(slots[0]).expect_err("C_GetTokenInfo");
        assert_eq!(common::rv(err), cryptoki::error::RvError::TokenNotPresent);
        let err = pkcs11.open_ro_session(slots[0]).expect_err("C_OpenSession");
        assert_eq!(common::rv(err), cryptoki::error::RvError::TokenNotPresent);
    });
    assert!(
        output.stderr.contains(missing),
        "the log names the library path tried; stderr:\n{}",
        output.stderr
    );
    assert!(
        output.stderr.contains("ZKIOT_ZKLIB"),
        "the log says how to point elsewhere (ZKIOT_ZKLIB); stderr:\n{}",
        output.stderr
    );
    assert!(
        !output.stdout.contains(missing),
        "diagnostics never go to stdout"
    );
}

/// A corrupt token store: an error that names the file, and the file is left as it was.
#[test]
fn corrupt_token_store() {
    let scenario = Scenario::zymkey4i();
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let garbage_for_prepare = garbage.clone();
    scenario.prepare(|_| std::fs::write(scenario.store_path(), &garbage_for_prepare).unwrap());
    let store = scenario.store_path();
    let output = scenario.run(|t| {
        let pkcs11 = t.load();
        let initialized = pkcs11.initialize(cryptoki::context::CInitializeArgs::new(
            cryptoki::context::CInitializeFlags::OS_LOCKING_OK,
        ));
        initialized.expect("C_Initialize with a corrupt store");
        let slot = pkcs11.get_slots_with_token().expect("slots")[0];
        let session = pkcs11.open_rw_session(slot).expect("session");
        // The device keys do not live in the store: they are still found and sign.
        let key = session
            .find_objects(&[
                cryptoki::object::Attribute::Class(cryptoki::object::ObjectClass::PRIVATE_KEY),
                cryptoki::object::Attribute::Label(b"slot0".to_vec()),
            ])
            .expect("C_FindObjects with a corrupt store");
        assert_eq!(key.len(), 1, "the slot 0 key is still served");
        let signature = session
            .sign(&cryptoki::mechanism::Mechanism::Ecdsa, key[0], &[7u8; 32])
            .expect("C_Sign with a corrupt store");
        assert_eq!(signature.len(), 64);
        // Storing must fail rather than overwrite the file.
        let created = session.create_object(&[
            cryptoki::object::Attribute::Class(cryptoki::object::ObjectClass::DATA),
            cryptoki::object::Attribute::Token(true),
            cryptoki::object::Attribute::Label(b"note".to_vec()),
            cryptoki::object::Attribute::Value(b"must not be stored".to_vec()),
        ]);
        assert!(
            created.is_err(),
            "C_CreateObject into a corrupt store must fail"
        );
        let found = session
            .find_objects(&[cryptoki::object::Attribute::Class(
                cryptoki::object::ObjectClass::DATA,
            )])
            .expect("C_FindObjects for data objects");
        assert!(
            found.is_empty(),
            "no data objects out of garbage: {found:?}"
        );
    });
    assert_eq!(
        std::fs::read(&store).expect("the store file is still there"),
        garbage,
        "the store's bytes are unchanged"
    );
    assert!(
        output.stderr.contains(store.to_str().unwrap()),
        "the error names the store file {}; stderr:\n{}",
        store.display(),
        output.stderr
    );
}

/// What the module must do when the Zymkey library cannot be used: no token, and a log line
/// that names the path tried and how to point elsewhere.
fn check_unusable_zymkey_library(path: &str) {
    let output = Scenario::zymkey4i().env("ZKIOT_ZKLIB", path).run(|t| {
        let pkcs11 = t.init();
        let slots = pkcs11.get_all_slots().expect("C_GetSlotList(FALSE)");
        assert_eq!(slots.len(), 1, "the slot is still listed");
        let err = pkcs11.get_token_info(slots[0]).expect_err("C_GetTokenInfo");
        assert_eq!(common::rv(err), cryptoki::error::RvError::TokenNotPresent);
    });
    assert!(
        output.stderr.contains(path),
        "the log names {path}; stderr:\n{}",
        output.stderr
    );
    assert!(
        output.stderr.contains("ZKIOT_ZKLIB"),
        "the log names ZKIOT_ZKLIB; stderr:\n{}",
        output.stderr
    );
}

#[test]
fn zymkey_library_that_is_not_a_library() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("libzk_app_utils.so");
    std::fs::write(&fake, b"#!/bin/sh\necho not a library\n").unwrap();
    check_unusable_zymkey_library(fake.to_str().unwrap());
}

#[test]
fn zymkey_library_without_the_zymkey_symbols() {
    // A real shared library that exports nothing of Zymbit's: the module under test itself.
    let module = testkit::built::module();
    check_unusable_zymkey_library(module.to_str().unwrap());
}

/// A store that cannot be opened (here a directory stands where the file should be): an
/// error naming it, and nothing changed.
#[test]
fn unusable_token_store() {
    let scenario = Scenario::zymkey4i();
    scenario.prepare(|_| std::fs::create_dir(scenario.store_path()).unwrap());
    let output = scenario.run(|t| {
        let pkcs11 = t.load();
        let initialized = pkcs11.initialize(cryptoki::context::CInitializeArgs::new(
            cryptoki::context::CInitializeFlags::OS_LOCKING_OK,
        ));
        if initialized.is_ok() {
            if let Ok(session) = pkcs11
                .get_all_slots()
                .and_then(|slots| pkcs11.open_rw_session(slots[0]))
            {
                let created = session.create_object(&[
                    cryptoki::object::Attribute::Class(cryptoki::object::ObjectClass::DATA),
                    cryptoki::object::Attribute::Token(true),
                    cryptoki::object::Attribute::Value(b"nowhere to go".to_vec()),
                ]);
                assert!(
                    created.is_err(),
                    "C_CreateObject without a usable store must fail"
                );
            }
        }
    });
    let store = scenario.store_path();
    assert!(store.is_dir(), "the directory is still there");
    assert_eq!(
        std::fs::read_dir(&store).unwrap().count(),
        0,
        "nothing was written into it"
    );
    assert!(
        output.stderr.contains(store.to_str().unwrap()),
        "the error names {}; stderr:\n{}",
        store.display(),
        output.stderr
    );
}
