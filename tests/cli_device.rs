//! `zkiot device …` through the built binary, against the built PKCS#11 module and the Zymkey
//! emulator, with a local TLS server standing in for the AWS IoT credentials provider.
//!
//! Needs `libzkpkcs11.so` and `libzkemu.so` beside the binary: `cargo build --workspace`.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::x509::{X509Req, X509};
use testkit::x509::{csr, p256, rand_u32, Cert};

const TLS12_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];
const ENDPOINT: &str = "c0ffee.credentials.iot.eu-west-1.amazonaws.test";

/// What [`Env::provision_reporting`] did.
struct Provisioned {
    thing: String,
    /// The output of `device csr` and of `device install-cert`.
    csr: String,
    install: String,
}

/// A temporary operator home, device folder, emulator state and token store.
struct Env {
    tmp: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        let env = Self {
            tmp: tempfile::tempdir().unwrap(),
        };
        std::fs::create_dir_all(env.path("emu")).unwrap();
        std::fs::write(
            env.path("zkiot.toml"),
            format!("store = \"{}\"\n", env.path("store.sqlite3").display()),
        )
        .unwrap();
        env
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    fn home(&self) -> PathBuf {
        self.path("home")
    }

    fn device_dir(&self) -> PathBuf {
        self.home().join("device")
    }

    fn module(&self) -> PathBuf {
        testkit::built::module()
    }

    fn apply(&self, cmd: &mut Command) {
        cmd.env("ZKIOT_HOME", self.home())
            .env("ZKIOT_PKCS11_MODULE", self.module())
            .env("ZKIOT_ZKLIB", testkit::built::emulator())
            .env("ZKIOT_EMU_DIR", self.path("emu"))
            .env("ZKIOT_CONF", self.path("zkiot.toml"))
            .env("ZKIOT_EMU_TRACE", self.path("trace"))
            .env_remove("ZKIOT_DEVICE_DIR")
            .env_remove("ZKIOT_TOKEN_LABEL");
    }

    fn zkiot(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_zkiot"));
        cmd.args(args);
        self.apply(&mut cmd);
        cmd.output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.zkiot(args);
        assert!(
            out.status.success(),
            "zkiot {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn refused(&self, args: &[&str], needle: &str) -> String {
        let out = self.zkiot(args);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success(), "zkiot {args:?} should fail");
        let errors: Vec<_> = stderr.lines().filter(|l| l.starts_with("zkiot:")).collect();
        assert_eq!(errors.len(), 1, "one error line, got: {stderr}");
        assert!(errors[0].starts_with("zkiot: error: "), "{stderr}");
        assert!(
            errors[0].contains(needle),
            "expected {needle:?} in: {stderr}"
        );
        stderr
    }

