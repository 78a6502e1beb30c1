//! The three AWS IoT control-plane calls a device makes to renew its certificate, signed with
//! its temporary credentials (Signature Version 4): `ListThingPrincipals` and
//! `DescribeCertificate` on its own Thing, and `UpdateThing` to record which certificate it
//! uses. No AWS SDK: the device side builds without it.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::Signer;
use rustls::ClientConfig;
use serde::Deserialize;
use time::OffsetDateTime;

use super::http::{self, host_header, Endpoint, HttpRequest};
use super::provider::Credentials;
use super::tls;
use crate::x509::hex;

/// The signing name of the AWS IoT control plane.
const SERVICE: &str = "iot";

/// An AWS IoT control-plane endpoint, with the credentials to sign for it.
pub struct IotApi<'a> {
    /// `https://iot.<region>.amazonaws.com`, or `http://HOST:PORT` for a local stand-in.
    endpoint: Endpoint,
    /// The TLS client configuration (the system's trust store); `None` for plain HTTP.
    tls: Option<Arc<ClientConfig>>,
    region: String,
    credentials: &'a Credentials,
    timeout: Duration,
}

/// A certificate as `DescribeCertificate` gives it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateDescription {
    pub certificate_id: String,
    pub status: String,
    pub certificate_pem: String,
}

impl<'a> IotApi<'a> {
    /// The endpoint `url` (`https://…` or `http://…`), signing for `region`.
    pub fn new(
        url: &str,
        region: &str,
        credentials: &'a Credentials,
        timeout: Duration,
    ) -> Result<Self> {
        let endpoint = Endpoint::url(url, "AWS IoT API endpoint")?;
        let tls = if endpoint.https {
            Some(Arc::new(tls::client_config(
                tls::server_roots(None)?,
                None,
            )?))
        } else {
            None
        };
        Ok(Self {
            endpoint,
            tls,
            region: region.to_string(),
            credentials,
            timeout,
        })
    }

    /// The same endpoint, signing with other credentials.
    pub fn with_credentials<'b>(&self, credentials: &'b Credentials) -> IotApi<'b> {
        IotApi {
            endpoint: self.endpoint.clone(),
            tls: self.tls.clone(),
            region: self.region.clone(),
            credentials,
            timeout: self.timeout,
        }
    }

    /// The certificate ARNs (and other principals) attached to `thing`.
    pub fn list_thing_principals(&self, thing: &str) -> Result<Vec<String>> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Page {
            #[serde(default)]
            principals: Vec<String>,
            next_token: Option<String>,
        }
        let mut principals = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let query = next
                .take()
                .map(|t| format!("nextToken={}", encode(&t)))
                .unwrap_or_default();
            let page: Page = self.call(
                "ListThingPrincipals",
                "GET",
                &format!("/things/{}/principals", encode(thing)),
                &query,
                b"",
            )?;
            principals.extend(page.principals);
            match page.next_token {
                Some(token) if !token.is_empty() => next = Some(token),
                _ => return Ok(principals),
            }
        }
    }

    /// `DescribeCertificate`.
    pub fn describe_certificate(&self, id: &str) -> Result<CertificateDescription> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Answer {
            certificate_description: CertificateDescription,
        }
        let answer: Answer = self.call(
            "DescribeCertificate",
            "GET",
            &format!("/certificates/{}", encode(id)),
            "",
            b"",
        )?;
        Ok(answer.certificate_description)
    }

    /// Sets one attribute of `thing`, keeping the others.
    pub fn set_thing_attribute(&self, thing: &str, name: &str, value: &str) -> Result<()> {
        self.set_thing_attributes(thing, &[(name, value)])
    }

    /// Sets attributes of `thing` in one call, keeping the others; an empty value removes one.
    pub fn set_thing_attributes(&self, thing: &str, attributes: &[(&str, &str)]) -> Result<()> {
        let attributes: serde_json::Map<String, serde_json::Value> = attributes
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
            .collect();
        let body = serde_json::json!({
            "attributePayload": { "attributes": attributes, "merge": true }
        });
        let _: serde_json::Value = self.call(
            "UpdateThing",
            "PATCH",
            &format!("/things/{}", encode(thing)),
            "",
            &serde_json::to_vec(&body)?,
        )?;
        Ok(())
    }

    fn call<T: serde::de::DeserializeOwned>(
        &self,
        operation: &str,
        method: &str,
        path: &str,
        query: &str,
        body: &[u8],
    ) -> Result<T> {
        let now = OffsetDateTime::now_utc();
        let host = host_header(&self.endpoint.host, self.endpoint.port);
        let signed = sign_v4(&SigningInput {
            method,
            host: &host,
            path,
            query,
            body,
            region: &self.region,
            credentials: self.credentials,
            time: now,
        })?;
        let target = if query.is_empty() {
            path.to_string()
        } else {
            format!("{path}?{query}")
        };
        let headers: Vec<(&str, &str)> = signed
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(std::iter::once(("Content-Type", "application/json")))
            .collect();
        let response = http::send(
            self.tls.clone(),
            &HttpRequest {
                method,
                host: &self.endpoint.host,
                port: self.endpoint.port,
                connect: None,
                path: &target,
                headers: &headers,
                body,
                timeout: self.timeout,
            },
        )
        .with_context(|| format!("{operation}: cannot reach AWS IoT at {host}"))?;
        if response.status != 200 {
            bail!(
                "{operation} failed: {} {}: {}",
                response.status,
                response.reason,
                response.error_message()
            );
        }
        let body = if response.body.is_empty() {
            b"{}".to_vec()
        } else {
            response.body
        };
        serde_json::from_slice(&body)
            .map_err(|e| anyhow!("{operation}: unexpected answer from AWS IoT: {e}"))
    }
}

