//! Key objects: one private and one public key object per device key slot,
//! built from the slot's cached public key. Their handles, `CKA_ID` and
//! `CKA_LABEL` derive from the slot number, so they are the same in every
//! process.

use cryptoki_sys::*;

use crate::object::Object;

/// DER of the named-curve OIDs used as `CKA_EC_PARAMS`.
pub const P256_PARAMS: &[u8] = &[0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
pub const SECP256K1_PARAMS: &[u8] = &[0x06, 0x05, 0x2B, 0x81, 0x04, 0x00, 0x0A];
pub const ED25519_PARAMS: &[u8] = &[0x06, 0x03, 0x2B, 0x65, 0x70];
pub const X25519_PARAMS: &[u8] = &[0x06, 0x03, 0x2B, 0x65, 0x6E];
/// DER of id-ecPublicKey (1.2.840.10045.2.1).
const EC_PUBLIC_KEY_OID: &[u8] = &[0x06, 0x07, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01];

/// Slot numbers of the foreign keyring are shown as `0x8000 | N`.
pub const FOREIGN_ID_FLAG: u32 = 0x8000;

/// Handles of key objects: `KEY_HANDLE_BASE | id << 1 | is_public`.
const KEY_HANDLE_BASE: CK_OBJECT_HANDLE = 0x1000_0000;
const KEY_HANDLE_LIMIT: CK_OBJECT_HANDLE = 0x2000_0000;

/// The curve of a device key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    P256,
    Secp256k1,
    Ed25519,
    X25519,
}

impl Curve {
    pub fn key_type(self) -> CK_KEY_TYPE {
        match self {
            Curve::P256 | Curve::Secp256k1 => CKK_EC,
            Curve::Ed25519 => CKK_EC_EDWARDS,
            Curve::X25519 => CKK_EC_MONTGOMERY,
        }
    }

    pub fn params(self) -> &'static [u8] {
        match self {
            Curve::P256 => P256_PARAMS,
            Curve::Secp256k1 => SECP256K1_PARAMS,
            Curve::Ed25519 => ED25519_PARAMS,
            Curve::X25519 => X25519_PARAMS,
        }
    }

    pub fn from_params(der: &[u8]) -> Option<Curve> {
        [Curve::P256, Curve::Secp256k1, Curve::Ed25519, Curve::X25519]
            .into_iter()
            .find(|c| c.params() == der)
    }

    /// True for the curves this token signs with (ECDSA).
    pub fn is_ecdsa(self) -> bool {
        matches!(self, Curve::P256 | Curve::Secp256k1)
    }

    pub fn zymkey_type(self) -> zymkey::KeyType {
        match self {
            Curve::P256 => zymkey::KeyType::NistP256,
            Curve::Secp256k1 => zymkey::KeyType::Secp256k1,
            Curve::Ed25519 => zymkey::KeyType::Ed25519,
            Curve::X25519 => zymkey::KeyType::X25519,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Curve::P256 => "P-256",
            Curve::Secp256k1 => "secp256k1",
            Curve::Ed25519 => "Ed25519",
            Curve::X25519 => "X25519",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Curve::P256 => "p256",
            Curve::Secp256k1 => "secp256k1",
            Curve::Ed25519 => "ed25519",
            Curve::X25519 => "x25519",
        }
    }

    pub fn parse(s: &str) -> Option<Curve> {
        [Curve::P256, Curve::Secp256k1, Curve::Ed25519, Curve::X25519]
            .into_iter()
            .find(|c| c.as_str() == s)
    }

    /// The curve of a raw public key as the device returns it: a 64-byte
    /// X‖Y is tried on P-256, then secp256k1; 32 bytes is an Edwards or
    /// Montgomery key (`hint` tells which, when the token generated it).
    pub fn detect(raw: &[u8], hint: Option<Curve>) -> Option<Curve> {
        match raw.len() {
            64 => [Curve::P256, Curve::Secp256k1]
                .into_iter()
                .find(|c| on_curve(*c, raw)),
            32 => match hint {
                Some(Curve::X25519) => Some(Curve::X25519),
                _ => Some(Curve::Ed25519),
            },
            _ => None,
        }
    }
}

