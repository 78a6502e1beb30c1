//! Objects: the key objects of the device slots, attribute templates, searches, handles, and
//! the certificate and data objects kept in the token's store (PKCS#11 2.40 §5.7).

mod common;

use std::collections::BTreeSet;
use std::ptr;

use common::raw::{assert_rv, bytes_attribute, call, rv_name, ulong_attribute};
use common::{Model, Scenario};
use cryptoki::error::RvError;
use cryptoki::object::{Attribute, AttributeType, CertificateType, KeyType, ObjectClass};
use cryptoki_sys::*;

fn check_key_objects(model: Model) {
    Scenario::new(model).run(|t| {
        let pkcs11 = t.init();
        let session = common::open_session(&pkcs11);
        for slot in model.factory_slots() {
            let expected_point = t.device_ec_point(slot);
            for class in [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY] {
                let key = common::key(&session, class, slot);
                let attributes = session
                    .get_attributes(
                        key,
                        &[
                            AttributeType::Class,
                            AttributeType::KeyType,
                            AttributeType::Id,
                            AttributeType::Label,
                            AttributeType::EcParams,
                            AttributeType::EcPoint,
                            AttributeType::Token,
                        ],
                    )
                    .expect("C_GetAttributeValue");
                assert_eq!(
                    attributes,
                    vec![
                        Attribute::Class(class),
                        Attribute::KeyType(KeyType::EC),
                        Attribute::Id(common::slot_id(slot)),
                        Attribute::Label(common::slot_label(slot)),
                        Attribute::EcParams(common::P256_PARAMS.to_vec()),
                        Attribute::EcPoint(expected_point.clone()),
                        Attribute::Token(true),
                    ],
                    "{class} of slot {slot}"
                );
                assert_eq!(expected_point.len(), 67, "CKA_EC_POINT is 04 41 04‖X‖Y");
            }
            let private = common::private_key(&session, slot);
            assert!(
                common::bool_attribute(&session, private, AttributeType::Sign),
                "CKA_SIGN"
            );
            assert!(
                common::bool_attribute(&session, private, AttributeType::Sensitive),
                "CKA_SENSITIVE"
            );
            assert!(
                !common::bool_attribute(&session, private, AttributeType::Extractable),
                "CKA_EXTRACTABLE"
            );
            assert!(
                !common::bool_attribute(&session, private, AttributeType::AlwaysAuthenticate),
                "CKA_ALWAYS_AUTHENTICATE answered FALSE"
            );
            let public = common::public_key(&session, slot);
            assert!(
                common::bool_attribute(&session, public, AttributeType::Verify),
                "CKA_VERIFY"
            );
        }
        let private_keys = common::find(&session, &[Attribute::Class(ObjectClass::PRIVATE_KEY)]);
        assert_eq!(
            private_keys.len(),
            model.factory_slots().len(),
            "one private key per factory slot"
        );
    });
}

#[test]
fn key_objects_zymkey4i() {
    check_key_objects(Model::Zymkey4i);
}

#[test]
fn key_objects_hsm6() {
    check_key_objects(Model::Hsm6);
}

#[test]
fn private_value_is_sensitive() {
    Scenario::zymkey4i().run(|t| {
        let raw = t.raw();
        assert_rv!(raw.initialize_os_locking(), CKR_OK);
        let session = raw.session();
        let key = raw.private_key(session, 0);
        // Length query and read alike.
        let mut query = [CK_ATTRIBUTE {
            type_: CKA_VALUE,
            pValue: ptr::null_mut(),
            ulValueLen: 0,
        }];
        assert_rv!(
            call!(
                raw,
                C_GetAttributeValue(session, key, query.as_mut_ptr(), 1)
            ),
            CKR_ATTRIBUTE_SENSITIVE,
            "CKA_VALUE length of a private key"
        );
        assert_eq!(query[0].ulValueLen, CK_UNAVAILABLE_INFORMATION);
        let mut value = [0u8; 256];
        let mut read = [bytes_attribute(CKA_VALUE, &mut value)];
        assert_rv!(
            call!(raw, C_GetAttributeValue(session, key, read.as_mut_ptr(), 1)),
            CKR_ATTRIBUTE_SENSITIVE,
            "CKA_VALUE of a private key"
        );
        assert_eq!(read[0].ulValueLen, CK_UNAVAILABLE_INFORMATION);
        assert_eq!(value, [0u8; 256], "nothing written");
    });
}

