//! Test keys, certificates and CSRs, made with OpenSSL.
//!
//! [`Cert`] makes any test certificate: self-signed or issued, plain, a CA or a TLS leaf, with
//! a given serial number and validity. [`issue`] is the short form the AWS tests use.

use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{HasPublic, PKey, PKeyRef, Private};
use openssl::x509::extension::{
    BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
};
use openssl::x509::{
    X509Builder, X509Name, X509NameBuilder, X509Ref, X509Req, X509ReqBuilder, X509,
};

/// A new key on curve `nid`.
pub fn ec_key(nid: Nid) -> EcKey<Private> {
    EcKey::generate(&EcGroup::from_curve_name(nid).unwrap()).unwrap()
}

/// A new P-256 key.
pub fn p256() -> PKey<Private> {
    PKey::from_ec_key(ec_key(Nid::X9_62_PRIME256V1)).unwrap()
}

/// The name `CN=<cn>`.
pub fn name(cn: &str) -> X509Name {
    let mut n = X509NameBuilder::new().unwrap();
    n.append_entry_by_nid(Nid::COMMONNAME, cn).unwrap();
    n.build()
}

/// A random number below 2^31 (serial numbers, file names).
pub fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    openssl::rand::rand_bytes(&mut b).unwrap();
    u32::from_be_bytes(b) >> 1
}

/// What a certificate is for, by its extensions.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// No extension at all.
    Plain,
    /// A CA: basic constraints CA, key usage certificate and CRL signing (both critical).
    Ca,
    /// A TLS peer: basic constraints not a CA (critical), extended key usage client
    /// authentication, or server authentication when it has a DNS name.
    Leaf,
}

/// A test certificate, X.509 v3, `CN=<cn>`: by default self-signed, with a random serial
/// number, valid from five minutes ago for one day, without extensions.
pub struct Cert<'a> {
    cn: &'a str,
    serial: Option<u32>,
    days: (i64, u32),
    kind: Kind,
    dns: Option<&'a str>,
    issuer: Option<(&'a X509Ref, &'a PKeyRef<Private>)>,
}

impl<'a> Cert<'a> {
    pub fn new(cn: &'a str) -> Cert<'a> {
        Cert {
            cn,
            serial: None,
            days: (0, 1),
            kind: Kind::Plain,
            dns: None,
            issuer: None,
        }
    }

    pub fn serial(mut self, serial: u32) -> Self {
        self.serial = Some(serial);
        self
    }

    /// Valid from `start` days from now (five minutes earlier, for clocks) for `length` days:
    /// `(-20, 19)` ended yesterday.
    pub fn days(mut self, start: i64, length: u32) -> Self {
        self.days = (start, length);
        self
    }

    /// A CA certificate.
    pub fn ca(mut self) -> Self {
        self.kind = Kind::Ca;
        self
    }

    /// A TLS client certificate, or a server certificate with [`Cert::dns`].
    pub fn leaf(mut self) -> Self {
        self.kind = Kind::Leaf;
        self
    }

    /// A subject alternative name.
    pub fn dns(mut self, name: &'a str) -> Self {
        self.dns = Some(name);
        self
    }

    /// Issued by `cert` (its subject is the issuer name) and signed with its `key`.
    pub fn issued_by(mut self, cert: &'a X509Ref, key: &'a PKeyRef<Private>) -> Self {
        self.issuer = Some((cert, key));
        self
    }

    /// The certificate of `key`, signed by the issuer, or self-signed.
    pub fn build(self, key: &PKeyRef<Private>) -> X509 {
        let signer = self.issuer.map_or(key, |(_, issuer_key)| issuer_key);
        self.sign(key, signer)
    }

    /// The certificate of `key` signed by `signer`, another key, under the subject's own name
    /// unless [`Cert::issued_by`] names an issuer.
    pub fn sign<T: HasPublic>(self, key: &PKeyRef<T>, signer: &PKeyRef<Private>) -> X509 {
        let mut b = X509Builder::new().unwrap();
        b.set_version(2).unwrap();
        let serial = BigNum::from_u32(self.serial.unwrap_or_else(rand_u32))
            .unwrap()
            .to_asn1_integer()
            .unwrap();
        b.set_serial_number(&serial).unwrap();
        b.set_subject_name(&name(self.cn)).unwrap();
        match self.issuer {
            Some((cert, _)) => b.set_issuer_name(cert.subject_name()).unwrap(),
            None => b.set_issuer_name(&name(self.cn)).unwrap(),
        }
        b.set_pubkey(key).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let (start, length) = self.days;
        b.set_not_before(&Asn1Time::from_unix(now + start * 86400 - 300).unwrap())
            .unwrap();
        b.set_not_after(
            &Asn1Time::from_unix(now + start * 86400 + i64::from(length) * 86400).unwrap(),
        )
        .unwrap();
        match self.kind {
            Kind::Plain => {}
            Kind::Ca => {
                b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
                    .unwrap();
                b.append_extension(
                    KeyUsage::new()
                        .critical()
                        .key_cert_sign()
                        .crl_sign()
                        .build()
                        .unwrap(),
                )
                .unwrap();
            }
            Kind::Leaf => {
                b.append_extension(BasicConstraints::new().critical().build().unwrap())
                    .unwrap();
                let mut eku = ExtendedKeyUsage::new();
                if self.dns.is_some() {
                    eku.server_auth();
                } else {
                    eku.client_auth();
                }
                b.append_extension(eku.build().unwrap()).unwrap();
            }
        }
        if let Some(dns) = self.dns {
            let san = SubjectAlternativeName::new()
                .dns(dns)
                .build(&b.x509v3_context(self.issuer.map(|(cert, _)| cert), None))
                .unwrap();
            b.append_extension(san).unwrap();
        }
        b.sign(signer, MessageDigest::sha256()).unwrap();
        b.build()
    }
}

/// A certificate for `key`, named `cn`, issued by `issuer` (self-signed when `None`): a CA, or
/// a TLS peer (a server when it has the DNS name `dns`), valid `days` as [`Cert::days`] says.
pub fn issue(
    cn: &str,
    key: &PKey<Private>,
    issuer: Option<(&X509, &PKey<Private>)>,
    ca: bool,
    dns: Option<&str>,
    days: (i64, u32),
) -> X509 {
    let mut cert = Cert::new(cn).days(days.0, days.1);
    cert = if ca { cert.ca() } else { cert.leaf() };
    if let Some(dns) = dns {
        cert = cert.dns(dns);
    }
    if let Some((issuer_cert, issuer_key)) = issuer {
        cert = cert.issued_by(issuer_cert, issuer_key);
    }
    cert.build(key)
}

/// A CSR for `key` with CN = `cn`.
pub fn csr(cn: &str, key: &PKey<Private>) -> X509Req {
    let mut b = X509ReqBuilder::new().unwrap();
    b.set_subject_name(&name(cn)).unwrap();
    b.set_pubkey(key).unwrap();
    b.sign(key, MessageDigest::sha256()).unwrap();
    b.build()
}
