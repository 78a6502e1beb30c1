//! The device's side of certificate renewal, run by `zkiot device credentials` when it holds
//! fresh credentials and its certificate expires within the renewal window.
//!
//! The operator (`zkiot fleet renew`) registers a new certificate for the device's own key and
//! attaches it to its Thing. With the credentials it already has, the device lists its Thing's
//! principals and reads the newest ACTIVE certificate that carries the token's public key,
//! chains to the fleet CA it installed and lasts longer than the current one. It proves the new
//! certificate with a credentials call, then installs it atomically (the certificate file, then
//! the token's certificate object) and records the switch in its Thing's `zkiot_certificate`
//! attribute, which tells the operator that the old certificate may go. Anything that fails
//! leaves the device as it was, with its old certificate, and is reported as a warning.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use openssl::x509::X509;

use super::iot_api::IotApi;
use super::labels::Labels;
use super::provider::{self, Credentials, CredentialsRequest};
use crate::p11::{point_of, P11Token};
use crate::x509::{check_valid_now, fingerprint, verify_chain};
use crate::{fsutil, GlobalOpts};

/// The Thing attribute in which the device records the certificate it switched to.
pub const CURRENT_CERTIFICATE_ATTRIBUTE: &str = "zkiot_certificate";
/// Renew when the certificate expires within this many days, unless device.toml says otherwise.
pub const DEFAULT_RENEW_WITHIN_DAYS: u32 = 30;

/// What the device needs to look for, and where to put what it finds.
pub struct Renewal<'a> {
    pub global: &'a GlobalOpts,
    pub request: &'a CredentialsRequest,
    pub labels: &'a Labels,
    /// The certificate in use, and its file.
    pub current: &'a X509,
    pub cert_path: &'a Path,
    /// The fleet CA installed with the certificate.
    pub ca: &'a X509,
    /// The AWS IoT API endpoint and the region to sign for.
    pub iot_api: &'a str,
    pub region: &'a str,
    pub within_days: u32,
}

/// The certificate switched to, and credentials obtained with it.
pub struct Switched {
    pub cert: X509,
    pub credentials: Credentials,
}

impl Renewal<'_> {
    /// Whether the current certificate expires within the window.
    pub fn due(&self) -> Result<bool> {
        let limit = openssl::asn1::Asn1Time::days_from_now(self.within_days)?;
        Ok(self.current.not_after() <= limit)
    }

    /// Looks for a newer certificate for this device and switches to it. `None` when there is
    /// none yet.
    pub fn pick_up(&self, credentials: &Credentials) -> Result<Option<Switched>> {
        let api = IotApi::new(self.iot_api, self.region, credentials, self.request.timeout)?;
        let thing = &self.request.thing;
        let current_id = fingerprint(self.current)?;
        let token = Arc::new(P11Token::open(&self.global.module, &self.labels.token)?);
        let key = token.find_key(&self.labels.key)?;
        let mut best: Option<X509> = None;
        for arn in api.list_thing_principals(thing)? {
            let Some((_, id)) = arn.split_once(":cert/") else {
                continue;
            };
            if id == current_id {
                continue;
            }
            let described = api.describe_certificate(id)?;
            if described.status != "ACTIVE" {
                continue;
            }
            let cert = match X509::from_pem(described.certificate_pem.as_bytes()) {
                Ok(cert) => cert,
                Err(_) => continue,
            };
            match self.acceptable(&cert, &key.point) {
                Ok(()) => {
                    let newer = best.as_ref().map_or(true, |b| {
                        cert.not_after()
                            .compare(b.not_after())
                            .is_ok_and(|o| o == std::cmp::Ordering::Greater)
                    });
                    if newer {
                        best = Some(cert);
                    }
                }
                Err(e) => {
                    eprintln!("zkiot: warning: certificate {id} on thing {thing} refused: {e:#}")
                }
            }
        }
        let Some(cert) = best else {
            return Ok(None);
        };

        // Prove it before anything changes: the credentials provider must accept it.
        let proven = provider::fetch(
            self.request,
            Arc::clone(&token),
            &self.labels.key,
            cert.to_der()?,
        )
        .context("the new certificate does not get credentials; keeping the current one")?;

        // Install: the file atomically, then the token's object (added before the old one goes).
        fsutil::write_atomic(self.cert_path, &cert.to_pem()?, fsutil::PUBLIC_MODE)?;
        token.store_certificate(&key, &cert)?;

        // Tell the operator, with credentials from the new certificate.
        let new_id = fingerprint(&cert)?;
        IotApi::new(self.iot_api, self.region, &proven, self.request.timeout)?
            .set_thing_attribute(thing, CURRENT_CERTIFICATE_ATTRIBUTE, &new_id)
            .context("switched, but could not record it on the Thing; the next call retries")?;
        eprintln!(
            "zkiot: switched to certificate {new_id} (valid until {})",
            cert.not_after()
        );
        Ok(Some(Switched {
            cert,
            credentials: proven,
        }))
    }

    /// A certificate this device may switch to: for the token's key, from the fleet CA, valid
    /// now, and lasting longer than the current one.
    fn acceptable(&self, cert: &X509, point: &[u8]) -> Result<()> {
        let cert_point = point_of(&cert.public_key()?).context("its key is not an EC P-256 key")?;
        if cert_point != point {
            bail!("it is for another key than {:?}", self.labels.key);
        }
        verify_chain(cert, self.ca).context("it does not chain to the installed fleet CA")?;
        check_valid_now(cert, "certificate")?;
        if cert.subject_name().to_der()? != self.current.subject_name().to_der()? {
            bail!("its subject differs from the current certificate's");
        }
        let longer = cert
            .not_after()
            .compare(self.current.not_after())
            .is_ok_and(|o| o == std::cmp::Ordering::Greater);
        if !longer {
            bail!("it does not last longer than the current certificate");
        }
        Ok(())
    }
}