/// Every entry of a template is answered: valid ones filled, unknown and sensitive ones
/// marked unavailable (pkcs11-provider reads everything in one call).
#[test]
fn mixed_template_answers_every_entry() {
    Scenario::zymkey4i().run(|t| {
        let raw = t.raw();
        assert_rv!(raw.initialize_os_locking(), CKR_OK);
        let session = raw.session();
        let key = raw.private_key(session, 1);

        let mut class: CK_ULONG = 0xFFFF;
        let mut key_type: CK_ULONG = 0xFFFF;
        let mut id = [0xFFu8; 16];
        let mut unknown = [0xEEu8; 16];
        let mut value = [0xDDu8; 64];
        let mut label = [0u8; 32];
        let mut sensitive: CK_BBOOL = 0xFF;
        let mut template = [
            ulong_attribute(CKA_CLASS, &mut class),
            ulong_attribute(CKA_KEY_TYPE, &mut key_type),
            bytes_attribute(CKA_ID, &mut id),
            bytes_attribute(CKA_VENDOR_DEFINED + 1, &mut unknown),
            bytes_attribute(CKA_VALUE, &mut value),
            bytes_attribute(CKA_LABEL, &mut label),
            CK_ATTRIBUTE {
                type_: CKA_EC_POINT,
                pValue: ptr::null_mut(),
                ulValueLen: 0,
            },
            CK_ATTRIBUTE {
                type_: CKA_SENSITIVE,
                pValue: (&mut sensitive as *mut CK_BBOOL).cast(),
                ulValueLen: 1,
            },
        ];
        let rv = call!(
            raw,
            C_GetAttributeValue(
                session,
                key,
                template.as_mut_ptr(),
                template.len() as CK_ULONG
            )
        );
        assert!(
            rv == CKR_ATTRIBUTE_TYPE_INVALID || rv == CKR_ATTRIBUTE_SENSITIVE,
            "overall: got {}, expected CKR_ATTRIBUTE_TYPE_INVALID or CKR_ATTRIBUTE_SENSITIVE",
            rv_name(rv)
        );
        assert_eq!(
            template[0].ulValueLen,
            std::mem::size_of::<CK_ULONG>() as CK_ULONG
        );
        assert_eq!(class, CKO_PRIVATE_KEY, "CKA_CLASS filled");
        assert_eq!(key_type, CKK_EC, "CKA_KEY_TYPE filled");
        assert_eq!(template[2].ulValueLen, 2, "CKA_ID length");
        assert_eq!(&id[..2], &[0x00, 0x01], "CKA_ID filled");
        assert_eq!(
            template[3].ulValueLen, CK_UNAVAILABLE_INFORMATION,
            "unknown attribute"
        );
        assert_eq!(
            template[4].ulValueLen, CK_UNAVAILABLE_INFORMATION,
            "sensitive CKA_VALUE"
        );
        assert_eq!(value, [0xDDu8; 64], "CKA_VALUE not written");
        assert_eq!(template[5].ulValueLen, 5, "CKA_LABEL length");
        assert_eq!(&label[..5], b"slot1", "CKA_LABEL filled");
        assert_eq!(
            template[6].ulValueLen, 67,
            "CKA_EC_POINT length query answered"
        );
        assert_eq!(template[7].ulValueLen, 1);
        assert_eq!(sensitive, CK_TRUE, "CKA_SENSITIVE filled");

        // An unknown attribute alone.
        let mut only_unknown = [bytes_attribute(CKA_VENDOR_DEFINED + 1, &mut unknown)];
        assert_rv!(
            call!(
                raw,
                C_GetAttributeValue(session, key, only_unknown.as_mut_ptr(), 1)
            ),
            CKR_ATTRIBUTE_TYPE_INVALID
        );
        assert_eq!(only_unknown[0].ulValueLen, CK_UNAVAILABLE_INFORMATION);
    });
}

