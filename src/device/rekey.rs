//! Renewal with a fresh key, where the Zymkey makes keys (HSM6, SCM, HSM60, ZYMKEY5: the
//! token offers `CKM_EC_KEY_PAIR_GEN`), run by the agent when renewal is due.
//!
//! 1. The device makes a P-256 key on the Zymkey, labelled `zkiot-<8 hex>`, and a CSR for it
//!    (same subject as the current certificate), and signs the CSR's DER with its *current*
//!    key (two device signatures).
//! 2. It posts both on its own Thing, as the attributes `zkiot_csr` and `zkiot_csr_signature`
//!    (base64url DER; an AWS IoT attribute value holds 800 characters, a P-256 CSR about 400),
//!    with the `UpdateThing` its role already allows for renewal. The operator's `zkiot fleet
//!    renew` signs the CSR only if that signature verifies with the key of one of the Thing's
//!    ACTIVE certificates: temporary credentials alone (which the agent hands to local apps)
//!    cannot enrol a key that is not the device's.
//! 3. Once the operator has registered and attached the certificate, the device finds it (for
//!    the new key, from the fleet CA, same subject, lasting longer), proves it with a
//!    credentials call signed by the new key, and switches.
//!
//! The switch is atomic. Its state is the journal `rekey.json` in the device folder, written
//! before the key is made (its label and id, the old key's label, then the CSR), and
//! `device.toml`, whose one atomic rewrite is the commit: `key_label` names the new key and
//! `certificate` the new certificate's file (`device.<label>.crt`), both at once. Before it
//! the token's certificate object for the new key is stored (beside the old one: another
//! `CKA_ID`); after it, `device.crt` gets the new certificate and `device.toml` points back at
//! it, the switch is recorded on the Thing (`zkiot_certificate`, the CSR attributes cleared)
//! with credentials from the new certificate, and only then is the old key removed from the
//! Zymkey with its certificate object (a factory key stays: the device cannot remove one), and
//! the journal deleted. A process killed at any step leaves either the old identity or the
//! new one, whole, in `device.toml`; the next run finds the journal and carries on from where
//! it stopped (the module itself finishes a key generation or removal cut short).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use openssl::x509::X509;
use serde::{Deserialize, Serialize};

use super::config::{DeviceConfig, CERT_FILE};
use super::net::provider::Credentials;
use super::renewal::{Renewal, Switched, CURRENT_CERTIFICATE_ATTRIBUTE};
use crate::fsutil;
use crate::p11::P11Key;
use crate::x509::{base64url, common_name, fingerprint, hex};

/// The journal of a fresh-key renewal in progress, in the device folder.
pub const JOURNAL_FILE: &str = "rekey.json";
/// The Thing attribute that carries the device's CSR for its fresh key (base64url DER).
pub const CSR_ATTRIBUTE: &str = "zkiot_csr";
/// The Thing attribute that carries the current key's signature over that CSR's DER
/// (base64url DER ECDSA-Sig-Value, SHA-256).
pub const CSR_SIGNATURE_ATTRIBUTE: &str = "zkiot_csr_signature";

/// What the journal holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    /// The fresh key's label and `CKA_ID` (hex).
    pub label: String,
    pub id: String,
    /// The label of the key it replaces.
    pub old_label: String,
    /// The CSR (base64url DER) and the old key's signature over it, once made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csr_signature: Option<String>,
}

impl Journal {
    fn path(dir: &Path) -> PathBuf {
        dir.join(JOURNAL_FILE)
    }

