//! `zkiot ca status`: where the CA's key lives, the CA certificate, and whether the key is there
//! and matches.

use anyhow::{bail, Context, Result};
use openssl::x509::X509;

use super::location::{config_path, KeyLocation, CA_PIN_ENV};
use super::{describe, CertificateAuthority};
use crate::{fsutil, GlobalOpts};

pub(crate) fn status(global: &GlobalOpts) -> Result<()> {
    let cert_path = global.ca_cert_path();
    if !cert_path.exists() {
        bail!(
            "no CA in {} ({} is missing): create one with `zkiot ca init`",
            global.home.display(),
            cert_path.display()
        );
    }
    let cert = X509::from_pem(&fsutil::read(&cert_path)?)
        .with_context(|| format!("{} is not a PEM certificate", cert_path.display()))?;
    println!(
        "CA certificate {}\n{}",
        cert_path.display(),
        describe(&cert)?
    );
    let location = KeyLocation::read(global)?;
    let (kind, protects) = match &location {
        KeyLocation::File(_) => (
            "key file",
            "anyone who can read this file can issue device certificates AWS IoT accepts; \
             `zkiot ca init --key pkcs11:…` moves the CA into a token (see the README)",
        ),
        KeyLocation::Token { .. } => (
            "PKCS#11 token",
            "the key never leaves the token; signing needs the token and its PIN",
        ),
        KeyLocation::PrivateCa(_) => (
            "AWS Private CA",
            "AWS holds the key; issuing needs AWS credentials allowed acm-pca:IssueCertificate",
        ),
    };
    println!("  key kind:    {kind} ({protects})");
    match &location {
        KeyLocation::File(path) => println!("  key:         {}", path.display()),
        KeyLocation::Token { uri, module } => {
            println!("  key:         {}", uri.to_uri_string());
            println!("  module:      {}", module.display());
            println!("  recorded in: {}", config_path(global).display());
        }
        KeyLocation::PrivateCa(arn) => {
            println!("  Private CA:  {}", arn.arn);
            println!("  recorded in: {}", config_path(global).display());
        }
    }
    // Open the CA as a signing command would: the key is there and matches.
    let pin_missing = matches!(location, KeyLocation::Token { ref uri, .. }
        if uri.pin_source.is_none() && std::env::var(CA_PIN_ENV).unwrap_or_default().is_empty());
    match CertificateAuthority::open(global) {
        Ok(ca) => {
            println!("  found:       {}", ca.key_description(&location));
            #[cfg(feature = "aws")]
            if let super::CaKey::PrivateCa(pca) = &ca.key {
                println!("  AWS says:    {}", pca.describe()?);
                let current = pca.certificate()?.certificate;
                if current.to_der()? != ca.certificate().to_der()? {
                    bail!(
                        "AWS Private CA {} now has another certificate than {}",
                        pca.arn(),
                        cert_path.display()
                    );
                }
            }
            println!(
                "  check:       OK: {}, and the CA certificate is valid now",
                match location {
                    KeyLocation::PrivateCa(_) => "AWS holds this CA certificate for the Private CA",
                    _ => "the key is there and matches the CA certificate",
                }
            );
            Ok(())
        }
        Err(e) if pin_missing => {
            println!("  check:       not made: {e:#}");
            Ok(())
        }
        Err(e) => Err(e.context("the CA cannot sign")),
    }
}