    /// Device signatures so far, from the emulator's trace.
    fn signatures(&self) -> usize {
        std::fs::read_to_string(self.path("trace"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.split_whitespace().next() == Some("sign"))
            .count()
    }

    /// Reads the token directly (not through zkiot): slot0's EC point and its certificates.
    fn token_view(&self) -> (Vec<u8>, Vec<Vec<u8>>) {
        // One module instance per process: serialise the tests' direct views, and finalize.
        static TOKEN_VIEW: Mutex<()> = Mutex::new(());
        let _serial = TOKEN_VIEW.lock().unwrap_or_else(|p| p.into_inner());
        let pkcs11 = Pkcs11::new(self.module()).unwrap();
        // The module reads its configuration from the environment.
        std::env::set_var("ZKIOT_ZKLIB", testkit::built::emulator());
        std::env::set_var("ZKIOT_EMU_DIR", self.path("emu"));
        std::env::set_var("ZKIOT_CONF", self.path("zkiot.toml"));
        std::env::remove_var("ZKIOT_EMU_TRACE");
        pkcs11
            .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .unwrap();
        let view = self.read_token(&pkcs11);
        pkcs11.finalize().unwrap();
        view
    }

    fn read_token(&self, pkcs11: &Pkcs11) -> (Vec<u8>, Vec<Vec<u8>>) {
        let slot = pkcs11.get_slots_with_token().unwrap()[0];
        let session = pkcs11.open_ro_session(slot).unwrap();
        let key = session
            .find_objects(&[
                Attribute::Class(ObjectClass::PUBLIC_KEY),
                Attribute::Label(b"slot0".to_vec()),
            ])
            .unwrap()[0];
        let point = match &session
            .get_attributes(key, &[AttributeType::EcPoint])
            .unwrap()[0]
        {
            Attribute::EcPoint(p) => p[2..].to_vec(),
            other => panic!("{other:?}"),
        };
        let mut certs = Vec::new();
        for handle in session
            .find_objects(&[
                Attribute::Class(ObjectClass::CERTIFICATE),
                Attribute::Id(vec![0, 0]),
            ])
            .unwrap()
        {
            if let Attribute::Value(v) = &session
                .get_attributes(handle, &[AttributeType::Value])
                .unwrap()[0]
            {
                certs.push(v.clone());
            }
        }
        (point, certs)
    }

    /// ca init, device csr, ca sign, device install-cert: returns the thing name.
    fn provision(&self) -> String {
        self.provision_reporting().thing
    }

    /// [`Env::provision`], with what `device csr` and `device install-cert` printed.
    fn provision_reporting(&self) -> Provisioned {
        self.ok(&["ca", "init"]);
        let thing = self.ok(&["device", "id", "--short"]).trim().to_string();
        let csr = self.ok(&["device", "csr"]);
        let csr_path = self.device_dir().join("device.csr");
        self.ok(&["ca", "sign", "--csr", csr_path.to_str().unwrap()]);
        let cert = self.home().join("devices").join(&thing).join("device.crt");
        let ca = self.home().join("ca/ca.crt");
        let install = self.ok(&[
            "device",
            "install-cert",
            "--cert",
            cert.to_str().unwrap(),
            "--ca",
            ca.to_str().unwrap(),
        ]);
        Provisioned {
            thing,
            csr,
            install,
        }
    }
}

fn point_of(key: &openssl::pkey::PKeyRef<openssl::pkey::Public>) -> Vec<u8> {
    let ec = key.ec_key().unwrap();
    let mut ctx = openssl::bn::BigNumContext::new().unwrap();
    ec.public_key()
        .to_bytes(
            ec.group(),
            openssl::ec::PointConversionForm::UNCOMPRESSED,
            &mut ctx,
        )
        .unwrap()
}

#[test]
fn device_id_is_stable_and_follows_the_documented_algorithm() {
    let env = Env::new();
    let first = env.ok(&["device", "id", "--verbose"]);
    let second = env.ok(&["device", "id", "--verbose"]);
    assert_eq!(first, second);

    let value = |name: &str| {
        first
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} = ")))
            .and_then(|rest| rest.split("  (from ").next())
            .unwrap_or_else(|| panic!("no {name} in {first}"))
            .to_string()
    };
    let zymkey_serial = value("zymkey-serial");
    let host_serial = value("host-serial");
    assert!(zymkey_serial.starts_with("EMU-"), "{zymkey_serial}");
    let text =
        format!("zkiot-device-id-v1\nzymkey-serial={zymkey_serial}\nhost-serial={host_serial}\n");
    let expected: String = openssl::sha::sha256(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(
        first.contains(&format!("device id:  {expected}\n")),
        "{first}"
    );
    assert!(
        first.contains(&format!("thing name: zk-{}\n", &expected[..16])),
        "{first}"
    );
    assert_eq!(env.ok(&["device", "id", "--hex"]).trim(), expected);
    assert_eq!(
        env.ok(&["device", "id", "--short"]).trim(),
        format!("zk-{}", &expected[..16])
    );
    assert_eq!(env.signatures(), 0);
}

#[test]
fn device_csr_is_signed_once_by_the_token_key() {
    let env = Env::new();
    let out = env.ok(&["device", "csr", "--thing", "pump-7"]);
    assert!(out.contains("Next:"), "{out}");
    assert_eq!(env.signatures(), 1, "exactly one device signature per CSR");

    let csr_path = env.device_dir().join("device.csr");
    let csr = X509Req::from_pem(&std::fs::read(&csr_path).unwrap()).unwrap();
    let public_key = csr.public_key().unwrap();
    assert!(csr.verify(&public_key).unwrap());
    let openssl_verify = Command::new("openssl")
        .args(["req", "-verify", "-noout", "-in"])
        .arg(&csr_path)
        .output()
        .unwrap();
    // OpenSSL 3.0 exits 0 on a bad self-signature too: go by what it says.
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&openssl_verify.stdout),
        String::from_utf8_lossy(&openssl_verify.stderr)
    );
    assert!(
        openssl_verify.status.success()
            && said.lines().any(|l| l.ends_with("verify OK"))
            && !said.contains("verify failure"),
        "{said}"
    );
    let cn = csr
        .subject_name()
        .entries_by_nid(Nid::COMMONNAME)
        .next()
        .unwrap()
        .data()
        .to_string()
        .unwrap();
    assert_eq!(cn, "pump-7");
    let (token_point, _) = env.token_view();
    assert_eq!(point_of(&public_key), token_point);

    // A re-run finds the CSR and signs nothing; another thing name is refused without --force.
    let again = env.ok(&["device", "csr", "--thing", "pump-7"]);
    assert!(again.contains("nothing changed"), "{again}");
    assert_eq!(env.signatures(), 1);
    let before = std::fs::read(&csr_path).unwrap();
    env.refused(&["device", "csr", "--thing", "pump-8"], "--force");
    assert_eq!(std::fs::read(&csr_path).unwrap(), before);
    env.ok(&["device", "csr", "--thing", "pump-8", "--force"]);
    assert_eq!(env.signatures(), 2);

    // The default thing name is the device ID's short form.
    let out_path = env.path("default.csr");
    env.ok(&["device", "csr", "--out", out_path.to_str().unwrap()]);
    let short = env.ok(&["device", "id", "--short"]).trim().to_string();
    let csr = X509Req::from_pem(&std::fs::read(&out_path).unwrap()).unwrap();
    let cn = csr
        .subject_name()
        .entries_by_nid(Nid::COMMONNAME)
        .next()
        .unwrap();
    assert_eq!(cn.data().to_string().unwrap(), short);
}

