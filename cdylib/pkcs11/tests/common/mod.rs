//! Shared by the integration tests of the module: every test loads the built `libzkpkcs11.so`,
//! backed by the emulator `libzkemu.so`, in a [`Scenario`] of the test kit (one child process
//! per step, see `testkit::scenario`), and checks it against the PKCS#11 specification. The
//! raw function list is `testkit::raw`; what is here are the calls through the safe `cryptoki`
//! API that the tests repeat.
#![allow(dead_code, unused_imports)] // each test binary uses a different part

use cryptoki::context::Pkcs11;
use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use cryptoki::slot::Slot;

pub use testkit::ecdsa::{der_ec_point, ecdsa_digest, verifies, P256_PARAMS, SIGNATURE_LEN};
pub use testkit::raw;
pub use testkit::scenario::{Ctx, Model, Output, Scenario};

/// `CKA_ID` of device slot `n`: two bytes, big-endian.
pub fn slot_id(n: u16) -> Vec<u8> {
    n.to_be_bytes().to_vec()
}

/// `CKA_LABEL` of device slot `n`.
pub fn slot_label(n: u16) -> Vec<u8> {
    format!("slot{n}").into_bytes()
}

/// The one slot with a token.
pub fn token_slot(pkcs11: &Pkcs11) -> Slot {
    let slots = pkcs11.get_slots_with_token().expect("C_GetSlotList(TRUE)");
    assert_eq!(slots.len(), 1, "exactly one slot with a token: {slots:?}");
    slots[0]
}

pub fn open_session(pkcs11: &Pkcs11) -> Session {
    pkcs11
        .open_ro_session(token_slot(pkcs11))
        .expect("C_OpenSession")
}

pub fn open_rw_session(pkcs11: &Pkcs11) -> Session {
    pkcs11
        .open_rw_session(token_slot(pkcs11))
        .expect("C_OpenSession(RW)")
}

/// The CKR of a failed call made through the safe API.
pub fn rv(err: Error) -> RvError {
    match err {
        Error::Pkcs11(rv, _) => rv,
        other => panic!("expected a PKCS#11 return value, got {other:?}"),
    }
}

pub fn find(session: &Session, template: &[Attribute]) -> Vec<ObjectHandle> {
    session
        .find_objects(template)
        .unwrap_or_else(|err| panic!("C_FindObjects({template:?}): {err}"))
}

/// The key object of `class` for device slot `slot`, found by class and `CKA_ID`.
pub fn key(session: &Session, class: ObjectClass, slot: u16) -> ObjectHandle {
    let found = find(
        session,
        &[Attribute::Class(class), Attribute::Id(slot_id(slot))],
    );
    assert_eq!(found.len(), 1, "one {class} object for slot {slot}");
    found[0]
}

pub fn private_key(session: &Session, slot: u16) -> ObjectHandle {
    key(session, ObjectClass::PRIVATE_KEY, slot)
}

pub fn public_key(session: &Session, slot: u16) -> ObjectHandle {
    key(session, ObjectClass::PUBLIC_KEY, slot)
}

/// Reads one attribute, which must be present.
pub fn attribute(session: &Session, object: ObjectHandle, kind: AttributeType) -> Attribute {
    let mut attributes = session
        .get_attributes(object, &[kind])
        .unwrap_or_else(|err| panic!("C_GetAttributeValue({kind}): {err}"));
    assert_eq!(attributes.len(), 1, "{kind} answered");
    attributes.remove(0)
}

pub fn bytes_attribute(session: &Session, object: ObjectHandle, kind: AttributeType) -> Vec<u8> {
    match attribute(session, object, kind) {
        Attribute::EcPoint(v)
        | Attribute::EcParams(v)
        | Attribute::Id(v)
        | Attribute::Label(v)
        | Attribute::Value(v)
        | Attribute::Subject(v)
        | Attribute::Application(v) => v,
        other => panic!("{kind} is not a byte string: {other:?}"),
    }
}

pub fn ec_point(session: &Session, object: ObjectHandle) -> Vec<u8> {
    bytes_attribute(session, object, AttributeType::EcPoint)
}

pub fn bool_attribute(session: &Session, object: ObjectHandle, kind: AttributeType) -> bool {
    match attribute(session, object, kind) {
        Attribute::Sign(v)
        | Attribute::Verify(v)
        | Attribute::Sensitive(v)
        | Attribute::Extractable(v)
        | Attribute::AlwaysAuthenticate(v)
        | Attribute::Token(v)
        | Attribute::Private(v)
        | Attribute::Destroyable(v)
        | Attribute::Modifiable(v) => v,
        other => panic!("{kind} is not a boolean: {other:?}"),
    }
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    openssl::sha::sha256(data)
}

/// Signs `data` with `CKM_ECDSA` and the private key of `slot`, through the safe API.
pub fn sign_ecdsa(session: &Session, slot: u16, data: &[u8]) -> Vec<u8> {
    let key = private_key(session, slot);
    session
        .sign(&Mechanism::Ecdsa, key, data)
        .unwrap_or_else(|err| panic!("C_Sign(CKM_ECDSA): {err}"))
}
