//! The operator's certificate authority: a CA certificate (`ca/ca.crt`) and a key that issue
//! the device certificates AWS IoT registers. The key is a file, a P-256 key in a PKCS#11 token,
//! or an AWS Private CA ([`location`] says which, from `ca/ca.toml`); every command that needs
//! the CA gets it from [`CertificateAuthority::open`], and every CA signature goes through
//! [`CertificateAuthority`], so a token's key signs in the token and a Private CA issues itself.
//!
//! [`CertificateAuthority::open`] refuses a CA that cannot sign safely (key not matching the
//! certificate, not a CA, not yet valid or expired); [`CertificateAuthority::sign_csr`] refuses a
//! CSR whose self-signature does not verify or whose subject is not a thing name.

mod cli;
mod init;
pub mod location;
pub mod pkcs11_uri;
#[cfg(feature = "aws")]
mod private_ca;
mod sign;
mod status;
mod subject;
mod token;

use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use openssl::asn1::{Asn1Integer, Asn1Time, Asn1TimeRef};
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{HasPublic, Id, PKey, PKeyRef, Private, Public};
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectKeyIdentifier,
};
use openssl::x509::{X509Builder, X509NameRef, X509};
use x509_cert::der::Decode;

use crate::thing_name::validate_thing_name;
use crate::x509::{
    check_valid_now, common_name, csr_common_name, fingerprint, name_to_string, parse_csr,
    verify_chain,
};
use crate::{fsutil, GlobalOpts};
use location::KeyLocation;
use token::TokenKey;

pub use cli::CaCommand;
pub use location::CA_PIN_ENV;
pub use subject::parse_subject;

/// Default subject of a new CA certificate.
pub const DEFAULT_CA_SUBJECT: &str = "/CN=zkiot device CA";
/// Default validity of a new CA certificate, in days.
pub const DEFAULT_CA_DAYS: u32 = 3650;
/// Default validity of a device certificate, in days.
pub const DEFAULT_DEVICE_DAYS: u32 = 365;
/// Validity of a register-ca verification certificate, in days.
const VERIFICATION_DAYS: u32 = 7;
/// Certificates start a little in the past, so a device whose clock lags still accepts them.
const BACKDATE_SECONDS: i64 = 300;

/// How [`CertificateAuthority::sign_csr`] issues a device certificate.
#[derive(Debug, Clone)]
pub struct SignOptions {
    /// Validity in days from now (ignored when `not_after` is set).
    pub days: u32,
    /// Exact end of validity.
    pub not_after: Option<time::OffsetDateTime>,
    /// When set, the CSR's CN must equal it.
    pub expected_cn: Option<String>,
}

impl Default for SignOptions {
    fn default() -> Self {
        Self {
            days: DEFAULT_DEVICE_DAYS,
            not_after: None,
            expected_cn: None,
        }
    }
}

/// A CA certificate with what signs for it, checked to belong together.
pub struct CertificateAuthority {
    cert: X509,
    key: CaKey,
}

/// What makes the CA's signatures.
enum CaKey {
    /// A key file's key, in this process.
    File(PKey<Private>),
    /// A key in a PKCS#11 token: each signature is one `C_Sign` there.
    Token(Box<TokenKey>),
    /// AWS Private CA: it issues the certificates itself.
    #[cfg(feature = "aws")]
    PrivateCa(private_ca::PrivateCa),
}

impl CaKey {
    /// The public key of a key the CA holds (none for a Private CA, which AWS holds).
    fn public_key(&self) -> Result<Option<PKey<Public>>> {
        match self {
            Self::File(key) => Ok(Some(PKey::public_key_from_der(&key.public_key_to_der()?)?)),
            Self::Token(token) => token.public_key().map(Some),
            #[cfg(feature = "aws")]
            Self::PrivateCa(_) => Ok(None),
        }
    }
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("subject", &name_to_string(self.cert.subject_name()))
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Makes a new CA: a P-256 key and a self-signed certificate with `subject`
    /// (`/CN=…/O=…`), valid for `days`.
    pub fn create(subject: &str, days: u32) -> Result<Self> {
        Self::self_signed(subject, days, CaKey::File(generate_p256_key()?))
    }

