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

/// The largest value of a certificate or data object, as the README documents it.
const MAX_DATA_VALUE_LEN: usize = 1024 * 1024;

/// A declared value length of 4 GiB over a 16-byte buffer.
const FOUR_GIB: CK_ULONG = 0xFFFF_FFFF;

/// An attribute whose `ulValueLen` claims far more than `buffer` holds.
fn overlong(kind: CK_ATTRIBUTE_TYPE, buffer: &mut [u8; 16]) -> CK_ATTRIBUTE {
    CK_ATTRIBUTE {
        type_: kind,
        pValue: buffer.as_mut_ptr().cast(),
        ulValueLen: FOUR_GIB,
    }
}

/// `C_CreateObject` with one overlong attribute after a data object's class and token flag.
fn create_with(raw: &common::raw::Raw, session: CK_SESSION_HANDLE, hostile: CK_ATTRIBUTE) -> CK_RV {
    let mut class: CK_OBJECT_CLASS = CKO_DATA;
    let mut token: CK_BBOOL = CK_TRUE;
    let mut template = [
        ulong_attribute(CKA_CLASS, &mut class),
        CK_ATTRIBUTE {
            type_: CKA_TOKEN,
            pValue: (&mut token as *mut CK_BBOOL).cast(),
            ulValueLen: 1,
        },
        hostile,
    ];
    let mut handle = CK_INVALID_HANDLE;
    call!(
        raw,
        C_CreateObject(session, template.as_mut_ptr(), 3, &mut handle)
    )
}

/// Each attribute type is checked against the object's class and each declared length against
/// the attribute's kind before a byte is read (PKCS#11 2.40 §4.1.1): an attribute the class does
/// not take is CKR_TEMPLATE_INCONSISTENT, an unknown one CKR_ATTRIBUTE_TYPE_INVALID, a length
/// the kind cannot have CKR_ATTRIBUTE_VALUE_INVALID.
#[test]
fn create_object_checks_declared_lengths_before_reading() {
    Scenario::zymkey4i().run(|t| {
        let raw = t.raw();
        assert_rv!(raw.initialize_os_locking(), CKR_OK);
        let slot = raw.token_slot();
        let session = raw
            .open_session(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION)
            .expect("RW session");
        let mut buffer = [0u8; 16];
        for (kind, expected) in [
            // Not attributes of a data object (a CK_BBOOL, a CK_ULONG, RSA key parts).
            (CKA_ENCRYPT, CKR_TEMPLATE_INCONSISTENT),
            (CKA_VALUE_LEN, CKR_TEMPLATE_INCONSISTENT),
            (CKA_MODULUS, CKR_TEMPLATE_INCONSISTENT),
            (CKA_PUBLIC_EXPONENT, CKR_TEMPLATE_INCONSISTENT),
            (CKA_PRIME_1, CKR_TEMPLATE_INCONSISTENT),
            (CKA_VENDOR_DEFINED | 0x5A, CKR_ATTRIBUTE_TYPE_INVALID),
            // Attributes of a data object, with lengths their kinds cannot have.
            (CKA_PRIVATE, CKR_ATTRIBUTE_VALUE_INVALID),
            (CKA_LABEL, CKR_ATTRIBUTE_VALUE_INVALID),
            (CKA_APPLICATION, CKR_ATTRIBUTE_VALUE_INVALID),
            (CKA_VALUE, CKR_ATTRIBUTE_VALUE_INVALID),
        ] {
            assert_rv!(
                create_with(&raw, session, overlong(kind, &mut buffer)),
                expected,
                "C_CreateObject with attribute {kind:#x} of 4 GiB"
            );
        }
        // The class itself, read first: exactly a CK_ULONG.
        let mut template = [overlong(CKA_CLASS, &mut buffer)];
        let mut handle = CK_INVALID_HANDLE;
        assert_rv!(
            call!(
                raw,
                C_CreateObject(session, template.as_mut_ptr(), 1, &mut handle)
            ),
            CKR_ATTRIBUTE_VALUE_INVALID,
            "CKA_CLASS of 4 GiB"
        );
        // A certificate does not take a CK_BBOOL usage either.
        let mut class: CK_OBJECT_CLASS = CKO_CERTIFICATE;
        let mut template = [
            ulong_attribute(CKA_CLASS, &mut class),
            overlong(CKA_SIGN, &mut buffer),
        ];
        assert_rv!(
            call!(
                raw,
                C_CreateObject(session, template.as_mut_ptr(), 2, &mut handle)
            ),
            CKR_TEMPLATE_INCONSISTENT,
            "a certificate with CKA_SIGN"
        );
        // The documented bound on a data object's value, and one byte more.
        let mut value = vec![0x5Au8; MAX_DATA_VALUE_LEN + 1];
        let mut value_attribute = CK_ATTRIBUTE {
            type_: CKA_VALUE,
            pValue: value.as_mut_ptr().cast(),
            ulValueLen: value.len() as CK_ULONG,
        };
        assert_rv!(
            create_with(&raw, session, value_attribute),
            CKR_ATTRIBUTE_VALUE_INVALID,
            "a data object value over the maximum"
        );
        value_attribute.ulValueLen -= 1;
        assert_rv!(
            create_with(&raw, session, value_attribute),
            CKR_OK,
            "a data object value of the maximum"
        );
        let key = raw.private_key(session, 0);
        raw.sign_once(session, CKM_ECDSA, key, &[1u8; 32])
            .expect("the module is unharmed");
    });
}

