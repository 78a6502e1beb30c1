//! The AWS IoT credentials provider's client: one `GET /role-aliases/<alias>/credentials` over
//! mutual TLS, presenting the device certificate and signing with the token's key.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context, Result};
use openssl::x509::X509;
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::http::{self, Endpoint, HttpRequest};
use super::tls::{self, P11SigningKey};
use crate::p11::{P11Key, P11Token};

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
    /// Credentials endpoint as given: host, optionally `host:port` (default port 443).
    pub endpoint: String,
    /// Where that is.
    pub target: Endpoint,
    pub role_alias: String,
    /// Sent as `x-amzn-iot-thingname`.
    pub thing: String,
    /// Dial this `addr:port` instead of resolving the endpoint.
    pub connect: Option<String>,
    /// PEM trust anchors for the server; `None` = the system's trust store.
    pub ca_bundle: Option<PathBuf>,
    pub timeout: Duration,
}

impl CredentialsRequest {
    /// A request, once the endpoint, the role alias and the thing name check out.
    pub fn new(
        endpoint: String,
        role_alias: String,
        thing: String,
        connect: Option<String>,
        ca_bundle: Option<PathBuf>,
        timeout: Duration,
    ) -> Result<Self> {
        let target = Endpoint::tls(&endpoint, "endpoint")?;
        validate_role_alias(&role_alias)?;
        crate::thing_name::validate_thing_name(&thing)?;
        Ok(Self {
            endpoint,
            target,
            role_alias,
            thing,
            connect,
            ca_bundle,
            timeout,
        })
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

/// Asks the credentials provider for credentials over mutual TLS, presenting `cert` and
/// signing with `key` on `token` (one device signature). The caller has checked that `cert` is
/// for `key` ([`crate::device::certificate::check_device_certificate`]).
pub fn fetch(
    request: &CredentialsRequest,
    token: &Arc<P11Token>,
    key: &P11Key,
    cert: &X509,
) -> Result<Credentials> {
    let roots = tls::server_roots(request.ca_bundle.as_deref())?;
    let identity = (
        cert.to_der()?,
        P11SigningKey::new(Arc::clone(token), key.clone()),
    );
    let config = tls::client_config(roots, Some(identity))?;
    let path = format!("/role-aliases/{}/credentials", request.role_alias);
    let response = http::send(
        Some(Arc::new(config)),
        &HttpRequest {
            method: "GET",
            host: &request.target.host,
            port: request.target.port,
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
        let message = response.error_message();
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
        let request = |endpoint: &str, alias: &str, thing: &str| {
            CredentialsRequest::new(
                endpoint.into(),
                alias.into(),
                thing.into(),
                None,
                None,
                Duration::from_secs(1),
            )
        };
        let r = request("abc.credentials.iot.eu-west-1.amazonaws.com", "a", "t").unwrap();
        assert_eq!(
            (r.target.host.as_str(), r.target.port),
            ("abc.credentials.iot.eu-west-1.amazonaws.com", 443)
        );
        let r = request("https://localhost:8443/", "a", "t").unwrap();
        assert_eq!((r.target.host.as_str(), r.target.port), ("localhost", 8443));
        assert_eq!(r.endpoint, "https://localhost:8443/");
        assert!(validate_role_alias("zkiot-device").is_ok());
        assert!(validate_role_alias("a/../b").is_err());
        assert!(request("localhost", "a/../b", "t").is_err());
        assert!(request("localhost", "a", "").is_err());
        assert!(request("localhost:x", "a", "t").is_err());
    }
}