    /// A self-signed CA certificate for `key`, signed by it.
    fn self_signed(subject: &str, days: u32, key: CaKey) -> Result<Self> {
        ensure!(days > 0, "the CA validity must be at least one day");
        let name = parse_subject(subject)?;
        let public_key = key
            .public_key()?
            .context("a Private CA makes its own certificate")?;

        let mut builder = X509Builder::new()?;
        builder.set_version(2)?;
        builder.set_serial_number(random_serial()?.as_ref())?;
        builder.set_subject_name(&name)?;
        builder.set_issuer_name(&name)?;
        builder.set_pubkey(&public_key)?;
        let (not_before, not_after) = validity(days, None)?;
        builder.set_not_before(&not_before)?;
        builder.set_not_after(&not_after)?;
        builder.append_extension(BasicConstraints::new().critical().ca().pathlen(0).build()?)?;
        builder.append_extension(
            KeyUsage::new()
                .critical()
                .key_cert_sign()
                .crl_sign()
                .build()?,
        )?;
        let ski = SubjectKeyIdentifier::new().build(&builder.x509v3_context(None, None))?;
        builder.append_extension(ski)?;
        let cert = sign_with(&key, builder)?;
        Self::checked(cert, key)
    }

    /// Loads the CA from PEM files, and checks that the key matches the certificate and that the
    /// certificate is a CA valid now.
    pub fn load(cert: &Path, key: &Path) -> Result<Self> {
        let cert_pem = fsutil::read(cert)?;
        let cert_x509 = X509::from_pem(&cert_pem)
            .with_context(|| format!("{} is not a PEM certificate", cert.display()))?;
        let key_pem = fsutil::read(key)?;
        let key_pkey = PKey::private_key_from_pem(&key_pem)
            .with_context(|| format!("{} is not a PEM private key", key.display()))?;
        Self::from_parts(cert_x509, key_pkey)
            .with_context(|| format!("unusable CA {} / {}", cert.display(), key.display()))
    }

    /// Pairs a certificate and key after the checks of [`CertificateAuthority::load`].
    pub fn from_parts(cert: X509, key: PKey<Private>) -> Result<Self> {
        Self::checked(cert, CaKey::File(key))
    }

    /// The checks of [`CertificateAuthority::load`], for any kind of key.
    fn checked(cert: X509, key: CaKey) -> Result<Self> {
        if let Some(public_key) = key.public_key()? {
            if !cert.public_key()?.public_eq(&public_key) {
                bail!("the CA private key does not match the CA certificate");
            }
        }
        check_is_ca(&cert)?;
        check_valid_now(&cert, "CA certificate")?;
        Ok(Self { cert, key })
    }

    /// The operator's CA, wherever its key lives (`ca/ca.toml`, else the key file): the one
    /// place every command that signs gets it from.
    pub fn open(global: &GlobalOpts) -> Result<Self> {
        let location = KeyLocation::read(global)?;
        let cert_path = global.ca_cert_path();
        let key = match &location {
            KeyLocation::File(key_path) => return Self::load(&cert_path, key_path),
            KeyLocation::Token { uri, module } => {
                CaKey::Token(Box::new(TokenKey::open(uri, module)?))
            }
            #[cfg(feature = "aws")]
            KeyLocation::PrivateCa(arn) => CaKey::PrivateCa(private_ca::PrivateCa::connect(arn)?),
            #[cfg(not(feature = "aws"))]
            KeyLocation::PrivateCa(_) => {
                bail!("the CA is an AWS Private CA, and this zkiot is built without AWS support")
            }
        };
        let cert = X509::from_pem(&fsutil::read(&cert_path)?)
            .with_context(|| format!("{} is not a PEM certificate", cert_path.display()))?;
        Self::checked(cert, key)
            .with_context(|| format!("unusable CA {} / {}", cert_path.display(), location.short()))
    }

