//! The device's TLS client configurations, all made by [`client_config`]: for mutual TLS with
//! the token's key (a client certificate whose key signs through PKCS#11), or without a client
//! certificate (the AWS IoT API, which the device signs its calls for instead).
//!
//! Only `ecdsa_secp256r1_sha256` is offered with the token's key (the Zymkey's keys are P-256):
//! the handshake message is hashed here with SHA-256 and the token signs the digest with
//! `CKM_ECDSA`, one device operation per handshake.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use rustls::client::ResolvesClientCert;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::sign::{CertifiedKey, Signer, SigningKey};
use rustls::{ClientConfig, RootCertStore, SignatureAlgorithm, SignatureScheme};

use crate::p11::{P11Key, P11Token};

/// A TLS client key that lives on the token.
#[derive(Debug)]
pub struct P11SigningKey {
    token: Arc<P11Token>,
    key: P11Key,
}

impl P11SigningKey {
    /// The key `key` on `token`.
    pub fn new(token: Arc<P11Token>, key: P11Key) -> Self {
        Self { token, key }
    }
}

impl SigningKey for P11SigningKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        offered
            .contains(&SignatureScheme::ECDSA_NISTP256_SHA256)
            .then(|| {
                Box::new(P11Signer {
                    token: self.token.clone(),
                    key: self.key.clone(),
                }) as Box<dyn Signer>
            })
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::ECDSA
    }
}

#[derive(Debug)]
struct P11Signer {
    token: Arc<P11Token>,
    key: P11Key,
}

impl Signer for P11Signer {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        self.token
            .sign_sha256_der(&self.key, message)
            .map_err(|e| rustls::Error::General(format!("{e:#}")))
    }

    fn scheme(&self) -> SignatureScheme {
        SignatureScheme::ECDSA_NISTP256_SHA256
    }
}

/// Presents one certificate, whatever the server asks.
#[derive(Debug)]
struct ClientIdentity(Arc<CertifiedKey>);

impl ResolvesClientCert for ClientIdentity {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        sigschemes
            .contains(&SignatureScheme::ECDSA_NISTP256_SHA256)
            .then(|| self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Trust anchors for the server: the PEM bundle `ca_bundle`, or the system's trust store.
pub fn server_roots(ca_bundle: Option<&Path>) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    match ca_bundle {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .with_context(|| format!("cannot read CA bundle {}", path.display()))?
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("bad PEM in CA bundle {}", path.display()))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                bail!("CA bundle {} holds no usable certificate", path.display());
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
            if roots.is_empty() {
                bail!("no trusted CA certificates found on this system; pass --ca-bundle (for AWS: AmazonRootCA1.pem and AmazonRootCA3.pem)");
            }
        }
    }
    Ok(roots)
}

/// A client configuration (TLS 1.3 or 1.2, ring) that trusts `roots` and, given a certificate
/// (DER) and the token key it is for, presents them.
pub fn client_config(
    roots: RootCertStore,
    client: Option<(Vec<u8>, P11SigningKey)>,
) -> Result<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots);
    Ok(match client {
        Some((cert_der, signing_key)) => {
            let certified =
                CertifiedKey::new(vec![CertificateDer::from(cert_der)], Arc::new(signing_key));
            builder.with_client_cert_resolver(Arc::new(ClientIdentity(Arc::new(certified))))
        }
        None => builder.with_no_client_auth(),
    })
}
