//! Mechanisms: what the token offers, ECDSA input rules, and software
//! verification against a key's public point.
//!
//! Verification runs in software (RustCrypto's p256 and k256, never OpenSSL:
//! see the crate's dependencies) against the cached public key:
//! it costs no device call, works for every slot the token shows (foreign
//! public keys included), and checks the device's signatures independently.

use cryptoki_sys::*;

use crate::curve::{sec1_uncompressed, Curve};
use crate::error::{Error, Result};

/// Length of the digest the device signs.
pub(crate) const DIGEST_LEN: usize = zymkey::DIGEST_LEN;
/// Length of a raw r‖s signature on the 256-bit curves.
pub(crate) const SIGNATURE_LEN: usize = zymkey::SIGNATURE_LEN;

/// The signature mechanisms, raw ECDSA first.
pub(crate) const SIGN_MECHANISMS: &[CK_MECHANISM_TYPE] = &[
    CKM_ECDSA,
    CKM_ECDSA_SHA256,
    CKM_ECDSA_SHA1,
    CKM_ECDSA_SHA224,
    CKM_ECDSA_SHA384,
    CKM_ECDSA_SHA512,
];

/// The mechanisms of the token; key-pair generation only when the device can.
pub(crate) fn mechanism_list(can_generate: bool) -> Vec<CK_MECHANISM_TYPE> {
    let mut list = SIGN_MECHANISMS.to_vec();
    if can_generate {
        list.push(CKM_EC_KEY_PAIR_GEN);
    }
    list
}

pub(crate) fn mechanism_info(
    mechanism: CK_MECHANISM_TYPE,
    can_generate: bool,
) -> Result<CK_MECHANISM_INFO> {
    let curve_flags = CKF_EC_F_P | CKF_EC_NAMEDCURVE | CKF_EC_UNCOMPRESS;
    let flags = match mechanism {
        m if SIGN_MECHANISMS.contains(&m) => CKF_HW | CKF_SIGN | CKF_VERIFY | curve_flags,
        CKM_EC_KEY_PAIR_GEN if can_generate => CKF_HW | CKF_GENERATE_KEY_PAIR | curve_flags,
        other => return Err(Error::MechanismInvalid(other)),
    };
    Ok(CK_MECHANISM_INFO {
        ulMinKeySize: 256,
        ulMaxKeySize: 256,
        flags,
    })
}

/// The hash of a hashing ECDSA mechanism, computed in software.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hash {
    Sha1,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

/// A signing or verification mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SignMechanism {
    /// `CKM_ECDSA`: the input is the digest itself.
    Ecdsa,
    /// `CKM_ECDSA_SHA*`: the input is the message; the token hashes it.
    EcdsaWith(Hash),
}

impl SignMechanism {
    pub(crate) fn from_ck(
        mechanism: CK_MECHANISM_TYPE,
        has_parameter: bool,
    ) -> Result<SignMechanism> {
        let m = match mechanism {
            CKM_ECDSA => SignMechanism::Ecdsa,
            CKM_ECDSA_SHA1 => SignMechanism::EcdsaWith(Hash::Sha1),
            CKM_ECDSA_SHA224 => SignMechanism::EcdsaWith(Hash::Sha224),
            CKM_ECDSA_SHA256 => SignMechanism::EcdsaWith(Hash::Sha256),
            CKM_ECDSA_SHA384 => SignMechanism::EcdsaWith(Hash::Sha384),
            CKM_ECDSA_SHA512 => SignMechanism::EcdsaWith(Hash::Sha512),
            other => return Err(Error::MechanismInvalid(other)),
        };
        if has_parameter {
            return Err(Error::MechanismParamInvalid);
        }
        Ok(m)
    }
}

/// The 32 bytes the device signs for a `CKM_ECDSA` input: a shorter input
/// is left-padded with zeros (the same integer), a longer one keeps its
/// leftmost 32 bytes (ECDSA's truncation to the 256-bit order).
pub fn ecdsa_digest(input: &[u8]) -> Result<[u8; DIGEST_LEN]> {
    if input.is_empty() {
        return Err(Error::DataLenRange);
    }
    let mut digest = [0u8; DIGEST_LEN];
    if input.len() >= DIGEST_LEN {
        digest.copy_from_slice(&input[..DIGEST_LEN]);
    } else {
        digest[DIGEST_LEN - input.len()..].copy_from_slice(input);
    }
    Ok(digest)
}

/// A running hash.
#[derive(Clone)]
pub(crate) enum Hasher {
    Sha1(sha1::Sha1),
    Sha224(sha2::Sha224),
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
}

impl Hasher {
    pub(crate) fn new(hash: Hash) -> Hasher {
        match hash {
            Hash::Sha1 => Hasher::Sha1(sha1::Digest::new()),
            Hash::Sha224 => Hasher::Sha224(sha2::Digest::new()),
            Hash::Sha256 => Hasher::Sha256(sha2::Digest::new()),
            Hash::Sha384 => Hasher::Sha384(sha2::Digest::new()),
            Hash::Sha512 => Hasher::Sha512(sha2::Digest::new()),
        }
    }