/// A length query gives the length; a short buffer gives CKR_BUFFER_TOO_SMALL and
/// CK_UNAVAILABLE_INFORMATION for that entry while the others are still filled.
#[test]
fn attribute_buffer_too_small() {
    Scenario::zymkey4i().run(|t| {
        let raw = t.raw();
        assert_rv!(raw.initialize_os_locking(), CKR_OK);
        let session = raw.session();
        let key = raw.key(session, CKO_PUBLIC_KEY, 2);
        let mut short = [0u8; 10];
        let mut class: CK_ULONG = 0;
        let mut template = [
            bytes_attribute(CKA_EC_POINT, &mut short),
            ulong_attribute(CKA_CLASS, &mut class),
        ];
        assert_rv!(
            call!(
                raw,
                C_GetAttributeValue(session, key, template.as_mut_ptr(), 2)
            ),
            CKR_BUFFER_TOO_SMALL
        );
        assert_eq!(
            template[0].ulValueLen, CK_UNAVAILABLE_INFORMATION,
            "short entry"
        );
        assert_eq!(class, CKO_PUBLIC_KEY, "the other entry is still filled");
        let point = raw
            .attribute(session, key, CKA_EC_POINT)
            .expect("CKA_EC_POINT");
        assert_eq!(point, t.device_ec_point(2));
    });
}

#[test]
fn handles_are_stable() {
    Scenario::zymkey4i().run(|t| {
        let pkcs11 = t.init();
        let first = common::open_session(&pkcs11);
        let a = common::private_key(&first, 0);
        let b = common::private_key(&first, 0);
        assert_eq!(a, b, "same handle across two finds");
        assert_ne!(a.handle(), CK_INVALID_HANDLE);
        let public = common::public_key(&first, 0);
        assert_ne!(a, public, "private and public keys are distinct objects");
        let second = common::open_session(&pkcs11);
        assert_eq!(
            common::private_key(&second, 0),
            a,
            "same handle in another session"
        );
        let all_first = common::find(&first, &[]);
        drop(first);
        drop(second);
        let third = common::open_session(&pkcs11);
        assert_eq!(
            common::private_key(&third, 0),
            a,
            "same handle after the sessions closed"
        );
        assert_eq!(
            common::find(&third, &[]),
            all_first,
            "the same objects in the same order"
        );
    });
}

#[test]
fn finds_by_class_id_label_and_combinations() {
    Scenario::zymkey4i().run(|t| {
        let pkcs11 = t.init();
        let session = common::open_session(&pkcs11);
        let labels = |found: &[cryptoki::object::ObjectHandle]| -> BTreeSet<Vec<u8>> {
            found
                .iter()
                .map(|&h| common::bytes_attribute(&session, h, AttributeType::Label))
                .collect()
        };
        let all_labels: BTreeSet<Vec<u8>> = (0..3).map(common::slot_label).collect();

        let private = common::find(&session, &[Attribute::Class(ObjectClass::PRIVATE_KEY)]);
        assert_eq!(private.len(), 3);
        assert_eq!(labels(&private), all_labels);
        let public = common::find(&session, &[Attribute::Class(ObjectClass::PUBLIC_KEY)]);
        assert_eq!(public.len(), 3);
        assert_eq!(labels(&public), all_labels);
        assert!(common::find(&session, &[Attribute::Class(ObjectClass::CERTIFICATE)]).is_empty());

        let by_id = common::find(&session, &[Attribute::Id(common::slot_id(1))]);
        assert_eq!(by_id.len(), 2, "private and public key of slot 1");
        assert_eq!(labels(&by_id), BTreeSet::from([common::slot_label(1)]));

        let by_label = common::find(&session, &[Attribute::Label(common::slot_label(2))]);
        assert_eq!(by_label.len(), 2);
        let ids: BTreeSet<Vec<u8>> = by_label
            .iter()
            .map(|&h| common::bytes_attribute(&session, h, AttributeType::Id))
            .collect();
        assert_eq!(ids, BTreeSet::from([common::slot_id(2)]));

        let one = common::find(
            &session,
            &[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Id(common::slot_id(2)),
                Attribute::Label(common::slot_label(2)),
            ],
        );
        assert_eq!(one.len(), 1, "class + id + label");
        assert_eq!(one[0], common::private_key(&session, 2));
        let public_by_label = common::find(
            &session,
            &[
                Attribute::Class(ObjectClass::PUBLIC_KEY),
                Attribute::Label(common::slot_label(0)),
            ],
        );
        assert_eq!(
            public_by_label,
            vec![common::public_key(&session, 0)],
            "class + label"
        );

        let contradiction = common::find(
            &session,
            &[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Id(common::slot_id(0)),
                Attribute::Label(common::slot_label(1)),
            ],
        );
        assert!(
            contradiction.is_empty(),
            "id of slot 0 with label of slot 1"
        );
        assert!(
            common::find(&session, &[Attribute::Id(common::slot_id(3))]).is_empty(),
            "no slot 3"
        );
        assert!(
            common::find(&session, &[Attribute::Label(b"slot".to_vec())]).is_empty(),
            "labels match exactly"
        );
        assert!(
            common::find(&session, &[Attribute::Id(vec![0x00])]).is_empty(),
            "ids match exactly"
        );

        let signers = common::find(
            &session,
            &[Attribute::KeyType(KeyType::EC), Attribute::Sign(true)],
        );
        assert_eq!(signers.len(), 3, "CKA_KEY_TYPE + CKA_SIGN");

        let all = common::find(&session, &[]);
        assert_eq!(all.len(), 6, "an empty template lists every object");
        let unique: BTreeSet<_> = all.iter().map(|h| h.handle()).collect();
        assert_eq!(unique.len(), 6, "no duplicate handles");
        for handle in private.iter().chain(&public) {
            assert!(all.contains(handle));
        }
    });
}