    /// The CA certificate alone, checked to be valid now, for what needs no CA signature
    /// (registering a device, SNI_ONLY registration). A key file, when the CA has one, must
    /// match it (a mismatched pair means the folder is not what the operator thinks); a token
    /// or a Private CA is not opened.
    pub fn certificate_only(global: &GlobalOpts) -> Result<X509> {
        let cert_path = global.ca_cert_path();
        if let KeyLocation::File(key_path) = KeyLocation::read(global)? {
            if key_path.exists() {
                return Ok(Self::load(&cert_path, &key_path)?.cert);
            }
        }
        let cert = X509::from_pem(&fsutil::read(&cert_path)?)
            .with_context(|| format!("{} is not a PEM certificate", cert_path.display()))?;
        check_valid_now(&cert, "CA certificate")?;
        Ok(cert)
    }

    /// Writes the key (0600) and the certificate as PEM; refuses to replace either unless
    /// `force`.
    pub fn save(&self, cert_path: &Path, key_path: &Path, force: bool) -> Result<()> {
        let CaKey::File(key) = &self.key else {
            bail!("only a key file's CA is saved with its key");
        };
        for path in [cert_path, key_path] {
            if path.exists() && !force {
                bail!(
                    "{} already exists; not overwriting it (use --force to replace the CA)",
                    path.display()
                );
            }
            if let Some(dir) = path.parent() {
                fsutil::ensure_dir(dir, 0o700)?;
            }
        }
        fsutil::write_atomic(
            key_path,
            &key.private_key_to_pem_pkcs8()?,
            fsutil::SECRET_MODE,
        )?;
        fsutil::write_atomic(cert_path, &self.cert.to_pem()?, fsutil::PUBLIC_MODE)
    }

    /// The CA certificate.
    pub fn certificate(&self) -> &X509 {
        &self.cert
    }

    /// Issues a device (client) certificate for a PKCS#10 CSR in PEM (or DER).
    ///
    /// The CSR's self-signature must verify, its key must be EC P-256/P-384 or RSA ≥ 2048, and its
    /// subject must hold exactly one CN that is a valid thing name (and equals
    /// `opts.expected_cn` when set). The certificate copies the CSR's subject and key and has a
    /// random positive 128-bit serial, SHA-256, `CA:FALSE`, critical `digitalSignature`,
    /// `clientAuth`, and subject and authority key identifiers. Its validity may not outlast the
    /// CA's.
    pub fn sign_csr(&self, csr_pem: &[u8], opts: &SignOptions) -> Result<X509> {
        let csr = parse_csr(csr_pem)?;
        let public_key = csr
            .public_key()
            .context("cannot read the CSR's public key")?;
        if !csr.verify(&public_key).unwrap_or(false) {
            bail!("the CSR's signature does not verify with its own public key (corrupt or forged CSR)");
        }
        check_device_key(&public_key)?;
        let cn = csr_common_name(&csr)?;
        validate_thing_name(&cn).context("the CSR's CN is not a usable thing name")?;
        if let Some(expected) = &opts.expected_cn {
            if &cn != expected {
                bail!("the CSR's CN is {cn:?}, expected {expected:?}");
            }
        }

        let (not_before, not_after) = validity(opts.days, opts.not_after)?;
        if not_after > self.cert.not_after() {
            bail!(
                "the certificate would end after the CA does ({}); choose a shorter validity",
                self.cert.not_after()
            );
        }

        #[cfg(feature = "aws")]
        if let CaKey::PrivateCa(pca) = &self.key {
            let request = format!("{:?} {:?}", opts.days, opts.not_after);
            let cert = pca.issue(
                &csr.to_pem()?,
                end_of_validity(opts.days, opts.not_after)?,
                &self.cert,
                &[csr.to_der()?, request.into_bytes()].concat(),
            )?;
            ensure!(
                cert.public_key()?.public_eq(&public_key),
                "the Private CA issued a certificate for another key than the CSR's"
            );
            ensure!(
                common_name(cert.subject_name()).ok().as_deref() == Some(cn.as_str()),
                "the Private CA issued a certificate whose CN is not the CSR's {cn:?}"
            );
            verify_chain(&cert, &self.cert)
                .context("the certificate the Private CA issued does not verify")?;
            return Ok(cert);
        }

        self.issue_device_certificate(csr.subject_name(), &public_key, &not_before, &not_after)
    }

