//! General-purpose, slot and token, session and login functions (PKCS#11 2.40 §5.4–5.6).

mod common;

use std::ptr;

use common::raw::{assert_rv, call};
use common::{Model, Scenario};
use cryptoki::context::{CInitializeArgs, CInitializeFlags};
use cryptoki::error::RvError;
use cryptoki::mechanism::MechanismType;
use cryptoki::object::{Attribute, ObjectClass};
use cryptoki::session::{SessionState, UserType};
use cryptoki::types::AuthPin;
use cryptoki_sys::*;

#[test]
fn library_info() {
    Scenario::zymkey4i().run(|t| {
        let pkcs11 = t.init();
        let info = pkcs11.get_library_info().expect("C_GetInfo");
        let version = info.cryptoki_version();
        assert!(
            (version.major(), version.minor()) >= (2, 40),
            "Cryptoki version {version} is at least 2.40"
        );
        assert!(!info.manufacturer_id().is_empty(), "manufacturerID is set");
        assert!(
            !info.library_description().is_empty(),
            "libraryDescription is set"
        );
    });
}

fn check_slot_and_token(model: Model) {
    Scenario::new(model).run(|t| {
        let device = t.device();
        let device_model = device.model().expect("model from the device");
        let device_serial = device.serial_number().expect("serial from the device");

        let pkcs11 = t.init();
        let all = pkcs11.get_all_slots().expect("C_GetSlotList(FALSE)");
        assert_eq!(all.len(), 1, "one slot per Zymkey");
        let slot = common::token_slot(&pkcs11);
        assert_eq!(slot, all[0]);

        let slot_info = pkcs11.get_slot_info(slot).expect("C_GetSlotInfo");
        assert!(slot_info.token_present(), "CKF_TOKEN_PRESENT");
        assert!(
            !slot_info.slot_description().is_empty(),
            "slotDescription is set"
        );

        let token = pkcs11.get_token_info(slot).expect("C_GetTokenInfo");
        assert_eq!(token.label(), "zymkey");
        assert_eq!(token.manufacturer_id(), "Zymbit");
        let expected_model: String = device_model.trim().chars().take(16).collect();
        assert_eq!(
            token.model(),
            expected_model.trim_end(),
            "model from the device"
        );
        let expected_serial: String = device_serial.trim().chars().take(16).collect();
        assert_eq!(
            token.serial_number(),
            expected_serial.trim_end(),
            "serial from the device"
        );
        assert!(!token.serial_number().is_empty(), "serialNumber is set");
        assert!(
            token.token_initialized(),
            "CKF_TOKEN_INITIALIZED (libp11 skips the slot otherwise)"
        );
        assert!(
            !token.login_required(),
            "no CKF_LOGIN_REQUIRED without a configured PIN"
        );
        assert!(
            token.rng(),
            "CKF_RNG: C_GenerateRandom comes from the device"
        );
    });
}

#[test]
fn slot_and_token_info_zymkey4i() {
    check_slot_and_token(Model::Zymkey4i);
}

#[test]
fn slot_and_token_info_hsm6() {
    check_slot_and_token(Model::Hsm6);
}

/// libp11 and the URI matchers compare the trimmed fields: they must be space-padded, not
/// NUL-terminated.
#[test]
fn token_info_fields_are_space_padded() {
    Scenario::zymkey4i().run(|t| {
        let raw = t.raw();
        assert_rv!(raw.initialize_os_locking(), CKR_OK);
        let slot = raw.token_slot();
        let mut token = CK_TOKEN_INFO::default();
        assert_rv!(call!(raw, C_GetTokenInfo(slot, &mut token)), CKR_OK);
        let mut label = b"zymkey".to_vec();
        label.resize(32, b' ');
        assert_eq!(
            token.label.to_vec(),
            label,
            "label: 'zymkey' padded with spaces"
        );
        let mut manufacturer = b"Zymbit".to_vec();
        manufacturer.resize(32, b' ');
        assert_eq!(token.manufacturerID.to_vec(), manufacturer);
        for (name, field) in [
            ("model", &token.model[..]),
            ("serialNumber", &token.serialNumber[..]),
        ] {
            assert!(!field.contains(&0), "{name} has no NUL: {field:?}");
        }
        let mut info = CK_INFO::default();
        assert_rv!(call!(raw, C_GetInfo(&mut info)), CKR_OK);
        assert!(
            !info.manufacturerID.contains(&0),
            "C_GetInfo manufacturerID has no NUL"
        );
        assert!(
            !info.libraryDescription.contains(&0),
            "C_GetInfo libraryDescription has no NUL"
        );
    });
}

