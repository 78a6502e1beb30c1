//! `zkiot device agent` against moto and the local credentials provider, with emulated Zymkeys:
//! twenty devices whose certificates expire in 10 days renew by running only `device agent
//! --once` (the operator having run `fleet renew`), with the on-switch hook run once per switch
//! and no device operation in a pass that is not due; and the local credentials endpoint
//! serves boto3 and the aws CLI with no device operation while its credentials are valid, and
//! refuses a missing or wrong token and any address off the loopback interface.

#![cfg(feature = "aws")]

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use openssl::asn1::Asn1Time;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectKeyIdentifier,
};
use openssl::x509::{X509Builder, X509Req, X509};
use serde_json::Value;
use support::*;

const ENDPOINT: &str = "ag3nt.credentials.iot.us-east-1.amazonaws.com";
const ALIAS: &str = "zkiot-device-alias";

/// A certificate from the operator's CA for the CSR's key and subject, valid from
/// `days_before` days ago to `days_after` days from now (as `zkiot ca sign` makes them, but
/// issued long ago).
fn backdated_certificate(
    operator: &Operator,
    csr_pem: &[u8],
    days_before: i64,
    days_after: i64,
) -> X509 {
    let ca = operator.ca_cert();
    let ca_key =
        PKey::private_key_from_pem(&std::fs::read(operator.home.join("ca/ca.key")).unwrap())
            .unwrap();
    let csr = X509Req::from_pem(csr_pem).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    let serial = openssl::bn::BigNum::from_u32(rand_u32())
        .unwrap()
        .to_asn1_integer()
        .unwrap();
    b.set_serial_number(&serial).unwrap();
    b.set_subject_name(csr.subject_name()).unwrap();
    b.set_issuer_name(ca.subject_name()).unwrap();
    b.set_pubkey(&csr.public_key().unwrap()).unwrap();
    b.set_not_before(&Asn1Time::from_unix(now - days_before * 86_400).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::from_unix(now + days_after * 86_400).unwrap())
        .unwrap();
    b.append_extension(BasicConstraints::new().critical().build().unwrap())
        .unwrap();
    b.append_extension(
        KeyUsage::new()
            .critical()
            .digital_signature()
            .build()
            .unwrap(),
    )
    .unwrap();
    b.append_extension(ExtendedKeyUsage::new().client_auth().build().unwrap())
        .unwrap();
    let ski = SubjectKeyIdentifier::new()
        .build(&b.x509v3_context(Some(&ca), None))
        .unwrap();
    b.append_extension(ski).unwrap();
    let aki = AuthorityKeyIdentifier::new()
        .keyid(true)
        .build(&b.x509v3_context(Some(&ca), None))
        .unwrap();
    b.append_extension(aki).unwrap();
    b.sign(&ca_key, MessageDigest::sha256()).unwrap();
    b.build()
}

/// A device with an emulated Zymkey and a certificate registered in AWS IoT, valid from
/// `days_before` days ago to `days_after` days from now, installed with the provider's
/// endpoint and the IoT API gate as its renewal endpoint.
fn device(
    operator: &Operator,
    provider: &Provider,
    dir: &Path,
    thing: &str,
    validity: (i64, i64),
) -> Device {
    device_with_key(operator, provider, dir, thing, validity, None)
}

/// [`device`], on an emulated HSM6 whose device key `key_label` it generated, when given.
fn device_with_key(
    operator: &Operator,
    provider: &Provider,
    dir: &Path,
    thing: &str,
    (days_before, days_after): (i64, i64),
    key_label: Option<&str>,
) -> Device {
    let device = Device::new(&dir.join(thing));
    let csr = match key_label {
        None => device.csr(thing),
        Some(label) => {
            // The emulator's state is made on first use: an HSM6, with a generated key.
            let mut cmd = Command::new("pkcs11-tool");
            cmd.arg("--module")
                .arg(built_library("libzkpkcs11.so"))
                .args([
                    "--keypairgen",
                    "--key-type",
                    "EC:prime256v1",
                    "--label",
                    label,
                ])
                .args(["--id", "0100"])
                .stdin(Stdio::null());
            device.env(&mut cmd);
            let out = cmd.env("ZKIOT_EMU_MODEL", "HSM6").output().unwrap();
            assert!(out.status.success(), "{out:?}");
            device.ok(&["device", "csr", "--thing", thing, "--key-label", label]);
            std::fs::read(device.device_dir().join("device.csr")).unwrap()
        }
    };
    let cert = backdated_certificate(operator, &csr, days_before, days_after);
    let record = operator.home.join("devices").join(thing);
    std::fs::create_dir_all(&record).unwrap();
    std::fs::write(record.join("device.crt"), cert.to_pem().unwrap()).unwrap();
    operator.ok(&["aws", "register-device", "--thing", thing]);
    let ca = operator.home.join("ca/ca.crt");
    let iot_api = provider.iot_api();
    let mut extra = vec!["--iot-api", iot_api.as_str()];
    if let Some(label) = key_label {
        extra.extend(["--key-label", label]);
    }
    device.install_cert(&record.join("device.crt"), &ca, provider, ALIAS, &extra);
    device
}

