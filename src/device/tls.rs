//! Mutual TLS with the token's key: a rustls client whose certificate key signs through PKCS#11.
//!
//! Only `ecdsa_secp256r1_sha256` is offered (the Zymkey's keys are P-256): the handshake
//! message is hashed here with SHA-256 and the token signs the digest with `CKM_ECDSA`, one
//! device operation per handshake.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use rustls::client::ResolvesClientCert;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::sign::{CertifiedKey, Signer, SigningKey};
use rustls::{ClientConfig, RootCertStore, SignatureAlgorithm, SignatureScheme};

use crate::token::{Token, TokenKey};

/// A TLS client key that lives on the token.
#[derive(Debug)]
pub struct TokenSigningKey {
    token: Arc<Token>,
    key: TokenKey,
}

impl TokenSigningKey {
    /// The key `key` on `token`.
    pub fn new(token: Arc<Token>, key: TokenKey) -> Self {
        Self { token, key }
    }
}

impl SigningKey for TokenSigningKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        offered
            .contains(&SignatureScheme::ECDSA_NISTP256_SHA256)
            .then(|| {
                Box::new(TokenSigner {
                    token: self.token.clone(),
                    key: self.key.clone(),
                }) as Box<dyn Signer>
            })
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::ECDSA
    }
}

#[derive(Debug)]
struct TokenSigner {
    token: Arc<Token>,
    key: TokenKey,
}

impl Signer for TokenSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        self.token
            .sign_sha256_der(&self.key, message)
            .map_err(|e| rustls::Error::General(format!("{e:#}")))
    }

    fn scheme(&self) -> SignatureScheme {
        SignatureScheme::ECDSA_NISTP256_SHA256
    }
}

/// Presents one certificate, whatever the server asks.
#[derive(Debug)]
struct ClientIdentity(Arc<CertifiedKey>);

impl ResolvesClientCert for ClientIdentity {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        sigschemes
            .contains(&SignatureScheme::ECDSA_NISTP256_SHA256)
            .then(|| self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Trust anchors for the server: the PEM bundle `ca_bundle`, or the system's trust store.
pub fn server_roots(ca_bundle: Option<&Path>) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    match ca_bundle {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .with_context(|| format!("cannot read CA bundle {}", path.display()))?
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("bad PEM in CA bundle {}", path.display()))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                bail!("CA bundle {} holds no usable certificate", path.display());
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
            if roots.is_empty() {
                bail!("no trusted CA certificates found on this system; pass --ca-bundle (for AWS: AmazonRootCA1.pem and AmazonRootCA3.pem)");
            }
        }
    }
    Ok(roots)
}

/// A client configuration (TLS 1.2 or 1.3, ring) presenting `cert_der` with the token key.
pub fn client_config(
    roots: RootCertStore,
    cert_der: Vec<u8>,
    signing_key: TokenSigningKey,
) -> Result<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certified = CertifiedKey::new(vec![CertificateDer::from(cert_der)], Arc::new(signing_key));
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots)
        .with_client_cert_resolver(Arc::new(ClientIdentity(Arc::new(certified))));
    Ok(config)
}

/// An HTTP response, read whole.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Where to connect and what to ask.
#[derive(Debug, Clone)]
pub struct HttpsGet<'a> {
    /// Host name: SNI, certificate check, and `Host` header.
    pub host: &'a str,
    pub port: u16,
    /// Dial this address instead of resolving `host` (like curl's `--resolve`).
    pub connect: Option<&'a str>,
    pub path: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
    pub timeout: Duration,
}