/// libp11 fetches one handle at a time and reads attributes while the search is active.
#[test]
fn find_one_at_a_time_reading_attributes() {
    Scenario::zymkey4i().run(|t| {
        let raw = t.raw();
        assert_rv!(raw.initialize_os_locking(), CKR_OK);
        let session = raw.session();
        let mut class = CKO_PRIVATE_KEY;
        let mut template = [ulong_attribute(CKA_CLASS, &mut class)];
        assert_rv!(
            call!(raw, C_FindObjectsInit(session, template.as_mut_ptr(), 1)),
            CKR_OK
        );
        assert_rv!(
            call!(raw, C_FindObjectsInit(session, template.as_mut_ptr(), 1)),
            CKR_OPERATION_ACTIVE,
            "second C_FindObjectsInit"
        );
        let mut seen = Vec::new();
        loop {
            let mut handle = CK_INVALID_HANDLE;
            let mut count: CK_ULONG = 0;
            assert_rv!(
                call!(raw, C_FindObjects(session, &mut handle, 1, &mut count)),
                CKR_OK
            );
            if count == 0 {
                break;
            }
            assert_eq!(count, 1);
            let label = raw
                .attribute(session, handle, CKA_LABEL)
                .expect("CKA_LABEL during a search");
            let key_type = raw
                .attribute(session, handle, CKA_KEY_TYPE)
                .expect("CKA_KEY_TYPE");
            assert_eq!(key_type, CKK_EC.to_ne_bytes().to_vec());
            seen.push(label);
        }
        assert_rv!(call!(raw, C_FindObjectsFinal(session)), CKR_OK);
        seen.sort();
        assert_eq!(
            seen,
            vec![b"slot0".to_vec(), b"slot1".to_vec(), b"slot2".to_vec()]
        );
        let mut count: CK_ULONG = 0;
        let mut handle = CK_INVALID_HANDLE;
        assert_rv!(
            call!(raw, C_FindObjects(session, &mut handle, 1, &mut count)),
            CKR_OPERATION_NOT_INITIALIZED,
            "C_FindObjects after C_FindObjectsFinal"
        );
        assert_rv!(
            call!(raw, C_FindObjectsFinal(session)),
            CKR_OPERATION_NOT_INITIALIZED
        );
    });
}

/// Searches and attribute reads are answered from cached state, never from the device.
#[test]
fn searches_and_attribute_reads_do_not_touch_the_device() {
    Scenario::zymkey4i().run(|t| {
        let pkcs11 = t.init();
        let session = common::open_session(&pkcs11);
        // Warm up: the public keys may be read once.
        for slot in 0..3 {
            common::ec_point(&session, common::private_key(&session, slot));
        }
        let before = t.device_ops();
        for _ in 0..3 {
            let all = common::find(&session, &[]);
            for handle in all {
                session
                    .get_attributes(
                        handle,
                        &[
                            AttributeType::Class,
                            AttributeType::Id,
                            AttributeType::Label,
                            AttributeType::EcPoint,
                            AttributeType::EcParams,
                        ],
                    )
                    .expect("C_GetAttributeValue");
            }
            let again = common::open_session(&pkcs11);
            common::find(&again, &[Attribute::Label(common::slot_label(1))]);
        }
        let after = t.device_ops();
        assert_eq!(
            after[before.len()..].to_vec(),
            Vec::<String>::new(),
            "device operations during searches and attribute reads"
        );
    });
}