fn check_mechanisms(model: Model) {
    Scenario::new(model).run(|t| {
        let pkcs11 = t.init();
        let slot = common::token_slot(&pkcs11);
        let mechanisms = pkcs11.get_mechanism_list(slot).expect("C_GetMechanismList");
        assert!(
            mechanisms.contains(&MechanismType::ECDSA),
            "CKM_ECDSA in {mechanisms:?}"
        );
        assert!(
            mechanisms.contains(&MechanismType::ECDSA_SHA256),
            "CKM_ECDSA_SHA256 in {mechanisms:?}"
        );
        let generates = mechanisms.contains(&MechanismType::ECC_KEY_PAIR_GEN);
        assert_eq!(
            generates,
            model == Model::Hsm6,
            "CKM_EC_KEY_PAIR_GEN only where the model generates keys: {mechanisms:?}"
        );

        for mechanism in [MechanismType::ECDSA, MechanismType::ECDSA_SHA256] {
            let info = pkcs11
                .get_mechanism_info(slot, mechanism)
                .expect("C_GetMechanismInfo");
            assert!(info.sign(), "{mechanism} has CKF_SIGN");
            assert!(
                info.min_key_size() <= 256 && 256 <= info.max_key_size(),
                "{mechanism} key sizes {}..={} cover P-256",
                info.min_key_size(),
                info.max_key_size()
            );
        }
        if generates {
            let info = pkcs11
                .get_mechanism_info(slot, MechanismType::ECC_KEY_PAIR_GEN)
                .expect("C_GetMechanismInfo(CKM_EC_KEY_PAIR_GEN)");
            assert!(info.generate_key_pair(), "CKF_GENERATE_KEY_PAIR");
        } else {
            let err = pkcs11
                .get_mechanism_info(slot, MechanismType::ECC_KEY_PAIR_GEN)
                .expect_err("no CKM_EC_KEY_PAIR_GEN on this model");
            assert_eq!(common::rv(err), RvError::MechanismInvalid);
        }
        let err = pkcs11
            .get_mechanism_info(slot, MechanismType::RSA_PKCS)
            .expect_err("no RSA");
        assert_eq!(common::rv(err), RvError::MechanismInvalid);
    });
}

#[test]
fn mechanisms_zymkey4i() {
    check_mechanisms(Model::Zymkey4i);
}

#[test]
fn mechanisms_hsm6() {
    check_mechanisms(Model::Hsm6);
}

/// The length protocol of `C_GetMechanismList` and `C_GetSlotList`.
#[test]
fn list_length_protocol() {
    Scenario::zymkey4i().run(|t| {
        let raw = t.raw();
        assert_rv!(raw.initialize_os_locking(), CKR_OK);
        let slot = raw.token_slot();

        let mut count: CK_ULONG = 0;
        assert_rv!(
            call!(raw, C_GetMechanismList(slot, ptr::null_mut(), &mut count)),
            CKR_OK
        );
        assert!(
            count >= 2,
            "at least CKM_ECDSA and CKM_ECDSA_SHA256: {count}"
        );
        let mut short = vec![0 as CK_MECHANISM_TYPE; count as usize - 1];
        let mut short_count = short.len() as CK_ULONG;
        assert_rv!(
            call!(
                raw,
                C_GetMechanismList(slot, short.as_mut_ptr(), &mut short_count)
            ),
            CKR_BUFFER_TOO_SMALL
        );
        assert_eq!(
            short_count, count,
            "CKR_BUFFER_TOO_SMALL gives the needed count"
        );

        let mut slots_count: CK_ULONG = 0;
        assert_rv!(
            call!(
                raw,
                C_GetSlotList(CK_TRUE, ptr::null_mut(), &mut slots_count)
            ),
            CKR_OK
        );
        assert_eq!(slots_count, 1);
        let mut none: [CK_SLOT_ID; 0] = [];
        let mut zero: CK_ULONG = 0;
        assert_rv!(
            call!(raw, C_GetSlotList(CK_TRUE, none.as_mut_ptr(), &mut zero)),
            CKR_BUFFER_TOO_SMALL
        );
        assert_eq!(zero, 1);
    });
}

