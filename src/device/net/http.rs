//! A small HTTP/1.1 client over rustls: one request on a fresh connection, the response read
//! whole (Content-Length, chunked, or to the end of the stream): all the credentials provider
//! and the few AWS IoT calls of certificate renewal need. Plain HTTP only when a URL asks for
//! it (a local stand-in).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use rustls::pki_types::ServerName;
use rustls::ClientConfig;

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

    /// What an error answer says: the `message` of its JSON body, as AWS sends it, else the
    /// body as text (empty if none).
    pub fn error_message(&self) -> String {
        serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(String::from))
            .unwrap_or_else(|| String::from_utf8_lossy(&self.body).trim().to_string())
    }
}

/// Where requests go: the scheme, the host and the port of an endpoint as given by the user or
/// `device.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// TLS, else plain HTTP.
    pub https: bool,
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    /// A TLS endpoint given as `host`, `host:port` or `https://host[:port]` (port 443 by
    /// default), like the credentials endpoint. `what` names it in errors.
    pub fn tls(text: &str, what: &str) -> Result<Self> {
        if text.starts_with("http://") {
            bail!("the {what} {text:?} must use TLS (https://)");
        }
        Self::parse(
            text,
            text.strip_prefix("https://").unwrap_or(text),
            true,
            what,
        )
    }

    /// A URL, `https://host[:port]` or `http://host[:port]` (port 443 or 80 by default). `what`
    /// names it in errors.
    pub fn url(text: &str, what: &str) -> Result<Self> {
        if let Some(rest) = text.strip_prefix("https://") {
            Self::parse(text, rest, true, what)
        } else if let Some(rest) = text.strip_prefix("http://") {
            Self::parse(text, rest, false, what)
        } else {
            bail!("the {what} {text:?} must start with https:// or http://");
        }
    }

    /// `rest` (`text` without its scheme) as `host[:port][/]`; `[v6]:port` too.
    fn parse(text: &str, rest: &str, https: bool, what: &str) -> Result<Self> {
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) if !host.contains(']') || host.ends_with(']') => (
                host,
                port.parse()
                    .with_context(|| format!("bad port in {what} {text:?}"))?,
            ),
            _ => (rest, if https { 443 } else { 80 }),
        };
        Ok(Self {
            https,
            host: host.to_string(),
            port,
        })
    }
}

/// Where to connect and what to ask.
#[derive(Debug, Clone)]
pub struct HttpRequest<'a> {
    /// `GET`, `PATCH`, …
    pub method: &'a str,
    /// Host name: SNI, certificate check, and `Host` header.
    pub host: &'a str,
    pub port: u16,
    /// Dial this address instead of resolving `host` (like curl's `--resolve`).
    pub connect: Option<&'a str>,
    pub path: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
    pub timeout: Duration,
}

/// Both kinds of connection, read and written alike.
trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

/// Sends one request over a fresh connection, TLS with `config` (plain TCP when `None`), and
/// reads the whole response.
pub fn send(config: Option<Arc<ClientConfig>>, request: &HttpRequest<'_>) -> Result<HttpResponse> {
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

    let mut tls: Box<dyn Stream> = match config {
        Some(config) => {
            let server_name = ServerName::try_from(request.host.to_string())
                .map_err(|_| anyhow!("{:?} is not a valid host name", request.host))?;
            let connection = rustls::ClientConnection::new(config, server_name)?;
            Box::new(rustls::StreamOwned::new(connection, tcp))
        }
        None => Box::new(tcp),
    };
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {}\r\nAccept: */*\r\nUser-Agent: zkiot/{}\r\nConnection: close\r\n",
        request.method,
        request.path,
        host_header(request.host, request.port),
        env!("CARGO_PKG_VERSION")
    );
    for (name, value) in request.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !request.body.is_empty() || request.method != "GET" {
        head.push_str(&format!("Content-Length: {}\r\n", request.body.len()));
    }
    head.push_str("\r\n");
    let mut message = head.into_bytes();
    message.extend_from_slice(request.body);
    tls.write_all(&message)
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
            Err(e) if e.kind() == ErrorKind::UnexpectedEof && !raw.is_empty() => break,
            // A read timeout shows as WouldBlock on Unix, TimedOut elsewhere.
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => bail!(
                "{} (via {target}) did not answer within {} s",
                request.host,
                request.timeout.as_secs_f32()
            ),
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

/// The `Host` header: the port only when it is not the default one.
pub fn host_header(host: &str, port: u16) -> String {
    if port == 443 || port == 80 {
        host.to_string()
    } else {
        format!("{host}:{port}")
    }
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
    fn endpoints() {
        let tls = |text| Endpoint::tls(text, "endpoint").map(|e| (e.host, e.port));
        assert_eq!(
            tls("abc.credentials.iot.eu-west-1.amazonaws.com").unwrap(),
            ("abc.credentials.iot.eu-west-1.amazonaws.com".into(), 443)
        );
        assert_eq!(
            tls("https://localhost:8443/").unwrap(),
            ("localhost".into(), 8443)
        );
        assert_eq!(tls("[::1]:8443").unwrap(), ("[::1]".into(), 8443));
        assert!(tls("http://localhost:8443")
            .unwrap_err()
            .to_string()
            .contains("must use TLS"));
        let err = tls("localhost:https").unwrap_err().to_string();
        assert_eq!(err, "bad port in endpoint \"localhost:https\"");

        let url = |text| Endpoint::url(text, "AWS IoT API endpoint");
        let e = url("https://iot.eu-west-1.amazonaws.com").unwrap();
        assert_eq!(
            (e.https, e.host.as_str(), e.port),
            (true, "iot.eu-west-1.amazonaws.com", 443)
        );
        let e = url("http://127.0.0.1:5000/").unwrap();
        assert_eq!(
            (e.https, e.host.as_str(), e.port),
            (false, "127.0.0.1", 5000)
        );
        assert_eq!(url("http://moto").unwrap().port, 80);
        let err = url("iot.eu-west-1.amazonaws.com").unwrap_err().to_string();
        assert!(err.contains("must start with https:// or http://"), "{err}");
    }

    #[test]
    fn error_answers_say_their_message() {
        let answer = |body: &[u8]| HttpResponse {
            status: 403,
            reason: "Forbidden".into(),
            headers: Vec::new(),
            body: body.to_vec(),
        };
        assert_eq!(
            answer(br#"{"message":"Invalid thing name passed"}"#).error_message(),
            "Invalid thing name passed"
        );
        assert_eq!(answer(b" denied \n").error_message(), "denied");
        assert_eq!(answer(b"").error_message(), "");
    }

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
