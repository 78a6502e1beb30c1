//! `zkiot fleet renew`'s side of a renewal with a fresh key ([`crate::device::rekey`]): the
//! CSR a device posted on its Thing, signed once the device's current key vouches for it.
//!
//! The Thing's attributes `zkiot_csr` (the CSR, base64url DER) and `zkiot_csr_signature`
//! (the device's current key's ECDSA signature over the CSR's DER, SHA-256) are read with the
//! `DescribeThing` renewal makes anyway. The CSR is signed only when its self-signature
//! verifies, its subject is `CN=<thing>` and its key P-256 (as `ca sign` wants), and the
//! signature verifies with the key of one of the Thing's ACTIVE certificates from our CA:
//! whoever holds only a device's temporary credentials (which may post attributes) cannot have
//! a key of theirs certified. A request whose key already has an ACTIVE certificate of ours is
//! done, and waits for the device to switch.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Public};
use openssl::sign::Verifier;
use openssl::x509::{X509Req, X509};

use crate::ca::{CertificateAuthority, SignOptions};
use crate::device::rekey::{CSR_ATTRIBUTE, CSR_SIGNATURE_ATTRIBUTE};
use crate::fsutil;
use crate::x509::from_base64url;

/// Where the certificate for a requested key is kept before and after it is registered.
const REKEY_FILE: &str = "rekey.crt";

/// A device's request for a certificate for a fresh key, checked.
pub(super) struct Request {
    pub csr_pem: Vec<u8>,
    pub key: PKey<Public>,
}

/// The request posted on a Thing with `attributes`, if any, checked against the public keys
/// of the Thing's ACTIVE certificates from our CA (`vouchers`).
pub(super) fn posted(
    attributes: Option<&HashMap<String, String>>,
    vouchers: &[PKey<Public>],
) -> Result<Option<Request>> {
    let Some(attributes) = attributes else {
        return Ok(None);
    };
    let (Some(csr), Some(signature)) = (
        attributes.get(CSR_ATTRIBUTE).filter(|v| !v.is_empty()),
        attributes
            .get(CSR_SIGNATURE_ATTRIBUTE)
            .filter(|v| !v.is_empty()),
    ) else {
        return Ok(None);
    };
    let csr_der = from_base64url(csr).context("the posted CSR")?;
    let signature = from_base64url(signature).context("the posted CSR's signature")?;
    let csr = X509Req::from_der(&csr_der).context("the posted CSR is not a CSR")?;
    let vouched = vouchers.iter().any(|key| {
        Verifier::new(MessageDigest::sha256(), key)
            .and_then(|mut v| {
                v.update(&csr_der)?;
                v.verify(&signature)
            })
            .unwrap_or(false)
    });
    if !vouched {
        bail!(
            "the CSR posted for a fresh key is not signed by the key of any ACTIVE certificate \
             of the Thing; refused (who posted it holds the device's credentials, not its key)"
        );
    }
    Ok(Some(Request {
        csr_pem: csr.to_pem()?,
        key: csr.public_key()?,
    }))
}

/// The certificate for `request`: the one an earlier run issued (`devices/<thing>/rekey.crt`)
/// if it is for the same key, from this CA and lasts longer than the renewal window, else a
/// new one signed as `ca sign` would, written before it is registered.
pub(super) fn certificate(
    ca: &CertificateAuthority,
    sign: &SignOptions,
    device_dir: &Path,
    thing: &str,
    request: &Request,
    within_seconds: i64,
) -> Result<X509> {
    let path = device_dir.join(REKEY_FILE);
    if let Ok(existing) = X509::from_pem(&std::fs::read(&path).unwrap_or_default()) {
        let same_key = existing.public_key()?.public_eq(&request.key);
        let ours = crate::x509::verify_chain(&existing, ca.certificate()).is_ok();
        let lasts = crate::device::agent::schedule::unix_seconds(existing.not_after())?
            - time::OffsetDateTime::now_utc().unix_timestamp()
            > within_seconds;
        if same_key && ours && lasts {
            return Ok(existing);
        }
    }
    let options = SignOptions {
        expected_cn: Some(thing.to_string()),
        ..sign.clone()
    };
    let cert = ca
        .sign_csr(&request.csr_pem, &options)
        .with_context(|| format!("{thing}: the CSR posted for a fresh key"))?;
    fsutil::write_atomic(&path, &cert.to_pem()?, fsutil::PUBLIC_MODE)?;
    Ok(cert)
}