#[test]
fn second_initialize_is_already_initialized() {
    Scenario::zymkey4i().run(|t| {
        let pkcs11 = t.init();
        let err = pkcs11
            .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .expect_err("second C_Initialize");
        assert_eq!(common::rv(err), RvError::CryptokiAlreadyInitialized);
        let raw = t.raw();
        assert_rv!(
            raw.initialize_null(),
            CKR_CRYPTOKI_ALREADY_INITIALIZED,
            "C_Initialize(NULL)"
        );
        // The module still works.
        let session = common::open_session(&pkcs11);
        common::private_key(&session, 0);
    });
}

#[test]
fn finalize_and_initialize_again() {
    Scenario::zymkey4i().run(|t| {
        let raw = t.raw();
        assert_rv!(raw.initialize_os_locking(), CKR_OK);
        let session = raw.session();
        let key_before = raw.private_key(session, 0);
        assert_rv!(raw.finalize(), CKR_OK);
        assert_rv!(
            raw.finalize(),
            CKR_CRYPTOKI_NOT_INITIALIZED,
            "second C_Finalize"
        );
        let mut info = CK_SESSION_INFO::default();
        assert_rv!(
            call!(raw, C_GetSessionInfo(session, &mut info)),
            CKR_CRYPTOKI_NOT_INITIALIZED,
            "a session of before C_Finalize"
        );
        assert_rv!(
            raw.initialize_null(),
            CKR_OK,
            "C_Initialize after C_Finalize"
        );
        let session = raw.session();
        assert_eq!(
            raw.private_key(session, 0),
            key_before,
            "handles are stable across a reload"
        );
        let signature = raw
            .sign_once(session, CKM_ECDSA, key_before, &[7u8; 32])
            .expect("sign after a reload");
        assert!(common::verifies(
            &t.device_ec_point(0),
            &[7u8; 32],
            &signature
        ));
        assert_rv!(raw.finalize(), CKR_OK);
    });
}

#[test]
fn finalize_with_reserved_pointer_is_arguments_bad() {
    Scenario::zymkey4i().run(|t| {
        let raw = t.raw();
        assert_rv!(raw.initialize_os_locking(), CKR_OK);
        let mut reserved = 0u8;
        assert_rv!(
            call!(raw, C_Finalize((&mut reserved as *mut u8).cast())),
            CKR_ARGUMENTS_BAD,
            "C_Finalize(non-NULL)"
        );
        // Still initialised.
        raw.session();
        assert_rv!(raw.finalize(), CKR_OK);
    });
}

/// Either all four mutex functions or none (PKCS#11 2.40 §5.4, C_Initialize).
#[test]
fn initialize_with_some_mutex_functions_is_arguments_bad() {
    unsafe extern "C" fn create_mutex(_mutex: *mut *mut std::ffi::c_void) -> CK_RV {
        CKR_OK
    }
    Scenario::zymkey4i().run(|t| {
        let raw = t.raw();
        let mut args = CK_C_INITIALIZE_ARGS {
            CreateMutex: Some(create_mutex),
            DestroyMutex: None,
            LockMutex: None,
            UnlockMutex: None,
            flags: 0,
            pReserved: ptr::null_mut(),
        };
        assert_rv!(
            call!(
                raw,
                C_Initialize((&mut args as *mut CK_C_INITIALIZE_ARGS).cast())
            ),
            CKR_ARGUMENTS_BAD,
            "C_Initialize with CreateMutex only"
        );
        assert_rv!(
            raw.initialize_os_locking(),
            CKR_OK,
            "a good C_Initialize afterwards"
        );
    });
}

