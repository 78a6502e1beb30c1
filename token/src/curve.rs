//! The curves of device keys: their PKCS#11 and DER names, recognising a
//! device's raw public key, and the encodings of a public point that key
//! objects carry (`CKA_EC_POINT`, `CKA_PUBLIC_KEY_INFO`).

use cryptoki_sys::*;

use crate::der::der;

/// DER of the named-curve OIDs used as `CKA_EC_PARAMS`.
pub(crate) const P256_PARAMS: &[u8] = &[0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
pub const SECP256K1_PARAMS: &[u8] = &[0x06, 0x05, 0x2B, 0x81, 0x04, 0x00, 0x0A];
pub(crate) const ED25519_PARAMS: &[u8] = &[0x06, 0x03, 0x2B, 0x65, 0x70];
pub(crate) const X25519_PARAMS: &[u8] = &[0x06, 0x03, 0x2B, 0x65, 0x6E];
/// DER of id-ecPublicKey (1.2.840.10045.2.1).
const EC_PUBLIC_KEY_OID: &[u8] = &[0x06, 0x07, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01];

/// The curve of a device key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    P256,
    Secp256k1,
    Ed25519,
    X25519,
}

impl Curve {
    pub(crate) fn key_type(self) -> CK_KEY_TYPE {
        match self {
            Curve::P256 | Curve::Secp256k1 => CKK_EC,
            Curve::Ed25519 => CKK_EC_EDWARDS,
            Curve::X25519 => CKK_EC_MONTGOMERY,
        }
    }

    pub(crate) fn params(self) -> &'static [u8] {
        match self {
            Curve::P256 => P256_PARAMS,
            Curve::Secp256k1 => SECP256K1_PARAMS,
            Curve::Ed25519 => ED25519_PARAMS,
            Curve::X25519 => X25519_PARAMS,
        }
    }

    pub(crate) fn from_params(der: &[u8]) -> Option<Curve> {
        [Curve::P256, Curve::Secp256k1, Curve::Ed25519, Curve::X25519]
            .into_iter()
            .find(|c| c.params() == der)
    }

    /// True for the curves this token signs with (ECDSA).
    pub(crate) fn is_ecdsa(self) -> bool {
        matches!(self, Curve::P256 | Curve::Secp256k1)
    }

    pub(crate) fn zymkey_type(self) -> zymkey::KeyType {
        match self {
            Curve::P256 => zymkey::KeyType::NistP256,
            Curve::Secp256k1 => zymkey::KeyType::Secp256k1,
            Curve::Ed25519 => zymkey::KeyType::Ed25519,
            Curve::X25519 => zymkey::KeyType::X25519,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Curve::P256 => "P-256",
            Curve::Secp256k1 => "secp256k1",
            Curve::Ed25519 => "Ed25519",
            Curve::X25519 => "X25519",
        }
    }

    /// The curve's tag in the token store.
    pub(crate) fn store_tag(self) -> &'static str {
        match self {
            Curve::P256 => "p256",
            Curve::Secp256k1 => "secp256k1",
            Curve::Ed25519 => "ed25519",
            Curve::X25519 => "x25519",
        }
    }

    /// The curve of a store tag ([`Curve::store_tag`]).
    pub(crate) fn from_store_tag(s: &str) -> Option<Curve> {
        [Curve::P256, Curve::Secp256k1, Curve::Ed25519, Curve::X25519]
            .into_iter()
            .find(|c| c.store_tag() == s)
    }

    /// The curve of a raw public key as the device returns it, with the
    /// curve recorded for the slot (`hint`, when the token generated the
    /// key), as no device call tells a slot's key type. A 64-byte X‖Y is
    /// on the recorded curve if it is on it, else tried on P-256, then
    /// secp256k1. 32 bytes is an Edwards or a Montgomery key, which cannot
    /// be told apart: known only when recorded.
    pub(crate) fn detect(raw: &[u8], hint: Option<Curve>) -> Option<Curve> {
        match raw.len() {
            64 => hint
                .filter(|c| c.is_ecdsa())
                .into_iter()
                .chain([Curve::P256, Curve::Secp256k1])
                .find(|c| on_curve(*c, raw)),
            32 => hint.filter(|c| !c.is_ecdsa()),
            _ => None,
        }
    }
}

/// The device's public key as the token keeps it: raw X‖Y. Zymbit
/// documents 64 bytes with no prefix; an uncompressed SEC1 point (`04‖X‖Y`)
/// from another library version is accepted too.
pub(crate) fn normalize_public_key(mut raw: Vec<u8>) -> Vec<u8> {
    if raw.len() == 65 && raw[0] == 0x04 {
        raw.remove(0);
    }
    raw
}

fn on_curve(curve: Curve, xy: &[u8]) -> bool {
    let point = sec1_uncompressed(xy);
    match curve {
        Curve::P256 => p256::PublicKey::from_sec1_bytes(&point).is_ok(),
        Curve::Secp256k1 => k256::PublicKey::from_sec1_bytes(&point).is_ok(),
        Curve::Ed25519 | Curve::X25519 => false,
    }
}

