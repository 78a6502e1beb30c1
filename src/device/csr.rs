//! The device's certificate signing request, signed by the token.
//!
//! The CertificationRequestInfo (subject `CN=<thing>`, the token key's SubjectPublicKeyInfo, no
//! attributes) is DER-encoded here; the token signs its SHA-256 digest with `CKM_ECDSA` (one
//! device operation) and the raw `r‖s` becomes the DER `ECDSA-Sig-Value` of an
//! `ecdsa-with-SHA256` request. OpenSSL verifies the result before anyone sees it.

use std::path::Path;

use anyhow::{bail, Context, Result};
use openssl::nid::Nid;
use openssl::x509::{X509NameBuilder, X509Req};
use x509_cert::der::asn1::BitString;
use x509_cert::der::{Decode, Encode};
use x509_cert::name::Name;
use x509_cert::request::{CertReq, CertReqInfo, Version};
use x509_cert::spki::{AlgorithmIdentifierOwned, ObjectIdentifier, SubjectPublicKeyInfoOwned};

use super::cli::CsrArgs;
use super::config;
use super::labels::Labels;
use crate::p11::{P11Key, P11Token};
use crate::thing_name::validate_thing_name;
use crate::x509::parse_csr;
use crate::{fsutil, GlobalOpts};

/// `ecdsa-with-SHA256` (RFC 5758).
const ECDSA_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");

/// Builds a CSR for `thing` signed by `key` on `token`; verified before it is returned.
pub fn build_csr(token: &P11Token, key: &P11Key, thing: &str) -> Result<X509Req> {
    validate_thing_name(thing)?;
    let public_key = key.public_key()?;

    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_nid(Nid::COMMONNAME, thing)?;
    let subject = Name::from_der(&name.build().to_der()?)?;
    let spki = SubjectPublicKeyInfoOwned::from_der(&public_key.public_key_to_der()?)?;
    let info = CertReqInfo {
        version: Version::V1,
        subject,
        public_key: spki,
        attributes: Default::default(),
    };
    let to_be_signed = info.to_der()?;
    let signature = token.sign_sha256_der(key, &to_be_signed)?;
    let request = CertReq {
        info,
        algorithm: AlgorithmIdentifierOwned {
            oid: ECDSA_WITH_SHA256,
            parameters: None,
        },
        signature: BitString::from_bytes(&signature)?,
    };
    let csr = X509Req::from_der(&request.to_der()?).context("OpenSSL cannot parse the CSR")?;
    check_csr(&csr, key, thing).context("the CSR just signed does not check out")?;
    Ok(csr)
}

/// Checks that `csr` verifies, carries `key`'s public key, and names `thing`.
pub fn check_csr(csr: &X509Req, key: &P11Key, thing: &str) -> Result<()> {
    let public_key = key.public_key()?;
    if !csr.public_key()?.public_eq(&public_key) {
        bail!("it carries another public key than key {:?}", key.label);
    }
    if !csr.verify(&public_key).unwrap_or(false) {
        bail!("its signature does not verify");
    }
    let cn = crate::x509::csr_common_name(csr)?;
    if cn != thing {
        bail!("its CN is {cn:?}, not {thing:?}");
    }
    Ok(())
}

pub(crate) fn run(args: CsrArgs, global: &GlobalOpts) -> Result<()> {
    let dir = config::device_dir(args.dir.as_deref(), global);
    let out = args.out.unwrap_or_else(|| dir.join("device.csr"));
    let labels = Labels::of(global, args.key_label.as_deref())?;
    let token = P11Token::open(&global.module, &labels.token)?;
    let thing = match args.thing {
        Some(t) => t,
        None => super::id::read_device_id(&token)?.short(),
    };
    crate::thing_name::validate_thing_name(&thing)?;
    let key = token.find_key(&labels.key)?;

    if out.exists() && !args.force {
        let existing = fsutil::read(&out)?;
        let matches = parse_csr(&existing).and_then(|csr| check_csr(&csr, &key, &thing));
        match matches {
            Ok(()) => {
                println!(
                    "CSR {} already exists for thing {thing} and key {:?}; nothing changed.",
                    out.display(),
                    key.label
                );
                print_csr_next(&out);
                return Ok(());
            }
            Err(e) => bail!(
                "{} already exists and does not match ({e:#}); not overwriting it (use --force to replace it)",
                out.display()
            ),
        }
    }
    let csr = build_csr(&token, &key, &thing)?;
    fsutil::write_atomic(&out, &csr.to_pem()?, fsutil::PUBLIC_MODE)?;
    println!(
        "Wrote CSR {} (CN={thing}), signed by key {:?} on token {:?}.",
        out.display(),
        key.label,
        token.label()
    );
    print_csr_next(&out);
    Ok(())
}

fn print_csr_next(out: &Path) {
    println!(
        "Next: on the operator's machine, `zkiot ca sign --csr {}`, then bring device.crt and ca.crt back and run `zkiot device install-cert --cert device.crt --ca ca.crt`.",
        out.file_name().map(|f| f.to_string_lossy()).unwrap_or_default()
    );
}