/// The agent's command line for `device`, against `provider`, with the emulator's trace in
/// `trace`.
fn agent_command(device: &Device, provider: &Provider, trace: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(zkiot_bin());
    cmd.args(["device", "agent", "--connect", &provider.connect()])
        .args(extra)
        .stdin(Stdio::null());
    device.env(&mut cmd);
    cmd.env("ZKIOT_EMU_TRACE", trace);
    cmd
}

/// `device agent --once`: its output (which must be a success), and the device operations it
/// made, by name.
fn agent_once(device: &Device, provider: &Provider, extra: &[&str]) -> (Output, Vec<String>) {
    let trace = device.dir.join("agent-trace");
    let _ = std::fs::remove_file(&trace);
    let mut args = vec!["--once"];
    args.extend_from_slice(extra);
    let out = agent_command(device, provider, &trace, &args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "agent --once failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out, operations(&trace))
}

/// The device operations in an emulator trace, by name (none if it does not exist).
fn operations(trace: &Path) -> Vec<String> {
    std::fs::read_to_string(trace)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect()
}

fn installed(device: &Device) -> X509 {
    X509::from_pem(&std::fs::read(device.device_dir().join("device.crt")).unwrap()).unwrap()
}

#[test]
fn twenty_devices_renew_with_the_agent_alone() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let moto = Moto::start(tmp.path());
    let operator = Operator::new(tmp.path(), &moto);
    operator.set_up();
    operator.ok(&["aws", "setup", "--renewal"]);
    let provider = Provider::start(&moto, ENDPOINT, &tmp.path().join("provider"));
    let dir = tmp.path().join("devices");
    let things: Vec<String> = (0..20).map(|i| format!("zk-agent-{i:02}")).collect();
    // Issued 355 days ago, 10 days left: past 2/3 of their lifetime.
    let devices: Vec<Device> = things
        .iter()
        .map(|t| device(&operator, &provider, &dir, t, (355, 10)))
        .collect();
    // One more whose certificate has most of its life ahead.
    let fresh = device(&operator, &provider, &dir, "zk-agent-fresh", (1, 364));
    eprintln!("set-up: {:.1} s", started.elapsed().as_secs_f64());

    // Not due: the pass reads the certificate file and nothing else (no device operation).
    let (out, ops) = agent_once(&fresh, &provider, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("renewal from"), "{stdout}");
    assert!(ops.is_empty(), "device operations when not due: {ops:?}");

    // Due, but the operator has not renewed yet: the device keeps its certificate.
    let first = &devices[0];
    let before = installed(first);
    let (out, _) = agent_once(first, &provider, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("no renewed certificate yet"), "{stdout}");
    assert_eq!(installed(first).to_der().unwrap(), before.to_der().unwrap());

    // The operator renews every certificate within 30 days (not the fresh one).
    let out = operator.ok(&["fleet", "renew", "--within", "30d"]);
    assert!(out.contains("20 renewed"), "{out}");

    // Each device runs only the agent, once, and switches; the hook hears of it.
    let renew_started = Instant::now();
    for (thing, device) in things.iter().zip(&devices) {
        let old = installed(device);
        let hook_file = device.dir.join("switched");
        let hook = format!(
            "echo \"$ZKIOT_THING $ZKIOT_CERTIFICATE_ID $ZKIOT_CERT\" >> '{}'",
            hook_file.display()
        );
        let (out, ops) = agent_once(device, &provider, &["--on-switch", &hook]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("switched to certificate"),
            "{thing}: {stdout}"
        );
        // One credentials call with the old certificate, one to prove the new one.
        assert_eq!(
            ops.iter().filter(|o| *o == "sign").count(),
            2,
            "{thing}: {ops:?}"
        );
        let new = installed(device);
        assert!(new
            .public_key()
            .unwrap()
            .public_eq(&old.public_key().unwrap()));
        let left = Asn1Time::days_from_now(0)
            .unwrap()
            .diff(new.not_after())
            .unwrap()
            .days;
        assert!(left >= 364, "{thing}: {left} days");
        assert_eq!(
            new.to_der().unwrap(),
            operator.renewal_certificate(thing).to_der().unwrap(),
            "{thing}"
        );
        let recorded = moto.py(&format!(
            "result = iot.describe_thing(thingName='{thing}')['attributes'].get('zkiot_certificate')"
        ));
        assert_eq!(recorded, serde_json::json!(cert_id(&new)), "{thing}");
        let heard = std::fs::read_to_string(&hook_file).unwrap();
        assert_eq!(
            heard,
            format!(
                "{thing} {} {}\n",
                cert_id(&new),
                device.device_dir().join("device.crt").display()
            )
        );

        // The next pass: not due, no device operation, no hook.
        let (out, ops) = agent_once(device, &provider, &["--on-switch", &hook]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("renewal from"), "{thing}: {stdout}");
        assert!(ops.is_empty(), "{thing}: {ops:?}");
        assert_eq!(std::fs::read_to_string(&hook_file).unwrap(), heard);
    }
    eprintln!(
        "20 devices renewed by the agent in {:.1} s",
        renew_started.elapsed().as_secs_f64()
    );

    // The new certificates are on the tokens, and every device gets credentials with them.
    for device in &devices {
        let out = device.credentials(&provider, &[]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The operator retires the old certificates now that the devices said they switched.
    let out = operator.ok(&["fleet", "renew", "--within", "30d", "--grace", "0s"]);
    assert!(out.contains("20 old certificates deactivated"), "{out}");
    eprintln!("whole test: {:.1} s", started.elapsed().as_secs_f64());
}

/// A running agent, killed when dropped.
struct Agent {
    child: Child,
    stderr: PathBuf,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Agent {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

/// One raw HTTP request to the local endpoint: the status and body.
fn local_get(port: u16, path: &str, authorization: Option<&str>) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let auth = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}\r\n"
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = text.split_once("\r\n\r\n").unwrap().1.to_string();
    (status, body)
}

/// The first non-loopback IPv4 address of this host, if it has one.
fn outside_address() -> Option<String> {
    let out = Command::new("hostname").arg("-I").output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .find(|a| {
            a.parse::<std::net::Ipv4Addr>()
                .is_ok_and(|ip| !ip.is_loopback())
        })
        .map(String::from)
}

#[test]
fn apps_get_credentials_from_the_local_endpoint_without_device_operations() {
    let tmp = tempfile::tempdir().unwrap();
    let moto = Moto::start(tmp.path());
    let operator = Operator::new(tmp.path(), &moto);
    operator.set_up();
    let provider = Provider::start(&moto, ENDPOINT, &tmp.path().join("provider"));
    let device = device(
        &operator,
        &provider,
        &tmp.path().join("devices"),
        "zk-local",
        (1, 364),
    );

    // Anything but a loopback address is refused before anything starts.
    let trace = device.dir.join("agent-trace");
    for listen in ["0.0.0.0:9911", "[::]:9911", "192.0.2.1:9911"] {
        let out = agent_command(&device, &provider, &trace, &["--listen", listen])
            .output()
            .unwrap();
        refused_output(&out, &["device", "agent", "--listen", listen], "loopback");
    }

    let port = free_port();
    let token_file = device.dir.join("run/credentials-token");
    let stderr = device.dir.join("agent.stderr");
    let group = "daemon";
    let child = agent_command(
        &device,
        &provider,
        &trace,
        &[
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--token-file",
            token_file.to_str().unwrap(),
            "--token-group",
            group,
            // No heartbeat: its credentials fetch would be the only device operation here.
            "--heartbeat",
            "off",
        ],
    )
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(&stderr).unwrap())
    .spawn()
    .unwrap();
    let agent = Agent { child, stderr };
    let deadline = Instant::now() + Duration::from_secs(30);
    while http_get_status(port, "/").is_none() {
        assert!(
            Instant::now() < deadline,
            "the agent did not listen: {}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(agent.log().contains("renewal from"), "{}", agent.log());
    // The perimeter watcher (a child process of its own) opens the device and reads the
    // latched breaches once; its waits are its own too: the app's operations are the others.
    while !operations(&trace).iter().any(|o| o == "perimeter") {
        assert!(
            Instant::now() < deadline,
            "the perimeter watcher did not start: {}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::write(&trace, "").unwrap();
    let operations = |trace: &Path| -> Vec<String> {
        operations(trace)
            .into_iter()
            .filter(|o| o != "perimeter")
            .collect()
    };

    // The token file: 0640, of the token group, 64 hex digits.
    let meta = std::fs::metadata(&token_file).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o640);
    let daemon_gid = std::fs::read_to_string("/etc/group")
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("daemon:x:")
                .map(|r| r.split(':').next().unwrap().parse::<u32>().unwrap())
        })
        .unwrap();
    assert_eq!(meta.gid(), daemon_gid);
    let token = std::fs::read_to_string(&token_file).unwrap();
    assert_eq!(token.len(), 64);

    // Refusals: no token, a wrong one, another path; and nothing fetched for them.
    let (status, _) = local_get(port, "/credentials", None);
    assert_eq!(status, 401);
    let (status, _) = local_get(port, "/credentials", Some(&"0".repeat(64)));
    assert_eq!(status, 403);
    let (status, _) = local_get(port, "/credentials", Some(&token[1..]));
    assert_eq!(status, 403);
    let (status, _) = local_get(port, "/other", Some(&token));
    assert_eq!(status, 404);
    assert!(operations(&trace).is_empty(), "{:?}", operations(&trace));
    // Nothing listens off the loopback interface.
    if let Some(address) = outside_address() {
        assert!(
            TcpStream::connect((address.as_str(), port)).is_err(),
            "the endpoint answers on {address}"
        );
    }

    // The first app's request fetches (one device signature); the rest cost nothing.
    let (status, body) = local_get(port, "/credentials", Some(&token));
    assert_eq!(status, 200, "{body}");
    let served: Value = serde_json::from_str(&body).unwrap();
    for field in ["AccessKeyId", "SecretAccessKey", "Token", "Expiration"] {
        assert!(served[field].is_string(), "{served}");
    }
    let first = operations(&trace);
    assert_eq!(
        first.iter().filter(|o| *o == "sign").count(),
        1,
        "{first:?}"
    );
    std::fs::write(&trace, "").unwrap();

    let uri = format!("http://127.0.0.1:{port}/credentials");
    let app_env = [
        ("AWS_CONTAINER_CREDENTIALS_FULL_URI", uri.as_str()),
        (
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
            token_file.to_str().unwrap(),
        ),
        ("AWS_REGION", REGION),
        ("AWS_DEFAULT_REGION", REGION),
    ];
    let empty_config = tmp.path().join("aws-config-empty");
    for _ in 0..2 {
        let who = aws_cli(
            &["sts", "get-caller-identity", "--endpoint-url", &moto.url()],
            &app_env,
            Some(&empty_config),
        );
        device_caller_identity(&who);
    }
    let boto3 = Command::new(venv().join("bin/python"))
        .args([
            "-c",
            "import boto3, sys\n\
             s = boto3.session.Session()\n\
             c = s.get_credentials().get_frozen_credentials()\n\
             assert c.access_key and c.secret_key and c.token, 'no credentials'\n\
             who = s.client('sts', endpoint_url=sys.argv[1]).get_caller_identity()\n\
             print(who['Arn'])",
            &moto.url(),
        ])
        .envs(app_env)
        .env("AWS_CONFIG_FILE", &empty_config)
        .env("AWS_SHARED_CREDENTIALS_FILE", &empty_config)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .output()
        .unwrap();
    assert!(
        boto3.status.success(),
        "{}",
        String::from_utf8_lossy(&boto3.stderr)
    );
    assert!(String::from_utf8_lossy(&boto3.stdout).contains("assumed-role/zkiot-device/"));
    assert!(
        operations(&trace).is_empty(),
        "device operations for requests while the credentials were valid: {:?}",
        operations(&trace)
    );
    // The same credentials each time, and none of them in the agent's log.
    let (_, again) = local_get(port, "/credentials", Some(&token));
    let again: Value = serde_json::from_str(&again).unwrap();
    assert_eq!(again["AccessKeyId"], served["AccessKeyId"]);
    let log = agent.log();
    for field in ["SecretAccessKey", "Token"] {
        assert!(!log.contains(served[field].as_str().unwrap()), "{log}");
    }
    assert!(!log.contains(token.trim()), "{log}");
}

/// `device check --json` for `device`: its exit status and the checks by name.
fn check(device: &Device, extra: &[&str]) -> (bool, std::collections::BTreeMap<String, Value>) {
    let mut cmd = Command::new(zkiot_bin());
    cmd.args(["device", "check", "--json"])
        .args(extra)
        .stdin(Stdio::null());
    device.env(&mut cmd);
    let out = cmd.output().unwrap();
    let checks: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let by_name = checks
        .into_iter()
        .map(|c| (c["name"].as_str().unwrap().to_string(), c))
        .collect();
    (out.status.success(), by_name)
}

fn status_of(checks: &std::collections::BTreeMap<String, Value>, name: &str) -> String {
    checks[name]["status"].as_str().unwrap().to_string()
}

#[test]
fn device_check_names_each_check_and_what_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    let moto = Moto::start(tmp.path());
    let operator = Operator::new(tmp.path(), &moto);
    operator.set_up();
    let provider = Provider::start(&moto, ENDPOINT, &tmp.path().join("provider"));
    let dir = tmp.path().join("devices");
    let healthy = device(&operator, &provider, &dir, "zk-check", (1, 364));
    let connect = provider.connect();

    let (ok, checks) = check(&healthy, &["--connect", &connect]);
    let names: Vec<&str> = checks.keys().map(String::as_str).collect();
    for name in [
        "zymkey-library",
        "pkcs11-module",
        "p11-kit-registration",
        "token",
        "device-cache",
        "device-config",
        "certificate-key",
        "certificate-chain",
        "certificate-lifetime",
        "certificate-on-token",
        "clock",
        "perimeter",
        "endpoint-credentials",
        "endpoint-iot-api",
        "agent-service",
    ] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    for (name, c) in &checks {
        let status = c["status"].as_str().unwrap();
        match name.as_str() {
            // The test runs from a build: p11-kit has no registration of it unless this
            // machine has one installed.
            "p11-kit-registration" if status == "fail" => {
                assert!(
                    c["hint"].as_str().unwrap().contains("install-module.sh"),
                    "{c}"
                );
            }
            // No systemd here, or no agent running.
            "agent-service" => assert!(["skip", "ok", "warn"].contains(&status), "{c}"),
            _ => assert_eq!(status, "ok", "{name}: {c}"),
        }
    }
    // A failed check, and only that, makes the command fail.
    let failed = checks.values().any(|c| c["status"] == "fail");
    assert_eq!(ok, !failed, "{checks:?}");

    // Without --connect the stand-in endpoint's name does not resolve: named, with a hint.
    let (_, checks) = check(&healthy, &[]);
    assert_eq!(status_of(&checks, "endpoint-credentials"), "fail");
    assert!(checks["endpoint-credentials"]["hint"]
        .as_str()
        .unwrap()
        .contains("describe-endpoint"));

    // A certificate past its renewal time: a warning that points at the agent.
    let due = device(&operator, &provider, &dir, "zk-check-due", (355, 10));
    let (_, checks) = check(&due, &["--connect", &connect]);
    assert_eq!(status_of(&checks, "certificate-lifetime"), "warn");
    assert!(checks["certificate-lifetime"]["hint"]
        .as_str()
        .unwrap()
        .contains("zkiot-agent.service"));

    // Another device's certificate in the device folder: not for this token's key.
    std::fs::copy(
        due.device_dir().join("device.crt"),
        healthy.device_dir().join("device.crt"),
    )
    .unwrap();
    let (_, checks) = check(&healthy, &["--connect", &connect]);
    assert_eq!(status_of(&checks, "certificate-key"), "fail");
    assert!(checks["certificate-key"]["detail"]
        .as_str()
        .unwrap()
        .contains("another key"));
    assert_eq!(status_of(&checks, "certificate-on-token"), "warn");

    // The text form: one line per check, a hint under each that did not pass, a summary.
    let mut cmd = Command::new(zkiot_bin());
    cmd.args(["device", "check", "--connect", &connect])
        .stdin(Stdio::null());
    healthy.env(&mut cmd);
    let out = cmd.output().unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("[FAIL] certificate-key:"), "{text}");
    assert!(text.contains("       hint: "), "{text}");
    assert!(text.contains("15 checks: "), "{text}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("checks failed"), "{stderr}");

    // No Zymkey library: named, and what depends on it is skipped.
    let mut cmd = Command::new(zkiot_bin());
    cmd.args([
        "device",
        "check",
        "--json",
        "--library",
        "/nonexistent/libzk_app_utils.so",
    ])
    .stdin(Stdio::null());
    healthy.env(&mut cmd);
    let out = cmd.output().unwrap();
    let checks: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let get = |n: &str| checks.iter().find(|c| c["name"] == n).unwrap().clone();
    assert_eq!(get("zymkey-library")["status"], "fail");
    assert!(get("zymkey-library")["hint"]
        .as_str()
        .unwrap()
        .contains("ZKIOT_ZKLIB"));
    assert_eq!(get("clock")["status"], "skip");
    assert_eq!(get("perimeter")["status"], "skip");

    // A breach latched on the healthy device's Zymkey: a warning that says what happens next.
    std::fs::write(healthy.dir.join("emu").join("perimeter-next"), "1").unwrap();
    let (_, checks) = check(&healthy, &["--connect", &connect]);
    assert_eq!(status_of(&checks, "perimeter"), "warn", "{checks:?}");
    assert!(checks["perimeter"]["detail"]
        .as_str()
        .unwrap()
        .contains("breach latched: 1@"));
    assert!(checks["perimeter"]["hint"]
        .as_str()
        .unwrap()
        .contains("aws sweep"));
}

/// The slots of the keys the emulated Zymkey generated (its key store, from slot 16).
fn generated_slots(device: &Device) -> Vec<u32> {
    let mut slots: Vec<u32> = std::fs::read_dir(device.dir.join("emu/keys"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().to_string();
                    name.strip_prefix("slot-")?
                        .strip_suffix(".pem")?
                        .parse()
                        .ok()
                })
                .filter(|slot| *slot >= 16)
                .collect()
        })
        .unwrap_or_default();
    slots.sort();
    slots
}