/// A certificate for the key of a `CKA_EC_POINT` value, signed by another key, and its subject.
fn test_certificate(ec_point: &[u8]) -> (Vec<u8>, Vec<u8>) {
    use openssl::nid::Nid;
    use openssl::pkey::PKey;

    let device_key = PKey::from_ec_key(testkit::ecdsa::public_key(
        Nid::X9_62_PRIME256V1,
        &ec_point[3..],
    ))
    .unwrap();
    let certificate = testkit::x509::Cert::new("zkiot test device")
        .serial(4242)
        .days(0, 365)
        .sign(&device_key, &testkit::x509::p256());
    (
        certificate.to_der().unwrap(),
        certificate.subject_name().to_der().unwrap(),
    )
}

fn certificate_template(der: &[u8], subject: &[u8]) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::CERTIFICATE),
        Attribute::CertificateType(CertificateType::X_509),
        Attribute::Token(true),
        Attribute::Id(common::slot_id(0)),
        Attribute::Label(b"device certificate".to_vec()),
        Attribute::Subject(subject.to_vec()),
        Attribute::Value(der.to_vec()),
    ]
}

fn find_certificates(session: &cryptoki::session::Session) -> Vec<cryptoki::object::ObjectHandle> {
    common::find(
        session,
        &[
            Attribute::Class(ObjectClass::CERTIFICATE),
            Attribute::Id(common::slot_id(0)),
        ],
    )
}

/// A certificate stored on the token survives a module reload and is seen by another process.
#[test]
fn certificate_survives_reload_and_is_seen_by_a_second_process() {
    let scenario = Scenario::zymkey4i();
    scenario.run(|t| {
        let (der, subject) = test_certificate(&t.device_ec_point(0));
        std::fs::write(t.dir.join("certificate.der"), &der).unwrap();
        let pkcs11 = t.init();
        let session = common::open_rw_session(&pkcs11);
        let created = session
            .create_object(&certificate_template(&der, &subject))
            .expect("C_CreateObject(CKO_CERTIFICATE)");
        assert_eq!(find_certificates(&session), vec![created]);
        assert_eq!(
            common::bytes_attribute(&session, created, AttributeType::Value),
            der
        );
        let by_label = common::find(
            &session,
            &[Attribute::Label(b"device certificate".to_vec())],
        );
        assert_eq!(by_label, vec![created], "found by label");
        drop(session);
        pkcs11.finalize().expect("C_Finalize");

        let pkcs11 = t.init();
        let session = common::open_session(&pkcs11);
        let found = find_certificates(&session);
        assert_eq!(found.len(), 1, "the certificate after a reload");
        let attributes = session
            .get_attributes(
                found[0],
                &[
                    AttributeType::CertificateType,
                    AttributeType::Value,
                    AttributeType::Subject,
                    AttributeType::Token,
                ],
            )
            .expect("certificate attributes");
        assert_eq!(
            attributes,
            vec![
                Attribute::CertificateType(CertificateType::X_509),
                Attribute::Value(der.clone()),
                Attribute::Subject(subject.clone()),
                Attribute::Token(true),
            ]
        );
    });
    scenario.run(|t| {
        let der = std::fs::read(t.dir.join("certificate.der")).unwrap();
        let pkcs11 = t.init();
        let session = common::open_session(&pkcs11);
        let found = find_certificates(&session);
        assert_eq!(found.len(), 1, "a second process sees the certificate");
        assert_eq!(
            common::bytes_attribute(&session, found[0], AttributeType::Value),
            der
        );
        let all = common::find(&session, &[]);
        assert_eq!(all.len(), 7, "six key objects and the certificate");
    });
}

#[test]
fn token_objects_need_a_read_write_session() {
    Scenario::zymkey4i().run(|t| {
        let pkcs11 = t.init();
        let session = common::open_session(&pkcs11);
        let err = session
            .create_object(&[
                Attribute::Class(ObjectClass::DATA),
                Attribute::Token(true),
                Attribute::Label(b"note".to_vec()),
                Attribute::Value(b"hello".to_vec()),
            ])
            .expect_err("token object in a read-only session");
        assert_eq!(common::rv(err), RvError::SessionReadOnly);
        let err = session
            .destroy_object(common::private_key(&session, 0))
            .expect_err("destroy in a read-only session");
        assert_eq!(common::rv(err), RvError::SessionReadOnly);
    });
}

