//! What `zkiot device credentials`, `device agent` and `device check` work with, resolved once
//! from their flags, `device.toml` and the defaults, before anything else happens (ripgrep's
//! `HiArgs`): each value comes from the flag, else `device.toml`, else its default.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use openssl::x509::X509;

use super::cli::ConnectionArgs;
use super::config::{self, DeviceConfig, CA_FILE, CERT_FILE};
use super::labels::Labels;
use super::net::iot_api::{self, IotApi};
use super::net::provider::{Credentials, CredentialsRequest};
use crate::x509::{common_name, read_certificate};
use crate::GlobalOpts;

/// The resolved settings of one `device credentials` run (or one pass of the agent).
pub struct DeviceSettings {
    /// The device folder and its `device.toml`.
    pub dir: PathBuf,
    pub config: DeviceConfig,
    /// The device certificate, and its file.
    pub cert: X509,
    pub cert_path: PathBuf,
    /// The credentials call: endpoint, role alias, thing, trust anchors, timeout.
    pub request: CredentialsRequest,
    /// The token's and the key's labels when chosen (flag, else `device.toml`); the others are
    /// the configuration's, read only when the token is opened ([`DeviceSettings::labels`]).
    pub token_label: Option<String>,
    pub key_label: Option<String>,
    /// The AWS IoT API the device calls about its own Thing (renewal, reports); `None` when no
    /// region is known.
    pub iot: Option<IotTarget>,
    /// Where to look for a renewed certificate; `None` when renewal is off or no region is
    /// known.
    pub renewal: Option<RenewalSettings>,
}

/// The AWS IoT API endpoint (`https://iot.<region>.amazonaws.com` by default) and the region
/// to sign for.
#[derive(Debug, Clone)]
pub struct IotTarget {
    pub url: String,
    pub region: String,
}

impl IotTarget {
    /// The API, signed with `credentials`, each call bounded by `timeout`.
    pub fn api<'c>(&self, credentials: &'c Credentials, timeout: Duration) -> Result<IotApi<'c>> {
        IotApi::new(&self.url, &self.region, credentials, timeout)
    }
}

/// Where and when the device looks for a renewed certificate.
pub struct RenewalSettings {
    pub iot: IotTarget,
    /// Renew when the certificate expires within this many days.
    pub within_days: u32,
    /// The fleet CA installed with the certificate, which a renewed one must chain to.
    pub fleet_ca: PathBuf,
}

impl DeviceSettings {
    /// Reads `device.toml` and the device certificate, and resolves every setting.
    pub fn resolve(args: &ConnectionArgs, global: &GlobalOpts) -> Result<Self> {
        let dir = config::device_dir(args.dir.as_deref(), global);
        let config = DeviceConfig::load(&dir)?;
        let in_dir = |path: &Option<PathBuf>| path.as_ref().map(|p| DeviceConfig::resolve(&dir, p));
        let cert_path = args
            .cert
            .clone()
            .or_else(|| in_dir(&config.certificate))
            .unwrap_or_else(|| dir.join(CERT_FILE));
        let cert = read_certificate(&cert_path).context(
            "no device certificate; run `zkiot device install-cert` first, or pass --cert",
        )?;
        let endpoint = args.endpoint.clone().or(config.endpoint.clone()).context(
            "no credentials endpoint: pass --endpoint (or save one with install-cert --endpoint)",
        )?;
        let role_alias = args
            .role_alias
            .clone()
            .or(config.role_alias.clone())
            .context(
                "no role alias: pass --role-alias (or save one with install-cert --role-alias)",
            )?;
        let thing = match args.thing.clone().or(config.thing.clone()) {
            Some(t) => t,
            None => common_name(cert.subject_name()).context("the certificate's subject")?,
        };
        let request = CredentialsRequest::new(
            endpoint,
            role_alias,
            thing,
            args.connect.clone(),
            args.ca_bundle.clone().or_else(|| in_dir(&config.ca_bundle)),
            Duration::from_secs(args.timeout.max(1)),
        )?;

        let within_days = config
            .renew_within_days
            .unwrap_or(config::DEFAULT_RENEW_WITHIN_DAYS);
        let region = config
            .region
            .clone()
            .or_else(|| iot_api::region_of_credentials_endpoint(&request.target.host));
        let iot_api = config.iot_api.clone().or_else(|| {
            region
                .as_ref()
                .map(|r| format!("https://iot.{r}.amazonaws.com"))
        });
        let iot = match (region, iot_api) {
            (Some(region), Some(url)) => Some(IotTarget { url, region }),
            _ => None,
        };
        let renewal = match (within_days, &iot) {
            (1.., Some(iot)) => Some(RenewalSettings {
                iot: iot.clone(),
                within_days,
                fleet_ca: in_dir(&config.ca).unwrap_or_else(|| dir.join(CA_FILE)),
            }),
            _ => None,
        };

        Ok(Self {
            cert,
            cert_path,
            request,
            token_label: global.token_label.clone().or(config.token_label.clone()),
            key_label: args.key_label.clone().or(config.key_label.clone()),
            iot,
            renewal,
            dir,
            config,
        })
    }

    /// The token's and the key's labels: those chosen, else the configuration's.
    pub fn labels(&self) -> Result<Labels> {
        Labels::resolve(self.token_label.as_deref(), self.key_label.as_deref())
    }
}
