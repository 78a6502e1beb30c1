//! What the device agent (`zkiot device agent`) costs on the device: device operations while
//! it idles and while it serves an app's credentials requests from what it holds, and its peak
//! memory.
//!
//! The agent runs against a stand-in for the AWS IoT credentials provider, `openssl s_server
//! -WWW` with mutual TLS (it requires the token key's certificate from the setup's CA) serving
//! a credentials document from a file, with the token key's certificate (valid for a day, so
//! its renewal is not due) and its local endpoint on 127.0.0.1. Rows: idle (start, the
//! renewal pass, then `--seconds` with no request), the first request (the agent fetches:
//! opening the device and one signature), then requests while the credentials are valid; the
//! device operations come from the emulator's trace, the peak memory from the agent's
//! `VmHWM`.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::processes::{Key, Setup};
use crate::Options;

/// What was measured.
pub struct AgentCost {
    pub idle_seconds: f64,
    /// Device operations from the agent's start to the end of its idle time.
    pub idle_ops: Vec<String>,
    /// The first request: its time and device operations.
    pub first: Duration,
    pub first_ops: Vec<String>,
    /// Requests served from the credentials held: how many, their median time, the device
    /// operations they made.
    pub held_requests: usize,
    pub held_median: Duration,
    pub held_ops: Vec<String>,
    /// Resident memory: after the idle time, and the peak at the end.
    pub idle_rss: u64,
    pub peak_rss: u64,
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The operations in the trace from line `from` on.
fn operations(trace: &Path, from: usize) -> Vec<String> {
    fs::read_to_string(trace)
        .unwrap_or_default()
        .lines()
        .skip(from)
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect()
}

fn trace_len(trace: &Path) -> usize {
    fs::read_to_string(trace)
        .unwrap_or_default()
        .lines()
        .count()
}

/// `VmRSS` or `VmHWM` of a process, in bytes.
fn memory(pid: u32, field: &str) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// One request to the local endpoint: its status.
fn request(port: u16, token: &str) -> Result<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "GET /credentials HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {token}\r\n\r\n"
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status")
}

/// The credentials provider's stand-in: `openssl s_server -WWW` in `dir`, serving
/// `role-aliases/bench/credentials` to clients with a certificate from `ca.crt`.
fn start_provider(setup: &Setup, dir: &Path) -> Result<(Killed, u16)> {
    let d = setup.path();
    let expiration = time_in(3600)?;
    fs::create_dir_all(dir.join("role-aliases/bench"))?;
    fs::write(
        dir.join("role-aliases/bench/credentials"),
        format!(
            "{{\"credentials\":{{\"accessKeyId\":\"ASIAZKBENCH\",\"secretAccessKey\":\"bench-secret\",\
             \"sessionToken\":\"bench-token\",\"expiration\":\"{expiration}\"}}}}"
        ),
    )?;
    let port = free_port()?;
    let log = fs::File::create(dir.join("s_server.log"))?;
    let child = Command::new("openssl")
        .current_dir(dir)
        .args(["s_server", "-accept", &format!("127.0.0.1:{port}"), "-cert"])
        .arg(d.join("server.crt"))
        .arg("-key")
        .arg(d.join("server.key"))
        .args(["-Verify", "1", "-verify_return_error", "-CAfile"])
        .arg(d.join("ca.crt"))
        .arg("-WWW")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting openssl s_server -WWW")?;
    let child = Killed(child);
    wait_listening(port, "openssl s_server")?;
    Ok((child, port))
}

fn wait_listening(port: u16, what: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("{what} does not listen on 127.0.0.1:{port}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// RFC 3339 (UTC) `seconds` from now.
fn time_in(seconds: i64) -> Result<String> {
    let t = time::OffsetDateTime::now_utc() + time::Duration::seconds(seconds);
    Ok(t.replace_nanosecond(0)?
        .format(&time::format_description::well_known::Rfc3339)?)
}

/// Runs the agent and measures it.
pub fn measure(setup: &Setup, zkiot: &Path, o: &Options) -> Result<AgentCost> {
    let work = setup.path().join("agent");
    let device_dir = work.join("device");
    fs::create_dir_all(&device_dir)?;
    let (_provider, provider_port) = start_provider(setup, &work)?;
    let d = setup.path();
    fs::write(
        device_dir.join("device.toml"),
        format!(
            "thing = \"token-key\"\ncertificate = \"{}\"\nca = \"{}\"\nendpoint = \"127.0.0.1:{provider_port}\"\n\
             role_alias = \"bench\"\nca_bundle = \"{}\"\nrenew_within_days = 0\n",
            d.join("token.crt").display(),
            d.join("ca.crt").display(),
            d.join("ca.crt").display(),
        ),
    )?;
    let port = free_port()?;
    let token_file = work.join("credentials-token");
    let trace = setup.trace();
    let before = trace_len(&trace);
    let mut command = setup.command(Key::Token { latency_ms: 0 }, &zkiot.to_string_lossy());
    command
        .args(["device", "agent", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--token-file")
        .arg(&token_file)
        .env("ZKIOT_DEVICE_DIR", &device_dir)
        .env("ZKIOT_PKCS11_MODULE", &o.module)
        .stdout(Stdio::null())
        .stderr(fs::File::create(work.join("agent.log"))?);
    let agent = Killed(command.spawn().context("starting zkiot device agent")?);
    let pid = agent.0.id();
    wait_listening(port, "the agent's local endpoint")?;
    let idle_seconds = o.seconds;
    std::thread::sleep(Duration::from_secs_f64(idle_seconds));
    let idle_ops = operations(&trace, before);
    let idle_rss = memory(pid, "VmRSS:")?;
    let token = fs::read_to_string(&token_file)?;

    let mark = trace_len(&trace);
    let started = Instant::now();
    let status = request(port, &token)?;
    let first = started.elapsed();
    if status != 200 {
        bail!(
            "the agent answered {status}: {}",
            fs::read_to_string(work.join("agent.log")).unwrap_or_default()
        );
    }
    let first_ops = operations(&trace, mark);

    let mark = trace_len(&trace);
    let held_requests = if o.smoke { 5 } else { 200 };
    let mut times = Vec::with_capacity(held_requests);
    for _ in 0..held_requests {
        let started = Instant::now();
        let status = request(port, &token)?;
        times.push(started.elapsed());
        if status != 200 {
            bail!("the agent answered {status} to a request while it held credentials");
        }
    }
    times.sort();
    let held_ops = operations(&trace, mark);
    let peak_rss = memory(pid, "VmHWM:")?;
    drop(agent);
    Ok(AgentCost {
        idle_seconds,
        idle_ops,
        first,
        first_ops,
        held_requests,
        held_median: times[times.len() / 2],
        held_ops,
        idle_rss,
        peak_rss,
    })
}
