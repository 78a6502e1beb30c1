//! Key material and ECDSA, in the device's wire formats: raw X‖Y public keys
//! (no 0x04 prefix), 32-byte digests, raw r‖s signatures (no low-S normalisation).

use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::{EcGroup, EcKey, EcPoint, EcPointRef, PointConversionForm};
use openssl::ecdsa::EcdsaSig;
use openssl::nid::Nid;
use openssl::pkey::{HasPublic, Id, PKey, PKeyRef, Private, Public};

use crate::errno::{Errno, Result};

pub const DIGEST_LEN: usize = 32;
pub const SIGNATURE_LEN: usize = 64;
const SCALAR_LEN: usize = 32;

/// `ZK_EC_KEY_TYPE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    NistP256 = 0,
    Secp256k1 = 1,
    Ed25519 = 2,
    X25519 = 3,
}

impl KeyType {
    /// The key type of a `ZK_EC_KEY_TYPE` value.
    pub fn from_c(value: i32) -> Result<KeyType> {
        match value {
            0 => Ok(KeyType::NistP256),
            1 => Ok(KeyType::Secp256k1),
            2 => Ok(KeyType::Ed25519),
            3 => Ok(KeyType::X25519),
            _ => Err(Errno::INVAL),
        }
    }

    /// The curve of an ECDSA key type; Ed25519 and X25519 cannot do ECDSA.
    fn ecdsa_curve(self) -> Result<Nid> {
        match self {
            KeyType::NistP256 => Ok(Nid::X9_62_PRIME256V1),
            KeyType::Secp256k1 => Ok(Nid::SECP256K1),
            KeyType::Ed25519 | KeyType::X25519 => Err(Errno::INVAL),
        }
    }

    fn raw_id(self) -> Option<Id> {
        match self {
            KeyType::Ed25519 => Some(Id::ED25519),
            KeyType::X25519 => Some(Id::X25519),
            KeyType::NistP256 | KeyType::Secp256k1 => None,
        }
    }
}

/// The key type of a key read back from the store.
pub fn key_type<T: HasPublic>(key: &PKeyRef<T>) -> Result<KeyType> {
    match key.id() {
        Id::ED25519 => Ok(KeyType::Ed25519),
        Id::X25519 => Ok(KeyType::X25519),
        Id::EC => match key.ec_key()?.group().curve_name() {
            Some(Nid::X9_62_PRIME256V1) => Ok(KeyType::NistP256),
            Some(Nid::SECP256K1) => Ok(KeyType::Secp256k1),
            _ => Err(Errno::IO),
        },
        _ => Err(Errno::IO),
    }
}

/// A fresh key pair.
pub fn generate(key_type: KeyType) -> Result<PKey<Private>> {
    Ok(match key_type {
        KeyType::Ed25519 => PKey::generate_ed25519()?,
        KeyType::X25519 => PKey::generate_x25519()?,
        KeyType::NistP256 | KeyType::Secp256k1 => {
            let group = EcGroup::from_curve_name(key_type.ecdsa_curve()?)?;
            PKey::from_ec_key(EcKey::generate(&group)?)?
        }
    })
}

/// The public key as the device exports it: X‖Y (64 bytes) for the ECDSA
/// curves, the 32-byte encoding for Ed25519 and X25519.
pub fn raw_public_key<T: HasPublic>(key: &PKeyRef<T>) -> Result<Vec<u8>> {
    if key.id() != Id::EC {
        return Ok(key.raw_public_key()?);
    }
    let ec = key.ec_key()?;
    let mut ctx = BigNumContext::new()?;
    let point =
        ec.public_key()
            .to_bytes(ec.group(), PointConversionForm::UNCOMPRESSED, &mut ctx)?;
    // Drop the 0x04 prefix of the uncompressed SEC1 form.
    Ok(point[1..].to_vec())
}

