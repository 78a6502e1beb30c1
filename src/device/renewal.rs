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

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use openssl::x509::X509;

use super::certificate::check_device_certificate;
use super::net::iot_api::IotApi;
use super::net::provider::{self, Credentials};
use super::settings::{DeviceSettings, RenewalSettings};
use crate::fsutil;
use crate::p11::{P11Key, P11Token};
use crate::x509::fingerprint;

/// The Thing attribute in which the device records the certificate it switched to.
pub const CURRENT_CERTIFICATE_ATTRIBUTE: &str = "zkiot_certificate";

/// What the device needs to look for, where to put what it finds, and the token it got its
/// credentials with.
#[derive(Clone, Copy)]
pub struct Renewal<'a> {
    /// The request, the certificate in use and its file.
    pub settings: &'a DeviceSettings,
    /// Where to look, and when.
    pub target: &'a RenewalSettings,
    /// The fleet CA installed with the certificate.
    pub ca: &'a X509,
    /// The open token, and the key a new certificate must be for: the current certificate's
    /// (renewal for the same key) or a fresh one ([`super::rekey`]).
    pub token: &'a Arc<P11Token>,
    pub key: &'a P11Key,
}

/// The certificate switched to, and credentials obtained with it.
pub struct Switched {
    pub cert: X509,
    pub credentials: Credentials,
}

impl Renewal<'_> {
    /// Whether the current certificate expires within the window.
    pub fn due(&self) -> Result<bool> {
        let limit = openssl::asn1::Asn1Time::days_from_now(self.target.within_days)?;
        Ok(self.settings.cert.not_after() <= limit)
    }

    /// The AWS IoT API, signed with `credentials`.
    pub fn api<'c>(&self, credentials: &'c Credentials) -> Result<IotApi<'c>> {
        self.target
            .iot
            .api(credentials, self.settings.request.timeout)
    }

    /// The newest certificate on the Thing this device may switch to ([`Self::acceptable`]),
    /// if any. Others are reported and left alone.
    pub fn find(&self, api: &IotApi<'_>) -> Result<Option<X509>> {
        let thing = &self.settings.request.thing;
        let current_id = fingerprint(&self.settings.cert)?;
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
            match self.acceptable(&cert) {
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
        Ok(best)
    }

    /// Proves `cert` before anything changes: the credentials provider must accept it (one
    /// device signature with [`Self::key`]).
    pub fn prove(&self, cert: &X509) -> Result<Credentials> {
        provider::fetch(&self.settings.request, self.token, self.key, cert)
            .context("the new certificate does not get credentials; keeping the current one")
    }

    /// Looks for a newer certificate for this device and switches to it. `None` when there is
    /// none yet.
    pub fn pick_up(&self, credentials: &Credentials) -> Result<Option<Switched>> {
        let api = self.api(credentials)?;
        let Some(cert) = self.find(&api)? else {
            return Ok(None);
        };
        let proven = self.prove(&cert)?;

        // Install: the file atomically, then the token's object (added before the old one goes).
        fsutil::write_atomic(
            &self.settings.cert_path,
            &cert.to_pem()?,
            fsutil::PUBLIC_MODE,
        )?;
        self.token.store_certificate(self.key, &cert)?;

        // Tell the operator, with credentials from the new certificate.
        let new_id = fingerprint(&cert)?;
        api.with_credentials(&proven)
            .set_thing_attribute(
                &self.settings.request.thing,
                CURRENT_CERTIFICATE_ATTRIBUTE,
                &new_id,
            )
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

    /// A certificate this device may switch to: this device's ([`check_device_certificate`]:
    /// for the token's key, valid now, from the fleet CA), for the same subject, and lasting
    /// longer than the current one.
    fn acceptable(&self, cert: &X509) -> Result<()> {
        check_device_certificate(cert, self.key, Some(self.ca))?;
        let current = &self.settings.cert;
        if cert.subject_name().to_der()? != current.subject_name().to_der()? {
            bail!("its subject differs from the current certificate's");
        }
        let longer = cert
            .not_after()
            .compare(current.not_after())
            .is_ok_and(|o| o == std::cmp::Ordering::Greater);
        if !longer {
            bail!("it does not last longer than the current certificate");
        }
        Ok(())
    }
}
