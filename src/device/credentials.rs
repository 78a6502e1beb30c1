//! `zkiot device credentials`: temporary AWS credentials for this device, from the cache while
//! they stay fresh, else from the credentials provider ([`super::net::provider`]).
//!
//! One pipeline: the settings are resolved once ([`DeviceSettings::resolve`]); the cache may
//! answer; otherwise the token is opened once, the certificate checked once against its key,
//! the credentials fetched, and, when the certificate is due for renewal, a renewed one picked
//! up ([`renewal`]) with the same token; then the credentials are printed.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::certificate::check_device_certificate;
use super::cli::{CredentialsArgs, OutputFormat};
use super::config::CACHE_FILE;
use super::net::provider::{self, Credentials, CredentialsRequest};
use super::settings::DeviceSettings;
use super::{hook, renewal};
use crate::x509::{fingerprint, read_certificate};
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
    let settings = DeviceSettings::resolve(&args.connection, global)?;
    let cache =
        (!args.no_cache).then(|| args.cache.unwrap_or_else(|| settings.dir.join(CACHE_FILE)));
    let format = args.format;
    let cert_fingerprint = fingerprint(&settings.cert)?;
    let request = &settings.request;
    if let Some(cache) = &cache {
        if let Some(cached) = read_cache(cache, request, &cert_fingerprint) {
            if global.verbose {
                eprintln!(
                    "zkiot: using cached credentials from {} (expire {})",
                    cache.display(),
                    cached.expiration
                );
            }
            return emit(&cached, format);
        }
    }

    // The token, opened once for everything below.
    let (token, key) = open_device_token(&settings, global)?;
    let fetched = provider::fetch(request, &token, &key, &settings.cert)?;
    cache_credentials(cache.as_deref(), request, &cert_fingerprint, &fetched);
    if global.verbose {
        eprintln!(
            "zkiot: got credentials for thing {} from {} (expire {})",
            request.thing, request.endpoint, fetched.expiration
        );
    }

    // With freshly fetched credentials in hand (so at most once per credentials lifetime), pick
    // up a renewed certificate if one is due.
    if let Some(target) = &settings.renewal {
        let switched = read_certificate(&target.fleet_ca).and_then(|ca| {
            let renewal = renewal::Renewal {
                settings: &settings,
                target,
                ca: &ca,
                token: &token,
                key: &key,
            };
            if renewal.due()? {
                renewal.pick_up(&fetched)
            } else {
                Ok(None)
            }
        });
        match switched {
            Ok(Some(switched)) => {
                cache_credentials(
                    cache.as_deref(),
                    request,
                    &fingerprint(&switched.cert)?,
                    &switched.credentials,
                );
                hook::after_switch(settings.config.on_switch.as_deref(), &settings, &switched);
                return emit(&switched.credentials, format);
            }
            Ok(None) => {}
            Err(e) => eprintln!("zkiot: warning: certificate renewal: {e:#}"),
        }
    }
    emit(&fetched, format)
}

/// Writes the cache, if there is one; a failure is only a warning.
fn cache_credentials(
    cache: Option<&Path>,
    request: &CredentialsRequest,
    cert_fingerprint: &str,
    credentials: &Credentials,
) {
    if let Some(cache) = cache {
        if let Err(e) = write_cache(cache, request, cert_fingerprint, credentials) {
            eprintln!("zkiot: warning: credentials not cached: {e:#}");
        }
    }
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

/// Opens the token, finds the device key and checks that the device certificate is for it
/// (no device operation while the module's device cache holds).
pub(crate) fn open_device_token(
    settings: &DeviceSettings,
    global: &crate::GlobalOpts,
) -> Result<(Arc<crate::p11::P11Token>, crate::p11::P11Key)> {
    let (token, key) = settings.labels()?.open(global)?;
    check_device_certificate(&settings.cert, &key, None).with_context(|| {
        format!(
            "the device certificate {} (key {:?} on token {:?})",
            settings.cert_path.display(),
            key.label,
            token.label()
        )
    })?;
    Ok((Arc::new(token), key))
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