/// A public key from its raw form (X‖Y, or 0x04‖X‖Y, for the ECDSA curves;
/// 32 bytes for Ed25519/X25519). Malformed or off-curve keys are `EINVAL`.
pub fn public_key_from_raw(key_type: KeyType, raw: &[u8]) -> Result<PKey<Public>> {
    if let Some(id) = key_type.raw_id() {
        return PKey::public_key_from_raw_bytes(raw, id).map_err(|_| Errno::INVAL);
    }
    let sec1 = match raw.len() {
        64 => [&[0x04], raw].concat(),
        65 if raw[0] == 0x04 => raw.to_vec(),
        _ => return Err(Errno::INVAL),
    };
    let group = EcGroup::from_curve_name(key_type.ecdsa_curve()?)?;
    let mut ctx = BigNumContext::new()?;
    let point = EcPoint::from_bytes(&group, &sec1, &mut ctx).map_err(|_| Errno::INVAL)?;
    let ec = EcKey::from_public_key(&group, &point).map_err(|_| Errno::INVAL)?;
    ec.check_key().map_err(|_| Errno::INVAL)?;
    Ok(PKey::from_ec_key(ec)?)
}

/// A device key pair as decoded once from its file: the key and, for the
/// ECDSA curves, the EC key that signs.
pub struct KeyPair {
    pub key: PKey<Private>,
    ecdsa: Option<EcKey<Private>>,
}

impl KeyPair {
    pub fn new(key: PKey<Private>) -> Result<KeyPair> {
        let ecdsa = match key_type(&key)?.ecdsa_curve() {
            Ok(_) => Some(key.ec_key()?),
            Err(_) => None,
        };
        Ok(KeyPair { key, ecdsa })
    }

    /// ECDSA over a 32-byte digest: raw r‖s. Ed25519/X25519 keys are `EINVAL`.
    pub fn sign_digest(&self, digest: &[u8; DIGEST_LEN]) -> Result<[u8; SIGNATURE_LEN]> {
        let ec = self.ecdsa.as_ref().ok_or(Errno::INVAL)?;
        let sig = EcdsaSig::sign(digest, ec)?;
        let mut rs = [0u8; SIGNATURE_LEN];
        rs[..SCALAR_LEN].copy_from_slice(&sig.r().to_vec_padded(SCALAR_LEN as i32)?);
        rs[SCALAR_LEN..].copy_from_slice(&sig.s().to_vec_padded(SCALAR_LEN as i32)?);
        Ok(rs)
    }

    /// Which of the two points with x = r is the signature's point R (its
    /// y-parity), for a signature this key made over `digest`.
    pub fn recovery_id(&self, digest: &[u8; DIGEST_LEN], rs: &[u8; SIGNATURE_LEN]) -> Result<u8> {
        let ec = self.ecdsa.as_ref().ok_or(Errno::INVAL)?;
        let r = BigNum::from_slice(&rs[..SCALAR_LEN])?;
        let s = BigNum::from_slice(&rs[SCALAR_LEN..])?;
        recovery_id(ec, digest, &r, &s)
    }
}

/// Verifies a raw r‖s signature over a 32-byte digest. A signature of the
/// wrong length, or a key that cannot do ECDSA, is `EINVAL`; a well-formed
/// signature that does not verify is `Ok(false)`.
pub fn verify_digest<T: HasPublic>(
    key: &PKeyRef<T>,
    digest: &[u8; DIGEST_LEN],
    signature: &[u8],
) -> Result<bool> {
    key_type(key)?.ecdsa_curve()?;
    if signature.len() != SIGNATURE_LEN {
        return Err(Errno::INVAL);
    }
    let r = BigNum::from_slice(&signature[..SCALAR_LEN])?;
    let s = BigNum::from_slice(&signature[SCALAR_LEN..])?;
    let sig = EcdsaSig::from_private_components(r, s)?;
    // OpenSSL reports out-of-range r or s as an error: that is an invalid signature.
    let ec = key.ec_key()?;
    Ok(sig.verify(digest, &ec).unwrap_or(false))
}

/// Which of the two points with x = r is R: the public key recovered with
/// that choice, Q = r⁻¹(s·R − e·G), must be the signer's.
fn recovery_id<T: HasPublic>(
    key: &EcKey<T>,
    digest: &[u8; DIGEST_LEN],
    r: &openssl::bn::BigNumRef,
    s: &openssl::bn::BigNumRef,
) -> Result<u8> {
    let group = key.group();
    let mut ctx = BigNumContext::new()?;
    let mut order = BigNum::new()?;
    group.order(&mut order, &mut ctx)?;

    let mut e = BigNum::new()?;
    let digest = BigNum::from_slice(digest)?;
    e.nnmod(&digest, &order, &mut ctx)?;
    let mut r_inv = BigNum::new()?;
    r_inv.mod_inverse(r, &order, &mut ctx)?;
    let mut minus_e = BigNum::new()?;
    let zero = BigNum::new()?;
    minus_e.mod_sub(&zero, &e, &order, &mut ctx)?;
    let mut u1 = BigNum::new()?;
    u1.mod_mul(&minus_e, &r_inv, &order, &mut ctx)?;
    let mut u2 = BigNum::new()?;
    u2.mod_mul(s, &r_inv, &order, &mut ctx)?;

    let x = r.to_vec_padded(SCALAR_LEN as i32)?;
    for parity in 0..2u8 {
        let compressed = [&[0x02 + parity], x.as_slice()].concat();
        let Ok(point_r) = EcPoint::from_bytes(group, &compressed, &mut ctx) else {
            continue;
        };
        let mut q = EcPoint::new(group)?;
        q.mul_full(group, &u1, &point_r, &u2, &mut ctx)?;
        if same_point(group, &q, key.public_key(), &mut ctx)? {
            return Ok(parity);
        }
    }
    Err(Errno::IO)
}

