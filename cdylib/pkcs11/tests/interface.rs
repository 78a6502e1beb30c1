//! The PKCS#11 3.0 entry points (3.0 §5.4.5–5.4.6): `C_GetInterfaceList` and
//! `C_GetInterface` offer "PKCS 11" 3.0 (the default) and 2.40, each list's
//! `C_GetInfo` reports its own version, and the functions 3.0 adds answer
//! `CKR_FUNCTION_NOT_SUPPORTED` after the same checks as every other export.

mod common;

use std::ffi::CStr;
use std::ptr;

use common::raw::{assert_rv, call, rv_name, Raw};
use common::Scenario;
use cryptoki_sys::*;

/// The module's exports, resolved by name.
fn exports(t: &common::Ctx) -> &'static Pkcs11 {
    // SAFETY: loading a PKCS#11 module runs no code but its initialisers.
    let library = unsafe { Pkcs11::new(&t.module) }.expect("dlopen libzkpkcs11.so");
    Box::leak(Box::new(library))
}

/// `C_GetInterface(name, version, &interface, flags)`: the interface, or the
/// return value; on failure the out-pointer must be left alone.
fn get_interface(
    lib: &Pkcs11,
    name: Option<&CStr>,
    version: Option<(u8, u8)>,
    flags: CK_FLAGS,
) -> Result<&'static CK_INTERFACE, CK_RV> {
    let name = name.map_or(ptr::null_mut(), |n| n.as_ptr() as *mut CK_UTF8CHAR);
    let mut version = version.map(|(major, minor)| CK_VERSION { major, minor });
    let version_p = version
        .as_mut()
        .map_or(ptr::null_mut(), |v| v as *mut CK_VERSION);
    let sentinel = 0x5a5a_usize as *mut CK_INTERFACE;
    let mut found = sentinel;
    // SAFETY: a NUL-terminated name or NULL, a valid version or NULL, a valid out-pointer.
    let rv = unsafe { lib.C_GetInterface(name, version_p, &mut found, flags) };
    if rv != CKR_OK {
        assert_eq!(
            found, sentinel,
            "C_GetInterface wrote its out-pointer on failure"
        );
        return Err(rv);
    }
    assert!(!found.is_null(), "C_GetInterface answered NULL");
    // SAFETY: the module's interfaces are statics, alive while it is loaded (forever).
    Ok(unsafe { &*found })
}

fn interface_name(interface: &CK_INTERFACE) -> &CStr {
    // SAFETY: the module's interface names are NUL-terminated statics.
    unsafe { CStr::from_ptr(interface.pInterfaceName as *const std::ffi::c_char) }
}

fn interface_version(interface: &CK_INTERFACE) -> (u8, u8) {
    // SAFETY: every function list starts with its CK_VERSION.
    let version = unsafe { *(interface.pFunctionList as *const CK_VERSION) };
    (version.major, version.minor)
}

/// The 2.40 part of an interface's function list (the whole list for 2.40;
/// the start of a 3.0 list, which has the same layout up to `C_WaitForSlotEvent`).
fn list_2_40(interface: &CK_INTERFACE) -> &'static CK_FUNCTION_LIST {
    // SAFETY: as above; the module's lists are statics.
    unsafe { &*(interface.pFunctionList as *const CK_FUNCTION_LIST) }
}

fn list_3_0(interface: &CK_INTERFACE) -> &'static CK_FUNCTION_LIST_3_0 {
    assert_eq!(interface_version(interface), (3, 0));
    // SAFETY: a 3.0 interface's function list is a CK_FUNCTION_LIST_3_0, a static.
    unsafe { &*(interface.pFunctionList as *const CK_FUNCTION_LIST_3_0) }
}

fn function_list(lib: &Pkcs11) -> &'static CK_FUNCTION_LIST {
    let mut list: *mut CK_FUNCTION_LIST = ptr::null_mut();
    // SAFETY: a valid out-pointer.
    assert_rv!(unsafe { lib.C_GetFunctionList(&mut list) }, CKR_OK);
    // SAFETY: the module's list is a static.
    unsafe { &*list }
}

