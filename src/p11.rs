//! The PKCS#11 client the device side signs with.
//!
//! It loads a module (normally `libzkpkcs11.so`), finds the token by label (`zymkey`) and a key
//! pair by label (`slot0`), and signs SHA-256 digests with `CKM_ECDSA`, so each signature costs
//! the device exactly one operation. The private key never leaves the token.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use anyhow::{anyhow, bail, ensure, Context, Result};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::RvError;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, CertificateType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::{EcGroup, EcKey, EcPoint, PointConversionForm};
use openssl::ecdsa::EcdsaSig;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Public};
use openssl::x509::X509;

/// DER of the P-256 curve OID, as `CKA_EC_PARAMS` holds it.
const P256_PARAMS: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// An open token: one read-write session, used by one thread at a time.
pub struct P11Token {
    // Both are `Some` until drop, which closes the session and then finalizes the module.
    session: Mutex<Option<Session>>,
    pkcs11: Option<Pkcs11>,
    module: PathBuf,
    label: String,
    serial_number: String,
    model: String,
    manufacturer: String,
}

impl std::fmt::Debug for P11Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("P11Token")
            .field("module", &self.module)
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

/// A P-256 private key on the token, with its public point.
#[derive(Debug, Clone)]
pub struct P11Key {
    handle: ObjectHandle,
    /// `CKA_LABEL`.
    pub label: String,
    /// `CKA_ID`.
    pub id: Vec<u8>,
    /// Uncompressed point `04‖X‖Y` (65 bytes).
    pub point: Vec<u8>,
}

impl P11Key {
    /// The public key as an OpenSSL key.
    pub fn public_key(&self) -> Result<PKey<Public>> {
        public_key_from_point(&self.point)
    }
}

/// What [`P11Token::store_certificate`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertificateStored {
    /// The same certificate was already on the token.
    Unchanged,
    /// There was none with this `CKA_ID`; it was added.
    Created,
    /// A different certificate with this `CKA_ID` was replaced.
    Replaced,
}

impl P11Token {
    /// Loads `module` and opens the token labelled `label`.
    pub fn open(module: &Path, label: &str) -> Result<Self> {
        if !module.exists() {
            bail!(
                "PKCS#11 module {} not found (install it, or point --module / ZKIOT_PKCS11_MODULE at libzkpkcs11.so)",
                module.display()
            );
        }
        let pkcs11 = load_module(module)?;
        let slots = pkcs11
            .get_slots_with_token()
            .context("cannot list the module's slots")?;
        let mut seen = Vec::new();
        let mut found: Option<(Slot, cryptoki::slot::TokenInfo)> = None;
        for slot in slots {
            let info = pkcs11
                .get_token_info(slot)
                .context("cannot read token information")?;
            if info.label().trim_end() == label {
                found = Some((slot, info));
                break;
            }
            seen.push(info.label().trim_end().to_string());
        }
        let (slot, info) = found.ok_or_else(|| {
            if seen.is_empty() {
                anyhow!(
                    "no token in PKCS#11 module {} (is the Zymkey connected and its library installed?)",
                    module.display()
                )
            } else {
                anyhow!(
                    "no token labelled {label:?} in PKCS#11 module {} (found: {})",
                    module.display(),
                    seen.join(", ")
                )
            }
        })?;
        let session = pkcs11
            .open_rw_session(slot)
            .or_else(|_| pkcs11.open_ro_session(slot))
            .with_context(|| format!("cannot open a session on token {label:?}"))?;
        if info.login_required() {
            let pin = zkconf::login_pin()?.with_context(|| {
                format!(
                    "token {label:?} requires a PIN: set {}, or `pin` in the zkiot configuration \
                     ({} or {})",
                    zkconf::PIN_ENV,
                    zkconf::CONFIG_ENV,
                    zkconf::SYSTEM_CONFIG
                )
            })?;
            log_in(&session, label, &AuthPin::from(pin))?;
        }
        Ok(Self::opened(pkcs11, session, module, &info))
    }