#[test]
fn device_commands_fail_clearly_without_a_module_or_key() {
    let env = Env::new();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_zkiot"));
    env.apply(&mut cmd);
    let out = cmd
        .args(["device", "id", "--module", "/nonexistent/libzkpkcs11.so"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("zkiot: error: PKCS#11 module /nonexistent/libzkpkcs11.so not found"),
        "{stderr}"
    );

    env.refused(
        &["device", "csr", "--key-label", "slot99"],
        "no private key labelled \"slot99\"",
    );
    env.refused(
        &["device", "id", "--token-label", "other"],
        "no token labelled \"other\"",
    );
}

#[test]
fn install_cert_writes_files_and_a_certificate_object() {
    let env = Env::new();
    let thing = env.provision();
    let cert_path = env.home().join("devices").join(&thing).join("device.crt");
    let cert = X509::from_pem(&std::fs::read(&cert_path).unwrap()).unwrap();

    let dir = env.device_dir();
    assert_eq!(
        std::fs::read(dir.join("device.crt")).unwrap(),
        cert.to_pem().unwrap()
    );
    assert!(dir.join("ca.crt").exists());
    let config = std::fs::read_to_string(dir.join("device.toml")).unwrap();
    assert!(config.contains(&format!("thing = \"{thing}\"")), "{config}");

    let (_, certs) = env.token_view();
    assert_eq!(certs, vec![cert.to_der().unwrap()]);

    // Idempotent.
    let ca = env.home().join("ca/ca.crt");
    let args = [
        "device",
        "install-cert",
        "--cert",
        cert_path.to_str().unwrap(),
        "--ca",
        ca.to_str().unwrap(),
    ];
    let again = env.ok(&args);
    assert!(again.contains("already there"), "{again}");
    assert_eq!(env.token_view().1.len(), 1);

    // A renewed certificate replaces the old one only with --force, on disk and on the token.
    let csr = env.device_dir().join("device.csr");
    let renewed = env.path("renewed.crt");
    env.ok(&[
        "ca",
        "sign",
        "--csr",
        csr.to_str().unwrap(),
        "--out",
        renewed.to_str().unwrap(),
        "--days",
        "30",
    ]);
    let mut renew_args = args.to_vec();
    renew_args[3] = renewed.to_str().unwrap();
    env.refused(&renew_args, "--force");
    assert_eq!(env.token_view().1, vec![cert.to_der().unwrap()]);
    renew_args.push("--force");
    let out = env.ok(&renew_args);
    assert!(out.contains("replacing an older one"), "{out}");
    let renewed_der = X509::from_pem(&std::fs::read(&renewed).unwrap())
        .unwrap()
        .to_der()
        .unwrap();
    assert_eq!(env.token_view().1, vec![renewed_der]);
}

#[test]
fn install_cert_refuses_a_certificate_for_another_key() {
    let env = Env::new();
    env.ok(&["ca", "init"]);
    let req = csr("intruder", &p256());
    let csr = env.path("other.csr");
    std::fs::write(&csr, req.to_pem().unwrap()).unwrap();
    let cert = env.path("other.crt");
    env.ok(&[
        "ca",
        "sign",
        "--csr",
        csr.to_str().unwrap(),
        "--out",
        cert.to_str().unwrap(),
    ]);
    let ca = env.home().join("ca/ca.crt");
    env.refused(
        &[
            "device",
            "install-cert",
            "--cert",
            cert.to_str().unwrap(),
            "--ca",
            ca.to_str().unwrap(),
        ],
        "for another key",
    );
    assert!(!env.device_dir().join("device.crt").exists());
    assert!(env.token_view().1.is_empty());
}

/// What the stand-in provider saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    sni: Option<String>,
    request_head: String,
    client_cert: Option<Vec<u8>>,
    version: Option<rustls::ProtocolVersion>,
}