/// The length protocol of `C_GetInterfaceList` (§5.2), before `C_Initialize`
/// (3.0 §5.4.5 allows it): the count for a NULL list, `CKR_BUFFER_TOO_SMALL`
/// with the count for a short one, both interfaces for a long enough one.
#[test]
fn interface_list_length_protocol() {
    Scenario::zymkey4i().run(|t| {
        let lib = exports(t);
        let mut count: CK_ULONG = 99;
        // SAFETY: NULL list, valid count.
        let rv = unsafe { lib.C_GetInterfaceList(ptr::null_mut(), &mut count) };
        assert_rv!(rv, CKR_OK, "C_GetInterfaceList(NULL)");
        assert_eq!(count, 2, "two interfaces");

        let empty = CK_INTERFACE {
            pInterfaceName: ptr::null_mut(),
            pFunctionList: ptr::null_mut(),
            flags: 0xff,
        };
        for short in [0, 1] {
            let mut buffer = [empty; 1];
            let mut count: CK_ULONG = short;
            // SAFETY: a buffer of at least `short` interfaces.
            let rv = unsafe { lib.C_GetInterfaceList(buffer.as_mut_ptr(), &mut count) };
            assert_rv!(rv, CKR_BUFFER_TOO_SMALL, "room for {short}");
            assert_eq!(count, 2, "CKR_BUFFER_TOO_SMALL gives the count");
            assert!(buffer[0].pFunctionList.is_null(), "nothing written");
        }

        let mut buffer = [empty; 3];
        let mut count: CK_ULONG = 3;
        // SAFETY: a buffer of 3 interfaces.
        let rv = unsafe { lib.C_GetInterfaceList(buffer.as_mut_ptr(), &mut count) };
        assert_rv!(rv, CKR_OK, "room for 3");
        assert_eq!(count, 2);
        let listed: Vec<_> = buffer[..2]
            .iter()
            .map(|i| (interface_name(i).to_owned(), interface_version(i), i.flags))
            .collect();
        assert_eq!(
            listed,
            [
                (c"PKCS 11".to_owned(), (3, 0), 0),
                (c"PKCS 11".to_owned(), (2, 40), 0)
            ],
            "3.0 then 2.40, no flags"
        );
        assert!(buffer[2].pFunctionList.is_null(), "the third left alone");
        assert_eq!(
            buffer[1].pFunctionList as *const CK_FUNCTION_LIST,
            function_list(lib) as *const CK_FUNCTION_LIST,
            "the 2.40 interface is C_GetFunctionList's list"
        );

        // SAFETY: NULL count; then a huge count with a real (short) buffer,
        // refused before the buffer is touched.
        unsafe {
            let rv = lib.C_GetInterfaceList(buffer.as_mut_ptr(), ptr::null_mut());
            assert_rv!(rv, CKR_ARGUMENTS_BAD, "NULL pulCount");
            let rv = lib.C_GetInterfaceList(ptr::null_mut(), ptr::null_mut());
            assert_rv!(rv, CKR_ARGUMENTS_BAD, "NULL list and NULL pulCount");
            let mut huge = CK_UNAVAILABLE_INFORMATION;
            let rv = lib.C_GetInterfaceList(buffer.as_mut_ptr(), &mut huge);
            assert_rv!(rv, CKR_ARGUMENTS_BAD, "a count no buffer can have");
            assert_eq!(huge, CK_UNAVAILABLE_INFORMATION, "count left alone");
        }
    });
}