    /// The token of an open session.
    fn opened(
        pkcs11: Pkcs11,
        session: Session,
        module: &Path,
        info: &cryptoki::slot::TokenInfo,
    ) -> Self {
        Self {
            session: Mutex::new(Some(session)),
            pkcs11: Some(pkcs11),
            module: module.to_path_buf(),
            label: info.label().trim_end().to_string(),
            serial_number: info.serial_number().trim().to_string(),
            model: info.model().trim().to_string(),
            manufacturer: info.manufacturer_id().trim().to_string(),
        }
    }

    /// The token's `serialNumber` (padding removed).
    pub fn serial_number(&self) -> &str {
        &self.serial_number
    }

    /// The token's `model` (padding removed).
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The token's `manufacturerID` (padding removed).
    pub fn manufacturer(&self) -> &str {
        &self.manufacturer
    }

    /// The token's label.
    pub fn label(&self) -> &str {
        &self.label
    }

    fn session(&self) -> SessionGuard<'_> {
        SessionGuard(self.session.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Finds the P-256 private key labelled `key_label` and reads its public point (from the
    /// private key object, or from the public key with the same `CKA_ID`).
    pub fn find_key(&self, key_label: &str) -> Result<P11Key> {
        let session = self.session();
        let handles = session
            .find_objects(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Label(key_label.as_bytes().to_vec()),
            ])
            .context("cannot search the token's keys")?;
        let handle = match handles.as_slice() {
            [one] => *one,
            [] => bail!(
                "no private key labelled {key_label:?} on token {:?}",
                self.label
            ),
            _ => bail!(
                "{} private keys labelled {key_label:?} on token {:?}; labels must be unique",
                handles.len(),
                self.label
            ),
        };
        let attrs = session
            .get_attributes(
                handle,
                &[
                    AttributeType::Id,
                    AttributeType::EcParams,
                    AttributeType::EcPoint,
                ],
            )
            .context("cannot read the key's attributes")?;
        let mut id = None;
        let mut params = None;
        let mut point = None;
        for attr in attrs {
            match attr {
                Attribute::Id(v) => id = Some(v),
                Attribute::EcParams(v) => params = Some(v),
                Attribute::EcPoint(v) => point = Some(v),
                _ => {}
            }
        }
        let id = id.ok_or_else(|| anyhow!("key {key_label:?} has no CKA_ID"))?;
        if let Some(params) = &params {
            ensure!(
                params.as_slice() == P256_PARAMS,
                "key {key_label:?} is not a P-256 key"
            );
        }
        let point = match point {
            Some(p) => p,
            None => {
                drop(session);
                self.public_key_point_der(&id)
                    .with_context(|| format!("key {key_label:?} has no CKA_EC_POINT"))?
            }
        };
        let point = decode_ec_point(&point)
            .with_context(|| format!("key {key_label:?} has a malformed CKA_EC_POINT"))?;
        Ok(P11Key {
            handle,
            label: key_label.to_string(),
            id,
            point,
        })
    }

    /// `CKA_EC_POINT` of the public key object with this `CKA_ID`, as the token gives it.
    fn public_key_point_der(&self, id: &[u8]) -> Result<Vec<u8>> {
        let session = self.session();
        let public = session
            .find_objects(&[
                Attribute::Class(ObjectClass::PUBLIC_KEY),
                Attribute::Id(id.to_vec()),
            ])
            .context("cannot search the token's public keys")?;
        let public = *public
            .first()
            .ok_or_else(|| anyhow!("no public key object with CKA_ID {}", crate::x509::hex(id)))?;
        session
            .get_attributes(public, &[AttributeType::EcPoint])?
            .into_iter()
            .find_map(|a| match a {
                Attribute::EcPoint(v) => Some(v),
                _ => None,
            })
            .ok_or_else(|| {
                anyhow!(
                    "the public key object {} has no CKA_EC_POINT",
                    crate::x509::hex(id)
                )
            })
    }

    /// The uncompressed point of the public key object with this `CKA_ID` (not the private
    /// key's copy of it).
    pub fn public_key_object(&self, id: &[u8]) -> Result<Vec<u8>> {
        decode_ec_point(&self.public_key_point_der(id)?)
            .context("the public key object has a malformed CKA_EC_POINT")
    }

    /// Signs a SHA-256 digest with `CKM_ECDSA`: one device operation. Returns raw `r‖s`.
    pub fn sign_digest(&self, key: &P11Key, digest: &[u8; 32]) -> Result<[u8; 64]> {
        let signature = self
            .session()
            .sign(&Mechanism::Ecdsa, key.handle, digest)
            .with_context(|| format!("the token failed to sign with key {:?}", key.label))?;
        signature.as_slice().try_into().map_err(|_| {
            anyhow!(
                "the token returned a {}-byte ECDSA signature, expected 64",
                signature.len()
            )
        })
    }

    /// Signs `message` (hashed here with SHA-256) and returns the DER `ECDSA-Sig-Value`, as
    /// X.509 and TLS carry it.
    pub fn sign_sha256_der(&self, key: &P11Key, message: &[u8]) -> Result<Vec<u8>> {
        let digest = openssl::sha::sha256(message);
        raw_signature_to_der(&self.sign_digest(key, &digest)?)
    }

    /// Stores `cert` on the token as an X.509 certificate object with the key's `CKA_ID` and
    /// `CKA_LABEL`, replacing a different certificate with that `CKA_ID`.
    pub fn store_certificate(&self, key: &P11Key, cert: &X509) -> Result<CertificateStored> {
        let der = cert.to_der()?;
        let session = self.session();
        let existing = session
            .find_objects(&[
                Attribute::Class(ObjectClass::CERTIFICATE),
                Attribute::Id(key.id.clone()),
            ])
            .context("cannot search the token's certificates")?;
        let mut outcome = CertificateStored::Created;
        for handle in &existing {
            let value = session
                .get_attributes(*handle, &[AttributeType::Value])?
                .into_iter()
                .find_map(|a| match a {
                    Attribute::Value(v) => Some(v),
                    _ => None,
                });
            if value.as_deref() == Some(der.as_slice()) && existing.len() == 1 {
                return Ok(CertificateStored::Unchanged);
            }
            outcome = CertificateStored::Replaced;
        }
        let template = vec![
            Attribute::Class(ObjectClass::CERTIFICATE),
            Attribute::CertificateType(CertificateType::X_509),
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Id(key.id.clone()),
            Attribute::Label(key.label.as_bytes().to_vec()),
            Attribute::Subject(cert.subject_name().to_der()?),
            Attribute::Issuer(cert.issuer_name().to_der()?),
            Attribute::SerialNumber(serial_number_der(cert)?),
            Attribute::Value(der),
        ];
        // Add the new object first, so a failure leaves the old certificate in place.
        session
            .create_object(&template)
            .context("the token refused to store the certificate")?;
        for handle in existing {
            session
                .destroy_object(handle)
                .context("cannot remove the older certificate from the token")?;
        }
        Ok(outcome)
    }

    /// Whether the token generates key pairs (`CKM_EC_KEY_PAIR_GEN`: the module offers it on a
    /// device whose slot list shows a key store).
    pub fn generates_keys(&self) -> Result<bool> {
        Ok(self
            .mechanisms()?
            .contains(&cryptoki::mechanism::MechanismType::ECC_KEY_PAIR_GEN))
    }

    /// Generates a P-256 key pair on the token with `label` and `id` (the device makes the key;
    /// its private part never leaves it), and finds it.
    pub fn generate_key(&self, label: &str, id: &[u8]) -> Result<P11Key> {
        let common = [
            Attribute::Token(true),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(id.to_vec()),
        ];
        let mut public = vec![
            Attribute::EcParams(P256_PARAMS.to_vec()),
            Attribute::Verify(true),
        ];
        public.extend_from_slice(&common);
        let mut private = vec![
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
        ];
        private.extend_from_slice(&common);
        self.session()
            .generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private)
            .with_context(|| format!("token {:?} did not generate a key pair", self.label))?;
        self.find_key(label)
    }

