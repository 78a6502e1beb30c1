//! Key management (PKCS#11 2.40 §5.13, §5.7 C_DestroyObject): key generation creates a device
//! slot on models that can, destruction removes it, factory keys stay; ZYMKEY4i refuses.

mod common;

use common::{Model, Scenario};
use cryptoki::error::RvError;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;

/// DER OID of secp384r1, a curve the device does not have.
const P384_PARAMS: [u8; 7] = [0x06, 0x05, 0x2B, 0x81, 0x04, 0x00, 0x22];

fn generate(
    session: &Session,
    params: &[u8],
) -> cryptoki::error::Result<(ObjectHandle, ObjectHandle)> {
    session.generate_key_pair(
        &Mechanism::EccKeyPairGen,
        &[
            Attribute::Token(true),
            Attribute::EcParams(params.to_vec()),
            Attribute::Verify(true),
        ],
        &[
            Attribute::Token(true),
            Attribute::Sign(true),
            Attribute::Sensitive(true),
        ],
    )
}

/// The device slot a key object stands for, from its CKA_ID.
fn device_slot(session: &Session, key: ObjectHandle) -> u16 {
    let id = common::bytes_attribute(session, key, AttributeType::Id);
    assert_eq!(id.len(), 2, "CKA_ID is the 2-byte slot number: {id:02x?}");
    u16::from_be_bytes([id[0], id[1]])
}

fn device_slots(t: &common::Ctx) -> Vec<i32> {
    t.device()
        .allocated_slots(false)
        .expect("zkGetAllocSlotsList")
        .slots
}

#[test]
fn hsm6_generates_signs_and_destroys_keys() {
    let scenario = Scenario::hsm6();
    scenario.run(|t| {
        let pkcs11 = t.init();
        let session = common::open_rw_session(&pkcs11);
        let factory: Vec<i32> = (0..12).collect();
        assert_eq!(
            device_slots(t),
            factory,
            "a fresh HSM6 has its 12 factory keys"
        );

        let (public, private) =
            generate(&session, &common::P256_PARAMS).expect("C_GenerateKeyPair");
        let slot = device_slot(&session, private);
        assert!(slot >= 16, "generated keys live from slot 16 up: {slot}");
        assert_eq!(
            device_slot(&session, public),
            slot,
            "the pair shares its CKA_ID"
        );
        assert!(
            device_slots(t).contains(&i32::from(slot)),
            "the device has the new slot"
        );

        let expected_point = t.device_ec_point(slot);
        for (class, key) in [
            (ObjectClass::PRIVATE_KEY, private),
            (ObjectClass::PUBLIC_KEY, public),
        ] {
            let attributes = session
                .get_attributes(
                    key,
                    &[
                        AttributeType::Class,
                        AttributeType::KeyType,
                        AttributeType::Label,
                        AttributeType::EcParams,
                        AttributeType::EcPoint,
                        AttributeType::Token,
                    ],
                )
                .expect("attributes of a generated key");
            assert_eq!(
                attributes,
                vec![
                    Attribute::Class(class),
                    Attribute::KeyType(KeyType::EC),
                    Attribute::Label(common::slot_label(slot)),
                    Attribute::EcParams(common::P256_PARAMS.to_vec()),
                    Attribute::EcPoint(expected_point.clone()),
                    Attribute::Token(true),
                ],
                "{class} of generated slot {slot}"
            );
        }
        assert_eq!(
            common::private_key(&session, slot),
            private,
            "found by class and id"
        );
        assert_eq!(
            common::find(&session, &[Attribute::Label(common::slot_label(slot))]).len(),
            2,
            "found by label"
        );
        assert_eq!(
            common::find(&session, &[Attribute::Class(ObjectClass::PRIVATE_KEY)]).len(),
            13,
            "12 factory keys and the new one"
        );

        let digest = common::sha256(b"generated key");
        let signature = session
            .sign(&Mechanism::Ecdsa, private, &digest)
            .expect("sign with the new key");
        assert!(common::verifies(&expected_point, &digest, &signature));

        // A second key gets another slot.
        let (second_public, second_private) =
            generate(&session, &common::P256_PARAMS).expect("second key");
        let second = device_slot(&session, second_private);
        assert_ne!(second, slot);

        session
            .destroy_object(second_private)
            .expect("C_DestroyObject of a generated key");
        assert!(
            common::find(&session, &[Attribute::Id(common::slot_id(second))]).is_empty(),
            "both objects of the destroyed slot are gone"
        );
        assert!(
            !device_slots(t).contains(&i32::from(second)),
            "the device slot is removed"
        );
        let err = session
            .get_attributes(second_public, &[AttributeType::EcPoint])
            .expect_err("the public key of a destroyed pair");
        assert_eq!(common::rv(err), RvError::ObjectHandleInvalid);
        let err = session
            .sign(&Mechanism::Ecdsa, second_private, &digest)
            .expect_err("signing with a destroyed key");
        assert_eq!(common::rv(err), RvError::KeyHandleInvalid);

        // Factory keys are not destroyable.
        let factory_key = common::private_key(&session, 3);
        let err = session
            .destroy_object(factory_key)
            .expect_err("destroying a factory key");
        assert_eq!(common::rv(err), RvError::ActionProhibited);
        assert!(
            !common::bool_attribute(&session, factory_key, AttributeType::Destroyable),
            "CKA_DESTROYABLE"
        );
        assert!(
            device_slots(t).contains(&3),
            "the factory key is still on the device"
        );
        assert_eq!(common::private_key(&session, 3), factory_key);

        std::fs::write(t.dir.join("generated-slot"), slot.to_string()).unwrap();
    });
    // The key kept on the device is there for the next process, with the same id and label.
    scenario.run(|t| {
        let slot: u16 = std::fs::read_to_string(t.dir.join("generated-slot"))
            .unwrap()
            .parse()
            .unwrap();
        let pkcs11 = t.init();
        let session = common::open_session(&pkcs11);
        let private = common::private_key(&session, slot);
        assert_eq!(
            common::bytes_attribute(&session, private, AttributeType::Label),
            common::slot_label(slot)
        );
        let digest = common::sha256(b"second process");
        let signature = session
            .sign(&Mechanism::Ecdsa, private, &digest)
            .expect("sign");
        assert!(common::verifies(
            &t.device_ec_point(slot),
            &digest,
            &signature
        ));
    });
}