    pub(crate) fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha1(h) => sha1::Digest::update(h, data),
            Hasher::Sha224(h) => sha2::Digest::update(h, data),
            Hasher::Sha256(h) => sha2::Digest::update(h, data),
            Hasher::Sha384(h) => sha2::Digest::update(h, data),
            Hasher::Sha512(h) => sha2::Digest::update(h, data),
        }
    }

    /// The digest as ECDSA on a 256-bit curve uses it (see [`ecdsa_digest`]).
    pub(crate) fn finish(self) -> Result<[u8; DIGEST_LEN]> {
        match self {
            Hasher::Sha1(h) => ecdsa_digest(&sha1::Digest::finalize(h)),
            Hasher::Sha224(h) => ecdsa_digest(&sha2::Digest::finalize(h)),
            Hasher::Sha256(h) => ecdsa_digest(&sha2::Digest::finalize(h)),
            Hasher::Sha384(h) => ecdsa_digest(&sha2::Digest::finalize(h)),
            Hasher::Sha512(h) => ecdsa_digest(&sha2::Digest::finalize(h)),
        }
    }
}

/// Incremental input of a sign or verify operation.
#[derive(Clone)]
pub(crate) enum Input {
    /// `CKM_ECDSA`: nothing yet (single-part only).
    Raw,
    /// `CKM_ECDSA_SHA*`: the running hash.
    Hashing(Box<Hasher>),
}

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Input::Raw => f.write_str("Raw"),
            Input::Hashing(_) => f.write_str("Hashing"),
        }
    }
}

impl Input {
    pub(crate) fn new(mechanism: SignMechanism) -> Input {
        match mechanism {
            SignMechanism::Ecdsa => Input::Raw,
            SignMechanism::EcdsaWith(hash) => Input::Hashing(Box::new(Hasher::new(hash))),
        }
    }

    /// Feeds one part of a multi-part operation.
    pub(crate) fn update(&mut self, data: &[u8]) -> Result<()> {
        match self {
            Input::Raw => Err(Error::FunctionNotSupported(
                "CKM_ECDSA is single-part; use C_Sign/C_Verify or a hashing ECDSA mechanism",
            )),
            Input::Hashing(h) => {
                h.update(data);
                Ok(())
            }
        }
    }

    /// The digest of a whole single-part input.
    pub(crate) fn digest_of(mechanism: SignMechanism, data: &[u8]) -> Result<[u8; DIGEST_LEN]> {
        match mechanism {
            SignMechanism::Ecdsa => ecdsa_digest(data),
            SignMechanism::EcdsaWith(hash) => {
                let mut h = Hasher::new(hash);
                h.update(data);
                h.finish()
            }
        }
    }

    /// The digest of a multi-part input, leaving the state as it was (a
    /// length query or a short buffer must not end the operation).
    pub(crate) fn peek_digest(&self) -> Result<[u8; DIGEST_LEN]> {
        match self {
            Input::Raw => Err(Error::OperationNotInitialized),
            Input::Hashing(h) => (**h).clone().finish(),
        }
    }
}

/// Verifies a raw r‖s signature over a 32-byte digest with a raw X‖Y point.
pub fn verify_digest(
    curve: Curve,
    raw_public: &[u8],
    digest: &[u8; DIGEST_LEN],
    signature: &[u8],
) -> Result<()> {
    if signature.len() != SIGNATURE_LEN {
        return Err(Error::SignatureLenRange);
    }
    Verifier::new(curve, raw_public)?.verify(digest, signature)
}

/// A public key ready to check signatures (built once per key: building it
/// costs about a tenth of a check).
#[derive(Debug, Clone)]
pub(crate) enum Verifier {
    P256(p256::ecdsa::VerifyingKey),
    Secp256k1(k256::ecdsa::VerifyingKey),
}

impl Verifier {
    /// The verifier of a raw X‖Y point on an ECDSA curve.
    pub(crate) fn new(curve: Curve, raw_public: &[u8]) -> Result<Verifier> {
        let point = sec1_uncompressed(raw_public);
        let not_a_point = |_| {
            Error::GeneralError(format!(
                "the {} public key is not on its curve",
                curve.name()
            ))
        };
        match curve {
            Curve::P256 => p256::ecdsa::VerifyingKey::from_sec1_bytes(&point)
                .map(Verifier::P256)
                .map_err(not_a_point),
            Curve::Secp256k1 => k256::ecdsa::VerifyingKey::from_sec1_bytes(&point)
                .map(Verifier::Secp256k1)
                .map_err(not_a_point),
            Curve::Ed25519 | Curve::X25519 => Err(Error::KeyTypeInconsistent),
        }
    }