/// The device's public key as the token keeps it: raw X‖Y. Zymbit
/// documents 64 bytes with no prefix; an uncompressed SEC1 point (`04‖X‖Y`)
/// from another library version is accepted too.
pub fn normalize_public_key(mut raw: Vec<u8>) -> Vec<u8> {
    if raw.len() == 65 && raw[0] == 0x04 {
        raw.remove(0);
    }
    raw
}

fn on_curve(curve: Curve, xy: &[u8]) -> bool {
    use openssl::bn::BigNumContext;
    use openssl::ec::{EcGroup, EcPoint};
    use openssl::nid::Nid;
    let nid = match curve {
        Curve::P256 => Nid::X9_62_PRIME256V1,
        Curve::Secp256k1 => Nid::SECP256K1,
        _ => return false,
    };
    let (Ok(group), Ok(mut ctx)) = (EcGroup::from_curve_name(nid), BigNumContext::new()) else {
        return false;
    };
    let mut point = Vec::with_capacity(65);
    point.push(0x04);
    point.extend_from_slice(xy);
    EcPoint::from_bytes(&group, &point, &mut ctx).is_ok()
}

/// `CKA_EC_POINT`: a DER OCTET STRING holding the uncompressed point
/// (`04 41 04‖X‖Y` for the 256-bit curves) or the raw 32-byte key.
pub fn ec_point_der(curve: Curve, raw: &[u8]) -> Vec<u8> {
    let mut content = Vec::with_capacity(raw.len() + 1);
    if curve.is_ecdsa() {
        content.push(0x04);
    }
    content.extend_from_slice(raw);
    der(0x04, &content)
}

/// `CKA_PUBLIC_KEY_INFO`: the DER SubjectPublicKeyInfo of an ECDSA key.
pub fn spki_der(curve: Curve, raw: &[u8]) -> Option<Vec<u8>> {
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

/// A DER TLV (lengths below 64 KiB).
pub fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else if n < 0x100 {
        out.extend_from_slice(&[0x81, n as u8]);
    } else {
        out.extend_from_slice(&[0x82, (n >> 8) as u8, n as u8]);
    }
    out.extend_from_slice(content);
    out
}

/// Which key store a slot lives in, and its number there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeySlot {
    pub number: u32,
    pub foreign: bool,
}

impl KeySlot {
    pub fn device(number: u32) -> KeySlot {
        KeySlot {
            number,
            foreign: false,
        }
    }

    /// The number shown in `CKA_ID` and used in handles.
    pub fn id_number(self) -> u32 {
        if self.foreign {
            FOREIGN_ID_FLAG | self.number
        } else {
            self.number
        }
    }

    /// `CKA_ID`: the 2-byte big-endian slot number (foreign: `0x8000|N`).
    pub fn default_id(self) -> Vec<u8> {
        (self.id_number() as u16).to_be_bytes().to_vec()
    }

    pub fn default_label(self) -> String {
        if self.foreign {
            format!("foreign{}", self.number)
        } else {
            format!("slot{}", self.number)
        }
    }

    pub fn zymkey(self) -> zymkey::Slot {
        zymkey::Slot {
            number: self.number as i32,
            foreign: self.foreign,
        }
    }

    pub fn private_handle(self) -> CK_OBJECT_HANDLE {
        KEY_HANDLE_BASE | (CK_OBJECT_HANDLE::from(self.id_number()) << 1)
    }

    pub fn public_handle(self) -> CK_OBJECT_HANDLE {
        self.private_handle() | 1
    }

    /// The slot and kind (`true` = public) of a key object handle.
    pub fn from_handle(handle: CK_OBJECT_HANDLE) -> Option<(KeySlot, bool)> {
        if !(KEY_HANDLE_BASE..KEY_HANDLE_LIMIT).contains(&handle) {
            return None;
        }
        let id = u32::try_from((handle - KEY_HANDLE_BASE) >> 1).ok()?;
        let slot = if id & FOREIGN_ID_FLAG != 0 {
            KeySlot {
                number: id & !FOREIGN_ID_FLAG,
                foreign: true,
            }
        } else {
            KeySlot::device(id)
        };
        (id <= 0xFFFF).then_some((slot, handle & 1 == 1))
    }
}