    /// Issues the next certificate for a device: the same subject and public key as `current`,
    /// which this CA must have issued (its signature verifies under the CA key and its issuer
    /// is the CA's subject), valid as `opts` says. The device key never leaves the device: the
    /// public key is taken from the certificate AWS IoT holds.
    pub fn renew(&self, current: &X509, opts: &SignOptions) -> Result<X509> {
        #[cfg(feature = "aws")]
        if let CaKey::PrivateCa(pca) = &self.key {
            bail!(
                "AWS Private CA {} issues certificates for CSRs only, and the device's key is on \
                 the device: have it make a new CSR (`zkiot device csr`) and provision that",
                pca.arn()
            );
        }
        let ca_key = self.cert.public_key()?;
        ensure!(
            current.verify(&ca_key).unwrap_or(false)
                && current.issuer_name().to_der()? == self.cert.subject_name().to_der()?,
            "certificate {} was not issued by this CA ({})",
            name_to_string(current.subject_name()),
            name_to_string(self.cert.subject_name())
        );
        let public_key = current.public_key()?;
        check_device_key(&public_key)?;
        let cn = common_name(current.subject_name()).context("the certificate's subject")?;
        validate_thing_name(&cn).context("the certificate's CN is not a usable thing name")?;
        let (not_before, not_after) = validity(opts.days, opts.not_after)?;
        if not_after > self.cert.not_after() {
            bail!(
                "the certificate would end after the CA does ({}); choose a shorter validity",
                self.cert.not_after()
            );
        }
        self.issue_device_certificate(current.subject_name(), &public_key, &not_before, &not_after)
    }

    /// A client certificate for `public_key`, checked against the CA before it is returned.
    fn issue_device_certificate(
        &self,
        subject: &X509NameRef,
        public_key: &PKeyRef<Public>,
        not_before: &Asn1TimeRef,
        not_after: &Asn1TimeRef,
    ) -> Result<X509> {
        let cert = self.issue(subject, public_key, (not_before, not_after), |builder| {
            builder.append_extension(KeyUsage::new().critical().digital_signature().build()?)?;
            builder.append_extension(ExtendedKeyUsage::new().client_auth().build()?)?;
            Ok(())
        })?;
        verify_chain(&cert, &self.cert).context("the certificate just issued does not verify")?;
        Ok(cert)
    }

    /// The verification certificate AWS IoT asks for when a CA is registered: a fresh P-256 key
    /// (thrown away) whose certificate has CN = `registration_code` and is signed by this CA.
    pub fn sign_verification_certificate(&self, registration_code: &str) -> Result<X509> {
        ensure!(
            !registration_code.is_empty() && registration_code.len() <= 64,
            "the registration code must be 1 to 64 characters long"
        );
        let key = generate_p256_key()?;
        let mut name = openssl::x509::X509NameBuilder::new()?;
        name.append_entry_by_nid(Nid::COMMONNAME, registration_code)?;
        let name = name.build();
        #[cfg(feature = "aws")]
        if let CaKey::PrivateCa(pca) = &self.key {
            // The Private CA issues it for a CSR of the throwaway key.
            let mut req = openssl::x509::X509ReqBuilder::new()?;
            req.set_subject_name(&name)?;
            req.set_pubkey(&key)?;
            req.sign(&key, MessageDigest::sha256())?;
            let csr = req.build();
            let end = end_of_validity(VERIFICATION_DAYS, None)?;
            let ca_end = unix_time(self.cert.not_after())?;
            return pca.issue(&csr.to_pem()?, end.min(ca_end), &self.cert, &csr.to_der()?);
        }
        let (not_before, not_after) = validity(VERIFICATION_DAYS, None)?;
        let not_after = if not_after > self.cert.not_after() {
            Asn1Time::from_str(&self.cert.not_after().to_string()).unwrap_or(not_after)
        } else {
            not_after
        };
        self.issue(&name, &key, (&not_before, &not_after), |_| Ok(()))
    }