    /// Whether a private key labelled `label` is on the token.
    pub fn has_key(&self, label: &str) -> Result<bool> {
        Ok(!self
            .session()
            .find_objects(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Label(label.as_bytes().to_vec()),
            ])
            .context("cannot search the token's keys")?
            .is_empty())
    }

    /// Removes `key` from the token (and the device: its private key object), with the
    /// certificates stored for it. A factory key stays (the module refuses to remove one):
    /// `Ok(false)` then, its certificates removed all the same.
    pub fn remove_key(&self, key: &P11Key) -> Result<bool> {
        let session = self.session();
        for handle in session.find_objects(&[
            Attribute::Class(ObjectClass::CERTIFICATE),
            Attribute::Id(key.id.clone()),
        ])? {
            session
                .destroy_object(handle)
                .context("cannot remove a certificate of the old key from the token")?;
        }
        match session.destroy_object(key.handle) {
            Ok(()) => Ok(true),
            Err(cryptoki::error::Error::Pkcs11(RvError::ActionProhibited, _)) => Ok(false),
            Err(e) => Err(e).with_context(|| format!("cannot remove key {:?}", key.label)),
        }
    }

    /// DER values of the certificates stored with `id`.
    pub fn certificates_with_id(&self, id: &[u8]) -> Result<Vec<Vec<u8>>> {
        let session = self.session();
        let handles = session.find_objects(&[
            Attribute::Class(ObjectClass::CERTIFICATE),
            Attribute::Id(id.to_vec()),
        ])?;
        let mut out = Vec::new();
        for handle in handles {
            for attr in session.get_attributes(handle, &[AttributeType::Value])? {
                if let Attribute::Value(v) = attr {
                    out.push(v);
                }
            }
        }
        Ok(out)
    }

    /// Every private key the token shows: its `CKA_ID`, label and curve (for `device
    /// selftest`, which compares them with the device's slots).
    pub fn key_objects(&self) -> Result<Vec<KeyObject>> {
        let session = self.session();
        let handles = session
            .find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)])
            .context("cannot search the token's keys")?;
        let mut keys = Vec::new();
        for handle in handles {
            let mut key = KeyObject::default();
            let attrs = session.get_attributes(
                handle,
                &[
                    AttributeType::Id,
                    AttributeType::Label,
                    AttributeType::KeyType,
                    AttributeType::EcParams,
                ],
            )?;
            for attr in attrs {
                match attr {
                    Attribute::Id(v) => key.id = v,
                    Attribute::Label(v) => key.label = String::from_utf8_lossy(&v).into_owned(),
                    Attribute::KeyType(t) => key.key_type = Some(t),
                    Attribute::EcParams(v) => key.params = Some(v),
                    _ => {}
                }
            }
            keys.push(key);
        }
        Ok(keys)
    }

    /// The mechanisms the token offers.
    pub fn mechanisms(&self) -> Result<Vec<cryptoki::mechanism::MechanismType>> {
        let slot = self.session().get_session_info()?.slot_id();
        let pkcs11 = self
            .pkcs11
            .as_ref()
            .expect("the module stays loaded until the token is dropped");
        Ok(pkcs11.get_mechanism_list(slot)?)
    }

    /// Loads `module` and opens the one token whose information `wanted` matches, logging in
    /// with the PIN `pin` gives when the token asks for one. For tokens other than the device's
    /// (a CA's), whose PIN is not `ZKIOT_PIN`; `pin` is called only when a PIN is needed.
    pub fn open_matching(
        module: &Path,
        wanted: &TokenMatch,
        pin: &dyn Fn() -> Result<AuthPin>,
    ) -> Result<Self> {
        ensure!(
            module.exists(),
            "PKCS#11 module {} not found",
            module.display()
        );
        let pkcs11 = load_module(module)?;
        let mut seen = Vec::new();
        let mut found = Vec::new();
        for slot in pkcs11
            .get_slots_with_token()
            .context("cannot list the module's slots")?
        {
            let info = pkcs11
                .get_token_info(slot)
                .context("cannot read token information")?;
            if !info.token_initialized() {
                continue;
            }
            if wanted.matches(&info) {
                found.push((slot, info));
            } else {
                seen.push(format!("{:?}", info.label().trim_end()));
            }
        }
        let (slot, info) = match found.len() {
            1 => found.remove(0),
            0 => bail!(
                "no token {wanted} in PKCS#11 module {} (found: {})",
                module.display(),
                if seen.is_empty() {
                    "none".to_string()
                } else {
                    seen.join(", ")
                }
            ),
            n => bail!(
                "{n} tokens {wanted} in PKCS#11 module {}; name one by its serial number too",
                module.display()
            ),
        };
        let label = info.label().trim_end().to_string();
        let session = pkcs11
            .open_rw_session(slot)
            .with_context(|| format!("cannot open a read-write session on token {label:?}"))?;
        if info.login_required() {
            log_in(&session, &label, &pin()?)?;
        }
        Ok(Self::opened(pkcs11, session, module, &info))
    }

    /// The one P-256 private key with this `CKA_LABEL` and/or `CKA_ID`; `None` if the token has
    /// none, an error if it has several or the key is not P-256.
    pub fn find_private_key(
        &self,
        label: Option<&str>,
        id: Option<&[u8]>,
    ) -> Result<Option<P11Key>> {
        ensure!(
            label.is_some() || id.is_some(),
            "a key is named by its label, its id, or both"
        );
        let mut template = vec![Attribute::Class(ObjectClass::PRIVATE_KEY)];
        if let Some(label) = label {
            template.push(Attribute::Label(label.as_bytes().to_vec()));
        }
        if let Some(id) = id {
            template.push(Attribute::Id(id.to_vec()));
        }
        let handles = self
            .session()
            .find_objects(&template)
            .context("cannot search the token's keys")?;
        match handles.as_slice() {
            [] => Ok(None),
            [one] => self.key_of_handle(*one, None).map(Some),
            more => bail!(
                "{} private keys on token {:?} match; a key's label or id must name it alone",
                more.len(),
                self.label
            ),
        }
    }

    /// Generates a P-256 key pair on the token: the private key sensitive, not extractable, for
    /// signing only. One device or HSM operation; the private key never leaves the token.
    pub fn generate_p256_key(&self, label: &str, id: Option<&[u8]>) -> Result<P11Key> {
        let mut public = vec![
            Attribute::Token(true),
            Attribute::Verify(true),
            Attribute::EcParams(P256_PARAMS.to_vec()),
            Attribute::Label(label.as_bytes().to_vec()),
        ];
        let mut private = vec![
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Label(label.as_bytes().to_vec()),
        ];
        if let Some(id) = id {
            public.push(Attribute::Id(id.to_vec()));
            private.push(Attribute::Id(id.to_vec()));
        }
        let (public_handle, private_handle) = self
            .session()
            .generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private)
            .with_context(|| format!("token {:?} could not generate a P-256 key", self.label))?;
        self.key_of_handle(private_handle, Some(public_handle))
    }

    /// A private key's label, id and public point (from the key, else from `public`, else from
    /// the public key with its `CKA_ID`); refuses a key that is not P-256.
    fn key_of_handle(&self, handle: ObjectHandle, public: Option<ObjectHandle>) -> Result<P11Key> {
        let session = self.session();
        let mut label = String::new();
        let mut id = Vec::new();
        let mut params = None;
        let mut point = None;
        let wanted = [
            AttributeType::Label,
            AttributeType::Id,
            AttributeType::EcParams,
            AttributeType::EcPoint,
        ];
        for attr in session
            .get_attributes(handle, &wanted)
            .context("cannot read the key's attributes")?
        {
            match attr {
                Attribute::Label(v) => label = String::from_utf8_lossy(&v).into_owned(),
                Attribute::Id(v) => id = v,
                Attribute::EcParams(v) => params = Some(v),
                Attribute::EcPoint(v) => point = Some(v),
                _ => {}
            }
        }
        ensure!(
            params.as_deref() == Some(P256_PARAMS),
            "key {label:?} on token {:?} is not a P-256 key",
            self.label
        );
        if point.is_none() {
            if let Some(public) = public {
                point = session
                    .get_attributes(public, &[AttributeType::EcPoint])?
                    .into_iter()
                    .find_map(|a| match a {
                        Attribute::EcPoint(v) => Some(v),
                        _ => None,
                    });
            }
        }
        drop(session);
        let point = match point {
            Some(p) => p,
            None => self.public_key_point_der(&id).with_context(|| {
                format!(
                    "key {label:?} shows no public key (no CKA_EC_POINT): store its public key \
                     on the token too, with the same CKA_ID"
                )
            })?,
        };
        let point = decode_ec_point(&point)
            .with_context(|| format!("key {label:?} has a malformed CKA_EC_POINT"))?;
        Ok(P11Key {
            handle,
            label,
            id,
            point,
        })
    }
}