#[test]
fn sessions() {
    Scenario::zymkey4i().run(|t| {
        let pkcs11 = t.init();
        let slot = common::token_slot(&pkcs11);
        let ro = pkcs11.open_ro_session(slot).expect("RO session");
        let info = ro.get_session_info().expect("C_GetSessionInfo");
        assert_eq!(info.slot_id(), slot);
        assert!(!info.read_write());
        assert_eq!(info.session_state(), SessionState::RoPublic);
        let rw = pkcs11.open_rw_session(slot).expect("RW session");
        let info = rw.get_session_info().expect("C_GetSessionInfo");
        assert!(info.read_write());
        assert_eq!(info.session_state(), SessionState::RwPublic);
        assert_ne!(ro.handle(), rw.handle(), "distinct session handles");
        // More sessions than libp11's pool of 16, all distinct.
        let many: Vec<_> = (0..64)
            .map(|_| pkcs11.open_ro_session(slot).expect("one of many sessions"))
            .collect();
        let handles: std::collections::BTreeSet<_> = many.iter().map(|s| s.handle()).collect();
        assert_eq!(handles.len(), 64, "distinct session handles");
        drop(many);

        let raw = t.raw();
        assert_rv!(
            raw.open_session(slot.id() as CK_SLOT_ID, 0)
                .err()
                .unwrap_or(CKR_OK),
            CKR_SESSION_PARALLEL_NOT_SUPPORTED,
            "C_OpenSession without CKF_SERIAL_SESSION"
        );
        let closed = raw
            .open_session(slot.id() as CK_SLOT_ID, CKF_SERIAL_SESSION)
            .expect("session");
        assert_rv!(call!(raw, C_CloseSession(closed)), CKR_OK);
        assert_rv!(
            call!(raw, C_CloseSession(closed)),
            CKR_SESSION_HANDLE_INVALID,
            "closing twice"
        );
        let mut info = CK_SESSION_INFO::default();
        assert_rv!(
            call!(raw, C_GetSessionInfo(closed, &mut info)),
            CKR_SESSION_HANDLE_INVALID
        );

        assert_rv!(
            call!(raw, C_CloseAllSessions(slot.id() as CK_SLOT_ID)),
            CKR_OK
        );
        let mut info = CK_SESSION_INFO::default();
        assert_rv!(
            call!(raw, C_GetSessionInfo(ro.handle(), &mut info)),
            CKR_SESSION_HANDLE_INVALID,
            "after C_CloseAllSessions"
        );
        std::mem::forget(ro);
        std::mem::forget(rw);
    });
}

/// Without a configured PIN, consumers log in anyway (libp11 with `pin-value`): any PIN works.
#[test]
fn login_without_configured_pin_is_accepted() {
    Scenario::zymkey4i().run(|t| {
        let pkcs11 = t.init();
        let session = common::open_session(&pkcs11);
        session
            .login(UserType::User, Some(&AuthPin::new("whatever".into())))
            .expect("C_Login with no PIN configured");
        common::sign_ecdsa(&session, 0, &[1u8; 32]);
        session.logout().expect("C_Logout");
    });
}

#[test]
fn configured_pin_guards_the_private_keys() {
    Scenario::zymkey4i().config("pin = \"1234\"").run(|t| {
        let pkcs11 = t.init();
        let slot = common::token_slot(&pkcs11);
        let token = pkcs11.get_token_info(slot).expect("C_GetTokenInfo");
        assert!(token.login_required(), "CKF_LOGIN_REQUIRED with a PIN");
        assert!(
            token.user_pin_initialized(),
            "CKF_USER_PIN_INITIALIZED with a PIN"
        );

        let session = common::open_session(&pkcs11);
        let private = [Attribute::Class(ObjectClass::PRIVATE_KEY)];
        assert!(
            common::find(&session, &private).is_empty(),
            "private keys hidden before login"
        );
        let public = common::find(&session, &[Attribute::Class(ObjectClass::PUBLIC_KEY)]);
        assert_eq!(public.len(), 3, "public keys visible before login");

        let err = session
            .login(UserType::User, Some(&AuthPin::new("4321".into())))
            .expect_err("wrong PIN");
        assert_eq!(common::rv(err), RvError::PinIncorrect);
        assert!(
            common::find(&session, &private).is_empty(),
            "still hidden after a wrong PIN"
        );

        session
            .login(UserType::User, Some(&AuthPin::new("1234".into())))
            .expect("C_Login with the right PIN");
        assert_eq!(
            common::find(&session, &private).len(),
            3,
            "private keys after login"
        );
        let signature = common::sign_ecdsa(&session, 0, &[9u8; 32]);
        assert!(common::verifies(
            &t.device_ec_point(0),
            &[9u8; 32],
            &signature
        ));

        let err = session
            .login(UserType::User, Some(&AuthPin::new("1234".into())))
            .expect_err("second login");
        assert_eq!(common::rv(err), RvError::UserAlreadyLoggedIn);

        session.logout().expect("C_Logout");
        assert!(
            common::find(&session, &private).is_empty(),
            "hidden again after logout"
        );
    });
}