/// `C_GetInterface`: NULL name and version give the default, 3.0; a name or
/// a version alone narrow the choice; the 2.40 interface is the list of
/// `C_GetFunctionList`.
#[test]
fn default_interface_is_3_0() {
    Scenario::zymkey4i().run(|t| {
        let lib = exports(t);
        let default = get_interface(lib, None, None, 0).expect("default interface");
        assert_eq!(interface_name(default), c"PKCS 11");
        assert_eq!(interface_version(default), (3, 0), "the default is 3.0");
        assert_eq!(default.flags, 0);
        for (name, version) in [
            (Some(c"PKCS 11"), None),
            (None, Some((3, 0))),
            (Some(c"PKCS 11"), Some((3, 0))),
        ] {
            let found = get_interface(lib, name, version, 0).expect("3.0 interface");
            assert!(
                ptr::eq(found, default),
                "{name:?} {version:?}: the same interface"
            );
        }
        for name in [None, Some(c"PKCS 11")] {
            let old = get_interface(lib, name, Some((2, 40)), 0).expect("2.40 interface");
            assert_eq!(interface_version(old), (2, 40));
            assert!(ptr::eq(list_2_40(old), function_list(lib)));
        }
        // The 3.0 list holds the 3.0 entry points themselves.
        let v3 = list_3_0(default);
        assert_eq!(
            v3.C_GetInterface.map(|f| f as usize),
            lib.C_GetInterface.as_ref().ok().map(|f| *f as usize)
        );
        assert_eq!(
            v3.C_GetInterfaceList.map(|f| f as usize),
            lib.C_GetInterfaceList.as_ref().ok().map(|f| *f as usize)
        );
    });
}

/// Through each list: `C_Initialize`, `C_GetInfo` (reporting that list's
/// version), a device signature that verifies, `C_Finalize`; then the other
/// list in the same process.
#[test]
fn both_lists_work_and_report_their_version() {
    Scenario::zymkey4i().run(|t| {
        let lib = exports(t);
        let v3 = get_interface(lib, None, Some((3, 0)), 0).expect("3.0");
        let v2 = get_interface(lib, None, Some((2, 40)), 0).expect("2.40");
        for (interface, version) in [(v3, (3, 0)), (v2, (2, 40)), (v3, (3, 0))] {
            let raw = Raw {
                f: list_2_40(interface),
            };
            assert_eq!((raw.f.version.major, raw.f.version.minor), version);
            assert_rv!(
                raw.initialize_os_locking(),
                CKR_OK,
                "C_Initialize ({version:?})"
            );
            let mut info = CK_INFO::default();
            assert_rv!(call!(raw, C_GetInfo(&mut info)), CKR_OK);
            assert_eq!(
                (info.cryptokiVersion.major, info.cryptokiVersion.minor),
                version,
                "C_GetInfo through the {version:?} list reports {version:?}"
            );
            let mut label = b"zkiot".to_vec();
            label.resize(32, b' ');
            assert_eq!(info.manufacturerID.to_vec(), label, "the same module");
            let session = raw.session();
            let key = raw.private_key(session, 0);
            let signature = raw
                .sign_once(session, CKM_ECDSA, key, &[3u8; 32])
                .unwrap_or_else(|rv| panic!("C_Sign through {version:?}: {}", rv_name(rv)));
            assert!(common::verifies(
                &t.device_ec_point(0),
                &[3u8; 32],
                &signature
            ));
            assert_rv!(raw.finalize(), CKR_OK, "C_Finalize ({version:?})");
        }
        // The exported C_GetInfo is the 2.40 list's.
        let exported = lib.C_GetInfo.as_ref().ok().map(|f| *f as usize);
        assert_eq!(list_2_40(v2).C_GetInfo.map(|f| f as usize), exported);
        assert_ne!(list_2_40(v3).C_GetInfo.map(|f| f as usize), exported);
    });
}