/// A private key as the token shows it.
#[derive(Debug, Clone, Default)]
pub struct KeyObject {
    pub id: Vec<u8>,
    pub label: String,
    pub key_type: Option<cryptoki::object::KeyType>,
    /// `CKA_EC_PARAMS`: the curve's OID.
    pub params: Option<Vec<u8>>,
}

impl KeyObject {
    /// The key's curve, by name: `P-256`, `secp256k1`, `Ed25519`, `X25519`, or what is unknown.
    pub fn curve(&self) -> String {
        use cryptoki::object::KeyType;
        const SECP256K1: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a];
        match (self.key_type, self.params.as_deref()) {
            (Some(KeyType::EC), Some(P256_PARAMS)) => "P-256".into(),
            (Some(KeyType::EC), Some(SECP256K1)) => "secp256k1".into(),
            (Some(KeyType::EC_EDWARDS), _) => "Ed25519".into(),
            (Some(KeyType::EC_MONTGOMERY), _) => "X25519".into(),
            (t, _) => format!("unknown ({t:?})"),
        }
    }
}

/// Loads and initialises a PKCS#11 module (one already initialised in this process is used).
fn load_module(module: &Path) -> Result<Pkcs11> {
    let pkcs11 = Pkcs11::new(module)
        .with_context(|| format!("cannot load PKCS#11 module {}", module.display()))?;
    match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(cryptoki::error::Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {
            Ok(pkcs11)
        }
        Err(e) => Err(e)
            .with_context(|| format!("PKCS#11 module {} failed to initialize", module.display())),
    }
}

