//! The agent's local credentials endpoint: the AWS SDKs' container-credentials protocol, so an
//! app on the device gets AWS credentials with no access to the token, its key or its PIN.
//!
//! ```text
//! AWS_CONTAINER_CREDENTIALS_FULL_URI=http://127.0.0.1:9911/credentials
//! AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=/run/zkiot/credentials-token
//! ```
//!
//! `GET /credentials` with the token as its `Authorization` header answers
//! `{"AccessKeyId", "SecretAccessKey", "Token", "Expiration"}` from the agent's
//! [`Source`](super::source::Source): the credentials it holds while they are fresh, so a
//! request costs no device operation while they are. Refused: a peer that is not on this host
//! (403; the endpoint listens on a loopback address only anyway), a request without the token
//! (401) or with another one (403), any other path (404) or method (405). The token is 32
//! random bytes in hex, new at each start, in a file of mode 0640 that belongs to the token
//! group (0600 without one). Nothing secret is logged.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::source::Source;

/// The path the credentials are served at.
pub const PATH: &str = "/credentials";
/// Requests served at once; more get 503.
const MAX_CONNECTIONS: usize = 16;
/// The longest request head read.
const MAX_HEAD: usize = 8 * 1024;
/// How long a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// A new authorization token: 32 random bytes, hex.
pub fn new_token() -> Result<String> {
    let mut bytes = [0u8; 32];
    openssl::rand::rand_bytes(&mut bytes)?;
    Ok(crate::x509::hex(&bytes))
}

/// Binds `listen` (a loopback address) and serves from `source` on a thread of its own.
/// Returns the address bound.
pub fn start(listen: SocketAddr, token: String, source: Arc<Source>) -> Result<SocketAddr> {
    if !listen.ip().is_loopback() {
        bail!("the local credentials endpoint listens on a loopback address only, not {listen}");
    }
    let listener = TcpListener::bind(listen)
        .with_context(|| format!("cannot listen on {listen} for local credentials"))?;
    let bound = listener.local_addr()?;
    let token = Arc::new(token);
    let busy = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name("credentials-endpoint".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                if busy.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
                    busy.fetch_sub(1, Ordering::SeqCst);
                    let _ = answer(&stream, 503, &error_body("too many requests at once"));
                    continue;
                }
                let (token, source, done) = (token.clone(), source.clone(), busy.clone());
                let spawned = std::thread::Builder::new()
                    .name("credentials-request".into())
                    .spawn(move || {
                        serve(stream, &token, &source);
                        done.fetch_sub(1, Ordering::SeqCst);
                    });
                if spawned.is_err() {
                    busy.fetch_sub(1, Ordering::SeqCst);
                    eprintln!(
                        "zkiot agent: warning: cannot start a thread for a credentials request"
                    );
                }
            }
        })?;
    Ok(bound)
}

fn error_body(message: &str) -> Vec<u8> {
    serde_json::json!({ "message": message })
        .to_string()
        .into_bytes()
}

/// One request: read, judged, answered.
fn serve(stream: TcpStream, token: &str, source: &Source) {
    let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
    let _ = stream.set_write_timeout(Some(READ_TIMEOUT));
    let peer_local = stream.peer_addr().is_ok_and(|a| a.ip().is_loopback());
    let (status, body) = match read_head(&stream) {
        _ if !peer_local => (403, error_body("only processes on this host may ask")),
        Err(_) => (400, error_body("bad request")),
        Ok(head) => judge(&head, token, source),
    };
    let _ = answer(&stream, status, &body);
}

/// The request line and headers, as text.
fn read_head(mut stream: &TcpStream) -> Result<String> {
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            bail!("the client closed the connection");
        }
        head.extend_from_slice(&chunk[..n]);
        if head.len() > MAX_HEAD {
            bail!("request head too long");
        }
    }
    Ok(String::from_utf8(head)?)
}

/// The answer to a request head.
fn judge(head: &str, token: &str, source: &Source) -> (u16, Vec<u8>) {
    let mut lines = head.split("\r\n");
    let mut request = lines.next().unwrap_or_default().split(' ');
    let (method, target) = (
        request.next().unwrap_or_default(),
        request.next().unwrap_or_default(),
    );
    let path = target.split('?').next().unwrap_or_default();
    if path != PATH {
        return (404, error_body("not found"));
    }
    if method != "GET" {
        return (405, error_body("only GET"));
    }
    let authorization = lines.find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("authorization")
            .then(|| value.trim())
    });
    match authorization {
        None | Some("") => return (401, error_body("the authorization token is missing")),
        Some(given) if !same_token(given, token) => {
            return (403, error_body("the authorization token is not valid"))
        }
        Some(_) => {}
    }
    match source.credentials() {
        Ok(c) => {
            let body = serde_json::json!({
                "AccessKeyId": c.access_key_id,
                "SecretAccessKey": c.secret_access_key,
                "Token": c.session_token,
                "Expiration": c.expiration,
            });
            (200, body.to_string().into_bytes())
        }
        Err(e) => {
            eprintln!("zkiot agent: no credentials for a local request: {e:#}");
            (503, error_body(&format!("no credentials: {e:#}")))
        }
    }
}

/// Compares tokens in time independent of where they differ.
fn same_token(given: &str, token: &str) -> bool {
    given.len() == token.len() && openssl::memcmp::eq(given.as_bytes(), token.as_bytes())
}

fn answer(mut stream: &TcpStream, status: u16, body: &[u8]) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        let t = new_token().unwrap();
        assert_eq!(t.len(), 64);
        assert_ne!(t, new_token().unwrap());
        assert!(same_token(&t, &t.clone()));
        assert!(!same_token(&t[1..], &t));
        assert!(!same_token("", &t));
    }
}