/// `04‖X‖Y`: the uncompressed SEC1 form of a raw X‖Y point.
pub(crate) fn sec1_uncompressed(xy: &[u8]) -> Vec<u8> {
    let mut point = Vec::with_capacity(xy.len() + 1);
    point.push(0x04);
    point.extend_from_slice(xy);
    point
}

/// `CKA_EC_POINT`: a DER OCTET STRING holding the uncompressed point
/// (`04 41 04‖X‖Y` for the 256-bit curves) or the raw 32-byte key.
pub(crate) fn ec_point_der(curve: Curve, raw: &[u8]) -> Vec<u8> {
    let mut content = Vec::with_capacity(raw.len() + 1);
    if curve.is_ecdsa() {
        content.push(0x04);
    }
    content.extend_from_slice(raw);
    der(0x04, &content)
}

/// `CKA_PUBLIC_KEY_INFO`: the DER SubjectPublicKeyInfo of an ECDSA key.
pub(crate) fn spki_der(curve: Curve, raw: &[u8]) -> Option<Vec<u8>> {
    if !curve.is_ecdsa() {
        return None;
    }
    let mut algorithm = EC_PUBLIC_KEY_OID.to_vec();
    algorithm.extend_from_slice(curve.params());
    let mut bits = vec![0x00, 0x04];
    bits.extend_from_slice(raw);
    let mut body = der(0x30, &algorithm);
    body.extend_from_slice(&der(0x03, &bits));
    Some(der(0x30, &body))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fresh raw X‖Y point on `curve`, as the device returns it.
    pub(crate) fn point_on(curve: openssl::nid::Nid) -> Vec<u8> {
        use openssl::bn::BigNumContext;
        use openssl::ec::{EcGroup, EcKey, PointConversionForm};
        let group = EcGroup::from_curve_name(curve).unwrap();
        let key = EcKey::generate(&group).unwrap();
        let mut ctx = BigNumContext::new().unwrap();
        let bytes = key
            .public_key()
            .to_bytes(&group, PointConversionForm::UNCOMPRESSED, &mut ctx)
            .unwrap();
        bytes[1..].to_vec()
    }

    pub(crate) fn p256_point() -> Vec<u8> {
        point_on(openssl::nid::Nid::X9_62_PRIME256V1)
    }

    pub(crate) fn k1_point() -> Vec<u8> {
        point_on(openssl::nid::Nid::SECP256K1)
    }

    #[test]
    fn detects_curves_from_the_point() {
        assert_eq!(Curve::detect(&p256_point(), None), Some(Curve::P256));
        assert_eq!(Curve::detect(&k1_point(), None), Some(Curve::Secp256k1));
        assert_eq!(Curve::detect(&[7u8; 64], None), None);
        assert_eq!(
            Curve::detect(&[7u8; 32], None),
            None,
            "ambiguous unless recorded"
        );
        assert_eq!(
            Curve::detect(&[7u8; 32], Some(Curve::Ed25519)),
            Some(Curve::Ed25519)
        );
        assert_eq!(
            Curve::detect(&k1_point(), Some(Curve::Secp256k1)),
            Some(Curve::Secp256k1)
        );
        assert_eq!(
            Curve::detect(&p256_point(), Some(Curve::Secp256k1)),
            Some(Curve::P256),
            "a point off the recorded curve is not taken for it"
        );
        assert_eq!(
            Curve::detect(&[7u8; 32], Some(Curve::X25519)),
            Some(Curve::X25519)
        );
        assert_eq!(Curve::detect(&[7u8; 65], None), None);
    }

    #[test]
    fn sec1_prefix_is_dropped() {
        let xy = p256_point();
        let mut sec1 = vec![0x04];
        sec1.extend_from_slice(&xy);
        assert_eq!(normalize_public_key(sec1), xy);
        assert_eq!(normalize_public_key(xy.clone()), xy);
        assert_eq!(normalize_public_key(vec![1; 65]), vec![1; 65]);
    }

    #[test]
    fn ec_point_is_a_67_byte_octet_string() {
        let xy: Vec<u8> = (0..64).collect();
        let der = ec_point_der(Curve::P256, &xy);
        assert_eq!(der.len(), 67);
        assert_eq!(&der[..3], &[0x04, 0x41, 0x04]);
        assert_eq!(&der[3..], xy.as_slice());
        let ed = ec_point_der(Curve::Ed25519, &[1u8; 32]);
        assert_eq!(&ed[..2], &[0x04, 0x20]);
    }

    #[test]
    fn spki_is_what_openssl_reads() {
        let xy = p256_point();
        let spki = spki_der(Curve::P256, &xy).unwrap();
        assert_eq!(spki.len(), 91);
        let key = openssl::pkey::PKey::public_key_from_der(&spki).unwrap();
        let ec = key.ec_key().unwrap();
        let mut ctx = openssl::bn::BigNumContext::new().unwrap();
        let bytes = ec
            .public_key()
            .to_bytes(
                ec.group(),
                openssl::ec::PointConversionForm::UNCOMPRESSED,
                &mut ctx,
            )
            .unwrap();
        assert_eq!(&bytes[1..], xy.as_slice());
        let k1 = k1_point();
        let spki = spki_der(Curve::Secp256k1, &k1).unwrap();
        openssl::pkey::PKey::public_key_from_der(&spki).unwrap();
    }
}
