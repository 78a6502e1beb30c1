//! `zkiot device credentials`: temporary AWS credentials for this device, from the cache while
//! they stay fresh, else from the credentials provider ([`super::provider`]).

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::cli::{CredentialsArgs, OutputFormat};
use super::config::{self, DeviceConfig, CACHE_FILE, CA_FILE, CERT_FILE};
use super::labels::Labels;
use super::provider::{self, Credentials, CredentialsRequest};
use super::{iot_api, renewal};
use crate::p11::P11Token;
use crate::x509::{common_name, fingerprint, read_certificate};
use crate::{fsutil, GlobalOpts};

/// Cached credentials are used until this long before they expire.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);

/// Renders credentials in `format`, ending with a newline.
pub fn render(credentials: &Credentials, format: OutputFormat) -> Result<String> {
    Ok(match format {
        OutputFormat::Process => {
            let value = serde_json::json!({
                "Version": 1,
                "AccessKeyId": credentials.access_key_id,
                "SecretAccessKey": credentials.secret_access_key,
                "SessionToken": credentials.session_token,
                "Expiration": credentials.expiration,
            });
            format!("{}\n", serde_json::to_string(&value)?)
        }
        OutputFormat::Json => format!("{}\n", serde_json::to_string(credentials)?),
        OutputFormat::Env => [
            ("AWS_ACCESS_KEY_ID", &credentials.access_key_id),
            ("AWS_SECRET_ACCESS_KEY", &credentials.secret_access_key),
            ("AWS_SESSION_TOKEN", &credentials.session_token),
            ("AWS_CREDENTIAL_EXPIRATION", &credentials.expiration),
        ]
        .iter()
        .map(|(k, v)| format!("export {k}={}\n", shell_quote(v)))
        .collect(),
    })
}

fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

pub(crate) fn run(args: CredentialsArgs, global: &GlobalOpts) -> Result<()> {
    let dir = config::device_dir(args.dir.as_deref(), global);
    let config = DeviceConfig::load(&dir)?;
    let cert_path = args
        .cert
        .clone()
        .or_else(|| {
            config
                .certificate
                .as_ref()
                .map(|c| DeviceConfig::resolve(&dir, c))
        })
        .unwrap_or_else(|| dir.join(CERT_FILE));
    let cert = read_certificate(&cert_path)
        .context("no device certificate; run `zkiot device install-cert` first, or pass --cert")?;
    let endpoint = args.endpoint.or(config.endpoint.clone()).context(
        "no credentials endpoint: pass --endpoint (or save one with install-cert --endpoint)",
    )?;
    let role_alias = args
        .role_alias
        .or(config.role_alias.clone())
        .context("no role alias: pass --role-alias (or save one with install-cert --role-alias)")?;
    let thing = match args.thing.or(config.thing.clone()) {
        Some(t) => t,
        None => common_name(cert.subject_name()).context("the certificate's subject")?,
    };
    let ca_bundle = args.ca_bundle.or_else(|| {
        config
            .ca_bundle
            .as_ref()
            .map(|c| DeviceConfig::resolve(&dir, c))
    });
    let labels = Labels::resolve(
        global
            .token_label
            .as_deref()
            .or(config.token_label.as_deref()),
        args.key_label.as_deref().or(config.key_label.as_deref()),
    )?;
    let request = CredentialsRequest {
        endpoint,
        role_alias,
        thing,
        connect: args.connect,
        ca_bundle,
        timeout: Duration::from_secs(args.timeout.max(1)),
    };
    request.host_port()?;
    let cache_path = args.cache.unwrap_or_else(|| dir.join(CACHE_FILE));
    let cert_fingerprint = fingerprint(&cert)?;

    let cached = if args.no_cache {
        None
    } else {
        read_cache(&cache_path, &request, &cert_fingerprint)
    };
    let fresh = cached.is_none();
    let credentials = match cached {
        Some(cached) => {
            if global.verbose {
                eprintln!(
                    "zkiot: using cached credentials from {} (expire {})",
                    cache_path.display(),
                    cached.expiration
                );
            }
            cached
        }
        None => {
            let token = Arc::new(P11Token::open(&global.module, &labels.token)?);
            let fetched = provider::fetch(&request, token, &labels.key, cert.to_der()?)?;
            if !args.no_cache {
                if let Err(e) = write_cache(&cache_path, &request, &cert_fingerprint, &fetched) {
                    eprintln!("zkiot: warning: credentials not cached: {e:#}");
                }
            }
            if global.verbose {
                eprintln!(
                    "zkiot: got credentials for thing {} from {} (expire {})",
                    request.thing, request.endpoint, fetched.expiration
                );
            }
            fetched
        }
    };

    // With freshly fetched credentials in hand (so at most once per credentials lifetime), pick
    // up a renewed certificate if one is due.
    let within_days = config
        .renew_within_days
        .unwrap_or(renewal::DEFAULT_RENEW_WITHIN_DAYS);
    let region = config
        .region
        .clone()
        .or_else(|| iot_api::region_of_credentials_endpoint(&request.endpoint));
    let iot_api = config.iot_api.clone().or_else(|| {
        region
            .as_ref()
            .map(|r| format!("https://iot.{r}.amazonaws.com"))
    });
    let ca_path = config
        .ca
        .as_ref()
        .map(|c| DeviceConfig::resolve(&dir, c))
        .unwrap_or_else(|| dir.join(CA_FILE));
    if let (true, Some(region), Some(iot_api)) = (fresh && within_days > 0, region, iot_api) {
        let switched = read_certificate(&ca_path).and_then(|ca| {
            let renewal = renewal::Renewal {
                global,
                request: &request,
                labels: &labels,
                current: &cert,
                cert_path: &cert_path,
                ca: &ca,
                iot_api: &iot_api,
                region: &region,
                within_days,
            };
            if renewal.due()? {
                renewal.pick_up(&credentials)
            } else {
                Ok(None)
            }
        });
        match switched {
            Ok(Some(switched)) => {
                if !args.no_cache {
                    let id = fingerprint(&switched.cert)?;
                    if let Err(e) = write_cache(&cache_path, &request, &id, &switched.credentials) {
                        eprintln!("zkiot: warning: credentials not cached: {e:#}");
                    }
                }
                return emit(&switched.credentials, args.format);
            }
            Ok(None) => {}
            Err(e) => eprintln!("zkiot: warning: certificate renewal: {e:#}"),
        }
    }
    emit(&credentials, args.format)
}