/// What `C_GetInterface` refuses with `CKR_ARGUMENTS_BAD` (never
/// `CKR_FUNCTION_NOT_SUPPORTED`, which consumers read as "no 3.0 interfaces
/// at all"), leaving its out-pointer alone.
#[test]
fn get_interface_bad_arguments() {
    Scenario::zymkey4i().run(|t| {
        let lib = exports(t);
        // SAFETY: NULL out-pointer, refused.
        let rv =
            unsafe { lib.C_GetInterface(ptr::null_mut(), ptr::null_mut(), ptr::null_mut(), 0) };
        assert_rv!(rv, CKR_ARGUMENTS_BAD, "NULL ppInterface");
        let mut words = [0usize; 2];
        let odd = (words.as_mut_ptr() as *mut u8).wrapping_add(1) as *mut *mut CK_INTERFACE;
        // SAFETY: a misaligned out-pointer, refused before any use.
        let rv = unsafe { lib.C_GetInterface(ptr::null_mut(), ptr::null_mut(), odd, 0) };
        assert_rv!(rv, CKR_ARGUMENTS_BAD, "misaligned ppInterface");
        assert_eq!(words, [0, 0]);

        for name in [
            c"PKCS 12",
            c"pkcs 11",
            c"PKCS 11 ",
            c"PKCS 1",
            c"",
            c"Vendor zkiot",
        ] {
            let rv = get_interface(lib, Some(name), None, 0)
                .map(|_| ())
                .unwrap_err();
            assert_rv!(rv, CKR_ARGUMENTS_BAD, "name {name:?}");
        }
        for version in [(3, 1), (3, 2), (2, 20), (2, 11), (0, 0), (40, 2)] {
            for name in [None, Some(c"PKCS 11")] {
                let rv = get_interface(lib, name, Some(version), 0)
                    .map(|_| ())
                    .unwrap_err();
                assert_rv!(rv, CKR_ARGUMENTS_BAD, "version {version:?}, name {name:?}");
            }
        }
        // No interface is fork safe (the module doc says why), nor has any
        // other flag.
        for flags in [CKF_INTERFACE_FORK_SAFE, 2, CK_FLAGS::MAX] {
            let rv = get_interface(lib, None, None, flags)
                .map(|_| ())
                .unwrap_err();
            assert_rv!(rv, CKR_ARGUMENTS_BAD, "flags {flags:#x}");
        }
        // Everything works again afterwards, before and after C_Initialize.
        get_interface(lib, None, None, 0).expect("default interface");
        let raw = Raw::load(&t.module);
        assert_rv!(raw.initialize_os_locking(), CKR_OK);
        get_interface(lib, Some(c"PKCS 11"), Some((2, 40)), 0).expect("2.40 once initialised");
        assert_rv!(raw.finalize(), CKR_OK);
        get_interface(lib, None, None, 0).expect("default interface after C_Finalize");
    });
}

/// A consumer may write to the record `C_GetInterface` gives it, as OpenSC's
/// pkcs11-spy does (it puts its own function list there): no crash, and the
/// module's later answers do not depend on what was written.
#[test]
fn a_consumer_may_write_the_interface_it_is_given() {
    Scenario::zymkey4i().run(|t| {
        let lib = exports(t);
        let v2 = get_interface(lib, None, Some((2, 40)), 0).expect("2.40");
        let v2_list = v2.pFunctionList;
        let mut given: *mut CK_INTERFACE = ptr::null_mut();
        // SAFETY: NULL name and version, a valid out-pointer.
        let rv = unsafe { lib.C_GetInterface(ptr::null_mut(), ptr::null_mut(), &mut given, 0) };
        assert_rv!(rv, CKR_OK);
        // SAFETY: the module hands out a writable record; writing it is what is tested.
        unsafe {
            (*given).pFunctionList = v2_list;
            (*given).flags = CKF_INTERFACE_FORK_SAFE;
        }
        let v3 = get_interface(lib, None, Some((3, 0)), 0).expect("3.0 after the write");
        assert!(ptr::eq(v3, given), "the same record");
        let mut listed = [CK_INTERFACE {
            pInterfaceName: ptr::null_mut(),
            pFunctionList: ptr::null_mut(),
            flags: 0,
        }; 2];
        let mut count: CK_ULONG = 2;
        // SAFETY: a buffer of 2 interfaces.
        let rv = unsafe { lib.C_GetInterfaceList(listed.as_mut_ptr(), &mut count) };
        assert_rv!(rv, CKR_OK);
        assert_eq!(
            listed.map(|i| (interface_version(&i), i.flags)),
            [((3, 0), 0), ((2, 40), 0)],
            "C_GetInterfaceList answers the module's interfaces"
        );
        let rv = get_interface(lib, None, None, CKF_INTERFACE_FORK_SAFE).map(|_| ());
        assert_eq!(rv, Err(CKR_ARGUMENTS_BAD), "still no fork-safe interface");
        let raw = Raw {
            f: list_2_40(&listed[0]),
        };
        assert_rv!(raw.initialize_os_locking(), CKR_OK);
        let mut info = CK_INFO::default();
        assert_rv!(call!(raw, C_GetInfo(&mut info)), CKR_OK);
        assert_eq!(info.cryptokiVersion.major, 3);
        assert_rv!(raw.finalize(), CKR_OK);
    });
}