/// A TLS server that requires a client certificate from `client_ca` and answers every request
/// with `status` and `body`.
struct Provider {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    root_pem: PathBuf,
}

impl Provider {
    fn start(
        env: &Env,
        client_ca: &Path,
        versions: &'static [&'static rustls::SupportedProtocolVersion],
        status: &'static str,
        headers: &'static str,
        body: String,
    ) -> Self {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
        let root_key = p256();
        let root = Cert::new("Stand-in Amazon Root")
            .days(0, 2)
            .ca()
            .build(&root_key);
        let server_key = p256();
        let server = Cert::new(ENDPOINT)
            .days(0, 2)
            .dns(ENDPOINT)
            .issued_by(&root, &root_key)
            .build(&server_key);
        let root_pem = env.path(&format!("provider-root-{}.pem", rand_u32()));
        std::fs::write(&root_pem, root.to_pem().unwrap()).unwrap();

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut client_roots = rustls::RootCertStore::empty();
        let ca = X509::from_pem(&std::fs::read(client_ca).unwrap()).unwrap();
        client_roots
            .add(CertificateDer::from(ca.to_der().unwrap()))
            .unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(client_roots),
            provider.clone(),
        )
        .build()
        .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![CertificateDer::from(server.to_der().unwrap())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                    server_key.private_key_to_pkcs8().unwrap(),
                )),
            )
            .unwrap();
        let config = Arc::new(config);

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen_by_server = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let conn = rustls::ServerConnection::new(config.clone()).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, stream);
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                let complete = loop {
                    match tls.read(&mut byte) {
                        Ok(1) => {
                            head.push(byte[0]);
                            if head.ends_with(b"\r\n\r\n") {
                                break true;
                            }
                        }
                        _ => break false,
                    }
                };
                if !complete {
                    continue;
                }
                seen_by_server.lock().unwrap().push(Seen {
                    sni: tls.conn.server_name().map(String::from),
                    request_head: String::from_utf8_lossy(&head).to_string(),
                    client_cert: tls
                        .conn
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| c.to_vec()),
                    version: tls.conn.protocol_version(),
                });
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(response.as_bytes());
                tls.conn.send_close_notify();
                let _ = tls.flush();
            }
        });
        Self {
            port,
            seen,
            root_pem,
        }
    }

    fn connect(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn credentials_body(expiration: &str) -> String {
    format!(
        r#"{{"credentials":{{"accessKeyId":"ASIAZKIOTTEST","secretAccessKey":"c2VjcmV0/key+with=chars","sessionToken":"FwoGZXIvYXdzEJr//////////sessiontoken==","expiration":"{expiration}"}}}}"#
    )
}

fn in_one_hour() -> String {
    in_seconds(3600)
}

fn in_seconds(seconds: u64) -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + seconds;
    // RFC 3339 without fractions, as AWS sends it.
    let out = Command::new("date")
        .args(["-u", "-d", &format!("@{t}"), "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn credentials_over_mutual_tls_with_the_token_key_and_a_cache() {
    let env = Env::new();
    let thing = env.provision();
    let expiration = in_one_hour();
    let provider = Provider::start(
        &env,
        &env.home().join("ca/ca.crt"),
        rustls::ALL_VERSIONS,
        "200 OK",
        "",
        credentials_body(&expiration),
    );
    let connect = provider.connect();
    let bundle = provider.root_pem.to_str().unwrap().to_string();
    let base = [
        "device",
        "credentials",
        "--endpoint",
        ENDPOINT,
        "--role-alias",
        "zkiot-device",
        "--connect",
        &connect,
        "--ca-bundle",
        &bundle,
    ];
    let signatures_before = env.signatures();

    let out = env.ok(&base);
    let process: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(process["Version"], 1);
    assert_eq!(process["AccessKeyId"], "ASIAZKIOTTEST");
    assert_eq!(process["SecretAccessKey"], "c2VjcmV0/key+with=chars");
    assert_eq!(
        process["SessionToken"],
        "FwoGZXIvYXdzEJr//////////sessiontoken=="
    );
    assert_eq!(process["Expiration"], expiration.as_str());
    assert_eq!(
        env.signatures(),
        signatures_before + 1,
        "one device signature per handshake"
    );

    let seen = provider.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].sni.as_deref(), Some(ENDPOINT));
    assert!(
        seen[0]
            .request_head
            .starts_with("GET /role-aliases/zkiot-device/credentials HTTP/1.1\r\n"),
        "{}",
        seen[0].request_head
    );
    let head = seen[0].request_head.to_ascii_lowercase();
    assert!(
        head.contains(&format!(
            "\r\nx-amzn-iot-thingname: {}\r\n",
            thing.to_ascii_lowercase()
        )),
        "{head}"
    );
    assert!(
        head.contains(&format!("\r\nhost: {}\r\n", ENDPOINT)),
        "{head}"
    );
    let installed =
        X509::from_pem(&std::fs::read(env.device_dir().join("device.crt")).unwrap()).unwrap();
    assert_eq!(
        seen[0].client_cert.as_deref(),
        Some(installed.to_der().unwrap().as_slice())
    );

    let cache = env.device_dir().join("credentials.json");
    assert_eq!(
        std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // Cached: same answer, no new signature, no new connection.
    let env_out = env.ok(&[&base[..], &["--format", "env"]].concat());
    assert!(
        env_out.contains("export AWS_ACCESS_KEY_ID='ASIAZKIOTTEST'\n"),
        "{env_out}"
    );
    assert!(env_out.contains("export AWS_SECRET_ACCESS_KEY='c2VjcmV0/key+with=chars'\n"));
    assert!(
        env_out.contains("export AWS_SESSION_TOKEN='FwoGZXIvYXdzEJr//////////sessiontoken=='\n")
    );
    assert_eq!(env.signatures(), signatures_before + 1);
    assert_eq!(provider.seen().len(), 1);

    // Another role alias is not served from this cache entry.
    let mut other_alias = base.to_vec();
    other_alias[5] = "other-alias";
    env.ok(&other_alias);
    assert_eq!(provider.seen().len(), 2);
    assert!(provider.seen()[1]
        .request_head
        .starts_with("GET /role-aliases/other-alias/credentials "));
    assert_eq!(env.signatures(), signatures_before + 2);

    // --no-cache goes to the provider again; json is the provider's object.
    let json_out = env.ok(&[&base[..], &["--format", "json", "--no-cache"]].concat());
    let json: serde_json::Value = serde_json::from_str(&json_out).unwrap();
    assert_eq!(json["accessKeyId"], "ASIAZKIOTTEST");
    assert_eq!(json["expiration"], expiration.as_str());
    assert_eq!(env.signatures(), signatures_before + 3);
    assert_eq!(provider.seen().len(), 3);
}

#[test]
fn credentials_need_no_flags_once_install_cert_saved_them() {
    let env = Env::new();
    let thing = env.provision();
    let provider = Provider::start(
        &env,
        &env.home().join("ca/ca.crt"),
        TLS12_ONLY,
        "200 OK",
        "",
        credentials_body(&in_one_hour()),
    );
    let cert = env.device_dir().join("device.crt");
    let ca = env.device_dir().join("ca.crt");
    env.ok(&[
        "device",
        "install-cert",
        "--cert",
        cert.to_str().unwrap(),
        "--ca",
        ca.to_str().unwrap(),
        "--endpoint",
        ENDPOINT,
        "--role-alias",
        "fleet-role",
        "--ca-bundle",
        provider.root_pem.to_str().unwrap(),
    ]);
    // Only the address to dial is given: credential_process needs nothing else.
    let out = env.ok(&["device", "credentials", "--connect", &provider.connect()]);
    let process: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(process["AccessKeyId"], "ASIAZKIOTTEST");
    let seen = provider.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].version, Some(rustls::ProtocolVersion::TLSv1_2));
    assert!(seen[0]
        .request_head
        .starts_with("GET /role-aliases/fleet-role/credentials "));
    assert!(seen[0]
        .request_head
        .contains(&format!("x-amzn-iot-thingname: {thing}\r\n")));
}

