//! Smoke test: the built module, over the emulator, finds the factory key
//! of slot 0 the way libp11 does and signs with it; the signature verifies
//! under the key's CKA_EC_POINT, and the emulator's trace shows exactly one
//! device signature. One test function, so one process initialises the
//! module once.

use std::path::PathBuf;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass};

fn built(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/smoke-… → target/<profile>/<name>
    let dir = exe.parent().and_then(|d| d.parent()).expect("profile dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build -p zkemu -p zkpkcs11` first",
        path.display()
    );
    path
}

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
    std::env::set_var("ZKIOT_ZKLIB", built("libzkemu.so"));
    std::env::set_var("ZKIOT_EMU_DIR", dir.path().join("emu"));
    std::env::set_var("ZKIOT_EMU_TRACE", &trace);
    std::env::set_var("ZKIOT_CONF", &conf);
    std::env::remove_var("ZKIOT_EMU_MODEL");

    let p11 = Pkcs11::new(built("libzkpkcs11.so")).unwrap();
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

    use openssl::bn::{BigNum, BigNumContext};
    use openssl::ec::{EcGroup, EcKey, EcPoint};
    use openssl::ecdsa::EcdsaSig;
    use openssl::nid::Nid;
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    let mut ctx = BigNumContext::new().unwrap();
    let point = EcPoint::from_bytes(&group, &point[2..], &mut ctx).unwrap();
    let key = EcKey::from_public_key(&group, &point).unwrap();
    let sig = EcdsaSig::from_private_components(
        BigNum::from_slice(&signature[..32]).unwrap(),
        BigNum::from_slice(&signature[32..]).unwrap(),
    )
    .unwrap();
    assert!(sig.verify(&digest, &key).unwrap());

    let device_calls = std::fs::read_to_string(&trace).unwrap();
    assert_eq!(
        device_calls, "sign 0\n",
        "one device signature, nothing else"
    );
    drop(session);
    p11.finalize().unwrap();
}