#[test]
fn data_objects() {
    let scenario = Scenario::zymkey4i();
    scenario.run(|t| {
        let pkcs11 = t.init();
        let session = common::open_rw_session(&pkcs11);
        let template = vec![
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(true),
            Attribute::Application(b"zkiot".to_vec()),
            Attribute::Label(b"endpoint".to_vec()),
            Attribute::Value(b"example.iot.eu-west-1.amazonaws.com".to_vec()),
        ];
        let first = session
            .create_object(&template)
            .expect("C_CreateObject(CKO_DATA)");
        let second = session
            .create_object(&[
                Attribute::Class(ObjectClass::DATA),
                Attribute::Token(true),
                Attribute::Label(b"scratch".to_vec()),
                Attribute::Value(vec![0, 1, 2, 255]),
            ])
            .expect("a second data object");
        assert_ne!(first, second);
        let read = session
            .get_attributes(
                first,
                &[
                    AttributeType::Class,
                    AttributeType::Application,
                    AttributeType::Label,
                    AttributeType::Value,
                ],
            )
            .expect("data object attributes");
        assert_eq!(
            read,
            template[..1]
                .iter()
                .chain(&template[2..])
                .cloned()
                .collect::<Vec<_>>()
        );
        let data = common::find(&session, &[Attribute::Class(ObjectClass::DATA)]);
        assert_eq!(data.len(), 2);
        let by_label = common::find(
            &session,
            &[
                Attribute::Class(ObjectClass::DATA),
                Attribute::Label(b"scratch".to_vec()),
            ],
        );
        assert_eq!(by_label, vec![second]);
        session
            .destroy_object(second)
            .expect("C_DestroyObject(data)");
        assert!(common::find(&session, &[Attribute::Label(b"scratch".to_vec())]).is_empty());
        let err = session
            .get_attributes(second, &[AttributeType::Value])
            .expect_err("a destroyed object");
        assert_eq!(common::rv(err), RvError::ObjectHandleInvalid);
    });
    scenario.run(|t| {
        let pkcs11 = t.init();
        let session = common::open_session(&pkcs11);
        let data = common::find(&session, &[Attribute::Class(ObjectClass::DATA)]);
        assert_eq!(
            data.len(),
            1,
            "the kept data object in another process, not the destroyed one"
        );
        assert_eq!(
            common::bytes_attribute(&session, data[0], AttributeType::Value),
            b"example.iot.eu-west-1.amazonaws.com"
        );
    });
}

/// Session objects (CKA_TOKEN = FALSE) are seen by the other sessions of the process, end
/// with the session that made them, and never reach the store.
#[test]
fn session_objects_live_with_their_session() {
    let scenario = Scenario::zymkey4i();
    scenario.run(|t| {
        let pkcs11 = t.init();
        let creator = common::open_session(&pkcs11);
        let other = common::open_session(&pkcs11);
        let label = Attribute::Label(b"scratch".to_vec());
        let object = creator
            .create_object(&[
                Attribute::Class(ObjectClass::DATA),
                Attribute::Token(false),
                label.clone(),
                Attribute::Value(b"short-lived".to_vec()),
            ])
            .expect("a session object, even in a read-only session");
        assert!(!common::bool_attribute(
            &other,
            object,
            AttributeType::Token
        ));
        assert_eq!(
            common::find(&other, std::slice::from_ref(&label)),
            vec![object],
            "seen by another session"
        );
        drop(creator);
        assert!(
            common::find(&other, std::slice::from_ref(&label)).is_empty(),
            "gone with its session"
        );
        let err = other
            .get_attributes(object, &[AttributeType::Value])
            .expect_err("the handle of a closed session's object");
        assert_eq!(common::rv(err), RvError::ObjectHandleInvalid);
        // One left open at exit: it must not be in the store either.
        other
            .create_object(&[
                Attribute::Class(ObjectClass::DATA),
                Attribute::Token(false),
                label,
                Attribute::Value(b"still short-lived".to_vec()),
            ])
            .expect("a second session object");
    });
    scenario.run(|t| {
        let pkcs11 = t.init();
        let session = common::open_session(&pkcs11);
        assert!(
            common::find(&session, &[Attribute::Label(b"scratch".to_vec())]).is_empty(),
            "session objects are not seen by another process"
        );
    });
}