#[test]
fn hsm6_key_generation_checks_the_template() {
    Scenario::hsm6().run(|t| {
        let pkcs11 = t.init();
        let session = common::open_rw_session(&pkcs11);
        let err = generate(&session, &P384_PARAMS).expect_err("a P-384 key");
        let rv = common::rv(err);
        assert!(
            matches!(
                rv,
                RvError::CurveNotSupported
                    | RvError::AttributeValueInvalid
                    | RvError::DomainParamsInvalid
            ),
            "P-384 on a P-256 device: got {rv:?}, expected CKR_CURVE_NOT_SUPPORTED"
        );
        let ro = common::open_session(&pkcs11);
        let err =
            generate(&ro, &common::P256_PARAMS).expect_err("token keys in a read-only session");
        assert_eq!(common::rv(err), RvError::SessionReadOnly);
        assert_eq!(
            device_slots(t),
            (0..12).collect::<Vec<i32>>(),
            "no slot was allocated"
        );
    });
}

#[test]
fn zymkey4i_refuses_key_generation() {
    Scenario::new(Model::Zymkey4i).run(|t| {
        let pkcs11 = t.init();
        let session = common::open_rw_session(&pkcs11);
        let before = common::find(&session, &[]);
        let err =
            generate(&session, &common::P256_PARAMS).expect_err("no key generation on a Zymkey 4i");
        assert_eq!(common::rv(err), RvError::MechanismInvalid);
        assert_eq!(common::find(&session, &[]), before, "no new objects");
        let ops = t.device_ops();
        assert!(
            !ops.iter().any(|line| line.starts_with("gen")),
            "no key generation on the device: {ops:?}"
        );

        let err = session
            .destroy_object(common::private_key(&session, 0))
            .expect_err("destroying a factory key");
        assert_eq!(common::rv(err), RvError::ActionProhibited);
        assert_eq!(common::find(&session, &[]), before, "nothing destroyed");
    });
}