#[test]
fn credentials_report_the_providers_refusal() {
    let env = Env::new();
    env.provision();
    let provider = Provider::start(
        &env,
        &env.home().join("ca/ca.crt"),
        rustls::ALL_VERSIONS,
        "403 Forbidden",
        "x-amzn-ErrorType: AccessDeniedException\r\n",
        r#"{"message":"Invalid thing name passed"}"#.to_string(),
    );
    let connect = provider.connect();
    let stderr = env.refused(
        &[
            "device",
            "credentials",
            "--endpoint",
            ENDPOINT,
            "--role-alias",
            "zkiot-device",
            "--connect",
            &connect,
            "--ca-bundle",
            provider.root_pem.to_str().unwrap(),
            "--thing",
            "someone-else",
        ],
        "403 Forbidden: Invalid thing name passed (AccessDeniedException)",
    );
    assert!(!stderr.contains("ASIA"));
    assert!(!env.device_dir().join("credentials.json").exists());

    // A server whose certificate the bundle does not vouch for is refused.
    let other = env.path("other-root.pem");
    std::fs::copy(env.home().join("ca/ca.crt"), &other).unwrap();
    env.refused(
        &[
            "device",
            "credentials",
            "--endpoint",
            ENDPOINT,
            "--role-alias",
            "zkiot-device",
            "--connect",
            &connect,
            "--ca-bundle",
            other.to_str().unwrap(),
        ],
        "certificate",
    );
}

