//! Test stand-ins for AWS: a real moto server per test, the local credentials provider
//! (`tests/credprov/server.py`), a test root standing in for Amazon's, and helpers to run
//! `zkiot` as the operator and as emulated devices.
//!
//! Needs the test venv (`scripts/install-deps.sh`, or `ZKIOT_VENV`) with moto, boto3 and the aws
//! CLI, and the workspace built (`libzkpkcs11.so`, `libzkemu.so` beside the `zkiot` binary).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use serde_json::Value;
pub use testkit::x509::{csr, issue, p256, rand_u32};

pub const REGION: &str = "us-east-1";
pub const ACCOUNT: &str = "123456789012";

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The test venv; fails (never skips) when it is missing.
pub fn venv() -> PathBuf {
    let venv = std::env::var_os("ZKIOT_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".venv"));
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "the test venv {} is missing: run scripts/install-deps.sh (or set ZKIOT_VENV)",
        venv.display()
    );
    let check = Command::new(&python)
        .args(["-c", "import moto, boto3, awscli"])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "the test venv {} lacks moto/boto3/awscli: run scripts/install-deps.sh",
        venv.display()
    );
    venv
}

pub fn zkiot_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_zkiot"))
}

/// A library built beside the `zkiot` binary.
pub fn built_library(name: &str) -> PathBuf {
    testkit::built::library(name)
}