/// With a PIN, a key handle known from before login still may not sign before login.
#[test]
fn configured_pin_refuses_signing_before_login() {
    Scenario::zymkey4i().config("pin = \"1234\"").run(|t| {
        let raw = t.raw();
        assert_rv!(raw.initialize_os_locking(), CKR_OK);
        let session = raw.session();
        let mut pin = *b"1234";
        assert_rv!(call!(raw, C_Login(session, CKU_USER, pin.as_mut_ptr(), 4)), CKR_OK);
        let key = raw.private_key(session, 0);
        assert_rv!(call!(raw, C_Logout(session)), CKR_OK);
        let rv = raw.sign_init(session, CKM_ECDSA, key);
        assert!(
            rv == CKR_USER_NOT_LOGGED_IN || rv == CKR_KEY_HANDLE_INVALID,
            "C_SignInit with a private key before login: got {}, expected CKR_USER_NOT_LOGGED_IN or CKR_KEY_HANDLE_INVALID",
            common::raw::rv_name(rv)
        );
        assert_eq!(t.device_signatures(), 0, "no device signature");
    });
}

#[test]
fn generate_random() {
    Scenario::zymkey4i().run(|t| {
        let pkcs11 = t.init();
        let session = common::open_session(&pkcs11);
        let mut nothing = [0u8; 0];
        session
            .generate_random_slice(&mut nothing)
            .expect("C_GenerateRandom of 0 bytes");
        let err = session
            .seed_random(&[1, 2, 3, 4])
            .expect_err("the device RNG takes no seed");
        assert_eq!(common::rv(err), RvError::RandomSeedNotSupported);
        let first = session.generate_random_vec(32).expect("C_GenerateRandom");
        let second = session.generate_random_vec(32).expect("C_GenerateRandom");
        assert_eq!(first.len(), 32);
        assert_eq!(second.len(), 32);
        assert_ne!(first, second, "two random draws differ");
        assert_ne!(first, vec![0u8; 32], "random bytes are not all zero");
        for len in [1u32, 33, 1000, 4096] {
            let bytes = session.generate_random_vec(len).expect("C_GenerateRandom");
            assert_eq!(bytes.len(), len as usize);
        }
        let ops = t.device_ops();
        assert!(
            ops.iter().any(|line| line.contains("rand")),
            "random bytes come from the device: trace {ops:?}"
        );
    });
}

/// Even at the most verbose log level, PINs never reach the log.
#[test]
fn pins_are_never_logged() {
    const PIN: &str = "Zk-Secret-7531";
    const WRONG: &str = "Wrong-Guess-8642";
    let output = Scenario::zymkey4i()
        .config(&format!("pin = \"{PIN}\"\nlog_level = \"trace\""))
        .run(|t| {
            let pkcs11 = t.init();
            let session = common::open_session(&pkcs11);
            let err = session
                .login(UserType::User, Some(&AuthPin::new(WRONG.into())))
                .expect_err("wrong PIN");
            assert_eq!(common::rv(err), RvError::PinIncorrect);
            session
                .login(UserType::User, Some(&AuthPin::new(PIN.into())))
                .expect("right PIN");
            common::sign_ecdsa(&session, 0, &[5u8; 32]);
        });
    let log = format!("{}{}", output.stdout, output.stderr);
    assert!(
        output.stderr.contains("DEBUG"),
        "trace level logs the module's steps:\n{log}"
    );
    assert!(!log.contains(PIN), "the PIN is in the log:\n{log}");
    assert!(!log.contains(WRONG), "the wrong PIN is in the log:\n{log}");
}

