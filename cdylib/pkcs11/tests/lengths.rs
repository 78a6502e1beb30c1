//! Declared lengths and counts the caller got wrong: the module checks each before it reads or
//! writes through the pointer it goes with, answers with the code PKCS#11 2.40 gives, and is
//! unharmed. Each scenario runs in a child process, so a module that reads 4 GiB through a
//! 16-byte buffer, or a debug build that aborts on a slice no memory can hold, fails the test
//! instead of the test run.

mod common;

use std::mem::size_of;
use std::ptr;

use common::raw::{assert_rv, call, ulong_attribute};
use common::Scenario;
use cryptoki_sys::*;

/// A byte length no buffer has: more than `isize::MAX`.
const NO_BUFFER_IS_THAT_LONG: CK_ULONG = CK_ULONG::MAX / 2 + 1;

/// An attribute count whose array would not fit in memory.
fn no_template_is_that_long() -> CK_ULONG {
    (isize::MAX as usize / size_of::<CK_ATTRIBUTE>() + 1) as CK_ULONG
}

#[test]
fn random_length_no_buffer_can_have() {
    Scenario::zymkey4i().run(|t| {
        let raw = t.raw();
        assert_rv!(raw.initialize_os_locking(), CKR_OK);
        let session = raw.session();
        let mut buffer = [0u8; 16];
        assert_rv!(
            call!(
                raw,
                C_GenerateRandom(session, buffer.as_mut_ptr(), NO_BUFFER_IS_THAT_LONG)
            ),
            CKR_ARGUMENTS_BAD,
            "C_GenerateRandom with a length over isize::MAX"
        );
        assert_eq!(buffer, [0u8; 16], "nothing was written");
        assert_rv!(
            call!(raw, C_GenerateRandom(session, buffer.as_mut_ptr(), 16)),
            CKR_OK,
            "the module is unharmed"
        );
    });
}

#[test]
fn attribute_counts_no_template_can_have() {
    Scenario::hsm6().run(|t| {
        let raw = t.raw();
        assert_rv!(raw.initialize_os_locking(), CKR_OK);
        let slot = raw.token_slot();
        let session = raw
            .open_session(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION)
            .expect("RW session");
        let key = raw.private_key(session, 0);
        let count = no_template_is_that_long();
        let mut class: CK_OBJECT_CLASS = CKO_DATA;
        let mut template = [ulong_attribute(CKA_CLASS, &mut class)];
        let tpl = template.as_mut_ptr();
        let mut handle: CK_OBJECT_HANDLE = CK_INVALID_HANDLE;
        let mut handle2: CK_OBJECT_HANDLE = CK_INVALID_HANDLE;
        let mut mechanism = CK_MECHANISM {
            mechanism: CKM_EC_KEY_PAIR_GEN,
            pParameter: ptr::null_mut(),
            ulParameterLen: 0,
        };
        assert_rv!(
            call!(raw, C_FindObjectsInit(session, tpl, count)),
            CKR_ARGUMENTS_BAD
        );
        assert_rv!(
            call!(raw, C_GetAttributeValue(session, key, tpl, count)),
            CKR_ARGUMENTS_BAD
        );
        assert_eq!(
            template[0].ulValueLen,
            size_of::<CK_ULONG>() as CK_ULONG,
            "the template is untouched"
        );
        assert_rv!(
            call!(raw, C_CreateObject(session, tpl, count, &mut handle)),
            CKR_ARGUMENTS_BAD
        );
        assert_rv!(
            call!(raw, C_SetAttributeValue(session, key, tpl, count)),
            CKR_ARGUMENTS_BAD
        );
        assert_rv!(
            call!(
                raw,
                C_GenerateKeyPair(
                    session,
                    &mut mechanism,
                    tpl,
                    count,
                    tpl,
                    1,
                    &mut handle,
                    &mut handle2
                )
            ),
            CKR_ARGUMENTS_BAD
        );
        let ops = t.device_ops();
        assert!(
            !ops.iter().any(|line| line.starts_with("gen")),
            "no key generation on the device: {ops:?}"
        );
        let mut found = [CK_INVALID_HANDLE; 4];
        let mut found_count: CK_ULONG = 0;
        let mut empty: [CK_ATTRIBUTE; 0] = [];
        assert_rv!(
            call!(raw, C_FindObjectsInit(session, empty.as_mut_ptr(), 0)),
            CKR_OK
        );
        assert_rv!(
            call!(
                raw,
                C_FindObjects(session, found.as_mut_ptr(), CK_ULONG::MAX, &mut found_count)
            ),
            CKR_ARGUMENTS_BAD,
            "C_FindObjects with room for more handles than memory holds"
        );
        raw.sign_once(session, CKM_ECDSA, key, &[1u8; 32])
            .expect("the module is unharmed");
    });
}