/// The labels of the private keys the device's token shows beside its factory keys.
fn key_labels(device: &Device) -> Vec<String> {
    let mut cmd = Command::new("pkcs11-tool");
    cmd.arg("--module")
        .arg(built_library("libzkpkcs11.so"))
        .args(["--list-objects", "--type", "privkey"])
        .stdin(Stdio::null());
    device.env(&mut cmd);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("label:"))
        .map(|l| l.trim().to_string())
        .filter(|l| !l.starts_with("slot"))
        .collect()
}

fn device_toml(device: &Device) -> toml::Table {
    std::fs::read_to_string(device.device_dir().join("device.toml"))
        .unwrap()
        .parse()
        .unwrap()
}

fn thing_attributes(moto: &Moto, thing: &str) -> Value {
    moto.py(&format!(
        "result = iot.describe_thing(thingName='{thing}').get('attributes', {{}})"
    ))
}

#[test]
fn hsm6_devices_renew_with_fresh_keys_and_their_old_keys_are_gone() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let moto = Moto::start(tmp.path());
    let operator = Operator::new(tmp.path(), &moto);
    operator.set_up();
    operator.ok(&["aws", "setup", "--renewal"]);
    let provider = Provider::start(&moto, ENDPOINT, &tmp.path().join("provider"));
    let dir = tmp.path().join("devices");
    let things: Vec<String> = (0..5).map(|i| format!("zk-rekey-{i:02}")).collect();
    let devices: Vec<Device> = things
        .iter()
        .map(|t| device_with_key(&operator, &provider, &dir, t, (355, 10), Some("dev0")))
        .collect();

    // Due: each makes a fresh key and a CSR, vouched for by its current key, posted on its
    // Thing; nothing else changes yet.
    for (thing, device) in things.iter().zip(&devices) {
        let before = installed(device);
        let (out, ops) = agent_once(device, &provider, &[]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("no renewed certificate yet"),
            "{thing}: {stdout}"
        );
        // Credentials, the CSR, the current key's signature over it.
        assert_eq!(
            ops.iter().filter(|o| *o == "sign").count(),
            3,
            "{thing}: {ops:?}"
        );
        assert_eq!(generated_slots(device).len(), 2, "{thing}");
        let attributes = thing_attributes(&moto, thing);
        assert!(
            attributes["zkiot_csr"].as_str().unwrap().len() < 800,
            "{attributes}"
        );
        assert!(
            attributes["zkiot_csr_signature"].is_string(),
            "{attributes}"
        );
        assert_eq!(
            installed(device).to_der().unwrap(),
            before.to_der().unwrap()
        );
        assert_eq!(device_toml(device)["key_label"].as_str(), Some("dev0"));
        assert!(device.device_dir().join("rekey.json").exists());
    }

    // A request whose signature is not the device's current key's is refused, named.
    let first = &things[0];
    let genuine = thing_attributes(&moto, first);
    let forged_key = p256();
    let csr_der = openssl::base64::decode_block(
        &genuine["zkiot_csr"]
            .as_str()
            .unwrap()
            .replace('-', "+")
            .replace('_', "/")
            .chars()
            .chain(std::iter::repeat('='))
            .take(genuine["zkiot_csr"].as_str().unwrap().len().div_ceil(4) * 4)
            .collect::<String>(),
    )
    .unwrap();
    let mut signer = openssl::sign::Signer::new(MessageDigest::sha256(), &forged_key).unwrap();
    signer.update(&csr_der).unwrap();
    let forged = openssl::base64::encode_block(&signer.sign_to_vec().unwrap())
        .trim_end_matches('=')
        .replace('+', "-")
        .replace('/', "_");
    moto.py(&format!(
        "iot.update_thing(thingName='{first}', attributePayload={{'attributes': {{'zkiot_csr_signature': '{forged}'}}, 'merge': True}})"
    ));
    let out = operator.run(&["fleet", "renew", "--within", "30d"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("4 renewed") && text.contains("1 failed"),
        "{text}"
    );
    assert!(
        text.contains("not signed by the key of any ACTIVE certificate"),
        "{text}"
    );
    moto.py(&format!(
        "iot.update_thing(thingName='{first}', attributePayload={{'attributes': {{'zkiot_csr_signature': '{}'}}, 'merge': True}})",
        genuine["zkiot_csr_signature"].as_str().unwrap()
    ));
    let out = operator.ok(&["fleet", "renew", "--within", "30d"]);
    assert!(out.contains("1 renewed"), "{out}");

    // Each switches to its fresh key: certificate, token object and key label together; its
    // old key is gone from the Zymkey once the switch is recorded.
    for (thing, device) in things.iter().zip(&devices) {
        let old = installed(device);
        let hook_file = device.dir.join("switched");
        let hook = format!(
            "echo \"$ZKIOT_CERTIFICATE_ID\" >> '{}'",
            hook_file.display()
        );
        let (out, ops) = agent_once(device, &provider, &["--on-switch", &hook]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stdout.contains("switched to certificate"),
            "{thing}: {stdout}{stderr}"
        );
        assert!(
            stderr.contains("removed the old key \"dev0\""),
            "{thing}: {stderr}"
        );
        // The proof with the new key (the credentials it holds were fetched once).
        assert!(
            ops.iter().filter(|o| *o == "sign").count() <= 2,
            "{thing}: {ops:?}"
        );
        let new = installed(device);
        assert!(!new
            .public_key()
            .unwrap()
            .public_eq(&old.public_key().unwrap()));
        let issued = operator.home.join("devices").join(thing).join("rekey.crt");
        assert_eq!(
            new.to_der().unwrap(),
            X509::from_pem(&std::fs::read(issued).unwrap())
                .unwrap()
                .to_der()
                .unwrap()
        );
        let label = device_toml(device)["key_label"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(label.starts_with("zkiot-"), "{label}");
        assert_eq!(
            device_toml(device)["certificate"].as_str(),
            Some("device.crt")
        );
        assert_eq!(
            key_labels(device),
            std::slice::from_ref(&label),
            "{thing}: only the fresh key"
        );
        assert_eq!(
            generated_slots(device).len(),
            1,
            "{thing}: the old key is gone"
        );
        assert!(!device.device_dir().join("rekey.json").exists());
        let attributes = thing_attributes(&moto, thing);
        assert_eq!(
            attributes["zkiot_certificate"],
            serde_json::json!(cert_id(&new))
        );
        assert!(attributes.get("zkiot_csr").is_none(), "{attributes}");
        assert_eq!(
            std::fs::read_to_string(&hook_file).unwrap(),
            format!("{}\n", cert_id(&new))
        );
        // The certificate on the token is the new one, for the new key.
        let out = device.credentials(&provider, &[]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (out, ops) = agent_once(device, &provider, &[]);
        assert!(String::from_utf8_lossy(&out.stdout).contains("renewal from"));
        assert!(ops.is_empty(), "{ops:?}");
    }
    let out = operator.ok(&["fleet", "renew", "--within", "30d", "--grace", "0s"]);
    assert!(out.contains("5 old certificates deactivated"), "{out}");
    eprintln!(
        "fresh keys for 5 devices: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// Runs `agent --once` on `device` (with 20 ms per device operation) and kills it with SIGKILL
/// `at` after it started: whether it was killed before it ended.
fn kill_agent(device: &Device, provider: &Provider, at: Duration) -> bool {
    let trace = device.dir.join("kill-trace");
    let started = Instant::now();
    let mut child = agent_command(device, provider, &trace, &["--once"])
        .env("ZKIOT_EMU_LATENCY_MS", "20")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    while started.elapsed() < at {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = child.kill();
    child.wait().unwrap();
    true
}

/// The device's identity works: `device credentials` gets credentials with the key and the
/// certificate device.toml names.
fn identity_works(device: &Device, provider: &Provider, when: &str) {
    let out = device.credentials(provider, &[]);
    assert!(
        out.status.success(),
        "{when}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn an_agent_killed_at_any_step_of_a_fresh_key_renewal_ends_with_one_working_identity() {
    let step = Duration::from_millis(
        std::env::var("ZKIOT_AGENT_KILL_STEP_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(15),
    );
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let moto = Moto::start(tmp.path());
    let operator = Operator::new(tmp.path(), &moto);
    operator.set_up();
    operator.ok(&["aws", "setup", "--renewal"]);
    let provider = Provider::start(&moto, ENDPOINT, &tmp.path().join("provider"));
    let thing = "zk-kill";
    let device = device_with_key(
        &operator,
        &provider,
        &tmp.path().join("devices"),
        thing,
        (355, 10),
        Some("dev0"),
    );

    // Each phase: `agent --once` killed 0 ms after its start, then `step` later each time,
    // until a run ends before its kill; after a kill that left the renewal further on, the
    // sweep starts again at 0, since the next run takes another path from there. So the
    // kills land in every step; after each, the identity device.toml names must work.
    let mut states = std::collections::BTreeMap::<String, usize>::new();
    let mut killed = 0;
    let mut sweep = |phase: &str| {
        let mut at = Duration::ZERO;
        let mut last = "";
        while kill_agent(&device, &provider, at) {
            killed += 1;
            identity_works(&device, &provider, &format!("{phase}, killed at {at:?}"));
            let journal = device.device_dir().join("rekey.json").exists();
            let old_label = device_toml(&device)["key_label"].as_str() == Some("dev0");
            let state = match (journal, old_label, generated_slots(&device).len()) {
                (false, true, _) => "not started",
                (true, true, 1) => "journal written, no key yet",
                (true, true, _) => "fresh key made, not committed",
                (true, false, _) => "committed, not finished",
                (false, false, _) => "done",
            };
            *states.entry(format!("{phase}: {state}")).or_default() += 1;
            at = if state == last {
                at + step
            } else {
                Duration::ZERO
            };
            last = state;
        }
    };
    // Making the key, the CSR and the request.
    sweep("request");
    let (out, _) = agent_once(&device, &provider, &[]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("no renewed certificate yet"));
    // However often it was cut short, one fresh key was made.
    assert_eq!(
        generated_slots(&device).len(),
        2,
        "{:?}",
        key_labels(&device)
    );
    operator.ok(&["fleet", "renew", "--within", "30d"]);
    // Proving, committing, recording, removing the old key.
    sweep("switch");
    let (out, _) = agent_once(&device, &provider, &[]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("renewal from"));
    eprintln!("{killed} runs killed; where they stopped: {states:?}");
    for state in [
        "request: journal written, no key yet",
        "request: fresh key made, not committed",
        "switch: fresh key made, not committed",
        "switch: committed, not finished",
    ] {
        assert!(
            states.contains_key(state),
            "no kill left {state:?}: {states:?}"
        );
    }

    // One identity: the fresh key, its certificate, recorded; the old key gone.
    let label = device_toml(&device)["key_label"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(label.starts_with("zkiot-"), "{label}");
    assert_eq!(key_labels(&device), [label]);
    assert_eq!(generated_slots(&device).len(), 1);
    assert!(!device.device_dir().join("rekey.json").exists());
    let new = installed(&device);
    assert_eq!(
        thing_attributes(&moto, thing)["zkiot_certificate"],
        serde_json::json!(cert_id(&new))
    );
    identity_works(&device, &provider, "at the end");
    eprintln!("kill test: {:.1} s", started.elapsed().as_secs_f64());
}

#[test]
fn a_running_agent_renews_in_a_child_process_and_keeps_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let moto = Moto::start(tmp.path());
    let operator = Operator::new(tmp.path(), &moto);
    operator.set_up();
    operator.ok(&["aws", "setup", "--renewal"]);
    let provider = Provider::start(&moto, ENDPOINT, &tmp.path().join("provider"));
    let device = device(
        &operator,
        &provider,
        &tmp.path().join("devices"),
        "zk-run",
        (355, 10),
    );
    let out = operator.ok(&["fleet", "renew", "--within", "30d"]);
    assert!(out.contains("1 renewed"), "{out}");
    let old = installed(&device);

    let port = free_port();
    let token_file = device.dir.join("credentials-token");
    let hook_file = device.dir.join("switched");
    let stderr = device.dir.join("agent.stderr");
    let trace = device.dir.join("agent-trace");
    let child = agent_command(
        &device,
        &provider,
        &trace,
        &[
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--token-file",
            token_file.to_str().unwrap(),
            "--on-switch",
            &format!("echo \"$ZKIOT_CERTIFICATE_ID\" > '{}'", hook_file.display()),
        ],
    )
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(&stderr).unwrap())
    .spawn()
    .unwrap();
    let agent = Agent { child, stderr };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !hook_file.exists() {
        assert!(Instant::now() < deadline, "no switch: {}", agent.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let new = installed(&device);
    assert_ne!(new.to_der().unwrap(), old.to_der().unwrap());
    assert_eq!(
        std::fs::read_to_string(&hook_file).unwrap().trim(),
        cert_id(&new)
    );
    let log = agent.log();
    assert!(log.contains("switched to certificate"), "{log}");
    // It goes on serving, and its next pass finds nothing due.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !agent.log().contains("renewal from") {
        assert!(Instant::now() < deadline, "{}", agent.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let token = std::fs::read_to_string(&token_file).unwrap();
    let (status, body) = local_get(port, "/credentials", Some(&token));
    assert_eq!(status, 200, "{body}");
    // The long-running process never loaded the PKCS#11 module: its children used the token.
    let pid = agent.child.id();
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    assert!(
        !maps.contains("libzkpkcs11"),
        "the agent process loaded the module"
    );
    assert!(
        !maps.contains("libzkemu"),
        "the agent process loaded the device library"
    );
}
