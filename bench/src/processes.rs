//! What one use costs when every use is a new process, as in scripts and
//! `credential_process`: `openssl pkeyutl -sign` and a whole `curl`
//! mutual-TLS request, with a key file, with the token key (module over the
//! emulator, at 0 ms and at the device latency), and `pkeyutl` with SoftHSM2.
//!
//! Each case runs one untimed process first (the first process ever fills the
//! module's caches), then the cases of a consumer take turns, one process
//! each, so that they share the load of the machine; a case reports the
//! median wall time and peak memory (`ru_maxrss` from `wait4`) per process,
//! and the device operations per process from the emulator's trace.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::Options;

/// Whose key a process signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    File,
    SoftHsm,
    /// The module over the emulator, with this device latency.
    Token {
        latency_ms: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consumer {
    Pkeyutl,
    Curl,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Case {
    pub consumer: Consumer,
    pub key: Key,
}

impl Case {
    pub fn describe(self) -> String {
        let consumer = match self.consumer {
            Consumer::Pkeyutl => "openssl pkeyutl -sign",
            Consumer::Curl => "curl mTLS request",
        };
        let key = match self.key {
            Key::File => "key file".to_string(),
            Key::SoftHsm => "SoftHSM2 key".to_string(),
            Key::Token { latency_ms } => format!("token key {latency_ms} ms"),
        };
        format!("{consumer}, {key}")
    }
}

/// What the processes of one case cost.
#[derive(Debug, Clone)]
pub struct PerProcess {
    /// Median wall time of one process.
    pub seconds: f64,
    /// Median peak resident memory of one process, bytes.
    pub peak_rss: u64,
    /// Device operations of all timed processes, by name in the order of
    /// their first call, and the number of processes.
    pub device_ops: Vec<(String, u64)>,
    pub processes: u64,
}

impl PerProcess {
    pub fn device_ops_per_process(&self) -> f64 {
        self.device_ops.iter().map(|(_, n)| n).sum::<u64>() as f64 / self.processes as f64
    }

    /// Calls of one device operation, all processes together.
    pub fn device_op(&self, name: &str) -> u64 {
        self.device_ops
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0, |(_, count)| *count)
    }

    /// The operations of one process, as `open sign` or `open 3 info sign`.
    pub fn device_ops_text(&self) -> String {
        if self.device_ops.is_empty() {
            return "none".into();
        }
        self.device_ops
            .iter()
            .map(|(name, count)| {
                let per = *count as f64 / self.processes as f64;
                if per == 1.0 {
                    name.clone()
                } else {
                    let per = format!("{per:.3}");
                    format!("{} {name}", per.trim_end_matches('0').trim_end_matches('.'))
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Files and servers shared by every case: a test CA, an `openssl s_server`
/// that requires a client certificate, a key file and its certificate, the
/// token's state and the certificate of its key, and a SoftHSM2 token.
pub struct Setup {
    dir: tempfile::TempDir,
    server: Child,
    url: String,
    softhsm: Option<PathBuf>,
    module: PathBuf,
    emulator: PathBuf,
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

const TOKEN_KEY: &str = "pkcs11:token=zymkey;object=slot0;type=private";
const SOFTHSM_KEY: &str = "pkcs11:token=bench;object=key;type=private;pin-value=1234";

/// Runs `openssl` with `args` (words separated by white space) in `dir`.
fn openssl(dir: &Path, args: &str) -> Result<()> {
    run_quiet(
        Command::new("openssl")
            .current_dir(dir)
            .args(args.split_whitespace()),
    )
}

fn run_quiet(command: &mut Command) -> Result<()> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !out.status.success() {
        bail!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Setup {
    pub fn new(o: &Options) -> Result<Setup> {
        let dir = tempfile::tempdir()?;
        let d = &dir.path().to_path_buf();
        fs::write(
            d.join("client.ext"),
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n",
        )?;
        fs::write(
            d.join("server.ext"),
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n",
        )?;
        fs::write(d.join("digest"), [0x5a; 32])?;
        for key in ["ca", "server", "client"] {
            openssl(
                d,
                &format!("ecparam -name prime256v1 -genkey -noout -out {key}.key"),
            )?;
        }
        openssl(
            d,
            "req -x509 -new -key ca.key -sha256 -days 2 -subj /CN=zkbench-CA \
             -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign \
             -out ca.crt",
        )?;
        let issue = |name: &str, ext: &str| {
            openssl(
                d,
                &format!(
                    "x509 -req -in {name}.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 \
                     -sha256 -extfile {ext} -out {name}.crt"
                ),
            )
        };
        for (name, subject) in [("server", "/CN=127.0.0.1"), ("client", "/CN=file-key")] {
            openssl(
                d,
                &format!("req -new -key {name}.key -subj {subject} -out {name}.csr"),
            )?;
        }
        issue("server", "server.ext")?;
        issue("client", "client.ext")?;
        let mut setup = Setup {
            server: start_server(d)?,
            url: String::new(),
            softhsm: None,
            module: o.module.clone(),
            emulator: o.emulator.clone(),
            dir,
        };
        setup.url = server_url(setup.dir.path())?;
        // The token key's certificate, from a CSR the token signs.
        let d = setup.dir.path();
        fs::create_dir(d.join("token"))?;
        run_quiet(
            setup
                .command(Key::Token { latency_ms: 0 }, "openssl")
                .args("req -new -engine pkcs11 -keyform engine -key".split(' '))
                .args([TOKEN_KEY, "-subj", "/CN=token-key", "-out", "token.csr"]),
        )?;
        issue("token", "client.ext")?;
        if o.softhsm.exists() {
            setup.softhsm = Some(o.softhsm.clone());
            setup.init_softhsm()?;
        } else {
            eprintln!(
                "zkbench: {} not found, SoftHSM2 row skipped",
                o.softhsm.display()
            );
        }
        Ok(setup)
    }

    pub fn has_softhsm(&self) -> bool {
        self.softhsm.is_some()
    }

    fn init_softhsm(&self) -> Result<()> {
        let d = self.dir.path();
        fs::create_dir(d.join("softhsm"))?;
        fs::write(
            d.join("softhsm2.conf"),
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                d.join("softhsm").display()
            ),
        )?;
        let init = "--init-token --free --label bench --so-pin 12345678 --pin 1234";
        run_quiet(
            self.command(Key::SoftHsm, "softhsm2-util")
                .args(init.split(' ')),
        )?;
        let module = self.softhsm.as_ref().context("no SoftHSM2")?;
        run_quiet(
            self.command(Key::SoftHsm, "pkcs11-tool")
                .arg("--module")
                .arg(module)
                .args(
                    "--token-label bench --login --pin 1234 --keypairgen --key-type EC:prime256v1 \
                     --id 01 --label key"
                        .split_whitespace(),
                ),
        )
    }

    /// The emulator's trace of every token process of the setup.
    pub fn trace(&self) -> PathBuf {
        self.dir.path().join("token/trace")
    }

    /// The setup's folder: `ca.crt`, `server.crt`/`.key` (for 127.0.0.1), `token.crt` (the
    /// token key's certificate from `ca.crt`).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `program` in the setup directory with the environment of `key` alone:
    /// the module, emulator and OpenSSL variables of the caller are cleared.
    pub fn command(&self, key: Key, program: &str) -> Command {
        let d = self.dir.path();
        let mut command = Command::new(program);
        command.current_dir(d).stdin(Stdio::null());
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if name.starts_with("ZKIOT_")
                || name.starts_with("SOFTHSM2_")
                || ["PKCS11_MODULE_PATH", "OPENSSL_CONF", "OPENSSL_ENGINES"].contains(&&*name)
            {
                command.env_remove(&*name);
            }
        }
        match key {
            Key::File => {}
            Key::SoftHsm => {
                command.env("SOFTHSM2_CONF", d.join("softhsm2.conf")).env(
                    "PKCS11_MODULE_PATH",
                    self.softhsm.clone().unwrap_or_default(),
                );
            }
            Key::Token { latency_ms } => {
                let token = d.join("token");
                let config = token.join("zkiot.toml");
                if !config.exists() {
                    let store = format!("store = \"{}\"\n", token.join("store").display());
                    let _ = fs::write(&config, store);
                }
                command
                    .env("PKCS11_MODULE_PATH", &self.module)
                    .env("ZKIOT_ZKLIB", &self.emulator)
                    .env("ZKIOT_EMU_DIR", token.join("emu"))
                    .env("ZKIOT_EMU_LATENCY_MS", latency_ms.to_string())
                    .env("ZKIOT_EMU_TRACE", self.trace())
                    .env("ZKIOT_CONF", config);
            }
        }
        command
    }

    /// One process of `case`, ready to start.
    fn process(&self, case: Case) -> Command {
        match case.consumer {
            Consumer::Pkeyutl => {
                let mut command = self.command(case.key, "openssl");
                command.args(["pkeyutl", "-sign", "-in", "digest", "-out", "signature"]);
                match case.key {
                    Key::File => command.args(["-inkey", "client.key"]),
                    Key::SoftHsm => command
                        .args(["-engine", "pkcs11", "-keyform", "engine", "-inkey"])
                        .arg(SOFTHSM_KEY),
                    Key::Token { .. } => command
                        .args(["-engine", "pkcs11", "-keyform", "engine", "-inkey"])
                        .arg(TOKEN_KEY),
                };
                command
            }
            Consumer::Curl => {
                let mut command = self.command(case.key, "curl");
                command.args(["-sS", "--fail", "-o", "/dev/null", "--cacert", "ca.crt"]);
                match case.key {
                    Key::File => command.args(["--key", "client.key", "--cert", "client.crt"]),
                    Key::SoftHsm => command.args(["--key", SOFTHSM_KEY, "--cert", "client.crt"]),
                    Key::Token { .. } => command.args(["--key", TOKEN_KEY, "--cert", "token.crt"]),
                };
                command.arg(&self.url);
                command
            }
        }
    }

    /// Runs `cases`: one untimed process of each, then rounds of one process
    /// of each case in turn, for about `duration` per case (at least
    /// `min_runs` rounds), so that every case sees the same load of the
    /// machine and their ratios hold even when it varies.
    pub fn measure(
        &self,
        cases: &[Case],
        duration: Duration,
        min_runs: u64,
    ) -> Result<Vec<PerProcess>> {
        let stderr = self.dir.path().join("stderr");
        for case in cases {
            run_measured(&mut self.process(*case), &stderr)
                .with_context(|| format!("{}: first process", case.describe()))?;
        }
        let mut results: Vec<PerProcess> = cases
            .iter()
            .map(|_| PerProcess {
                seconds: 0.0,
                peak_rss: 0,
                device_ops: Vec::new(),
                processes: 0,
            })
            .collect();
        let (mut times, mut peaks) = (vec![Vec::new(); cases.len()], vec![Vec::new(); cases.len()]);
        let start = Instant::now();
        let total = duration * u32::try_from(cases.len())?;
        let mut rounds = 0;
        while rounds < min_runs || start.elapsed() < total {
            for (i, case) in cases.iter().enumerate() {
                let before = fs::metadata(self.trace()).map_or(0, |m| m.len());
                let (time, peak) = run_measured(&mut self.process(*case), &stderr)
                    .with_context(|| case.describe())?;
                times[i].push(time.as_secs_f64());
                peaks[i].push(peak);
                let trace = fs::read(self.trace()).unwrap_or_default();
                let new = trace.get(before as usize..).unwrap_or_default();
                for line in String::from_utf8_lossy(new).lines() {
                    let name = line.split(' ').next().unwrap_or_default();
                    let ops = &mut results[i].device_ops;
                    match ops.iter_mut().find(|(n, _)| n == name) {
                        Some((_, count)) => *count += 1,
                        None => ops.push((name.to_string(), 1)),
                    }
                }
            }
            rounds += 1;
        }
        for (i, result) in results.iter_mut().enumerate() {
            result.seconds = median(&mut times[i]);
            result.peak_rss = median(&mut peaks[i]);
            result.processes = rounds;
        }
        Ok(results)
    }
}

fn start_server(dir: &Path) -> Result<Child> {
    let log = fs::File::create(dir.join("server.log"))?;
    Command::new("openssl")
        .current_dir(dir)
        .args(["s_server", "-accept", "127.0.0.1:0", "-cert", "server.crt"])
        .args([
            "-key",
            "server.key",
            "-Verify",
            "1",
            "-CAfile",
            "ca.crt",
            "-www",
        ])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting openssl s_server")
}

/// The URL of the server started in `dir`, once it listens (the kernel
/// picked its port).
fn server_url(dir: &Path) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = fs::read_to_string(dir.join("server.log")).unwrap_or_default();
        if let Some(port) = log
            .lines()
            .find_map(|l| l.strip_prefix("ACCEPT 127.0.0.1:"))
        {
            return Ok(format!("https://127.0.0.1:{}/", port.trim()));
        }
        if Instant::now() > deadline {
            bail!("openssl s_server did not start: {log}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs one process to its end: its wall time and peak resident memory.
fn run_measured(command: &mut Command, stderr: &Path) -> Result<(Duration, u64)> {
    let start = Instant::now();
    let child = command
        .stdout(Stdio::null())
        .stderr(fs::File::create(stderr)?)
        .spawn()
        .with_context(|| format!("starting {command:?}"))?;
    let pid = libc::pid_t::try_from(child.id())?;
    let mut status = 0;
    // SAFETY: rusage is plain data, valid when all zero.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our own child, not yet waited for; both outputs are valid.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let elapsed = start.elapsed();
    if rc != pid {
        bail!("wait4: {}", std::io::Error::last_os_error());
    }
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!(
            "{command:?} failed (status {status}): {}",
            fs::read_to_string(stderr).unwrap_or_default().trim()
        );
    }
    let peak = u64::try_from(usage.ru_maxrss).unwrap_or(0) * 1024;
    Ok((elapsed, peak))
}

fn median<T: PartialOrd + Copy>(values: &mut [T]) -> T {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    values[values.len() / 2]
}