    /// Issues an end-entity certificate signed by this CA: version 3, a random serial,
    /// basicConstraints CA:FALSE, the extensions `extend` adds, SKI and AKI, SHA-256.
    fn issue<K: HasPublic>(
        &self,
        subject: &X509NameRef,
        public_key: &PKeyRef<K>,
        (not_before, not_after): (&Asn1TimeRef, &Asn1TimeRef),
        extend: impl FnOnce(&mut X509Builder) -> Result<(), openssl::error::ErrorStack>,
    ) -> Result<X509> {
        let mut builder = X509Builder::new()?;
        builder.set_version(2)?;
        builder.set_serial_number(random_serial()?.as_ref())?;
        builder.set_subject_name(subject)?;
        builder.set_issuer_name(self.cert.subject_name())?;
        builder.set_pubkey(public_key)?;
        builder.set_not_before(not_before)?;
        builder.set_not_after(not_after)?;
        builder.append_extension(BasicConstraints::new().critical().build()?)?;
        extend(&mut builder)?;
        let ski =
            SubjectKeyIdentifier::new().build(&builder.x509v3_context(Some(&self.cert), None))?;
        builder.append_extension(ski)?;
        let aki = AuthorityKeyIdentifier::new()
            .keyid(true)
            .build(&builder.x509v3_context(Some(&self.cert), None))?;
        builder.append_extension(aki)?;
        sign_with(&self.key, builder)
    }

    /// Where the key lives, in one line (for `ca status`).
    fn key_description(&self, location: &KeyLocation) -> String {
        match &self.key {
            CaKey::File(_) => location.short(),
            CaKey::Token(token) => token.describe(),
            #[cfg(feature = "aws")]
            CaKey::PrivateCa(pca) => format!("AWS Private CA {}", pca.arn()),
        }
    }
}

/// Signs the certificate `builder` holds with the CA's key, where the key is.
fn sign_with(key: &CaKey, mut builder: X509Builder) -> Result<X509> {
    match key {
        CaKey::File(key) => {
            builder.sign(key, MessageDigest::sha256())?;
            Ok(builder.build())
        }
        CaKey::Token(token) => token.sign(builder),
        #[cfg(feature = "aws")]
        CaKey::PrivateCa(pca) => bail!(
            "AWS Private CA {} signs only the certificates it issues itself",
            pca.arn()
        ),
    }
}

/// Runs one `zkiot ca …` command.
pub fn run(command: CaCommand, global: &GlobalOpts) -> Result<()> {
    match command {
        CaCommand::Init(args) => init::init(args, global),
        CaCommand::Sign(args) => sign::sign(args, global),
        CaCommand::Status => status::status(global),
    }
}

/// The lines `ca init` and `ca sign` print about a certificate.
pub(crate) fn describe(cert: &X509) -> Result<String> {
    Ok(format!(
        "  subject:     {}\n  valid until: {}\n  SHA-256:     {}",
        name_to_string(cert.subject_name()),
        cert.not_after(),
        fingerprint(cert)?
    ))
}

fn check_is_ca(cert: &X509) -> Result<()> {
    use x509_cert::der::oid::AssociatedOid;
    use x509_cert::ext::pkix::{BasicConstraints as Bc, KeyUsage as Ku, KeyUsages};
    let der = cert.to_der()?;
    let parsed =
        x509_cert::Certificate::from_der(&der).context("cannot parse the CA certificate")?;
    let extensions = parsed.tbs_certificate.extensions.unwrap_or_default();
    let mut is_ca = false;
    for ext in &extensions {
        if ext.extn_id == Bc::OID {
            is_ca = Bc::from_der(ext.extn_value.as_bytes())
                .context("bad basicConstraints in the CA certificate")?
                .ca;
        } else if ext.extn_id == Ku::OID {
            let usage = Ku::from_der(ext.extn_value.as_bytes())
                .context("bad keyUsage in the CA certificate")?;
            ensure!(
                usage.0.contains(KeyUsages::KeyCertSign),
                "the CA certificate's keyUsage does not allow signing certificates"
            );
        }
    }
    ensure!(
        is_ca,
        "the certificate is not a CA certificate (basicConstraints CA:TRUE missing)"
    );
    Ok(())
}

fn check_device_key(key: &PKeyRef<Public>) -> Result<()> {
    match key.id() {
        Id::EC => {
            let ec = key.ec_key()?;
            let nid = ec.group().curve_name();
            ensure!(
                matches!(nid, Some(Nid::X9_62_PRIME256V1) | Some(Nid::SECP384R1)),
                "the CSR's EC key is not on P-256 or P-384"
            );
        }
        Id::RSA => ensure!(
            key.bits() >= 2048,
            "the CSR's RSA key is shorter than 2048 bits"
        ),
        _ => bail!("the CSR's key is neither EC nor RSA"),
    }
    Ok(())
}