    /// Checks a raw r‖s signature over a 32-byte digest.
    pub(crate) fn verify(&self, digest: &[u8; DIGEST_LEN], signature: &[u8]) -> Result<()> {
        if signature.len() != SIGNATURE_LEN {
            return Err(Error::SignatureLenRange);
        }
        // (r, s) and (r, n - s) are the same ECDSA signature; the device does not normalise s.
        let valid = match self {
            Verifier::P256(key) => {
                use p256::ecdsa::signature::hazmat::PrehashVerifier;
                p256::ecdsa::Signature::from_slice(signature)
                    .is_ok_and(|sig| key.verify_prehash(digest, &sig.normalize_s()).is_ok())
            }
            Verifier::Secp256k1(key) => {
                use k256::ecdsa::signature::hazmat::PrehashVerifier;
                k256::ecdsa::Signature::from_slice(signature)
                    .is_ok_and(|sig| key.verify_prehash(digest, &sig.normalize_s()).is_ok())
            }
        };
        // A malformed (r, s) is an invalid signature, not a token failure.
        if valid {
            Ok(())
        } else {
            Err(Error::SignatureInvalid)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_input_is_left_padded() {
        let d = ecdsa_digest(&[0xAB; 20]).unwrap();
        assert_eq!(&d[..12], &[0u8; 12]);
        assert_eq!(&d[12..], &[0xAB; 20]);
        let d = ecdsa_digest(&[1]).unwrap();
        assert_eq!(d[31], 1);
        assert_eq!(&d[..31], &[0u8; 31]);
    }

    #[test]
    fn long_input_keeps_the_leftmost_bytes() {
        let input: Vec<u8> = (0..64).collect();
        let d = ecdsa_digest(&input).unwrap();
        assert_eq!(&d[..], &input[..32]);
        let exact: Vec<u8> = (100..132).collect();
        assert_eq!(&ecdsa_digest(&exact).unwrap()[..], exact.as_slice());
    }

    #[test]
    fn empty_input_is_out_of_range() {
        assert_eq!(ecdsa_digest(&[]).unwrap_err(), Error::DataLenRange);
    }

    #[test]
    fn mechanism_list_follows_the_device() {
        assert_eq!(mechanism_list(false), SIGN_MECHANISMS.to_vec());
        assert!(!mechanism_list(false).contains(&CKM_EC_KEY_PAIR_GEN));
        assert!(mechanism_list(true).contains(&CKM_EC_KEY_PAIR_GEN));
        assert!(mechanism_info(CKM_EC_KEY_PAIR_GEN, false).is_err());
        let info = mechanism_info(CKM_ECDSA, false).unwrap();
        assert!(info.flags & CKF_SIGN != 0 && info.flags & CKF_VERIFY != 0);
        assert_eq!(
            mechanism_info(CKM_RSA_PKCS, true).unwrap_err().rv(),
            CKR_MECHANISM_INVALID
        );
    }

    #[test]
    fn multi_part_sha256_equals_one_shot() {
        let mut input = Input::new(SignMechanism::EcdsaWith(Hash::Sha256));
        input.update(b"hello ").unwrap();
        let peek = input.peek_digest().unwrap();
        assert_eq!(peek, openssl::sha::sha256(b"hello "));
        input.update(b"world").unwrap();
        assert_eq!(
            input.peek_digest().unwrap(),
            openssl::sha::sha256(b"hello world")
        );
        assert!(Input::new(SignMechanism::Ecdsa).update(b"x").is_err());
    }

    #[test]
    fn hashing_mechanisms_fit_their_digest_to_32_bytes() {
        let msg = b"message";
        let cases = [
            (CKM_ECDSA_SHA1, openssl::sha::sha1(msg).to_vec()),
            (CKM_ECDSA_SHA224, openssl::sha::sha224(msg).to_vec()),
            (CKM_ECDSA_SHA256, openssl::sha::sha256(msg).to_vec()),
            (CKM_ECDSA_SHA384, openssl::sha::sha384(msg).to_vec()),
            (CKM_ECDSA_SHA512, openssl::sha::sha512(msg).to_vec()),
        ];
        for (ck, full) in cases {
            let m = SignMechanism::from_ck(ck, false).unwrap();
            let d = Input::digest_of(m, msg).unwrap();
            assert_eq!(d, ecdsa_digest(&full).unwrap(), "{ck:#x}");
        }
    }

    #[test]
    fn verifies_openssl_signatures() {
        use openssl::bn::BigNumContext;
        use openssl::ec::{EcGroup, EcKey, PointConversionForm};
        use openssl::ecdsa::EcdsaSig;
        use openssl::nid::Nid;
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let key = EcKey::generate(&group).unwrap();
        let mut ctx = BigNumContext::new().unwrap();
        let point = key
            .public_key()
            .to_bytes(&group, PointConversionForm::UNCOMPRESSED, &mut ctx)
            .unwrap();
        let digest = openssl::sha::sha256(b"msg");
        let sig = EcdsaSig::sign(&digest, &key).unwrap();
        let mut raw = sig.r().to_vec_padded(32).unwrap();
        raw.extend(sig.s().to_vec_padded(32).unwrap());
        verify_digest(Curve::P256, &point[1..], &digest, &raw).unwrap();
        let mut bad = raw.clone();
        bad[5] ^= 1;
        assert_eq!(
            verify_digest(Curve::P256, &point[1..], &digest, &bad).unwrap_err(),
            Error::SignatureInvalid
        );
        assert_eq!(
            verify_digest(Curve::P256, &point[1..], &digest, &raw[..63]).unwrap_err(),
            Error::SignatureLenRange
        );
    }
}