#[test]
fn create_object_checks_the_template() {
    Scenario::zymkey4i().run(|t| {
        let pkcs11 = t.init();
        let session = common::open_rw_session(&pkcs11);
        let before = common::find(&session, &[]);

        let err = session
            .create_object(&[Attribute::Token(true), Attribute::Label(b"no class".to_vec())])
            .expect_err("no CKA_CLASS");
        assert_eq!(common::rv(err), RvError::TemplateIncomplete, "no CKA_CLASS");
        let err = session
            .create_object(&[
                Attribute::Class(ObjectClass::CERTIFICATE),
                Attribute::CertificateType(CertificateType::X_509),
                Attribute::Token(true),
                Attribute::Id(common::slot_id(0)),
            ])
            .expect_err("a certificate without CKA_VALUE");
        assert_eq!(common::rv(err), RvError::TemplateIncomplete, "certificate without CKA_VALUE");
        let err = session
            .create_object(&[
                Attribute::Class(ObjectClass::DATA),
                Attribute::Token(true),
                Attribute::VendorDefined((AttributeType::VendorDefined(CKA_VENDOR_DEFINED + 1), vec![1])),
            ])
            .expect_err("an unknown attribute");
        assert_eq!(common::rv(err), RvError::AttributeTypeInvalid, "unknown attribute");
        let err = session
            .create_object(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::KeyType(KeyType::EC),
                Attribute::Token(true),
                Attribute::EcParams(common::P256_PARAMS.to_vec()),
                Attribute::Value(vec![0x11; 32]),
            ])
            .expect_err("importing a private key");
        let rv = common::rv(err);
        assert!(
            matches!(rv, RvError::AttributeValueInvalid | RvError::TemplateInconsistent | RvError::ActionProhibited),
            "private keys live only in the device: got {rv:?}, expected CKR_ATTRIBUTE_VALUE_INVALID"
        );
        assert_eq!(common::find(&session, &[]), before, "nothing was created");
    });
}

/// The store is shared by processes: four processes creating objects at once lose none.
#[test]
fn store_is_shared_by_concurrent_processes() {
    const PROCESSES: usize = 4;
    const OBJECTS: usize = 10;
    let scenario = Scenario::zymkey4i();
    scenario.run_parallel(PROCESSES, |t, index| {
        let pkcs11 = t.init();
        let session = common::open_rw_session(&pkcs11);
        for n in 0..OBJECTS {
            session
                .create_object(&[
                    Attribute::Class(ObjectClass::DATA),
                    Attribute::Token(true),
                    Attribute::Label(format!("p{index}-{n}").into_bytes()),
                    Attribute::Value(format!("value of p{index}-{n}").into_bytes()),
                ])
                .unwrap_or_else(|err| panic!("process {index}, object {n}: {err}"));
        }
    });
    scenario.run(|t| {
        let pkcs11 = t.init();
        let session = common::open_session(&pkcs11);
        let data = common::find(&session, &[Attribute::Class(ObjectClass::DATA)]);
        assert_eq!(
            data.len(),
            PROCESSES * OBJECTS,
            "every object of every process"
        );
        let labels: BTreeSet<Vec<u8>> = data
            .iter()
            .map(|&h| common::bytes_attribute(&session, h, AttributeType::Label))
            .collect();
        assert_eq!(labels.len(), PROCESSES * OBJECTS, "distinct objects");
        for &handle in &data {
            let label = common::bytes_attribute(&session, handle, AttributeType::Label);
            let value = common::bytes_attribute(&session, handle, AttributeType::Value);
            assert_eq!(
                value,
                [b"value of ".as_slice(), &label].concat(),
                "value matches its label"
            );
        }
    });
}

#[test]
fn configured_token_and_key_labels() {
    Scenario::zymkey4i()
        .config("token_label = \"edge-42\"\n[labels]\n0 = \"device\"")
        .run(|t| {
            let pkcs11 = t.init();
            let slot = common::token_slot(&pkcs11);
            assert_eq!(
                pkcs11.get_token_info(slot).expect("C_GetTokenInfo").label(),
                "edge-42"
            );
            let session = common::open_session(&pkcs11);
            let device = common::find(&session, &[Attribute::Label(b"device".to_vec())]);
            assert_eq!(device.len(), 2, "private and public key labelled 'device'");
            for handle in device {
                assert_eq!(
                    common::bytes_attribute(&session, handle, AttributeType::Id),
                    common::slot_id(0)
                );
            }
            assert!(common::find(&session, &[Attribute::Label(common::slot_label(0))]).is_empty());
            assert_eq!(
                common::find(&session, &[Attribute::Label(common::slot_label(1))]).len(),
                2
            );
        });
}

/// DER OID of secp256k1.
const SECP256K1_PARAMS: [u8; 7] = [0x06, 0x05, 0x2B, 0x81, 0x04, 0x00, 0x0A];