fn generate_p256_key() -> Result<PKey<Private>> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    Ok(PKey::from_ec_key(EcKey::generate(&group)?)?)
}

/// 16 random bytes, read as a positive non-zero integer (RFC 5280: at most 20 octets).
fn random_serial() -> Result<Asn1Integer> {
    let mut bytes = [0u8; 16];
    loop {
        openssl::rand::rand_bytes(&mut bytes)?;
        bytes[0] &= 0x7f;
        if bytes[0] != 0 {
            break;
        }
    }
    Ok(BigNum::from_slice(&bytes)?.to_asn1_integer()?)
}

fn validity(days: u32, not_after: Option<time::OffsetDateTime>) -> Result<(Asn1Time, Asn1Time)> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let end = end_of_validity(days, not_after)?;
    Ok((
        Asn1Time::from_unix(now - BACKDATE_SECONDS)?,
        Asn1Time::from_unix(end)?,
    ))
}

/// An ASN.1 time as Unix time.
#[cfg(feature = "aws")]
fn unix_time(t: &Asn1TimeRef) -> Result<i64> {
    let since_epoch = Asn1Time::from_unix(0)?.diff(t)?;
    Ok(i64::from(since_epoch.days) * 86_400 + i64::from(since_epoch.secs))
}

/// The end of validity, in Unix time: `not_after`, else `days` from now.
fn end_of_validity(days: u32, not_after: Option<time::OffsetDateTime>) -> Result<i64> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let end = match not_after {
        Some(t) => t.unix_timestamp(),
        None => {
            ensure!(days > 0, "the validity must be at least one day");
            now + i64::from(days) * 86_400
        }
    };
    ensure!(end > now, "the end of validity is in the past");
    Ok(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verification_certificate_names_the_code_and_verifies_under_the_ca() {
        let ca = CertificateAuthority::create("/CN=Unit CA", 30).unwrap();
        let code = "9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b";
        let cert = ca.sign_verification_certificate(code).unwrap();
        assert_eq!(common_name(cert.subject_name()).unwrap(), code);
        assert!(cert
            .verify(&ca.certificate().public_key().unwrap())
            .unwrap());
        assert!(!cert
            .public_key()
            .unwrap()
            .public_eq(&ca.certificate().public_key().unwrap()));
        assert!(cert.not_after() <= ca.certificate().not_after());
        assert!(ca.sign_verification_certificate("").is_err());
    }

    #[test]
    fn issued_certificates_never_outlive_the_ca() {
        let ca = CertificateAuthority::create("/CN=Short CA", 10).unwrap();
        let key = generate_p256_key().unwrap();
        let mut name = openssl::x509::X509NameBuilder::new().unwrap();
        name.append_entry_by_nid(Nid::COMMONNAME, "dev-1").unwrap();
        let mut req = openssl::x509::X509ReqBuilder::new().unwrap();
        req.set_subject_name(&name.build()).unwrap();
        req.set_pubkey(&key).unwrap();
        req.sign(&key, MessageDigest::sha256()).unwrap();
        let pem = req.build().to_pem().unwrap();
        let err = ca.sign_csr(&pem, &SignOptions::default()).unwrap_err();
        assert!(format!("{err:#}").contains("end after the CA"), "{err:#}");
        let opts = SignOptions {
            days: 5,
            ..SignOptions::default()
        };
        let cert = ca.sign_csr(&pem, &opts).unwrap();
        verify_chain(&cert, ca.certificate()).unwrap();
        let opts = SignOptions {
            not_after: Some(time::OffsetDateTime::now_utc() + time::Duration::days(3)),
            expected_cn: Some("dev-1".into()),
            ..SignOptions::default()
        };
        let cert = ca.sign_csr(&pem, &opts).unwrap();
        let days = cert.not_before().diff(cert.not_after()).unwrap().days;
        assert_eq!(days, 3);
    }
}