fn same_point(
    group: &openssl::ec::EcGroupRef,
    a: &EcPointRef,
    b: &EcPointRef,
    ctx: &mut BigNumContext,
) -> Result<bool> {
    Ok(a.eq(group, b, ctx)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(byte: u8) -> [u8; DIGEST_LEN] {
        [byte; DIGEST_LEN]
    }

    #[test]
    fn sign_verify_and_recover_on_both_curves() {
        for key_type in [KeyType::NistP256, KeyType::Secp256k1] {
            let key = generate(key_type).unwrap();
            assert_eq!(crate::crypto::key_type(&key).unwrap(), key_type);
            let raw = raw_public_key(&key).unwrap();
            assert_eq!(raw.len(), 64);
            let public = public_key_from_raw(key_type, &raw).unwrap();
            let pair = KeyPair::new(key).unwrap();
            for round in 0..8u8 {
                let rs = pair.sign_digest(&digest(round)).unwrap();
                assert!(pair.recovery_id(&digest(round), &rs).unwrap() <= 1);
                assert!(verify_digest(&public, &digest(round), &rs).unwrap());
                let mut bad = rs;
                bad[63] ^= 1;
                assert!(!verify_digest(&public, &digest(round), &bad).unwrap());
                assert!(!verify_digest(&public, &digest(round ^ 0x80), &rs).unwrap());
            }
        }
    }

    #[test]
    fn recovery_id_takes_both_values() {
        let pair = KeyPair::new(generate(KeyType::NistP256).unwrap()).unwrap();
        let seen: std::collections::BTreeSet<u8> = (0..64)
            .map(|i| {
                let rs = pair.sign_digest(&digest(i)).unwrap();
                pair.recovery_id(&digest(i), &rs).unwrap()
            })
            .collect();
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![0, 1]);
    }

    #[test]
    fn edwards_and_montgomery_keys_are_key_material_only() {
        for key_type in [KeyType::Ed25519, KeyType::X25519] {
            let key = generate(key_type).unwrap();
            assert_eq!(crate::crypto::key_type(&key).unwrap(), key_type);
            let raw = raw_public_key(&key).unwrap();
            assert_eq!(raw.len(), 32);
            public_key_from_raw(key_type, &raw).unwrap();
            assert_eq!(verify_digest(&key, &digest(1), &[0; 64]), Err(Errno::INVAL));
            let pair = KeyPair::new(key).unwrap();
            assert_eq!(pair.sign_digest(&digest(1)), Err(Errno::INVAL));
        }
    }

    #[test]
    fn malformed_public_keys_are_rejected() {
        let key = generate(KeyType::NistP256).unwrap();
        let raw = raw_public_key(&key).unwrap();
        assert!(public_key_from_raw(KeyType::NistP256, &[&[4], raw.as_slice()].concat()).is_ok());
        assert_eq!(
            public_key_from_raw(KeyType::NistP256, &raw[..63]).err(),
            Some(Errno::INVAL)
        );
        let mut off_curve = raw.clone();
        off_curve[63] ^= 1;
        assert_eq!(
            public_key_from_raw(KeyType::NistP256, &off_curve).err(),
            Some(Errno::INVAL)
        );
        assert_eq!(
            public_key_from_raw(KeyType::Ed25519, &raw).err(),
            Some(Errno::INVAL)
        );
        assert_eq!(verify_digest(&key, &digest(0), &[0; 63]), Err(Errno::INVAL));
        assert_eq!(KeyType::from_c(4), Err(Errno::INVAL));
    }
}
