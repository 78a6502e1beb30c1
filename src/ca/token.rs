//! The CA key in a PKCS#11 token: found there or generated there, and every CA signature made
//! there. No private key object ever exists outside the token.
//!
//! A certificate is built with OpenSSL's builder as for a key file, which fixes every field of
//! the TBSCertificate, including its signature algorithm (ecdsa-with-SHA256). OpenSSL signs only
//! with a key it holds, so the builder signs with a throwaway P-256 key; the token then signs the
//! TBSCertificate (one `C_Sign`, `CKM_ECDSA` over its SHA-256) and that signature, `r‖s` turned
//! into DER, replaces the throwaway one. The result is checked under the token's public key.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, ensure, Context, Result};
use cryptoki::types::AuthPin;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Public};
use openssl::x509::{X509Builder, X509};
use x509_cert::der::asn1::BitString;
use x509_cert::der::oid::ObjectIdentifier;
use x509_cert::der::{Decode, Encode};

use super::location::CA_PIN_ENV;
use super::pkcs11_uri::Pkcs11Uri;
use crate::p11::{P11Key, P11Token};
use crate::x509::hex;

/// ecdsa-with-SHA256 (RFC 5758).
const ECDSA_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");

/// An open token and the CA key on it.
pub(super) struct TokenKey {
    token: P11Token,
    key: P11Key,
    uri: Pkcs11Uri,
    module: PathBuf,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKey")
            .field("uri", &self.uri.to_uri_string())
            .field("module", &self.module)
            .finish_non_exhaustive()
    }
}

/// A token opened for the CA key, which it does not hold yet.
pub(super) struct EmptyToken {
    token: P11Token,
    uri: Pkcs11Uri,
    module: PathBuf,
}

/// What [`TokenKey::find`] found.
pub(super) enum Found {
    Key(TokenKey),
    Missing(EmptyToken),
}

impl TokenKey {
    /// Opens the token `uri` names through `module` and finds the key; a missing key is an error.
    pub fn open(uri: &Pkcs11Uri, module: &Path) -> Result<Self> {
        match Self::find(uri, module)? {
            Found::Key(key) => Ok(key),
            Found::Missing(empty) => Err(anyhow!(
                "token {:?} has no private key {} (was it removed, or is this another token?)",
                empty.token.label(),
                key_name(uri)
            )),
        }
    }

    /// Opens the token `uri` names through `module` and looks for the key.
    pub fn find(uri: &Pkcs11Uri, module: &Path) -> Result<Found> {
        let token = open_token(uri, module)?;
        Ok(
            match token.find_private_key(uri.object.as_deref(), uri.id.as_deref())? {
                Some(key) => Found::Key(Self::new(token, key, uri, module)),
                None => Found::Missing(EmptyToken {
                    token,
                    uri: uri.clone(),
                    module: module.to_path_buf(),
                }),
            },
        )
    }

    fn new(token: P11Token, key: P11Key, uri: &Pkcs11Uri, module: &Path) -> Self {
        let mut uri = uri.clone();
        // Record the key as the token shows it, so the URI names it alone.
        uri.object = Some(key.label.clone()).filter(|l| !l.is_empty());
        uri.id = Some(key.id.clone()).filter(|id| !id.is_empty());
        uri.module_path = None;
        Self {
            token,
            key,
            uri,
            module: module.to_path_buf(),
        }
    }

    /// The key's URI as `ca/ca.toml` records it.
    pub fn uri(&self) -> &Pkcs11Uri {
        &self.uri
    }

    /// The CA's public key, as the token gives it.
    pub fn public_key(&self) -> Result<PKey<Public>> {
        self.key.public_key()
    }

    /// One line on where the key is: token, key and module.
    pub fn describe(&self) -> String {
        let mut token = format!("token {:?}", self.token.label());
        let details: Vec<String> = [
            ("serial", self.token.serial_number()),
            ("model", self.token.model()),
            ("manufacturer", self.token.manufacturer()),
        ]
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
        if !details.is_empty() {
            token.push_str(&format!(" ({})", details.join(", ")));
        }
        let id = if self.key.id.is_empty() {
            String::new()
        } else {
            format!(" (id {})", hex(&self.key.id))
        };
        format!(
            "PKCS#11 {token}, key {:?}{id}, module {}",
            self.key.label,
            self.module.display()
        )
    }

