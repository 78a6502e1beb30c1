//! X.509 helpers both sides use: parsing, names, fingerprints, chain and validity checks.

use std::path::Path;

use anyhow::{anyhow, bail, ensure, Context, Result};
use openssl::asn1::Asn1Time;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::stack::Stack;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::{X509NameRef, X509Req, X509StoreContext, X509};

use crate::fsutil;

/// Reads a certificate file, PEM or DER.
pub fn read_certificate(path: &Path) -> Result<X509> {
    let bytes = fsutil::read(path)?;
    X509::from_pem(&bytes)
        .or_else(|_| X509::from_der(&bytes))
        .with_context(|| {
            format!(
                "{} is not an X.509 certificate (PEM or DER)",
                path.display()
            )
        })
}

/// Parses a CSR in PEM, or DER.
pub fn parse_csr(bytes: &[u8]) -> Result<X509Req> {
    X509Req::from_pem(bytes)
        .or_else(|_| X509Req::from_der(bytes))
        .map_err(|_| anyhow!("not a PKCS#10 certificate request (PEM or DER)"))
}

/// The single CN of a CSR's subject.
pub fn csr_common_name(csr: &X509Req) -> Result<String> {
    common_name(csr.subject_name()).context("the CSR's subject")
}

/// The single CN of a name.
pub fn common_name(name: &X509NameRef) -> Result<String> {
    let mut cns = name.entries_by_nid(Nid::COMMONNAME);
    let cn = cns.next().ok_or_else(|| anyhow!("has no CN"))?;
    ensure!(cns.next().is_none(), "has more than one CN");
    let cn = cn
        .data()
        .to_string()
        .map_err(|_| anyhow!("has a CN that is not text"))?;
    ensure!(!cn.contains('\0'), "has a CN with a NUL byte");
    Ok(cn)
}

/// One-line form of a name, `CN=…, O=…`.
pub fn name_to_string(name: &X509NameRef) -> String {
    name.entries()
        .map(|e| {
            let key = e.object().nid().short_name().unwrap_or("?");
            let value = e.data().to_string().unwrap_or_else(|_| "?".into());
            format!("{key}={value}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// SHA-256 fingerprint of a certificate's DER, lowercase hex (AWS IoT's certificate ID).
pub fn fingerprint(cert: &X509) -> Result<String> {
    Ok(hex(&cert.digest(MessageDigest::sha256())?))
}

/// Checks that `leaf` chains to `ca` (signature, validity, purpose `clientAuth`).
pub fn verify_chain(leaf: &X509, ca: &X509) -> Result<()> {
    let mut store = X509StoreBuilder::new()?;
    store.add_cert(ca.clone())?;
    store.set_purpose(openssl::x509::X509PurposeId::SSL_CLIENT)?;
    let store = store.build();
    let chain = Stack::new()?;
    let mut ctx = X509StoreContext::new()?;
    let (ok, error) = ctx.init(&store, leaf, &chain, |c| {
        let ok = c.verify_cert()?;
        Ok((ok, c.error()))
    })?;
    if !ok {
        bail!(
            "certificate {} does not chain to CA {}: {}",
            name_to_string(leaf.subject_name()),
            name_to_string(ca.subject_name()),
            error.error_string()
        );
    }
    Ok(())
}

/// Checks a certificate's validity period against the current time.
pub fn check_valid_now(cert: &X509, what: &str) -> Result<()> {
    let now = Asn1Time::days_from_now(0)?;
    if cert.not_after() < now {
        bail!("the {what} expired on {}", cert.not_after());
    }
    if cert.not_before() > now {
        bail!("the {what} is not valid before {}", cert.not_before());
    }
    Ok(())
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Base64url without padding (RFC 4648 §5): what an AWS IoT Thing attribute may hold.
pub fn base64url(bytes: &[u8]) -> String {
    openssl::base64::encode_block(bytes)
        .trim_end_matches('=')
        .replace('+', "-")
        .replace('/', "_")
}

/// Decodes [`base64url`] (padding optional).
pub fn from_base64url(text: &str) -> Result<Vec<u8>> {
    let mut standard = text.trim().replace('-', "+").replace('_', "/");
    while standard.len() % 4 != 0 {
        standard.push('=');
    }
    openssl::base64::decode_block(&standard).map_err(|_| anyhow!("not base64url"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_round_trips() {
        for bytes in [&b""[..], b"a", b"ab", b"abc", &[0xfb, 0xff, 0xfe, 0x3e]] {
            let text = base64url(bytes);
            assert!(!text.contains(['+', '/', '=']), "{text}");
            assert_eq!(from_base64url(&text).unwrap(), bytes);
        }
        assert!(from_base64url("a b").is_err());
    }
}