/// Everything known about one device key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceKey {
    pub slot: KeySlot,
    pub curve: Curve,
    /// The public key as the device gives it (raw X‖Y, or 32 bytes).
    pub raw_public: Vec<u8>,
    pub label: String,
    pub id: Vec<u8>,
    /// Generated through this token (and so removable), not a factory key.
    pub removable: bool,
}

impl DeviceKey {
    /// The mechanisms the key can be used with.
    pub fn mechanisms(&self) -> &'static [CK_MECHANISM_TYPE] {
        if self.curve.is_ecdsa() {
            crate::mechanism::SIGN_MECHANISMS
        } else {
            &[]
        }
    }

    fn common(&self, object: &mut Object, class: CK_OBJECT_CLASS, private: bool) {
        let mechanisms: Vec<u8> = self
            .mechanisms()
            .iter()
            .flat_map(|m| m.to_ne_bytes())
            .collect();
        object
            .set_ulong(CKA_CLASS, class)
            .set_bool(CKA_TOKEN, true)
            .set_bool(CKA_PRIVATE, private)
            .set_bool(CKA_MODIFIABLE, false)
            .set_bool(CKA_COPYABLE, false)
            .set_bool(CKA_DESTROYABLE, self.removable)
            .set(CKA_LABEL, self.label.as_bytes().to_vec())
            .set_ulong(CKA_KEY_TYPE, self.curve.key_type())
            .set(CKA_ID, self.id.clone())
            .set(CKA_START_DATE, Vec::new())
            .set(CKA_END_DATE, Vec::new())
            .set_bool(CKA_DERIVE, false)
            .set_bool(CKA_LOCAL, true)
            .set_ulong(CKA_KEY_GEN_MECHANISM, CKM_EC_KEY_PAIR_GEN)
            .set(CKA_ALLOWED_MECHANISMS, mechanisms)
            .set(CKA_SUBJECT, Vec::new())
            .set(CKA_EC_PARAMS, self.curve.params().to_vec())
            .set(CKA_EC_POINT, ec_point_der(self.curve, &self.raw_public));
        if let Some(spki) = spki_der(self.curve, &self.raw_public) {
            object.set(CKA_PUBLIC_KEY_INFO, spki);
        }
    }

    /// The private key object. `login_required`: a PIN guards the token, so
    /// the key is a private object.
    pub fn private_object(&self, login_required: bool) -> Object {
        let mut o = Object::new();
        self.common(&mut o, CKO_PRIVATE_KEY, login_required);
        let sign = self.curve.is_ecdsa();
        o.set_bool(CKA_SENSITIVE, true)
            .set_bool(CKA_DECRYPT, false)
            .set_bool(CKA_SIGN, sign)
            .set_bool(CKA_SIGN_RECOVER, false)
            .set_bool(CKA_UNWRAP, false)
            .set_bool(CKA_EXTRACTABLE, false)
            .set_bool(CKA_ALWAYS_SENSITIVE, true)
            .set_bool(CKA_NEVER_EXTRACTABLE, true)
            .set_bool(CKA_WRAP_WITH_TRUSTED, false)
            .set_bool(CKA_ALWAYS_AUTHENTICATE, false)
            .set_sensitive(CKA_VALUE);
        o
    }

    pub fn public_object(&self) -> Object {
        let mut o = Object::new();
        self.common(&mut o, CKO_PUBLIC_KEY, false);
        o.set_bool(CKA_ENCRYPT, false)
            .set_bool(CKA_VERIFY, self.curve.is_ecdsa())
            .set_bool(CKA_VERIFY_RECOVER, false)
            .set_bool(CKA_WRAP, false)
            .set_bool(CKA_TRUSTED, false);
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::{ulong_bytes, Attr};

    /// A fresh raw X‖Y point on `curve`, as the device returns it.
    fn point_on(curve: openssl::nid::Nid) -> Vec<u8> {
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

    fn p256_point() -> Vec<u8> {
        point_on(openssl::nid::Nid::X9_62_PRIME256V1)
    }

    fn k1_point() -> Vec<u8> {
        point_on(openssl::nid::Nid::SECP256K1)
    }

    #[test]
    fn detects_curves_from_the_point() {
        assert_eq!(Curve::detect(&p256_point(), None), Some(Curve::P256));
        assert_eq!(Curve::detect(&k1_point(), None), Some(Curve::Secp256k1));
        assert_eq!(Curve::detect(&[7u8; 64], None), None);
        assert_eq!(Curve::detect(&[7u8; 32], None), Some(Curve::Ed25519));
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

    #[test]
    fn der_lengths() {
        assert_eq!(der(0x04, &[0; 3]), vec![0x04, 3, 0, 0, 0]);
        assert_eq!(&der(0x04, &[0; 200])[..3], &[0x04, 0x81, 200]);
        assert_eq!(&der(0x04, &[0; 300])[..4], &[0x04, 0x82, 1, 44]);
    }

    #[test]
    fn ids_labels_and_handles_derive_from_the_slot() {
        let s = KeySlot::device(0);
        assert_eq!(s.default_id(), vec![0, 0]);
        assert_eq!(s.default_label(), "slot0");
        let s = KeySlot::device(16);
        assert_eq!(s.default_id(), vec![0, 16]);
        let f = KeySlot {
            number: 3,
            foreign: true,
        };
        assert_eq!(f.default_id(), vec![0x80, 3]);
        assert_eq!(f.default_label(), "foreign3");
        for slot in [s, f, KeySlot::device(0), KeySlot::device(511)] {
            assert_eq!(
                KeySlot::from_handle(slot.private_handle()),
                Some((slot, false))
            );
            assert_eq!(
                KeySlot::from_handle(slot.public_handle()),
                Some((slot, true))
            );
        }
        assert_eq!(KeySlot::from_handle(0), None);
        assert_eq!(KeySlot::from_handle(0x2000_0001), None);
    }

    #[test]
    fn key_templates() {
        let key = DeviceKey {
            slot: KeySlot::device(0),
            curve: Curve::P256,
            raw_public: p256_point(),
            label: "slot0".into(),
            id: vec![0, 0],
            removable: false,
        };
        let private = key.private_object(false);
        assert_eq!(private.class(), Some(CKO_PRIVATE_KEY));
        assert_eq!(private.ulong(CKA_KEY_TYPE), Some(CKK_EC));
        assert_eq!(private.value(CKA_EC_PARAMS), Some(P256_PARAMS));
        assert_eq!(private.value(CKA_EC_POINT).unwrap().len(), 67);
        assert_eq!(private.bool(CKA_SENSITIVE), Some(true));
        assert_eq!(private.bool(CKA_EXTRACTABLE), Some(false));
        assert_eq!(private.bool(CKA_ALWAYS_AUTHENTICATE), Some(false));
        assert_eq!(private.bool(CKA_PRIVATE), Some(false));
        assert_eq!(private.attrs.get(&CKA_VALUE), Some(&Attr::Sensitive));
        assert!(private.matches(&[
            (CKA_CLASS, ulong_bytes(CKO_PRIVATE_KEY)),
            (CKA_ID, vec![0, 0])
        ]));
        assert_eq!(key.private_object(true).bool(CKA_PRIVATE), Some(true));
        let public = key.public_object();
        assert_eq!(public.class(), Some(CKO_PUBLIC_KEY));
        assert_eq!(public.value(CKA_EC_POINT), private.value(CKA_EC_POINT));
        assert_eq!(public.bool(CKA_VERIFY), Some(true));
        assert!(public.value(CKA_VALUE).is_none());
        let mechs = public.value(CKA_ALLOWED_MECHANISMS).unwrap();
        assert_eq!(
            mechs.len(),
            std::mem::size_of_val(crate::mechanism::SIGN_MECHANISMS)
        );
    }
}