    /// Signs the certificate `builder` holds with the token's key (see the module's comment).
    pub fn sign(&self, mut builder: X509Builder) -> Result<X509> {
        let placeholder = super::generate_p256_key()?;
        builder.sign(&placeholder, MessageDigest::sha256())?;
        let draft = builder.build().to_der()?;
        let mut cert = x509_cert::Certificate::from_der(&draft)
            .context("cannot parse the certificate OpenSSL built")?;
        ensure!(
            cert.signature_algorithm.oid == ECDSA_WITH_SHA256
                && cert.tbs_certificate.signature == cert.signature_algorithm,
            "the certificate is not set up for ecdsa-with-SHA256"
        );
        let tbs = cert.tbs_certificate.to_der()?;
        let signature = self.token.sign_sha256_der(&self.key, &tbs)?;
        cert.signature = BitString::from_bytes(&signature)?;
        let signed = X509::from_der(&cert.to_der()?)?;
        ensure!(
            signed.verify(&*self.public_key()?)?,
            "the token's signature does not verify under its own public key"
        );
        Ok(signed)
    }
}

impl EmptyToken {
    /// Generates the CA key (P-256) on the token, labelled as the URI's `object` says.
    pub fn generate(self) -> Result<TokenKey> {
        let label = self.uri.object.as_deref().with_context(|| {
            format!(
                "token {:?} has no key with id {}; to generate one, name it with object=<label>",
                self.token.label(),
                hex(self.uri.id.as_deref().unwrap_or_default())
            )
        })?;
        let key = self
            .token
            .generate_p256_key(label, self.uri.id.as_deref())
            .with_context(|| {
                format!(
                    "token {:?} has no key labelled {label:?} and could not make one (a token \
                     without key generation, such as a ZYMKEY4i, can hold the CA in a key it \
                     has: name it, e.g. object=slot1)",
                    self.token.label()
                )
            })?;
        Ok(TokenKey::new(self.token, key, &self.uri, &self.module))
    }

    /// The token's label.
    pub fn label(&self) -> &str {
        self.token.label()
    }
}

fn open_token(uri: &Pkcs11Uri, module: &Path) -> Result<P11Token> {
    let pin = || read_pin(uri);
    P11Token::open_matching(module, &uri.token, &pin)
        .with_context(|| format!("the CA key {}", uri.to_uri_string()))
}

/// The token's user PIN: from the file `pin-source` names, else from `ZKIOT_CA_PIN`. Never
/// printed, never written.
fn read_pin(uri: &Pkcs11Uri) -> Result<AuthPin> {
    if let Some(file) = uri.pin_file() {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("cannot read the PIN file {} (pin-source)", file.display()))?;
        let pin = text.trim_end_matches(['\r', '\n']);
        ensure!(!pin.is_empty(), "the PIN file {} is empty", file.display());
        return Ok(AuthPin::from(pin.to_string()));
    }
    match std::env::var(CA_PIN_ENV) {
        Ok(pin) if !pin.is_empty() => Ok(AuthPin::from(pin)),
        Ok(_) | Err(std::env::VarError::NotPresent) => Err(anyhow!(
            "the token asks for its user PIN: set {CA_PIN_ENV}, or add ?pin-source=file:<path> \
             to the key's URI"
        )),
        Err(std::env::VarError::NotUnicode(_)) => Err(anyhow!("{CA_PIN_ENV} is not UTF-8")),
    }
}

fn key_name(uri: &Pkcs11Uri) -> String {
    match (&uri.object, &uri.id) {
        (Some(label), Some(id)) => format!("labelled {label:?} with id {}", hex(id)),
        (Some(label), None) => format!("labelled {label:?}"),
        (None, Some(id)) => format!("with id {}", hex(id)),
        (None, None) => "at all".into(),
    }
}