/// Sends one `GET` over a fresh TLS connection and reads the whole response.
pub fn https_get(config: Arc<ClientConfig>, request: &HttpsGet<'_>) -> Result<HttpResponse> {
    let server_name = ServerName::try_from(request.host.to_string())
        .map_err(|_| anyhow!("{:?} is not a valid host name", request.host))?;
    let target = match request.connect {
        Some(addr) => addr.to_string(),
        None => format!("{}:{}", request.host, request.port),
    };
    let addrs: Vec<SocketAddr> = target
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {target}"))?
        .collect();
    let mut last_error = None;
    let mut tcp = None;
    for addr in &addrs {
        match TcpStream::connect_timeout(addr, request.timeout) {
            Ok(stream) => {
                tcp = Some(stream);
                break;
            }
            Err(e) => last_error = Some(e),
        }
    }
    let tcp = match tcp {
        Some(t) => t,
        None => {
            return Err(match last_error {
                Some(e) => anyhow!(e),
                None => anyhow!("no address"),
            })
            .with_context(|| format!("cannot connect to {target}"))
        }
    };
    tcp.set_read_timeout(Some(request.timeout))?;
    tcp.set_write_timeout(Some(request.timeout))?;
    let _ = tcp.set_nodelay(true);

    let connection = rustls::ClientConnection::new(config, server_name)?;
    let mut tls = rustls::StreamOwned::new(connection, tcp);
    let host_header = if request.port == 443 {
        request.host.to_string()
    } else {
        format!("{}:{}", request.host, request.port)
    };
    let mut head = format!(
        "GET {} HTTP/1.1\r\nHost: {host_header}\r\nAccept: */*\r\nUser-Agent: zkiot/{}\r\nConnection: close\r\n",
        request.path,
        env!("CARGO_PKG_VERSION")
    );
    for (name, value) in request.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    tls.write_all(head.as_bytes())
        .and_then(|_| tls.flush())
        .map_err(describe_tls_error)
        .with_context(|| format!("TLS with {} (via {target}) failed", request.host))?;

    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match tls.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            // Many servers close without close_notify; the length checks below catch truncation.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => break,
            Err(e) => {
                return Err(describe_tls_error(e)).with_context(|| {
                    format!("reading from {} (via {target}) failed", request.host)
                })
            }
        }
        if response_complete(&raw) {
            break;
        }
    }
    parse_response(&raw)
}

fn describe_tls_error(e: std::io::Error) -> anyhow::Error {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => anyhow!("TLS error: {tls}"),
        None => anyhow!(e),
    }
}

fn split_head(raw: &[u8]) -> Option<(&[u8], &[u8])> {
    raw.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (&raw[..i], &raw[i + 4..]))
}

fn response_complete(raw: &[u8]) -> bool {
    let Some((head, body)) = split_head(raw) else {
        return false;
    };
    let head = String::from_utf8_lossy(head);
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .is_some_and(|len| body.len() >= len)
}

/// Parses an HTTP/1.x response: status line, headers, and a body framed by Content-Length,
/// chunked encoding, or the end of the stream.
pub fn parse_response(raw: &[u8]) -> Result<HttpResponse> {
    let (head, body) = split_head(raw).ok_or_else(|| {
        if raw.is_empty() {
            anyhow!("the server closed the connection without answering")
        } else {
            anyhow!("the server's answer is not HTTP (no end of headers)")
        }
    })?;
    let head = std::str::from_utf8(head).context("HTTP headers are not text")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        bail!("the server's answer is not HTTP/1.x: {status_line:?}");
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad HTTP status line {status_line:?}"))?;
    let reason = parts.next().unwrap_or_default().to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let find = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let body = if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        decode_chunked(body)?
    } else if let Some(len) = find("content-length") {
        let len: usize = len.parse().context("bad Content-Length")?;
        if body.len() < len {
            bail!(
                "the server's answer was cut short ({} of {len} bytes)",
                body.len()
            );
        }
        body[..len].to_vec()
    } else {
        body.to_vec()
    };
    Ok(HttpResponse {
        status,
        reason,
        headers,
        body,
    })
}

fn decode_chunked(mut data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| anyhow!("bad chunked body"))?;
        let size_text = std::str::from_utf8(&data[..line_end])?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).context("bad chunk size")?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            bail!("the server's chunked answer was cut short");
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_length_and_chunked() {
        let r = parse_response(b"HTTP/1.1 403 Forbidden\r\nx-amzn-ErrorType: AccessDeniedException\r\nContent-Length: 5\r\n\r\nhello extra").unwrap();
        assert_eq!(r.status, 403);
        assert_eq!(r.reason, "Forbidden");
        assert_eq!(r.header("X-Amzn-ErrorType"), Some("AccessDeniedException"));
        assert_eq!(r.body, b"hello");
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.body, b"abcde");
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc").is_err());
        assert!(parse_response(b"").is_err());
        assert!(parse_response(b"SSH-2.0\r\n\r\n").is_err());
    }
}