/// Logs the session's user in with `pin` (a session logged in already is fine).
fn log_in(session: &Session, label: &str, pin: &AuthPin) -> Result<()> {
    match session.login(UserType::User, Some(pin)) {
        Ok(()) | Err(cryptoki::error::Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
        Err(cryptoki::error::Error::Pkcs11(RvError::PinIncorrect, _)) => {
            bail!("token {label:?} refused the PIN")
        }
        Err(e) => Err(e).with_context(|| format!("cannot log in to token {label:?}")),
    }
}

/// The token's session, held by one thread at a time.
struct SessionGuard<'a>(MutexGuard<'a, Option<Session>>);

impl std::ops::Deref for SessionGuard<'_> {
    type Target = Session;

    fn deref(&self) -> &Session {
        self.0
            .as_ref()
            .expect("the session stays open until the token is dropped")
    }
}

impl Drop for P11Token {
    fn drop(&mut self) {
        let session = self.session.get_mut().unwrap_or_else(|p| p.into_inner());
        drop(session.take());
        if let Some(pkcs11) = self.pkcs11.take() {
            // Finalizing lets the module release the device and its store cleanly.
            let _ = pkcs11.finalize();
        }
    }
}

/// Accepts `CKA_EC_POINT` as PKCS#11 specifies it (DER OCTET STRING around the point), or as the
/// bare uncompressed point some modules return; gives the bare 65-byte point.
pub fn decode_ec_point(value: &[u8]) -> Result<Vec<u8>> {
    let point = match value {
        [0x04, 0x41, rest @ ..] if rest.len() == 65 => rest,
        [0x04, ..] if value.len() == 65 => value,
        _ => bail!("{} bytes that are neither a DER OCTET STRING holding an uncompressed P-256 point nor the point itself", value.len()),
    };
    ensure!(point[0] == 0x04, "the point is not uncompressed");
    public_key_from_point(point)?;
    Ok(point.to_vec())
}

