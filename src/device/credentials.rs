//! Temporary AWS credentials from the AWS IoT credentials provider, obtained with the device
//! certificate and the token's key, and cached until shortly before they expire.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::tls::{self, HttpsGet, TokenSigningKey};
use crate::fsutil;
use crate::token::Token;

/// Cached credentials are used until this long before they expire.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);

/// Temporary credentials, as the credentials provider returns them.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    /// RFC 3339, UTC.
    pub expiration: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secrets never reach a log.
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("expiration", &self.expiration)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// When they expire.
    pub fn expires_at(&self) -> Result<OffsetDateTime> {
        OffsetDateTime::parse(&self.expiration, &Rfc3339)
            .with_context(|| format!("bad expiration time {:?}", self.expiration))
    }

    /// Whether they stay valid for at least `margin` more.
    pub fn fresh_for(&self, margin: Duration) -> bool {
        self.expires_at()
            .map(|t| t - margin > OffsetDateTime::now_utc())
            .unwrap_or(false)
    }

    fn validate(&self) -> Result<()> {
        ensure!(
            !self.access_key_id.is_empty()
                && !self.secret_access_key.is_empty()
                && !self.session_token.is_empty(),
            "the credentials provider returned empty credentials"
        );
        self.expires_at()?;
        Ok(())
    }
}

/// Output formats of `zkiot device credentials`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// AWS `credential_process` JSON (`Version: 1`).
    Process,
    /// The provider's credentials object as it came.
    Json,
    /// `export AWS_…=…` lines for a shell.
    Env,
}

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

/// The request: which provider, which alias, which thing, and with which identity.
#[derive(Debug, Clone)]
pub struct CredentialsRequest {
    /// Credentials endpoint host, optionally `host:port` (default port 443).
    pub endpoint: String,
    pub role_alias: String,
    /// Sent as `x-amzn-iot-thingname`.
    pub thing: String,
    /// Dial this `addr:port` instead of resolving the endpoint.
    pub connect: Option<String>,
    /// PEM trust anchors for the server; `None` = the system's trust store.
    pub ca_bundle: Option<std::path::PathBuf>,
    pub timeout: Duration,
}

impl CredentialsRequest {
    /// `(host, port)` of the endpoint.
    pub fn host_port(&self) -> Result<(&str, u16)> {
        let endpoint = self
            .endpoint
            .strip_prefix("https://")
            .unwrap_or(&self.endpoint)
            .trim_end_matches('/');
        match endpoint.rsplit_once(':') {
            Some((host, port)) if !host.contains(']') || host.ends_with(']') => Ok((
                host,
                port.parse()
                    .with_context(|| format!("bad port in endpoint {:?}", self.endpoint))?,
            )),
            _ => Ok((endpoint, 443)),
        }
    }

    fn cache_key(&self, cert_fingerprint: &str) -> CacheKey {
        CacheKey {
            endpoint: self.endpoint.clone(),
            role_alias: self.role_alias.clone(),
            thing: self.thing.clone(),
            certificate_sha256: cert_fingerprint.to_string(),
        }
    }
}

/// Checks a role alias against AWS's pattern `[\w=,@-]+` (at most 128 characters).
pub fn validate_role_alias(alias: &str) -> Result<()> {
    ensure!(
        !alias.is_empty()
            && alias.len() <= 128
            && alias
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_=,@-".contains(c)),
        "role alias {alias:?} is not valid (1 to 128 of letters, digits and _=,@-)"
    );
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
    (cached.key == request.cache_key(cert_fingerprint)
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
        key: request.cache_key(cert_fingerprint),
        credentials: credentials.clone(),
    };
    fsutil::write_atomic(path, &serde_json::to_vec(&file)?, fsutil::SECRET_MODE)
}

/// Asks the credentials provider for credentials over mutual TLS, signing with `key_label` on
/// `token` and presenting `cert_der`.
pub fn fetch(
    request: &CredentialsRequest,
    token: Arc<Token>,
    key_label: &str,
    cert_der: Vec<u8>,
) -> Result<Credentials> {
    validate_role_alias(&request.role_alias)?;
    crate::thing::validate_thing_name(&request.thing)?;
    let (host, port) = request.host_port()?;
    let key = token.find_key(key_label)?;
    let cert = openssl::x509::X509::from_der(&cert_der)?;
    let cert_point = crate::token::point_of(&cert.public_key()?)
        .context("the device certificate's key is not an EC P-256 key")?;
    ensure!(
        cert_point == key.point,
        "the device certificate is for another key than {key_label:?} on token {:?}",
        token.label()
    );
    crate::ca::check_valid_now(&cert, "device certificate")?;
    let roots = tls::server_roots(request.ca_bundle.as_deref())?;
    let config = tls::client_config(roots, cert_der, TokenSigningKey::new(token, key))?;
    let path = format!("/role-aliases/{}/credentials", request.role_alias);
    let response = tls::https_get(
        Arc::new(config),
        &HttpsGet {
            host,
            port,
            connect: request.connect.as_deref(),
            path: &path,
            headers: &[("x-amzn-iot-thingname", &request.thing)],
            timeout: request.timeout,
        },
    )
    .with_context(|| format!("cannot reach the credentials provider {}", request.endpoint))?;

    if response.status != 200 {
        let message = serde_json::from_slice::<serde_json::Value>(&response.body)
            .ok()
            .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(String::from))
            .unwrap_or_else(|| String::from_utf8_lossy(&response.body).trim().to_string());
        let error_type = response
            .header("x-amzn-ErrorType")
            .map(|t| format!(" ({t})"))
            .unwrap_or_default();
        bail!(
            "the credentials provider answered {} {}: {}{error_type}",
            response.status,
            response.reason,
            if message.is_empty() {
                "no message"
            } else {
                &message
            }
        );
    }
    #[derive(Deserialize)]
    struct Envelope {
        credentials: Credentials,
    }
    let envelope: Envelope = serde_json::from_slice(&response.body)
        .map_err(|e| anyhow!("the credentials provider's answer is not the expected JSON: {e}"))?;
    envelope.credentials.validate()?;
    Ok(envelope.credentials)
}

#[cfg(test)]
mod tests {
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
    fn freshness_and_endpoint() {
        let mut c = sample();
        assert!(c.fresh_for(REFRESH_MARGIN));
        let soon = OffsetDateTime::now_utc() + Duration::from_secs(120);
        c.expiration = soon.format(&Rfc3339).unwrap();
        assert!(!c.fresh_for(REFRESH_MARGIN));
        let mut r = CredentialsRequest {
            endpoint: "abc.credentials.iot.eu-west-1.amazonaws.com".into(),
            role_alias: "a".into(),
            thing: "t".into(),
            connect: None,
            ca_bundle: None,
            timeout: Duration::from_secs(1),
        };
        assert_eq!(
            r.host_port().unwrap(),
            ("abc.credentials.iot.eu-west-1.amazonaws.com", 443)
        );
        r.endpoint = "https://localhost:8443/".into();
        assert_eq!(r.host_port().unwrap(), ("localhost", 8443));
        assert!(validate_role_alias("zkiot-device").is_ok());
        assert!(validate_role_alias("a/../b").is_err());
    }
}
