//! Smoke test: the built module, over the emulator, finds the factory key
//! of slot 0 the way libp11 does and signs with it; the signature verifies
//! under the key's CKA_EC_POINT, and the emulator's trace shows exactly one
//! device signature. Then the process forks again and again while threads
//! search and sign, and every child initialises the module and signs, as
//! libp11 does after fork. One test function, so one process initialises
//! the module at a time.

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass};

#[test]
fn find_and_sign_like_libp11() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace");
    let conf = dir.path().join("zkiot.toml");
    std::fs::write(
        &conf,
        format!("store = {:?}\n", dir.path().join("store.sqlite3")),
    )
    .unwrap();
    std::env::set_var("ZKIOT_ZKLIB", testkit::built::emulator());
    std::env::set_var("ZKIOT_EMU_DIR", dir.path().join("emu"));
    std::env::set_var("ZKIOT_EMU_TRACE", &trace);
    std::env::set_var("ZKIOT_CONF", &conf);
    std::env::remove_var("ZKIOT_EMU_MODEL");

    let p11 = Pkcs11::new(testkit::built::module()).unwrap();
    p11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    let slot = p11.get_slots_with_token().unwrap()[0];
    let info = p11.get_token_info(slot).unwrap();
    assert_eq!(info.label(), "zymkey");
    assert_eq!(info.manufacturer_id(), "Zymbit");
    let session = p11.open_ro_session(slot).unwrap();
    std::fs::write(&trace, "").unwrap();

    let template = [
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::Id(vec![0, 0]),
        Attribute::Label(b"slot0".to_vec()),
    ];
    let keys = session.find_objects(&template).unwrap();
    assert_eq!(keys.len(), 1);
    let attrs = session
        .get_attributes(
            keys[0],
            &[AttributeType::EcPoint, AttributeType::AlwaysAuthenticate],
        )
        .unwrap();
    let point = match &attrs[0] {
        Attribute::EcPoint(p) => p.clone(),
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!(&point[..3], &[0x04, 0x41, 0x04]);

    let digest = openssl::sha::sha256(b"smoke");
    let signature = session.sign(&Mechanism::Ecdsa, keys[0], &digest).unwrap();
    assert_eq!(signature.len(), 64);

    assert!(testkit::ecdsa::verifies(&point, &digest, &signature));

    let device_calls = std::fs::read_to_string(&trace).unwrap();
    assert_eq!(
        device_calls, "sign 0\n",
        "one device signature, nothing else"
    );
    drop(session);
    p11.finalize().unwrap();

    fork_while_threads_sign(&testkit::built::module());
}

/// The module's function list, through the C ABI (the test process already
/// has the library loaded; this takes another reference to it).
fn function_list(path: &std::path::Path) -> &'static cryptoki_sys::CK_FUNCTION_LIST {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: plain dlopen/dlsym of the module under test; C_GetFunctionList
    // has the PKCS#11 signature and returns a pointer to a static list.
    unsafe {
        let lib = libc::dlopen(path.as_ptr(), libc::RTLD_NOW);
        assert!(!lib.is_null());
        let sym = libc::dlsym(lib, c"C_GetFunctionList".as_ptr());
        assert!(!sym.is_null());
        let get: unsafe extern "C" fn(
            *mut *mut cryptoki_sys::CK_FUNCTION_LIST,
        ) -> cryptoki_sys::CK_RV = std::mem::transmute(sym);
        let mut list = std::ptr::null_mut();
        assert_eq!(get(&mut list), cryptoki_sys::CKR_OK);
        &*list
    }
}

/// Opens a session and finds slot 0's private key.
fn find_once(f: &cryptoki_sys::CK_FUNCTION_LIST) -> Result<(), u8> {
    let (session, _) = open_and_find(f)?;
    // SAFETY: a session of this module.
    unsafe { f.C_CloseSession.unwrap()(session) };
    Ok(())
}

/// Opens a session, finds slot 0's private key, signs once; any failure is
/// reported as its step number.
fn sign_once(f: &cryptoki_sys::CK_FUNCTION_LIST) -> Result<(), u8> {
    use cryptoki_sys::*;
    let (session, key) = open_and_find(f)?;
    // SAFETY: valid pointers to locals, with the lengths given.
    unsafe {
        let mut mechanism = CK_MECHANISM {
            mechanism: CKM_ECDSA,
            pParameter: std::ptr::null_mut(),
            ulParameterLen: 0,
        };
        let mut digest = [7u8; 32];
        let mut signature = [0u8; 64];
        let mut len: CK_ULONG = 64;
        if f.C_SignInit.unwrap()(session, &mut mechanism, key) != CKR_OK
            || f.C_Sign.unwrap()(
                session,
                digest.as_mut_ptr(),
                32,
                signature.as_mut_ptr(),
                &mut len,
            ) != CKR_OK
        {
            return Err(3);
        }
        f.C_CloseSession.unwrap()(session);
    }
    Ok(())
}