/// An OpenSSL public key from an uncompressed P-256 point; fails if the point is not on the curve.
pub fn public_key_from_point(point: &[u8]) -> Result<PKey<Public>> {
    public_key_on(Nid::X9_62_PRIME256V1, point).context("not a P-256 point")
}

/// An OpenSSL public key from an uncompressed point on the curve `curve`; fails if the point is
/// not on it.
pub fn public_key_on(curve: Nid, point: &[u8]) -> Result<PKey<Public>> {
    let group = EcGroup::from_curve_name(curve)?;
    let mut ctx = BigNumContext::new()?;
    let point = EcPoint::from_bytes(&group, point, &mut ctx)?;
    Ok(PKey::from_ec_key(EcKey::from_public_key(&group, &point)?)?)
}

/// The uncompressed point of an EC P-256 public key.
pub fn point_of(key: &PKey<Public>) -> Result<Vec<u8>> {
    let ec = key.ec_key().context("not an EC key")?;
    ensure!(
        ec.group().curve_name() == Some(Nid::X9_62_PRIME256V1),
        "not a P-256 key"
    );
    let mut ctx = BigNumContext::new()?;
    Ok(ec
        .public_key()
        .to_bytes(ec.group(), PointConversionForm::UNCOMPRESSED, &mut ctx)?)
}