/// The interface name is read byte by byte up to its first difference from
/// "PKCS 11": a name with no NUL before an unmapped page is refused, not
/// run through (as `strlen` would, into the unmapped page).
#[test]
fn interface_name_is_read_no_further_than_its_first_difference() {
    Scenario::zymkey4i().run(|t| {
        let lib = exports(t);
        // SAFETY: sysconf has no preconditions; mmap of fresh anonymous pages.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        // SAFETY: a fresh private anonymous mapping of two pages.
        let base = unsafe {
            libc::mmap(
                ptr::null_mut(),
                2 * page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED, "mmap");
        let base = base as *mut u8;
        // SAFETY: the second page of the mapping above.
        let rc = unsafe { libc::mprotect(base.add(page) as *mut _, page, libc::PROT_NONE) };
        assert_eq!(rc, 0, "mprotect");
        // The first page: "PKCS 11PKCS 11…", its last 8 bytes "PKCS 11P", no NUL anywhere.
        // SAFETY: the first page is readable and writable, `page` bytes long.
        let first = unsafe { std::slice::from_raw_parts_mut(base, page) };
        for (i, byte) in first.iter_mut().rev().enumerate() {
            *byte = b"P11 SCKP"[i % 8];
        }
        let name = first[page - 8..].as_ptr() as *mut CK_UTF8CHAR;
        assert_eq!(&first[page - 8..], b"PKCS 11P");
        let mut found: *mut CK_INTERFACE = ptr::null_mut();
        // SAFETY: the name differs from "PKCS 11\0" at its 8th byte, the last
        // readable one; the module must not read further.
        let rv = unsafe { lib.C_GetInterface(name, ptr::null_mut(), &mut found, 0) };
        assert_rv!(rv, CKR_ARGUMENTS_BAD, "\"PKCS 11\" not followed by its NUL");
        first[page - 1] = b'X';
        let name = first[page - 1..].as_ptr() as *mut CK_UTF8CHAR;
        // SAFETY: the name "X" differs at its first byte, the page's last.
        let rv = unsafe { lib.C_GetInterface(name, ptr::null_mut(), &mut found, 0) };
        assert_rv!(
            rv,
            CKR_ARGUMENTS_BAD,
            "a one-byte name at the end of a page"
        );
        // SAFETY: the mapping made above, no longer used.
        unsafe { libc::munmap(base as *mut _, 2 * page) };
    });
}

/// Calls each function 3.0 adds, through the 3.0 list, with `session` and NULL
/// pointers, and returns each return value by name.
fn call_3_0_additions(
    f: &CK_FUNCTION_LIST_3_0,
    session: CK_SESSION_HANDLE,
) -> Vec<(&'static str, CK_RV)> {
    macro_rules! n {
        () => {
            ptr::null_mut()
        };
    }
    macro_rules! calls {
        ($($name:ident($($arg:expr),*)),* $(,)?) => {
            vec![$((
                stringify!($name),
                // SAFETY: NULL pointers, which a function the token does not
                // offer never reads.
                unsafe { f.$name.expect(stringify!($name))(session $(, $arg)*) },
            )),*]
        };
    }
    calls!(
        C_LoginUser(CKU_USER, n!(), 0, n!(), 0),
        C_SessionCancel(CKF_SIGN),
        C_MessageEncryptInit(n!(), 0),
        C_EncryptMessage(n!(), 0, n!(), 0, n!(), 0, n!(), n!()),
        C_EncryptMessageBegin(n!(), 0, n!(), 0),
        C_EncryptMessageNext(n!(), 0, n!(), 0, n!(), n!(), 0),
        C_MessageEncryptFinal(),
        C_MessageDecryptInit(n!(), 0),
        C_DecryptMessage(n!(), 0, n!(), 0, n!(), 0, n!(), n!()),
        C_DecryptMessageBegin(n!(), 0, n!(), 0),
        C_DecryptMessageNext(n!(), 0, n!(), 0, n!(), n!(), 0),
        C_MessageDecryptFinal(),
        C_MessageSignInit(n!(), 0),
        C_SignMessage(n!(), 0, n!(), 0, n!(), n!()),
        C_SignMessageBegin(n!(), 0),
        C_SignMessageNext(n!(), 0, n!(), 0, n!(), n!()),
        C_MessageSignFinal(),
        C_MessageVerifyInit(n!(), 0),
        C_VerifyMessage(n!(), 0, n!(), 0, n!(), 0),
        C_VerifyMessageBegin(n!(), 0),
        C_VerifyMessageNext(n!(), 0, n!(), 0, n!(), 0),
        C_MessageVerifyFinal(),
    )
}

/// The functions 3.0 adds, which the token does not offer, check as every
/// export does: not initialised, then the session handle, then
/// `CKR_FUNCTION_NOT_SUPPORTED`. Each is also exported by name.
#[test]
fn functions_3_0_adds_check_then_refuse() {
    Scenario::zymkey4i().run(|t| {
        let lib = exports(t);
        let v3 = list_3_0(get_interface(lib, None, None, 0).expect("default"));
        let expect_all = |session, expected: CK_RV, state: &str| {
            let answers = call_3_0_additions(v3, session);
            assert_eq!(answers.len(), 22);
            for (name, rv) in answers {
                assert_rv!(rv, expected, "{name} {state}");
            }
        };
        expect_all(1, CKR_CRYPTOKI_NOT_INITIALIZED, "before C_Initialize");
        let raw = Raw {
            f: list_2_40(get_interface(lib, None, None, 0).unwrap()),
        };
        assert_rv!(raw.initialize_os_locking(), CKR_OK);
        let session = raw.session();
        expect_all(
            0xdead_beef,
            CKR_SESSION_HANDLE_INVALID,
            "with a garbage session",
        );
        expect_all(session, CKR_FUNCTION_NOT_SUPPORTED, "with a session");
        // The session still signs: nothing above touched it.
        let key = raw.private_key(session, 0);
        raw.sign_once(session, CKM_ECDSA, key, &[1u8; 32])
            .expect("sign after the refusals");
        assert_rv!(raw.finalize(), CKR_OK);
        expect_all(session, CKR_CRYPTOKI_NOT_INITIALIZED, "after C_Finalize");

        macro_rules! same_as_export {
            ($($name:ident),* $(,)?) => {$(
                assert_eq!(
                    v3.$name.map(|f| f as usize),
                    lib.$name.as_ref().ok().map(|f| *f as usize),
                    concat!(stringify!($name), " of the 3.0 list is the export")
                );
            )*};
        }
        same_as_export!(
            C_LoginUser,
            C_SessionCancel,
            C_MessageEncryptInit,
            C_EncryptMessage,
            C_EncryptMessageBegin,
            C_EncryptMessageNext,
            C_MessageEncryptFinal,
            C_MessageDecryptInit,
            C_DecryptMessage,
            C_DecryptMessageBegin,
            C_DecryptMessageNext,
            C_MessageDecryptFinal,
            C_MessageSignInit,
            C_SignMessage,
            C_SignMessageBegin,
            C_SignMessageNext,
            C_MessageSignFinal,
            C_MessageVerifyInit,
            C_VerifyMessage,
            C_VerifyMessageBegin,
            C_VerifyMessageNext,
            C_MessageVerifyFinal,
        );
    });
}