/// A new session and the handle of slot 0's private key in it.
fn open_and_find(
    f: &cryptoki_sys::CK_FUNCTION_LIST,
) -> Result<
    (
        cryptoki_sys::CK_SESSION_HANDLE,
        cryptoki_sys::CK_OBJECT_HANDLE,
    ),
    u8,
> {
    use cryptoki_sys::*;
    // SAFETY: valid pointers to locals, with the lengths given.
    unsafe {
        let mut session = 0;
        let flags = CKF_SERIAL_SESSION;
        if f.C_OpenSession.unwrap()(0, flags, std::ptr::null_mut(), None, &mut session) != CKR_OK {
            return Err(1);
        }
        let mut class = CKO_PRIVATE_KEY;
        let mut id = [0u8, 0];
        let mut template = [
            CK_ATTRIBUTE {
                type_: CKA_CLASS,
                pValue: &mut class as *mut _ as *mut _,
                ulValueLen: std::mem::size_of_val(&class) as CK_ULONG,
            },
            CK_ATTRIBUTE {
                type_: CKA_ID,
                pValue: id.as_mut_ptr() as *mut _,
                ulValueLen: 2,
            },
        ];
        let mut key = 0;
        let mut found = 0;
        if f.C_FindObjectsInit.unwrap()(session, template.as_mut_ptr(), 2) != CKR_OK
            || f.C_FindObjects.unwrap()(session, &mut key, 1, &mut found) != CKR_OK
            || f.C_FindObjectsFinal.unwrap()(session) != CKR_OK
            || found != 1
        {
            return Err(2);
        }
        Ok((session, key))
    }
}

/// A fork while other threads are inside the module (in SQLite, or in a
/// device call) must leave the child nothing locked: each child
/// initialises the module and signs within its deadline.
fn fork_while_threads_sign(module: &std::path::Path) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let f = function_list(module);
    let mut args = cryptoki_sys::CK_C_INITIALIZE_ARGS {
        CreateMutex: None,
        DestroyMutex: None,
        LockMutex: None,
        UnlockMutex: None,
        flags: cryptoki_sys::CKF_OS_LOCKING_OK,
        pReserved: std::ptr::null_mut(),
    };
    // SAFETY: valid arguments.
    let rv = unsafe { f.C_Initialize.unwrap()(&mut args as *mut _ as *mut _) };
    assert_eq!(rv, cryptoki_sys::CKR_OK);
    sign_once(f).expect("sign before forking");

    static STOP: AtomicBool = AtomicBool::new(false);
    // Four threads search (mostly inside SQLite), one signs (mostly inside
    // the device library).
    let workers: Vec<_> = (0..5)
        .map(|n| {
            std::thread::spawn(move || {
                while !STOP.load(Ordering::Relaxed) {
                    if n == 0 {
                        sign_once(f).expect("sign in a thread");
                    } else {
                        find_once(f).expect("find in a thread");
                    }
                }
            })
        })
        .collect();
    let mut failed = Vec::new();
    for round in 0..60 {
        // SAFETY: the child only calls the module and then _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork");
        if pid == 0 {
            // SAFETY: alarm and _exit are async-signal-safe; C_Initialize(NULL)
            // in a child is how libp11 reinitialises after fork.
            unsafe {
                libc::alarm(20);
                let code = if f.C_Initialize.unwrap()(std::ptr::null_mut()) != cryptoki_sys::CKR_OK
                {
                    10
                } else {
                    match sign_once(f) {
                        Ok(()) => 0,
                        Err(step) => 10 + i32::from(step),
                    }
                };
                libc::_exit(code);
            }
        }
        let mut status = 0;
        // SAFETY: waits for the child just forked.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
            failed.push((round, status));
        }
    }
    STOP.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    // SAFETY: no argument.
    let rv = unsafe { f.C_Finalize.unwrap()(std::ptr::null_mut()) };
    assert_eq!(rv, cryptoki_sys::CKR_OK);
    assert!(
        failed.is_empty(),
        "children that failed (round, wait status): {failed:?}"
    );
}