fn emit(credentials: &Credentials, format: OutputFormat) -> Result<()> {
    let text = render(credentials, format)?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct CacheKey {
    endpoint: String,
    role_alias: String,
    thing: String,
    certificate_sha256: String,
}

#[derive(Serialize, Deserialize)]
struct CacheFile {
    #[serde(flatten)]
    key: CacheKey,
    credentials: Credentials,
}

/// Reads cached credentials made for the same request and certificate, if still fresh.
pub fn read_cache(
    path: &Path,
    request: &CredentialsRequest,
    cert_fingerprint: &str,
) -> Option<Credentials> {
    let bytes = std::fs::read(path).ok()?;
    let cached: CacheFile = serde_json::from_slice(&bytes).ok()?;
    (cached.key == cache_key(request, cert_fingerprint)
        && cached.credentials.fresh_for(REFRESH_MARGIN))
    .then_some(cached.credentials)
}

/// Writes the cache (0600, atomically).
pub fn write_cache(
    path: &Path,
    request: &CredentialsRequest,
    cert_fingerprint: &str,
    credentials: &Credentials,
) -> Result<()> {
    let file = CacheFile {
        key: cache_key(request, cert_fingerprint),
        credentials: credentials.clone(),
    };
    fsutil::write_atomic(path, &serde_json::to_vec(&file)?, fsutil::SECRET_MODE)
}

fn cache_key(request: &CredentialsRequest, cert_fingerprint: &str) -> CacheKey {
    CacheKey {
        endpoint: request.endpoint.clone(),
        role_alias: request.role_alias.clone(),
        thing: request.thing.clone(),
        certificate_sha256: cert_fingerprint.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use time::format_description::well_known::Rfc3339;
    use time::OffsetDateTime;

    use super::*;

    fn sample() -> Credentials {
        Credentials {
            access_key_id: "ASIAEXAMPLE".into(),
            secret_access_key: "se'cret".into(),
            session_token: "tok/en+=".into(),
            expiration: "2030-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn renders_every_format() {
        let c = sample();
        let p: serde_json::Value =
            serde_json::from_str(&render(&c, OutputFormat::Process).unwrap()).unwrap();
        assert_eq!(p["Version"], 1);
        assert_eq!(p["SecretAccessKey"], "se'cret");
        let j: serde_json::Value =
            serde_json::from_str(&render(&c, OutputFormat::Json).unwrap()).unwrap();
        assert_eq!(j["sessionToken"], "tok/en+=");
        let e = render(&c, OutputFormat::Env).unwrap();
        assert!(e.contains("export AWS_SECRET_ACCESS_KEY='se'\\''cret'\n"));
        assert!(!format!("{c:?}").contains("se'cret"));
    }

    #[test]
    fn freshness() {
        let mut c = sample();
        assert!(c.fresh_for(REFRESH_MARGIN));
        let soon = OffsetDateTime::now_utc() + Duration::from_secs(120);
        c.expiration = soon.format(&Rfc3339).unwrap();
        assert!(!c.fresh_for(REFRESH_MARGIN));
    }
}