#[test]
fn session_state_follows_login() {
    Scenario::zymkey4i().config("pin = \"1234\"").run(|t| {
        let pkcs11 = t.init();
        let slot = common::token_slot(&pkcs11);
        let ro = pkcs11.open_ro_session(slot).expect("RO session");
        let rw = pkcs11.open_rw_session(slot).expect("RW session");
        ro.login(UserType::User, Some(&AuthPin::new("1234".into())))
            .expect("C_Login");
        assert_eq!(
            ro.get_session_info().unwrap().session_state(),
            SessionState::RoUser
        );
        assert_eq!(
            rw.get_session_info().unwrap().session_state(),
            SessionState::RwUser,
            "login applies to every session of the application"
        );
        let late = pkcs11
            .open_ro_session(slot)
            .expect("a session opened after login");
        assert_eq!(
            late.get_session_info().unwrap().session_state(),
            SessionState::RoUser
        );
        common::sign_ecdsa(&late, 0, &[8u8; 32]);
        rw.logout().expect("C_Logout");
        assert_eq!(
            ro.get_session_info().unwrap().session_state(),
            SessionState::RoPublic
        );
        let err = ro.logout().expect_err("logout twice");
        assert_eq!(common::rv(err), RvError::UserNotLoggedIn);

        // Closing the last session logs the user out.
        ro.login(UserType::User, Some(&AuthPin::new("1234".into())))
            .expect("C_Login");
        let raw = t.raw();
        assert_rv!(
            call!(raw, C_CloseAllSessions(slot.id() as CK_SLOT_ID)),
            CKR_OK
        );
        std::mem::forget((ro, rw, late));
        let fresh = pkcs11.open_ro_session(slot).expect("a new session");
        assert_eq!(
            fresh.get_session_info().unwrap().session_state(),
            SessionState::RoPublic,
            "logged out once every session closed"
        );
    });
}

/// The configuration may come in C_Initialize's pReserved, as TOML text (NSS style).
#[test]
fn configuration_in_initialize_arguments() {
    Scenario::zymkey4i().run(|t| {
        let raw = t.raw();
        let text = format!(
            "store = \"{}\"\ntoken_label = \"from-init-args\"\0",
            t.store_path().display()
        );
        let mut args = CK_C_INITIALIZE_ARGS {
            CreateMutex: None,
            DestroyMutex: None,
            LockMutex: None,
            UnlockMutex: None,
            flags: CKF_OS_LOCKING_OK,
            pReserved: text.as_ptr() as *mut std::ffi::c_void,
        };
        assert_rv!(
            call!(
                raw,
                C_Initialize((&mut args as *mut CK_C_INITIALIZE_ARGS).cast())
            ),
            CKR_OK
        );
        let slot = raw.token_slot();
        let mut token = CK_TOKEN_INFO::default();
        assert_rv!(call!(raw, C_GetTokenInfo(slot, &mut token)), CKR_OK);
        let mut label = b"from-init-args".to_vec();
        label.resize(32, b' ');
        assert_eq!(token.label.to_vec(), label, "token label from pReserved");
    });
}

/// C_Initialize with `text` (NUL-terminated) in pReserved.
fn initialize_with_reserved(raw: &common::raw::Raw, text: &str) -> CK_RV {
    let mut args = CK_C_INITIALIZE_ARGS {
        CreateMutex: None,
        DestroyMutex: None,
        LockMutex: None,
        UnlockMutex: None,
        flags: CKF_OS_LOCKING_OK,
        pReserved: text.as_ptr() as *mut std::ffi::c_void,
    };
    call!(
        raw,
        C_Initialize((&mut args as *mut CK_C_INITIALIZE_ARGS).cast())
    )
}

/// Configuration text in pReserved that is meant for the module but does not
/// parse fails closed: a typo next to `pin` must not leave a token any PIN opens.
#[test]
fn bad_configuration_in_initialize_arguments_fails_closed() {
    Scenario::zymkey4i().run(|t| {
        let raw = t.raw();
        assert_rv!(
            initialize_with_reserved(&raw, "pin = \"1234\"\ntoken_lable = \"edge\"\0"),
            CKR_ARGUMENTS_BAD,
            "pin plus an unknown key"
        );
        assert_rv!(
            initialize_with_reserved(&raw, "pin = 1234abc\0"),
            CKR_ARGUMENTS_BAD,
            "a pin that is not TOML"
        );
        let mut info = CK_INFO::default();
        assert_rv!(
            call!(raw, C_GetInfo(&mut info)),
            CKR_CRYPTOKI_NOT_INITIALIZED,
            "nothing initialised"
        );
    });
}

/// Another host's parameters in pReserved (NSS's) are left to it: the module
/// initialises from its usual configuration.
#[test]
fn other_hosts_parameters_in_initialize_arguments_are_ignored() {
    Scenario::zymkey4i().run(|t| {
        let raw = t.raw();
        assert_rv!(
            initialize_with_reserved(
                &raw,
                "configdir='sql:/etc/pki/nssdb' certPrefix='' keyPrefix='' secmod='secmod.db' flags=readOnly\0"
            ),
            CKR_OK
        );
        let slot = raw.token_slot();
        let mut token = CK_TOKEN_INFO::default();
        assert_rv!(call!(raw, C_GetTokenInfo(slot, &mut token)), CKR_OK);
    });
}