#[test]
fn credentials_fail_clearly_when_the_endpoint_is_unreachable() {
    let env = Env::new();
    env.provision();
    // A port nothing listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let connect = format!("127.0.0.1:{port}");
    let signatures = env.signatures();
    env.refused(
        &[
            "device",
            "credentials",
            "--endpoint",
            ENDPOINT,
            "--role-alias",
            "zkiot-device",
            "--connect",
            &connect,
            "--timeout",
            "5",
        ],
        &format!("cannot connect to {connect}"),
    );
    assert_eq!(
        env.signatures(),
        signatures,
        "no signature without a server"
    );
}

#[test]
fn a_token_pin_from_the_shared_configuration_is_used() {
    let env = Env::new();
    let conf = env.path("zkiot.toml");
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str("pin = \"4711\"\n");
    std::fs::write(&conf, text).unwrap();
    let out = env.ok(&["device", "csr", "--thing", "pinned"]);
    assert!(out.contains("Wrote CSR"), "{out}");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_zkiot"));
    env.apply(&mut cmd);
    let wrong = cmd
        .args(["device", "csr", "--thing", "pinned", "--force"])
        .env("ZKIOT_PIN", "0000")
        .output()
        .unwrap();
    assert!(!wrong.status.success());
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        stderr.contains("zkiot: error: token \"zymkey\" refused the PIN"),
        "{stderr}"
    );
}