/// `r‖s` (32 bytes each) → DER `ECDSA-Sig-Value`.
pub fn raw_signature_to_der(raw: &[u8; 64]) -> Result<Vec<u8>> {
    let r = BigNum::from_slice(&raw[..32])?;
    let s = BigNum::from_slice(&raw[32..])?;
    Ok(EcdsaSig::from_private_components(r, s)?.to_der()?)
}

/// DER INTEGER of the certificate's serial number (`CKA_SERIAL_NUMBER`).
fn serial_number_der(cert: &X509) -> Result<Vec<u8>> {
    let bn = cert.serial_number().to_bn()?;
    let mut content = bn.to_vec();
    if content.is_empty() {
        content.push(0);
    }
    if content[0] & 0x80 != 0 {
        content.insert(0, 0);
    }
    use x509_cert::der::Encode;
    let int = x509_cert::der::asn1::Int::new(&content)?;
    Ok(int.to_der()?)
}

/// Which token [`P11Token::open_matching`] opens: every field given must equal the token's
/// (padding removed), as in an RFC 7512 URI's `token`, `manufacturer`, `serial` and `model`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenMatch {
    pub label: Option<String>,
    pub manufacturer: Option<String>,
    pub serial: Option<String>,
    pub model: Option<String>,
}

impl TokenMatch {
    fn matches(&self, info: &cryptoki::slot::TokenInfo) -> bool {
        let same = |wanted: &Option<String>, actual: &str| match wanted {
            None => true,
            Some(w) => w == actual.trim(),
        };
        same(&self.label, info.label())
            && same(&self.manufacturer, info.manufacturer_id())
            && same(&self.serial, info.serial_number())
            && same(&self.model, info.model())
    }
}

impl std::fmt::Display for TokenMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = [
            ("label", &self.label),
            ("manufacturer", &self.manufacturer),
            ("serial", &self.serial),
            ("model", &self.model),
        ]
        .iter()
        .filter_map(|(name, value)| value.as_ref().map(|v| format!("{name} {v:?}")))
        .collect();
        if parts.is_empty() {
            f.write_str("at all")
        } else {
            write!(f, "with {}", parts.join(", "))
        }
    }
}