/// With a PIN configured, a NULL PIN is refused.
#[test]
fn configured_pin_refuses_a_null_pin() {
    Scenario::zymkey4i().config("pin = \"1234\"").run(|t| {
        let raw = t.raw();
        assert_rv!(raw.initialize_os_locking(), CKR_OK);
        let session = raw.session();
        let rv = call!(raw, C_Login(session, CKU_USER, ptr::null_mut(), 0));
        assert!(
            rv == CKR_ARGUMENTS_BAD || rv == CKR_PIN_INCORRECT,
            "C_Login(NULL PIN): got {}, expected CKR_ARGUMENTS_BAD",
            common::raw::rv_name(rv)
        );
        let mut empty = [0u8; 0];
        assert_rv!(
            call!(raw, C_Login(session, CKU_USER, empty.as_mut_ptr(), 0)),
            CKR_PIN_INCORRECT,
            "an empty PIN"
        );
        let mut pin = *b"1234";
        assert_rv!(
            call!(raw, C_Login(session, CKU_SO, pin.as_mut_ptr(), 4)),
            CKR_PIN_INCORRECT,
            "the user PIN is not the SO PIN"
        );
        assert_rv!(
            call!(raw, C_Login(session, CKU_USER, pin.as_mut_ptr(), 4)),
            CKR_OK
        );
    });
}

/// Threads racing to initialise: exactly one wins, the others hear it is done; none crashes.
#[test]
fn concurrent_initialize() {
    Scenario::zymkey4i().run(|t| {
        let raw = t.raw();
        let answers: Vec<CK_RV> = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..8)
                .map(|_| scope.spawn(|| raw.initialize_os_locking()))
                .collect();
            threads
                .into_iter()
                .map(|thread| thread.join().expect("C_Initialize thread"))
                .collect()
        });
        let ok = answers.iter().filter(|&&rv| rv == CKR_OK).count();
        assert_eq!(ok, 1, "one C_Initialize succeeds: {answers:?}");
        assert!(
            answers
                .iter()
                .all(|&rv| rv == CKR_OK || rv == CKR_CRYPTOKI_ALREADY_INITIALIZED),
            "the others are CKR_CRYPTOKI_ALREADY_INITIALIZED: {answers:?}"
        );
        let session = raw.session();
        let key = raw.private_key(session, 0);
        raw.sign_once(session, CKM_ECDSA, key, &[4u8; 32])
            .expect("sign");
    });
}

/// Resident memory of this process, in KiB.
fn resident_kib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64 / 1024
}

/// A host that initialises the module per request runs flat: C_Finalize
/// frees what C_Initialize and the sessions took (issue 8, defect 5). Before,
/// each cycle kept its finalized module, about 1 KiB, and a session table
/// at its peak capacity (244 KiB after 1024 sessions).
#[test]
fn initialize_finalize_cycles_run_flat() {
    Scenario::zymkey4i().run(|t| {
        let raw = t.raw();
        let bare_cycle = || {
            assert_rv!(raw.initialize_null(), CKR_OK);
            let mut info = CK_INFO::default();
            assert_rv!(call!(raw, C_GetInfo(&mut info)), CKR_OK);
            assert_rv!(raw.finalize(), CKR_OK);
        };
        let busy_cycle = || {
            assert_rv!(raw.initialize_null(), CKR_OK);
            let slot = raw.token_slot();
            for _ in 0..1024 {
                raw.open_session(slot, CKF_SERIAL_SESSION)
                    .expect("C_OpenSession");
            }
            assert_rv!(raw.finalize(), CKR_OK);
        };
        for _ in 0..2_000 {
            bare_cycle();
        }
        busy_cycle();
        let warm = resident_kib();
        for _ in 0..18_000 {
            bare_cycle();
        }
        for _ in 0..40 {
            busy_cycle();
        }
        let grown = resident_kib().saturating_sub(warm);
        assert!(
            grown < 2048,
            "resident memory grew by {grown} KiB over 18,000 C_Initialize/C_Finalize cycles \
             and 40 with 1024 sessions each"
        );
    });
}