#[test]
fn credentials_close_to_expiry_are_fetched_again() {
    let env = Env::new();
    env.provision();
    // Four minutes left: inside the five-minute margin, so the cache must not serve them.
    let provider = Provider::start(
        &env,
        &env.home().join("ca/ca.crt"),
        rustls::ALL_VERSIONS,
        "200 OK",
        "",
        credentials_body(&in_seconds(240)),
    );
    let connect = provider.connect();
    let bundle = provider.root_pem.to_str().unwrap().to_string();
    let args = [
        "device",
        "credentials",
        "--endpoint",
        ENDPOINT,
        "--role-alias",
        "zkiot-device",
        "--connect",
        &connect,
        "--ca-bundle",
        &bundle,
    ];
    let signatures = env.signatures();
    env.ok(&args);
    env.ok(&args);
    assert_eq!(provider.seen().len(), 2);
    assert_eq!(env.signatures(), signatures + 2);
}

impl Env {
    /// Adds `text` to the zkiot configuration that the module and zkiot read.
    fn configure(&self, text: &str) {
        let path = self.path("zkiot.toml");
        let mut conf = std::fs::read_to_string(&path).unwrap();
        conf.push_str(text);
        std::fs::write(&path, conf).unwrap();
    }

    /// `install-cert` again with the installed certificate, saving `provider`'s endpoint, a role
    /// alias and its CA bundle in device.toml: what `credentials` needs besides the address.
    fn save_provider(&self, provider: &Provider) {
        let cert = self.device_dir().join("device.crt");
        let ca = self.device_dir().join("ca.crt");
        self.ok(&[
            "device",
            "install-cert",
            "--cert",
            cert.to_str().unwrap(),
            "--ca",
            ca.to_str().unwrap(),
            "--endpoint",
            ENDPOINT,
            "--role-alias",
            "fleet-role",
            "--ca-bundle",
            provider.root_pem.to_str().unwrap(),
        ]);
    }

    /// A stand-in provider that answers with credentials valid for an hour, saved in
    /// device.toml by [`Env::save_provider`].
    fn saved_provider(&self) -> Provider {
        let provider = Provider::start(
            self,
            &self.home().join("ca/ca.crt"),
            rustls::ALL_VERSIONS,
            "200 OK",
            "",
            credentials_body(&in_one_hour()),
        );
        self.save_provider(&provider);
        provider
    }

    fn device_toml(&self) -> String {
        std::fs::read_to_string(self.device_dir().join("device.toml")).unwrap()
    }
}