/// A loopback port free at the time of asking.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Plain HTTP/1.0 GET on loopback; the status code, or None if nothing answers.
pub fn http_get_status(port: u16, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// A moto server on its own port, with AWS-correct certificate ids (`iot.use_valid_cert`).
/// Killed when dropped.
pub struct Moto {
    child: Option<Child>,
    pub port: u16,
    pub log: PathBuf,
    venv: PathBuf,
}

/// moto's server with `iot.use_valid_cert` on, bound before it says its port (argv: port, or 0
/// for any free one; the file to write the bound port to).
const MOTO_LAUNCHER: &str = "import os, sys\n\
from moto.core.config import default_user_config as c\n\
c['iot']['use_valid_cert'] = True\n\
from werkzeug.serving import make_server\n\
from moto.server import DomainDispatcherApplication, create_backend_app\n\
server = make_server('127.0.0.1', int(sys.argv[1]), DomainDispatcherApplication(create_backend_app), threaded=True)\n\
os.environ['MOTO_PORT'] = str(server.server_port)\n\
open(sys.argv[2] + '.tmp', 'w').write(str(server.server_port))\n\
os.replace(sys.argv[2] + '.tmp', sys.argv[2])\n\
server.serve_forever()\n";

impl Moto {
    /// Starts moto on a port the OS picks (no race with other tests).
    pub fn start(log_dir: &Path) -> Self {
        Self::start_on(log_dir, 0)
    }

    /// Starts moto on `port` (0: any free one; a fixed one to restart at the same address).
    pub fn start_on(log_dir: &Path, port: u16) -> Self {
        let venv = venv();
        let tag = format!("{port}-{}", rand_u32());
        let log = log_dir.join(format!("moto-{tag}.log"));
        let port_file = log_dir.join(format!("moto-{tag}.port"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(venv.join("bin/python"))
            .args(["-c", MOTO_LAUNCHER, &port.to_string()])
            .arg(&port_file)
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let mut moto = Self {
            child: Some(child),
            port,
            log,
            venv,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(bound) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|t| t.trim().parse::<u16>().ok())
            {
                moto.port = bound;
                if http_get_status(bound, "/moto-api/") == Some(200) {
                    return moto;
                }
            }
            if let Some(status) = moto.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "moto exited ({status}): {}",
                    std::fs::read_to_string(&moto.log).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "moto did not start in 60 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Kills the server (its state goes with it).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs Python with boto3 clients `iot`, `iam`, `sts` on this moto; the snippet sets
    /// `result`, returned as JSON.
    pub fn py(&self, snippet: &str) -> Value {
        let program = format!(
            "import boto3, json, datetime\n\
             s = boto3.session.Session(aws_access_key_id='testing', aws_secret_access_key='testing', region_name='{REGION}')\n\
             iot = s.client('iot', endpoint_url='{url}')\n\
             iam = s.client('iam', endpoint_url='{url}')\n\
             sts = s.client('sts', endpoint_url='{url}')\n\
             result = None\n\
             {snippet}\n\
             print(json.dumps(result, default=str))\n",
            url = self.url(),
            snippet = snippet
        );
        let out = Command::new(self.venv.join("bin/python"))
            .args(["-c", &program])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "python snippet failed: {}\n{snippet}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// A summary of what moto holds, to compare runs: sorted names and ids.
    pub fn inventory(&self) -> Value {
        self.py(
            "certs = sorted((c['certificateId'], c['status']) for page in iot.get_paginator('list_certificates').paginate() for c in page['certificates'])\n\
             things = sorted(t['thingName'] for page in iot.get_paginator('list_things').paginate() for t in page['things'])\n\
             principals = {t: sorted(iot.list_thing_principals(thingName=t)['principals']) for t in things}\n\
             policies = sorted(p['policyName'] for p in iot.list_policies()['policies'])\n\
             attached = {c[0]: sorted(p['policyName'] for p in iot.list_attached_policies(target='arn:aws:iot:us-east-1:123456789012:cert/' + c[0])['policies']) for c in certs}\n\
             versions = {p: len(iot.list_policy_versions(policyName=p)['policyVersions']) for p in policies}\n\
             aliases = sorted(iot.list_role_aliases()['roleAliases'])\n\
             roles = sorted(r['RoleName'] for r in iam.list_roles()['Roles'])\n\
             result = dict(certs=certs, things=things, principals=principals, policies=policies, attached=attached, versions=versions, aliases=aliases, roles=roles)",
        )
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Writes `<dir>/<thing>.csr` for each name, each with a new P-256 key; returns the keys.
pub fn write_csrs(
    dir: &Path,
    things: impl IntoIterator<Item = String>,
) -> std::collections::BTreeMap<String, PKey<Private>> {
    std::fs::create_dir_all(dir).unwrap();
    let mut keys = std::collections::BTreeMap::new();
    for thing in things {
        let key = p256();
        std::fs::write(
            dir.join(format!("{thing}.csr")),
            csr(&thing, &key).to_pem().unwrap(),
        )
        .unwrap();
        keys.insert(thing, key);
    }
    keys
}

/// Writes `key` to `<dir>/<thing>.key` (PKCS#8 PEM) and returns the path.
pub fn write_key_file(dir: &Path, thing: &str, key: &PKey<Private>) -> PathBuf {
    let path = dir.join(format!("{thing}.key"));
    std::fs::write(&path, key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    path
}

/// The JSON lines of a fleet record (`fleet provision`, `fleet renew`); none if it is missing.
pub fn read_record(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

pub fn sha256_hex(data: &[u8]) -> String {
    openssl::hash::hash(MessageDigest::sha256(), data)
        .unwrap()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The id AWS gives a certificate: SHA-256 of its DER.
pub fn cert_id(cert: &X509) -> String {
    sha256_hex(&cert.to_der().unwrap())
}

/// The local credentials provider, serving `host` with a certificate from a test root that
/// stands in for Amazon's. Killed when dropped.
/// How long the provider holds a request it was told to hang: past a 1 s client timeout.
pub const PROVIDER_HANG_SECONDS: u64 = 3;

pub struct Provider {
    child: Child,
    pub port: u16,
    /// The AWS IoT API gate for devices' calls with their temporary credentials (plain HTTP).
    pub iot_port: u16,
    pub host: String,
    /// The stand-in for Amazon's root: the CA bundle devices verify the endpoint with.
    pub root_pem: PathBuf,
    pub log: PathBuf,
    fault_file: PathBuf,
}

impl Provider {
    pub fn start(moto: &Moto, host: &str, dir: &Path) -> Self {
        let venv = venv();
        let root_pem = stand_in_tls(dir, "endpoint", host, "Test stand-in for Amazon Root CA");
        let port_file = dir.join("provider.port");
        let iot_port_file = dir.join("iot-api.port");
        let log = dir.join("provider.log");
        let fault_file = dir.join("faults.json");
        let _ = std::fs::remove_file(&port_file);
        let child = Command::new(venv.join("bin/python"))
            .arg(repo().join("tests/credprov/server.py"))
            .args(["--moto-url", &moto.url(), "--host", host, "--port", "0"])
            .arg("--cert")
            .arg(dir.join("endpoint.crt"))
            .arg("--key")
            .arg(dir.join("endpoint.key"))
            .arg("--port-file")
            .arg(&port_file)
            .arg("--iot-port-file")
            .arg(&iot_port_file)
            .arg("--log-file")
            .arg(&log)
            .arg("--fault-file")
            .arg(&fault_file)
            .args(["--hang-seconds", &PROVIDER_HANG_SECONDS.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("provider.stderr")).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let port = loop {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                if let Ok(port) = text.trim().parse::<u16>() {
                    break port;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the credentials provider did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let iot_port = std::fs::read_to_string(&iot_port_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        Self {
            child,
            port,
            iot_port,
            host: host.to_string(),
            root_pem,
            log,
            fault_file,
        }
    }

    /// Makes the next `count` credentials requests fail with `mode` ("500", "throttle", "hang"
    /// or "malformed"; see tests/credprov/server.py).
    pub fn inject_faults(&self, mode: &str, count: u32) {
        let tmp = self.fault_file.with_extension("tmp");
        std::fs::write(
            &tmp,
            serde_json::json!({ "mode": mode, "count": count }).to_string(),
        )
        .unwrap();
        std::fs::rename(&tmp, &self.fault_file).unwrap();
    }

    /// The AWS IoT API gate's URL, for a device's `--iot-api`.
    pub fn iot_api(&self) -> String {
        format!("http://127.0.0.1:{}", self.iot_port)
    }

    /// `ADDR:PORT` to connect to instead of resolving the host.
    pub fn connect(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Asks for credentials with curl and a key in a file: (HTTP status, body, headers), or the
    /// curl exit code when no HTTP answer came (handshake refused). `sni`: the name to connect
    /// as (`None`: the endpoint host).
    /// The status and body the provider answers `thing`, with `cert` and its `key`, for the role
    /// alias `alias`; fails the test when no HTTP answer comes.
    pub fn answer(&self, cert: &Path, key: &Path, alias: &str, thing: &str) -> (u16, Value) {
        let (status, body, _) = self
            .curl(cert, Some(key), alias, Some(thing), None)
            .unwrap_or_else(|code| panic!("{thing}: no HTTP answer (curl exit {code})"));
        (status, body)
    }

    pub fn curl(
        &self,
        cert: &Path,
        key: Option<&Path>,
        alias: &str,
        thing: Option<&str>,
        sni: Option<&str>,
    ) -> Result<(u16, Value, String), i32> {
        let host = sni.unwrap_or(&self.host);
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--max-time", "20", "-D", "-", "--cacert"])
            .arg(&self.root_pem)
            .arg("--resolve")
            .arg(format!("{host}:{}:127.0.0.1", self.port));
        if sni.is_some() {
            // The certificate is for the endpoint host; a wrong SNI is the client's choice.
            cmd.arg("-k");
        }
        if let Some(key) = key {
            cmd.arg("--cert").arg(cert).arg("--key").arg(key);
        }
        if let Some(thing) = thing {
            cmd.args(["-H", &format!("x-amzn-iot-thingname: {thing}")]);
        }
        cmd.arg(format!(
            "https://{host}:{}/role-aliases/{alias}/credentials",
            self.port
        ));
        let out = cmd.output().unwrap();
        if !out.status.success() {
            return Err(out.status.code().unwrap_or(-1));
        }
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        Ok((
            status,
            serde_json::from_str(body).unwrap(),
            head.to_string(),
        ))
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The operator: a home folder and the environment that points `zkiot aws` at moto.
pub struct Operator {
    pub home: PathBuf,
    pub endpoint_url: String,
    /// Where `silence` and `revoke` close MQTT connections (a [`Broker`]'s data API).
    pub iot_data_url: Option<String>,
    aws_config: PathBuf,
}

impl Operator {
    /// The renewed certificate `fleet renew` left for `thing` (`devices/<thing>/renewal.crt`).
    pub fn renewal_certificate(&self, thing: &str) -> X509 {
        let path = self.home.join("devices").join(thing).join("renewal.crt");
        X509::from_pem(&std::fs::read(path).unwrap()).unwrap()
    }

    pub fn new(dir: &Path, moto: &Moto) -> Self {
        let home = dir.join("operator");
        std::fs::create_dir_all(&home).unwrap();
        let aws_config = dir.join("aws-config-empty");
        std::fs::write(&aws_config, "").unwrap();
        Self {
            home,
            endpoint_url: moto.url(),
            iot_data_url: None,
            aws_config,
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(zkiot_bin());
        cmd.args(args)
            .env("ZKIOT_HOME", &self.home)
            .env("AWS_ENDPOINT_URL", &self.endpoint_url)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", REGION)
            .env("AWS_CONFIG_FILE", &self.aws_config)
            .env("AWS_SHARED_CREDENTIALS_FILE", &self.aws_config)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_DEFAULT_REGION")
            .env_remove("ZKIOT_IOT_DATA_ENDPOINT")
            .stdin(Stdio::null());
        if let Some(url) = &self.iot_data_url {
            cmd.env("ZKIOT_IOT_DATA_ENDPOINT", url);
        }
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs and expects success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "zkiot {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs and expects a failure with exactly one error line containing `needle`.
    pub fn refused(&self, args: &[&str], needle: &str) -> String {
        let out = self.run(args);
        refused_output(&out, args, needle)
    }

    /// After `aws register-ca` printed `register_out`: the registration code it printed, and
    /// the verification certificate it wrote, checked to carry that code as its CN and to be
    /// signed by `ca`.
    pub fn verification_certificate(&self, register_out: &str, ca: &X509) -> (String, X509) {
        let code = register_out
            .lines()
            .find_map(|l| l.split("registration code ").nth(1))
            .and_then(|rest| rest.split(')').next())
            .expect("register-ca prints the code")
            .to_string();
        let path = self.home.join("aws/verification.crt");
        let verification = X509::from_pem(&std::fs::read(path).unwrap()).unwrap();
        let cn = verification
            .subject_name()
            .entries_by_nid(openssl::nid::Nid::COMMONNAME)
            .next()
            .unwrap()
            .data()
            .to_string()
            .unwrap();
        assert_eq!(cn, code);
        assert!(verification.verify(&ca.public_key().unwrap()).unwrap());
        (code, verification)
    }

    pub fn ca_cert(&self) -> X509 {
        X509::from_pem(&std::fs::read(self.home.join("ca/ca.crt")).unwrap()).unwrap()
    }

    pub fn state(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.home.join("aws.json")).unwrap()).unwrap()
    }

    /// ca init, aws register-ca, aws setup.
    pub fn set_up(&self) {
        self.ok(&["ca", "init"]);
        self.ok(&["aws", "register-ca"]);
        self.ok(&["aws", "setup"]);
    }

    /// Signs `csr_pem` with `zkiot ca sign` and registers the device; returns the certificate.
    pub fn sign_and_register(&self, dir: &Path, thing: &str, csr_pem: &[u8]) -> X509 {
        let csr_path = dir.join(format!("{thing}.csr"));
        std::fs::write(&csr_path, csr_pem).unwrap();
        self.ok(&["ca", "sign", "--csr", csr_path.to_str().unwrap()]);
        self.ok(&["aws", "register-device", "--thing", thing]);
        X509::from_pem(
            &std::fs::read(self.home.join("devices").join(thing).join("device.crt")).unwrap(),
        )
        .unwrap()
    }
}

/// Checks a failed run: non-zero exit, exactly one error line, containing `needle`.
pub fn refused_output(out: &Output, args: &[&str], needle: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success(),
        "zkiot {args:?} should have failed; stderr: {stderr}"
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "expected one error line from {args:?}, got:\n{stderr}"
    );
    assert!(
        lines[0].contains(needle),
        "expected {needle:?} in the error of {args:?}: {stderr}"
    );
    stderr
}

/// An emulated device: its own Zymkey emulator state, token store and device folder.
pub struct Device {
    pub dir: PathBuf,
}

impl Device {
    pub fn new(dir: &Path) -> Self {
        std::fs::create_dir_all(dir.join("emu")).unwrap();
        std::fs::write(
            dir.join("zkiot.toml"),
            format!("store = \"{}\"\n", dir.join("store.sqlite3").display()),
        )
        .unwrap();
        Self {
            dir: dir.to_path_buf(),
        }
    }

    pub fn device_dir(&self) -> PathBuf {
        self.dir.join("device")
    }

    pub fn env(&self, cmd: &mut Command) {
        cmd.env("ZKIOT_HOME", self.dir.join("home"))
            .env("ZKIOT_DEVICE_DIR", self.device_dir())
            .env("ZKIOT_PKCS11_MODULE", built_library("libzkpkcs11.so"))
            .env("ZKIOT_ZKLIB", built_library("libzkemu.so"))
            .env("ZKIOT_EMU_DIR", self.dir.join("emu"))
            .env("ZKIOT_CONF", self.dir.join("zkiot.toml"))
            .env_remove("ZKIOT_TOKEN_LABEL")
            .env_remove("ZKIOT_EMU_TRACE");
    }

    pub fn run(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(zkiot_bin());
        cmd.args(args).stdin(Stdio::null());
        self.env(&mut cmd);
        cmd.output().unwrap()
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "device: zkiot {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `device csr --thing`: the CSR's PEM.
    pub fn csr(&self, thing: &str) -> Vec<u8> {
        self.ok(&["device", "csr", "--thing", thing]);
        std::fs::read(self.device_dir().join("device.csr")).unwrap()
    }

    /// `device install-cert` with the endpoint, alias and CA bundle of `provider`.
    pub fn install(&self, cert: &X509, ca: &Path, provider: &Provider, alias: &str) {
        let cert_path = self.dir.join("delivered.crt");
        std::fs::write(&cert_path, cert.to_pem().unwrap()).unwrap();
        self.install_cert(&cert_path, ca, provider, alias, &[]);
    }

    /// `device install-cert --cert CERT_PATH` with the endpoint, alias and CA bundle of
    /// `provider`, and `extra` options.
    pub fn install_cert(
        &self,
        cert_path: &Path,
        ca: &Path,
        provider: &Provider,
        alias: &str,
        extra: &[&str],
    ) {
        let mut args = vec![
            "device",
            "install-cert",
            "--cert",
            cert_path.to_str().unwrap(),
            "--ca",
            ca.to_str().unwrap(),
            "--endpoint",
            &provider.host,
            "--role-alias",
            alias,
            "--ca-bundle",
            provider.root_pem.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        self.ok(&args);
    }

    /// `device credentials` against the provider, without the cache.
    pub fn credentials(&self, provider: &Provider, extra: &[&str]) -> Output {
        let connect = provider.connect();
        let mut args = vec![
            "device",
            "credentials",
            "--connect",
            connect.as_str(),
            "--no-cache",
            "--format",
            "json",
        ];
        args.extend_from_slice(extra);
        self.run(&args)
    }
}

/// A device with an emulated Zymkey whose certificate, from `zkiot ca sign --days DAYS`, is
/// registered and installed with `provider`'s endpoint, the role alias `alias`, and the IoT API
/// gate as its AWS IoT API (renewal, reports). Returns the device and its certificate file in
/// the operator's folder.
pub fn enrolled_device(
    operator: &Operator,
    provider: &Provider,
    dir: &Path,
    thing: &str,
    alias: &str,
    days: u32,
) -> (Device, PathBuf) {
    let device = Device::new(&dir.join(thing));
    let csr_path = dir.join(format!("{thing}.csr"));
    std::fs::write(&csr_path, device.csr(thing)).unwrap();
    operator.ok(&[
        "ca",
        "sign",
        "--csr",
        csr_path.to_str().unwrap(),
        "--days",
        &days.to_string(),
    ]);
    operator.ok(&["aws", "register-device", "--thing", thing]);
    let cert = operator.home.join("devices").join(thing).join("device.crt");
    let ca = operator.home.join("ca/ca.crt");
    device.install_cert(
        &cert,
        &ca,
        provider,
        alias,
        &["--iot-api", &provider.iot_api()],
    );
    (device, cert)
}

/// The answer of `aws sts get-caller-identity`, which must have succeeded as the devices'
/// role (`zkiot-device`).
pub fn device_caller_identity(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "aws sts get-caller-identity failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let who: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        who["Arn"]
            .as_str()
            .unwrap()
            .contains("assumed-role/zkiot-device/"),
        "{who}"
    );
    who
}

/// Runs the venv's `aws` CLI.
pub fn aws_cli(args: &[&str], envs: &[(&str, &str)], config: Option<&Path>) -> Output {
    let mut cmd = Command::new(venv().join("bin/aws"));
    cmd.args(args)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ENDPOINT_URL")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdin(Stdio::null());
    if let Some(config) = config {
        cmd.env("AWS_CONFIG_FILE", config)
            .env("AWS_SHARED_CREDENTIALS_FILE", config);
    }
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// A fault rule's count meaning every matching request.
pub const FOREVER: u32 = u32::MAX;

/// `tests/awsfault/proxy.py` in front of moto: the first `count` requests matching each
/// `(regex, count, kind)` rule ([`FOREVER`]: all of them) get the fault `kind` ("500",
/// "throttle", "lost", "role-not-ready" or "down"; see the script), the rest reach moto.
pub struct FaultProxy {
    child: Child,
    pub url: String,
    /// One line per injected fault.
    pub log: PathBuf,
}

impl FaultProxy {
    pub fn start(moto: &Moto, dir: &Path, rules: &[(&str, u32, &str)]) -> Self {
        Self::start_with(moto, dir, rules, &[])
    }

    /// A proxy that throttles every API above `tps` requests a second, as AWS does above an
    /// account's quota.
    pub fn throttling_above(moto: &Moto, dir: &Path, tps: u32) -> Self {
        Self::start_with(moto, dir, &[], &["--throttle-above", &tps.to_string()])
    }

    /// How many requests each API got (`requests`, faults included) and how many were throttled
    /// (`throttled`), by API name; `reset` starts the counts again.
    pub fn counts(&self, reset: bool) -> Value {
        let port: u16 = self.url.rsplit(':').next().unwrap().parse().unwrap();
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(
            stream,
            "GET /zkiot-proxy/counts{} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n",
            if reset { "?reset=1" } else { "" }
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        let (_, body) = answer.split_once("\r\n\r\n").unwrap();
        serde_json::from_str(body).unwrap()
    }

    fn start_with(moto: &Moto, dir: &Path, rules: &[(&str, u32, &str)], extra: &[&str]) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let port_file = dir.join("proxy.port");
        let log = dir.join("proxy.log");
        let mut cmd = Command::new(venv().join("bin/python"));
        cmd.arg(repo().join("tests/awsfault/proxy.py"))
            .args(["--moto-url", &moto.url()])
            .arg("--port-file")
            .arg(&port_file);
        for (regex, count, kind) in rules {
            let count = if *count == FOREVER {
                "forever".to_string()
            } else {
                count.to_string()
            };
            cmd.args(["--fail", regex, &count, kind]);
        }
        cmd.args(extra);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(dir.join("proxy.stderr")).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let port = loop {
            if let Some(port) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|t| t.trim().parse::<u16>().ok())
            {
                break port;
            }
            assert!(Instant::now() < deadline, "the fault proxy did not start");
            std::thread::sleep(Duration::from_millis(50));
        };
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    /// The faults injected so far.
    pub fn injected(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap()
            .lines()
            .map(String::from)
            .collect()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A stand-in server's TLS identity in `dir`: a test root CA named `root_name`
/// (`PREFIX-root.pem`, what clients trust) and a certificate for `host` it issued, with its key
/// (`PREFIX.crt`, `PREFIX.key`). Returns the root's file.
fn stand_in_tls(dir: &Path, prefix: &str, host: &str, root_name: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let root_key = p256();
    let root = issue(root_name, &root_key, None, true, None, (0, 30));
    let key = p256();
    let cert = issue(
        host,
        &key,
        Some((&root, &root_key)),
        false,
        Some(host),
        (0, 30),
    );
    let root_pem = dir.join(format!("{prefix}-root.pem"));
    std::fs::write(&root_pem, root.to_pem().unwrap()).unwrap();
    std::fs::write(dir.join(format!("{prefix}.crt")), cert.to_pem().unwrap()).unwrap();
    std::fs::write(
        dir.join(format!("{prefix}.key")),
        key.private_key_to_pem_pkcs8().unwrap(),
    )
    .unwrap();
    root_pem
}

/// The host name the local AWS IoT broker's certificate is for.
pub const BROKER_HOST: &str = "a1b2c3d4e5f6g7-ats.iot.us-east-1.amazonaws.com";

/// The local stand-in for AWS IoT Core's MQTT endpoint and iot-data DeleteConnection
/// (`tests/iotcore/broker.py`, over a mosquitto it starts). Killed when dropped.
pub struct Broker {
    child: Child,
    pub mqtt_port: u16,
    /// The iot-data endpoint (plain HTTP on loopback): `zkiot --iot-data-endpoint`.
    pub data_url: String,
    /// The stand-in for Amazon's root that the broker's certificate chains to.
    pub root_pem: PathBuf,
    pub log: PathBuf,
}

impl Broker {
    pub fn start(moto: &Moto, dir: &Path) -> Self {
        let root_pem = stand_in_tls(
            dir,
            "broker",
            BROKER_HOST,
            "Test stand-in for Amazon Root CA (MQTT)",
        );
        let mqtt_port_file = dir.join("mqtt.port");
        let data_port_file = dir.join("data.port");
        let log = dir.join("broker.log");
        let child = Command::new(venv().join("bin/python"))
            .arg(repo().join("tests/iotcore/broker.py"))
            .args(["--moto-url", &moto.url()])
            .arg("--cert")
            .arg(dir.join("broker.crt"))
            .arg("--key")
            .arg(dir.join("broker.key"))
            .arg("--mqtt-port-file")
            .arg(&mqtt_port_file)
            .arg("--data-port-file")
            .arg(&data_port_file)
            .arg("--log-file")
            .arg(&log)
            .arg("--work-dir")
            .arg(dir.join("mosquitto"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("broker.stderr")).unwrap())
            .spawn()
            .unwrap();
        // Killed by Drop if it does not start.
        let mut broker = Self {
            child,
            mqtt_port: 0,
            data_url: String::new(),
            root_pem,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let read = |path: &Path| {
            std::fs::read_to_string(path)
                .ok()
                .and_then(|t| t.trim().parse::<u16>().ok())
        };
        loop {
            if let (Some(mqtt_port), Some(data_port)) =
                (read(&mqtt_port_file), read(&data_port_file))
            {
                broker.mqtt_port = mqtt_port;
                broker.data_url = format!("http://127.0.0.1:{data_port}");
                return broker;
            }
            assert!(
                Instant::now() < deadline,
                "the MQTT broker did not start: {}",
                std::fs::read_to_string(dir.join("broker.stderr")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `tests/python/fleet_devices.py`: devices with keys in files that hold credentials and MQTT
/// sessions, driven one JSON command at a time. Killed when dropped.
pub struct Fleet {
    child: Child,
    input: std::process::ChildStdin,
    output: std::io::BufReader<std::process::ChildStdout>,
}

impl Fleet {
    /// `devices`: (thing, certificate file, key file).
    pub fn start(
        dir: &Path,
        provider: &Provider,
        alias: &str,
        broker: &Broker,
        devices: &[(String, PathBuf, PathBuf)],
    ) -> Self {
        let config = serde_json::json!({
            "region": REGION,
            "provider": {"connect": provider.connect(), "host": provider.host,
                         "ca": provider.root_pem, "alias": alias},
            "gate": provider.iot_api(),
            "broker": {"port": broker.mqtt_port, "host": BROKER_HOST, "ca": broker.root_pem},
            "devices": devices.iter().map(|(thing, cert, key)| {
                serde_json::json!({"thing": thing, "cert": cert, "key": key})
            }).collect::<Vec<_>>(),
        });
        let path = dir.join("fleet.json");
        std::fs::write(&path, config.to_string()).unwrap();
        let mut child = Command::new(venv().join("bin/python"))
            .arg(repo().join("tests/python/fleet_devices.py"))
            .arg(&path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.join("fleet.stderr")).unwrap())
            .spawn()
            .unwrap();
        let input = child.stdin.take().unwrap();
        let output = std::io::BufReader::new(child.stdout.take().unwrap());
        Self {
            child,
            input,
            output,
        }
    }

    /// Sends one command, returns its answer.
    pub fn ask(&mut self, command: Value) -> Value {
        use std::io::BufRead;
        writeln!(self.input, "{command}").unwrap();
        self.input.flush().unwrap();
        let mut line = String::new();
        self.output.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("fleet_devices.py: {e}: {line:?}"))
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