/// The same checks in the other calls that take a template.
#[test]
fn templates_of_every_call_are_checked_before_reading() {
    Scenario::hsm6().run(|t| {
        let raw = t.raw();
        assert_rv!(raw.initialize_os_locking(), CKR_OK);
        let slot = raw.token_slot();
        let session = raw
            .open_session(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION)
            .expect("RW session");
        let mut buffer = [0u8; 16];

        // C_FindObjectsInit: a known attribute with an impossible length is refused; one no
        // object here holds matches nothing, whatever its value, and is not read.
        for kind in [CKA_TOKEN, CKA_CLASS, CKA_LABEL] {
            let mut template = [overlong(kind, &mut buffer)];
            assert_rv!(
                call!(raw, C_FindObjectsInit(session, template.as_mut_ptr(), 1)),
                CKR_ATTRIBUTE_VALUE_INVALID,
                "C_FindObjectsInit with attribute {kind:#x} of 4 GiB"
            );
        }
        let mut template = [overlong(CKA_MODULUS, &mut buffer)];
        assert_rv!(
            call!(raw, C_FindObjectsInit(session, template.as_mut_ptr(), 1)),
            CKR_OK
        );
        let mut found = [CK_INVALID_HANDLE; 4];
        let mut count: CK_ULONG = 9;
        assert_rv!(
            call!(
                raw,
                C_FindObjects(session, found.as_mut_ptr(), 4, &mut count)
            ),
            CKR_OK
        );
        assert_eq!(count, 0, "no object has a modulus");
        assert_rv!(call!(raw, C_FindObjectsFinal(session)), CKR_OK);

        // C_GenerateKeyPair: key usages are CK_BBOOLs; RSA parts are not for EC keys.
        let mut mechanism = CK_MECHANISM {
            mechanism: CKM_EC_KEY_PAIR_GEN,
            pParameter: ptr::null_mut(),
            ulParameterLen: 0,
        };
        for (kind, expected) in [
            (CKA_VERIFY, CKR_ATTRIBUTE_VALUE_INVALID),
            (CKA_EC_PARAMS, CKR_ATTRIBUTE_VALUE_INVALID),
            (CKA_MODULUS_BITS, CKR_TEMPLATE_INCONSISTENT),
            (CKA_CERTIFICATE_TYPE, CKR_TEMPLATE_INCONSISTENT),
        ] {
            let mut public = [overlong(kind, &mut buffer)];
            let (mut public_key, mut private_key) = (CK_INVALID_HANDLE, CK_INVALID_HANDLE);
            assert_rv!(
                call!(
                    raw,
                    C_GenerateKeyPair(
                        session,
                        &mut mechanism,
                        public.as_mut_ptr(),
                        1,
                        ptr::null_mut(),
                        0,
                        &mut public_key,
                        &mut private_key
                    )
                ),
                expected,
                "C_GenerateKeyPair with attribute {kind:#x} of 4 GiB"
            );
        }
        let ops = t.device_ops();
        assert!(
            !ops.iter().any(|line| line.starts_with("gen")),
            "no key generation on the device: {ops:?}"
        );

        // C_SetAttributeValue on a data object of this session.
        let mut class: CK_OBJECT_CLASS = CKO_DATA;
        let mut template = [ulong_attribute(CKA_CLASS, &mut class)];
        let mut object = CK_INVALID_HANDLE;
        assert_rv!(
            call!(
                raw,
                C_CreateObject(session, template.as_mut_ptr(), 1, &mut object)
            ),
            CKR_OK
        );
        for (kind, expected) in [
            (CKA_LABEL, CKR_ATTRIBUTE_VALUE_INVALID),
            (CKA_VALUE, CKR_ATTRIBUTE_VALUE_INVALID),
            (CKA_VALUE_LEN, CKR_TEMPLATE_INCONSISTENT),
            (CKA_VENDOR_DEFINED | 0x5A, CKR_ATTRIBUTE_TYPE_INVALID),
        ] {
            let mut template = [overlong(kind, &mut buffer)];
            assert_rv!(
                call!(
                    raw,
                    C_SetAttributeValue(session, object, template.as_mut_ptr(), 1)
                ),
                expected,
                "C_SetAttributeValue with attribute {kind:#x} of 4 GiB"
            );
        }

        // C_GetAttributeValue writes no more than a value of the attribute's kind can be.
        let key = raw.private_key(session, 0);
        let mut label = [0xEEu8; 16];
        let mut template = [CK_ATTRIBUTE {
            type_: CKA_LABEL,
            pValue: label.as_mut_ptr().cast(),
            ulValueLen: FOUR_GIB,
        }];
        assert_rv!(
            call!(
                raw,
                C_GetAttributeValue(session, key, template.as_mut_ptr(), 1)
            ),
            CKR_OK
        );
        assert_eq!(template[0].ulValueLen, 5);
        assert_eq!(&label[..5], b"slot0");
        assert_eq!(label[5..], [0xEE; 11], "nothing written past the value");
        raw.sign_once(session, CKM_ECDSA, key, &[1u8; 32])
            .expect("the module is unharmed");
    });
}