    /// The journal in `dir`, if a fresh-key renewal is in progress.
    pub fn load(dir: &Path) -> Result<Option<Self>> {
        let path = Self::path(dir);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .with_context(|| format!("bad {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    fn save(&self, dir: &Path) -> Result<()> {
        fsutil::write_atomic(
            &Self::path(dir),
            &serde_json::to_vec_pretty(self)?,
            fsutil::PUBLIC_MODE,
        )
    }

    /// A new journal for a fresh key replacing `old_label`.
    fn start(old_label: &str) -> Result<Self> {
        let mut random = [0u8; 8];
        openssl::rand::rand_bytes(&mut random)?;
        Ok(Self {
            label: format!("zkiot-{}", &hex(&random)[..8]),
            id: hex(&random),
            old_label: old_label.to_string(),
            csr: None,
            csr_signature: None,
        })
    }

    fn id_bytes(&self) -> Result<Vec<u8>> {
        (0..self.id.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(self.id.get(i..i + 2).unwrap_or("x"), 16))
            .collect::<Result<_, _>>()
            .with_context(|| format!("bad key id {:?} in {JOURNAL_FILE}", self.id))
    }
}

/// Whether a fresh-key renewal is in progress in `dir` (the agent then carries on with it
/// whether or not renewal is due).
pub fn in_progress(dir: &Path) -> bool {
    Journal::path(dir).exists()
}

/// One fresh-key renewal step for a device: what a renewal for the same key needs, its `key`
/// being the one the current certificate is for.
pub struct Rekey<'a>(pub Renewal<'a>);

impl<'a> std::ops::Deref for Rekey<'a> {
    type Target = Renewal<'a>;

    fn deref(&self) -> &Renewal<'a> {
        &self.0
    }
}