/// The region of an AWS IoT credentials endpoint's host,
/// `<prefix>.credentials.iot.<region>.amazonaws.com`.
pub fn region_of_credentials_endpoint(host: &str) -> Option<String> {
    let rest = host.split_once(".credentials.iot.")?.1;
    let region = rest.strip_suffix(".amazonaws.com")?;
    (!region.is_empty() && !region.contains('.')).then(|| region.to_string())
}

/// RFC 3986 percent-encoding of everything but the unreserved characters, as SigV4 wants.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

struct SigningInput<'a> {
    method: &'a str,
    /// The `Host` header as sent.
    host: &'a str,
    /// Already encoded.
    path: &'a str,
    /// Already encoded, one parameter at most.
    query: &'a str,
    body: &'a [u8],
    region: &'a str,
    credentials: &'a Credentials,
    time: OffsetDateTime,
}

struct Signed {
    /// Headers to send: `X-Amz-Date`, `X-Amz-Security-Token`, `Authorization`.
    headers: Vec<(String, String)>,
}

fn hmac(key: &[u8], data: &[u8]) -> Result<Vec<u8>> {
    let key = PKey::hmac(key)?;
    let mut signer = Signer::new(MessageDigest::sha256(), &key)?;
    signer.update(data)?;
    Ok(signer.sign_to_vec()?)
}

/// AWS Signature Version 4 over method, path, query, the signed headers and the body.
fn sign_v4(input: &SigningInput<'_>) -> Result<Signed> {
    let t = input.time;
    let amz_date = format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    let date = &amz_date[..8];
    let token = &input.credentials.session_token;
    let canonical_headers = format!(
        "host:{}\nx-amz-date:{amz_date}\nx-amz-security-token:{token}\n",
        input.host
    );
    let signed_headers = "host;x-amz-date;x-amz-security-token";
    let canonical_request = format!(
        "{}\n{}\n{}\n{canonical_headers}\n{signed_headers}\n{}",
        input.method,
        input.path,
        input.query,
        hex(&openssl::sha::sha256(input.body))
    );
    let scope = format!("{date}/{}/{SERVICE}/aws4_request", input.region);
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex(&openssl::sha::sha256(canonical_request.as_bytes()))
    );
    let secret = format!("AWS4{}", input.credentials.secret_access_key);
    let key = hmac(secret.as_bytes(), date.as_bytes())?;
    let key = hmac(&key, input.region.as_bytes())?;
    let key = hmac(&key, SERVICE.as_bytes())?;
    let key = hmac(&key, b"aws4_request")?;
    let signature = hex(&hmac(&key, string_to_sign.as_bytes())?);
    Ok(Signed {
        headers: vec![
            ("X-Amz-Date".into(), amz_date.clone()),
            ("X-Amz-Security-Token".into(), token.clone()),
            (
                "Authorization".into(),
                format!(
                    "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
                    input.credentials.access_key_id
                ),
            ),
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_and_encoding() {
        assert_eq!(
            region_of_credentials_endpoint("c1234.credentials.iot.eu-west-1.amazonaws.com"),
            Some("eu-west-1".into())
        );
        assert_eq!(region_of_credentials_endpoint("localhost"), None);
        assert_eq!(
            region_of_credentials_endpoint("c1.credentials.iot.eu-west-1.amazonaws.com.evil"),
            None
        );
        assert_eq!(encode("zk-01:a_b"), "zk-01%3Aa_b");
    }
}
