//! The AWS IoT credentials provider's client: one `GET /role-aliases/<alias>/credentials` over
//! mutual TLS, presenting the device certificate and signing with the token's key.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::http::{self, HttpRequest};
use super::tls::{self, P11SigningKey};
use crate::p11::P11Token;

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

/// Asks the credentials provider for credentials over mutual TLS, signing with `key_label` on
/// `token` and presenting `cert_der`.
pub fn fetch(
    request: &CredentialsRequest,
    token: Arc<P11Token>,
    key_label: &str,
    cert_der: Vec<u8>,
) -> Result<Credentials> {
    validate_role_alias(&request.role_alias)?;
    crate::thing_name::validate_thing_name(&request.thing)?;
    let (host, port) = request.host_port()?;
    let key = token.find_key(key_label)?;
    let cert = openssl::x509::X509::from_der(&cert_der)?;
    let cert_point = crate::p11::point_of(&cert.public_key()?)
        .context("the device certificate's key is not an EC P-256 key")?;
    ensure!(
        cert_point == key.point,
        "the device certificate is for another key than {key_label:?} on token {:?}",
        token.label()
    );
    crate::x509::check_valid_now(&cert, "device certificate")?;
    let roots = tls::server_roots(request.ca_bundle.as_deref())?;
    let config = tls::client_config(roots, cert_der, P11SigningKey::new(token, key))?;
    let path = format!("/role-aliases/{}/credentials", request.role_alias);
    let response = http::send(
        Some(Arc::new(config)),
        &HttpRequest {
            method: "GET",
            host,
            port,
            connect: request.connect.as_deref(),
            path: &path,
            headers: &[("x-amzn-iot-thingname", &request.thing)],
            body: &[],
            timeout: request.timeout,
        },
    )
    .with_context(|| format!("cannot reach the credentials provider {}", request.endpoint))?;
    credentials_from_answer(&response)
}

/// The credentials in the provider's answer, or what its error says.
pub fn credentials_from_answer(response: &http::HttpResponse) -> Result<Credentials> {
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

    #[test]
    fn endpoint_and_role_alias() {
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
