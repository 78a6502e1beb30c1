//! ECDSA signatures and EC points, checked with OpenSSL: the reference every signature the
//! token, the module or the emulator makes is held against.
//!
//! Forms: a raw signature is r‖s (32 bytes each); a raw public key is X‖Y; a `CKA_EC_POINT`
//! value is the DER OCTET STRING `04 41 04‖X‖Y` around the uncompressed point.

use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::{EcGroup, EcKey, EcKeyRef, EcPoint, PointConversionForm};
use openssl::ecdsa::EcdsaSig;
use openssl::nid::Nid;
use openssl::pkey::{HasPublic, Private, Public};

/// DER of the P-256 curve OID, the value of `CKA_EC_PARAMS`.
pub const P256_PARAMS: [u8; 10] = [0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
/// Length of a raw P-256 signature r‖s.
pub const SIGNATURE_LEN: usize = 64;

/// `CKA_EC_POINT` of a raw X‖Y: a DER OCTET STRING around the uncompressed point.
pub fn der_ec_point(xy: &[u8]) -> Vec<u8> {
    let mut point = vec![0x04, 0x41, 0x04];
    point.extend_from_slice(xy);
    point
}

/// The uncompressed point `04‖X‖Y` of a key (`[1..]` is the raw X‖Y).
pub fn uncompressed_point<T: HasPublic>(key: &EcKeyRef<T>) -> Vec<u8> {
    let mut ctx = BigNumContext::new().unwrap();
    key.public_key()
        .to_bytes(key.group(), PointConversionForm::UNCOMPRESSED, &mut ctx)
        .unwrap()
}

/// The public key of a raw X‖Y on curve `curve`.
pub fn public_key(curve: Nid, xy: &[u8]) -> EcKey<Public> {
    assert_eq!(xy.len(), 64, "raw X||Y public key");
    let group = EcGroup::from_curve_name(curve).unwrap();
    let mut ctx = BigNumContext::new().unwrap();
    let sec1 = [&[0x04], xy].concat();
    let point = EcPoint::from_bytes(&group, &sec1, &mut ctx).expect("public key on the curve");
    EcKey::from_public_key(&group, &point).unwrap()
}

/// Signs `digest` with `key`: the raw r‖s.
pub fn sign_raw(key: &EcKeyRef<Private>, digest: &[u8]) -> [u8; 64] {
    let sig = EcdsaSig::sign(digest, key).unwrap();
    let mut out = [0u8; 64];
    out[..32].copy_from_slice(&sig.r().to_vec_padded(32).unwrap());
    out[32..].copy_from_slice(&sig.s().to_vec_padded(32).unwrap());
    out
}

/// The raw r‖s `signature` as OpenSSL's signature type.
fn raw_signature(signature: &[u8]) -> EcdsaSig {
    assert_eq!(signature.len(), SIGNATURE_LEN, "raw r‖s signature length");
    let r = BigNum::from_slice(&signature[..32]).expect("r");
    let s = BigNum::from_slice(&signature[32..]).expect("s");
    EcdsaSig::from_private_components(r, s).expect("ECDSA signature")
}

/// Whether the raw r‖s `signature` of `digest` verifies under `key` (OpenSSL's
/// `ECDSA_do_verify`, which takes the leftmost bits of a digest longer than the order); an
/// error of OpenSSL's counts as "does not verify".
pub fn verifies_under<T: HasPublic>(key: &EcKeyRef<T>, digest: &[u8], signature: &[u8]) -> bool {
    raw_signature(signature)
        .verify(digest, key)
        .unwrap_or(false)
}

/// Checks a raw r‖s P-256 signature of `digest` with OpenSSL against a `CKA_EC_POINT` value;
/// fails the test on an error of OpenSSL's.
pub fn verifies(ec_point: &[u8], digest: &[u8], signature: &[u8]) -> bool {
    assert_eq!(signature.len(), SIGNATURE_LEN, "raw r‖s signature length");
    assert_eq!(
        &ec_point[..3],
        &[0x04, 0x41, 0x04],
        "DER OCTET STRING of an uncompressed point"
    );
    let key = public_key(Nid::X9_62_PRIME256V1, &ec_point[3..]);
    raw_signature(signature)
        .verify(digest, &key)
        .expect("ECDSA_do_verify")
}

/// Verifies a raw r‖s signature the way a TLS peer or a CA does: as a DER
/// ECDSA-Sig-Value, with the raw X‖Y public key made into an EC key.
pub fn openssl_verifies(curve: Nid, public_xy: &[u8], digest: &[u8; 32], rs: &[u8; 64]) -> bool {
    let key = openssl::pkey::PKey::from_ec_key(public_key(curve, public_xy)).unwrap();
    let der = EcdsaSig::from_private_components(
        BigNum::from_slice(&rs[..32]).unwrap(),
        BigNum::from_slice(&rs[32..]).unwrap(),
    )
    .unwrap()
    .to_der()
    .unwrap();
    let mut verifier = openssl::pkey_ctx::PkeyCtx::new(&key).unwrap();
    verifier.verify_init().unwrap();
    verifier.verify(digest, &der).unwrap_or(false)
}

/// Whether s is in the upper half of the P-256 group order.
pub fn is_high_s(rs: &[u8; 64]) -> bool {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    let mut order = BigNum::new().unwrap();
    group
        .order(&mut order, &mut BigNumContext::new().unwrap())
        .unwrap();
    let mut half = BigNum::new().unwrap();
    half.rshift1(&order).unwrap();
    BigNum::from_slice(&rs[32..]).unwrap() > half
}

/// The 32-byte digest the device signs for a `CKM_ECDSA` input: shorter input is left-padded
/// with zeros, longer input keeps its leftmost 32 bytes.
pub fn ecdsa_digest(input: &[u8]) -> [u8; 32] {
    let mut digest = [0u8; 32];
    if input.len() >= 32 {
        digest.copy_from_slice(&input[..32]);
    } else {
        digest[32 - input.len()..].copy_from_slice(input);
    }
    digest
}