impl Rekey<'_> {
    /// Carries the renewal on as far as it goes now, with `credentials` from the current
    /// certificate: `Some` once switched (in this run, or in one that was cut short after its
    /// commit), `None` while the operator has not issued the new certificate yet.
    pub fn run(&self, credentials: &Credentials) -> Result<Option<Switched>> {
        let dir = &self.settings.dir;
        let journal = match Journal::load(dir)? {
            Some(journal) => journal,
            None => {
                let journal = Journal::start(&self.key.label)?;
                journal.save(dir)?;
                journal
            }
        };
        if journal.label == self.key.label {
            // Committed by an earlier run: finish what it left.
            self.finish(&journal, &self.settings.cert, credentials)?;
            return Ok(Some(Switched {
                cert: self.settings.cert.clone(),
                credentials: credentials.clone(),
            }));
        }

        let new_key = if self.token.has_key(&journal.label)? {
            self.token.find_key(&journal.label)?
        } else {
            eprintln!(
                "zkiot: making a fresh key {:?} on token {:?} for the renewal",
                journal.label,
                self.token.label()
            );
            self.token
                .generate_key(&journal.label, &journal.id_bytes()?)
                .context("cannot make a fresh key")?
        };
        let journal = self.with_csr(journal, &new_key)?;

        let renewal = Renewal {
            key: &new_key,
            ..self.0
        };
        let api = renewal.api(credentials)?;
        let Some(cert) = renewal.find(&api)? else {
            // Ask (again: an attribute cleared by mistake comes back).
            api.set_thing_attributes(
                &self.settings.request.thing,
                &[
                    (CSR_ATTRIBUTE, journal.csr.as_deref().unwrap_or_default()),
                    (
                        CSR_SIGNATURE_ATTRIBUTE,
                        journal.csr_signature.as_deref().unwrap_or_default(),
                    ),
                ],
            )
            .context("cannot post the CSR for the fresh key on the Thing")?;
            return Ok(None);
        };
        let proven = renewal.prove(&cert)?;
        self.commit(&journal, &new_key, &cert)?;
        self.finish(&journal, &cert, &proven)?;
        Ok(Some(Switched {
            cert,
            credentials: proven,
        }))
    }

    /// The journal with the CSR for `new_key` and the current key's signature over it, made
    /// once and kept.
    fn with_csr(&self, mut journal: Journal, new_key: &P11Key) -> Result<Journal> {
        if journal.csr.is_some() && journal.csr_signature.is_some() {
            return Ok(journal);
        }
        let thing = common_name(self.settings.cert.subject_name())
            .context("the current certificate's subject")?;
        let csr = super::csr::build_csr(self.token, new_key, &thing)?.to_der()?;
        let signature = self.token.sign_sha256_der(self.key, &csr)?;
        journal.csr = Some(base64url(&csr));
        journal.csr_signature = Some(base64url(&signature));
        journal.save(&self.settings.dir)?;
        Ok(journal)
    }

    /// The commit: the token's certificate object for the new key, the certificate's own file,
    /// then `device.toml` naming the new key and that file in one atomic rewrite.
    fn commit(&self, journal: &Journal, new_key: &P11Key, cert: &X509) -> Result<()> {
        let dir = &self.settings.dir;
        self.token.store_certificate(new_key, cert)?;
        let staged = staged_name(&journal.label);
        fsutil::write_atomic(&dir.join(&staged), &cert.to_pem()?, fsutil::PUBLIC_MODE)?;
        let mut config = DeviceConfig::load(dir)?;
        config.key_label = Some(journal.label.clone());
        config.certificate = Some(PathBuf::from(staged));
        config.save(dir)
    }

    /// After the commit: `device.crt` holds the new certificate `cert`, the switch is recorded
    /// on the Thing (with `credentials` from `cert`), the old key goes, the journal last. Each
    /// step may be repeated.
    fn finish(&self, journal: &Journal, cert: &X509, credentials: &Credentials) -> Result<()> {
        let dir = &self.settings.dir;
        let mut config = DeviceConfig::load(dir)?;
        let staged = dir.join(staged_name(&journal.label));
        if config.certificate.as_deref() != Some(Path::new(CERT_FILE)) {
            let pem = cert.to_pem()?;
            fsutil::write_atomic(&dir.join(CERT_FILE), &pem, fsutil::PUBLIC_MODE)?;
            config.certificate = Some(PathBuf::from(CERT_FILE));
            config.save(dir)?;
        }
        let _ = std::fs::remove_file(&staged);

        let new_id = fingerprint(cert)?;
        self.target
            .iot
            .api(credentials, self.settings.request.timeout)?
            .set_thing_attributes(
                &self.settings.request.thing,
                &[
                    (CURRENT_CERTIFICATE_ATTRIBUTE, &new_id),
                    (CSR_ATTRIBUTE, ""),
                    (CSR_SIGNATURE_ATTRIBUTE, ""),
                ],
            )
            .context("switched, but could not record it on the Thing; the next pass retries")?;

        // Recorded: the old key may go.
        if journal.old_label != journal.label && self.token.has_key(&journal.old_label)? {
            let old = self.token.find_key(&journal.old_label)?;
            if self.token.remove_key(&old)? {
                eprintln!("zkiot: removed the old key {:?}", journal.old_label);
            } else {
                eprintln!(
                    "zkiot: the old key {:?} is a factory key, which stays on the Zymkey (unused)",
                    journal.old_label
                );
            }
        }
        std::fs::remove_file(Journal::path(dir))
            .with_context(|| format!("cannot remove {JOURNAL_FILE}"))?;
        eprintln!(
            "zkiot: switched to a fresh key {:?} and certificate {new_id} (valid until {})",
            journal.label,
            cert.not_after()
        );
        Ok(())
    }
}

/// The file the new certificate is staged in until `device.crt` holds it.
fn staged_name(label: &str) -> String {
    format!("device.{label}.crt")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journals_round_trip_and_make_fresh_labels() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Journal::load(dir.path()).unwrap(), None);
        assert!(!in_progress(dir.path()));
        let a = Journal::start("slot0").unwrap();
        let b = Journal::start("slot0").unwrap();
        assert_ne!(a.label, b.label);
        assert!(
            a.label.starts_with("zkiot-") && a.label.len() == 14,
            "{}",
            a.label
        );
        assert_eq!(a.id_bytes().unwrap().len(), 8);
        a.save(dir.path()).unwrap();
        assert!(in_progress(dir.path()));
        assert_eq!(Journal::load(dir.path()).unwrap(), Some(a));
    }
}