#[test]
fn a_token_label_from_the_configuration_is_used_without_flags() {
    let env = Env::new();
    env.configure("token_label = \"edge01\"\n");
    let done = env.provision_reporting();
    assert!(done.csr.contains("on token \"edge01\""), "{}", done.csr);
    assert!(
        done.install.contains("token \"edge01\""),
        "{}",
        done.install
    );
    assert!(
        done.install
            .contains("pkcs11:token=edge01;object=slot0;type=cert"),
        "{}",
        done.install
    );
    assert_eq!(env.signatures(), 1);

    let provider = env.saved_provider();
    // The label came from the configuration, which stays its one owner.
    assert!(
        !env.device_toml().contains("token_label"),
        "{}",
        env.device_toml()
    );

    let out = env.ok(&["device", "credentials", "--connect", &provider.connect()]);
    let process: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(process["AccessKeyId"], "ASIAZKIOTTEST");
    assert_eq!(env.signatures(), 2, "one signature for the handshake");
    let seen = provider.seen();
    assert_eq!(seen.len(), 1);
    assert!(seen[0]
        .request_head
        .contains(&format!("x-amzn-iot-thingname: {}\r\n", done.thing)));

    // A label install-cert was given is saved, and credentials use it; the command line
    // still wins over it.
    let toml = env.device_toml();
    std::fs::write(
        env.device_dir().join("device.toml"),
        format!("token_label = \"other\"\n{toml}"),
    )
    .unwrap();
    let connect = provider.connect();
    let no_cache = ["device", "credentials", "--no-cache", "--connect", &connect];
    env.refused(&no_cache, "no token labelled \"other\"");
    env.ok(&[&no_cache[..], &["--token-label", "edge01"]].concat());
    assert_eq!(provider.seen().len(), 2);
}

#[test]
fn a_key_label_from_the_configuration_is_used_without_flags() {
    let env = Env::new();
    let store = std::fs::read_to_string(env.path("zkiot.toml")).unwrap();
    env.configure("[labels]\n0 = \"device\"\n");
    let done = env.provision_reporting();
    assert!(
        done.csr.contains("signed by key \"device\""),
        "{}",
        done.csr
    );
    assert!(
        done.install
            .contains("pkcs11:token=zymkey;object=device;type=cert"),
        "{}",
        done.install
    );
    assert_eq!(env.signatures(), 1);

    let provider = env.saved_provider();
    assert!(
        !env.device_toml().contains("key_label"),
        "{}",
        env.device_toml()
    );

    let out = env.ok(&["device", "credentials", "--connect", &provider.connect()]);
    let process: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(process["AccessKeyId"], "ASIAZKIOTTEST");
    assert_eq!(env.signatures(), 2, "one signature for the handshake");

    // Both labels renamed after install-cert: device.toml holds no copy to go stale, so the
    // credentials follow the configuration.
    std::fs::write(
        env.path("zkiot.toml"),
        format!("{store}token_label = \"edge02\"\n[labels]\n0 = \"identity\"\n"),
    )
    .unwrap();
    env.ok(&[
        "device",
        "credentials",
        "--no-cache",
        "--connect",
        &provider.connect(),
    ]);
    assert_eq!(provider.seen().len(), 2);
    assert_eq!(env.signatures(), 3);
}

#[test]
fn credentials_refuse_a_certificate_for_another_key_before_signing() {
    let env = Env::new();
    env.provision();
    let ca = X509::from_pem(&std::fs::read(env.home().join("ca/ca.crt")).unwrap()).unwrap();
    let ca_key =
        PKey::private_key_from_pem(&std::fs::read(env.home().join("ca/ca.key")).unwrap()).unwrap();
    let other = Cert::new("intruder")
        .days(0, 2)
        .issued_by(&ca, &ca_key)
        .build(&p256());
    let other_path = env.path("other.crt");
    std::fs::write(&other_path, other.to_pem().unwrap()).unwrap();
    let signatures = env.signatures();
    env.refused(
        &[
            "device",
            "credentials",
            "--endpoint",
            ENDPOINT,
            "--role-alias",
            "zkiot-device",
            "--connect",
            "127.0.0.1:9",
            "--cert",
            other_path.to_str().unwrap(),
        ],
        "(key \"slot0\" on token \"zymkey\"): it is for another key than \"slot0\"",
    );
    assert_eq!(env.signatures(), signatures, "no signature for it");
}