/// On an HSM6, Ed25519/X25519 slots stay hidden (libp11 0.4.12 stops at an unknown key type),
/// foreign public keys show as public-key objects `0x8000|N` labelled `foreignN`, and a
/// secp256k1 key, if shown, carries its own curve.
#[test]
fn hsm6_key_kinds() {
    use openssl::nid::Nid;

    Scenario::hsm6().run(|t| {
        let device = t.device();
        let ed25519 = device
            .generate_key(zymkey::KeyType::Ed25519)
            .expect("Ed25519 key") as u16;
        let x25519 = device
            .generate_key(zymkey::KeyType::X25519)
            .expect("X25519 key") as u16;
        let k1 = device
            .generate_key(zymkey::KeyType::Secp256k1)
            .expect("secp256k1 key") as u16;
        let foreign_key = testkit::x509::ec_key(Nid::X9_62_PRIME256V1);
        let uncompressed = testkit::ecdsa::uncompressed_point(&foreign_key);
        let foreign = device
            .store_foreign_public_key(zymkey::KeyType::NistP256, &uncompressed[1..])
            .expect("store a foreign public key") as u16;

        let pkcs11 = t.init();
        let session = common::open_session(&pkcs11);
        for hidden in [ed25519, x25519] {
            assert!(
                common::find(&session, &[Attribute::Id(common::slot_id(hidden))]).is_empty(),
                "slot {hidden} (Ed25519/X25519) is hidden"
            );
        }
        for key in common::find(&session, &[Attribute::Class(ObjectClass::PRIVATE_KEY)]) {
            assert_eq!(
                attribute_key_type(&session, key),
                KeyType::EC,
                "every private key is of a type libp11 knows"
            );
        }

        let foreign_id = (0x8000 | foreign).to_be_bytes().to_vec();
        let found = common::find(&session, &[Attribute::Id(foreign_id.clone())]);
        assert_eq!(found.len(), 1, "a foreign key is one public-key object");
        let attributes = session
            .get_attributes(
                found[0],
                &[
                    AttributeType::Class,
                    AttributeType::Label,
                    AttributeType::EcPoint,
                ],
            )
            .expect("foreign key attributes");
        assert_eq!(
            attributes,
            vec![
                Attribute::Class(ObjectClass::PUBLIC_KEY),
                Attribute::Label(format!("foreign{foreign}").into_bytes()),
                Attribute::EcPoint(common::der_ec_point(&uncompressed[1..])),
            ]
        );

        let k1_keys = common::find(
            &session,
            &[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Id(common::slot_id(k1)),
            ],
        );
        if let Some(&private) = k1_keys.first() {
            assert_eq!(
                common::bytes_attribute(&session, private, AttributeType::EcParams),
                SECP256K1_PARAMS.to_vec(),
                "a secp256k1 key says so"
            );
            let point = common::ec_point(&session, private);
            let digest = common::sha256(b"secp256k1");
            let signature = session
                .sign(&cryptoki::mechanism::Mechanism::Ecdsa, private, &digest)
                .expect("sign");
            let k1_key = testkit::ecdsa::public_key(Nid::SECP256K1, &point[3..]);
            assert!(
                testkit::ecdsa::verifies_under(&k1_key, &digest, &signature),
                "secp256k1 signature verifies"
            );
        }
    });
}

fn attribute_key_type(
    session: &cryptoki::session::Session,
    key: cryptoki::object::ObjectHandle,
) -> KeyType {
    match common::attribute(session, key, AttributeType::KeyType) {
        Attribute::KeyType(kind) => kind,
        other => panic!("CKA_KEY_TYPE: {other:?}"),
    }
}

/// Public keys are read from the device once per slot and then served from memory.
#[test]
fn public_keys_are_read_once() {
    Scenario::zymkey4i().run(|t| {
        let pkcs11 = t.init();
        for _ in 0..3 {
            let session = common::open_session(&pkcs11);
            for slot in 0..3 {
                common::ec_point(&session, common::private_key(&session, slot));
                common::ec_point(&session, common::public_key(&session, slot));
            }
        }
        let ops = t.device_ops();
        for slot in 0..3 {
            let reads = ops
                .iter()
                .filter(|line| **line == format!("export_pubkey {slot}"))
                .count();
            assert_eq!(reads, 1, "public key of slot {slot} read once: {ops:?}");
        }
        assert_eq!(t.device_signatures(), 0);
    });
}
