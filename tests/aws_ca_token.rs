//! The CA key in a PKCS#11 token (SoftHSM2), against moto and the local credentials provider:
//! `ca init --key` generates it there, and the CA certificate, register-ca's verification
//! certificate, `ca sign`, `fleet provision` and `fleet renew` are all signed there; devices get
//! credentials with what it signed, and no private key exists anywhere in the operator's folder.
//! Also: a file CA moved into the token, and `aws register-ca --sni-only`, which needs no CA
//! signature (seen in the request through the fault proxy, since moto ignores the mode).

#![cfg(feature = "aws")]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use openssl::ec::EcKey;
use openssl::pkey::PKey;
use openssl::x509::X509;
use support::*;

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
/// Distinctive, so a test can look for it in every file of the operator's folder.
const PIN: &str = "ca-pin-7351";
const ENDPOINT: &str = "c4t0k3n.credentials.iot.us-east-1.amazonaws.com";
const ALIAS: &str = "zkiot-device-alias";

/// A SoftHSM2 token store of its own, with one token initialised.
struct SoftHsm {
    conf: PathBuf,
}

impl SoftHsm {
    fn new(dir: &Path, label: &str) -> Self {
        assert!(
            Path::new(MODULE).exists(),
            "{MODULE} is missing: run scripts/install-deps.sh (package softhsm2)"
        );
        let tokens = dir.join("softhsm-tokens");
        std::fs::create_dir_all(&tokens).unwrap();
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .unwrap();
        let hsm = Self { conf };
        let out = hsm
            .tool("softhsm2-util")
            .args(["--init-token", "--free", "--label", label])
            .args(["--so-pin", "so-pin-1", "--pin", PIN])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        hsm
    }

    fn tool(&self, name: &str) -> Command {
        let mut cmd = Command::new(name);
        cmd.env("SOFTHSM2_CONF", &self.conf);
        cmd
    }

    /// `pkcs11-tool` on the token `label`, logged in.
    fn pkcs11_tool(&self, label: &str, args: &[&str]) -> String {
        let out = self
            .tool("pkcs11-tool")
            .args([
                "--module",
                MODULE,
                "--token-label",
                label,
                "--login",
                "--pin",
                PIN,
            ])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pkcs11-tool {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The operator's command with the token's configuration, and the PIN unless `pin` is false.
    fn run(&self, operator: &Operator, args: &[&str], pin: bool) -> Output {
        let mut cmd = operator.command(args);
        cmd.env("SOFTHSM2_CONF", &self.conf)
            .env_remove("ZKIOT_CA_PIN")
            .env_remove("ZKIOT_PKCS11_MODULE");
        if pin {
            cmd.env("ZKIOT_CA_PIN", PIN);
        }
        cmd.output().unwrap()
    }

    fn ok(&self, operator: &Operator, args: &[&str]) -> String {
        let out = self.run(operator, args, true);
        assert!(
            out.status.success(),
            "zkiot {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn refused(&self, operator: &Operator, args: &[&str], pin: bool, needle: &str) -> String {
        refused_output(&self.run(operator, args, pin), args, needle)
    }
}

/// Every file under `dir` holding a private key: PEM armour of any kind of private key
/// (PKCS#8, encrypted, SEC1 "EC PRIVATE KEY", RSA), or DER that OpenSSL reads as one.
fn private_key_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                pending.push(entry.unwrap().path());
            }
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let armoured = String::from_utf8_lossy(&bytes).contains("PRIVATE KEY-----");
        let der = PKey::private_key_from_der(&bytes).is_ok()
            || PKey::private_key_from_pkcs8(&bytes).is_ok()
            || EcKey::private_key_from_der(&bytes).is_ok();
        if armoured || der {
            found.push(path);
        }
    }
    found.sort();
    found
}

/// Files under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                pending.push(entry.unwrap().path());
            }
        } else if std::fs::read(&path)
            .unwrap()
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
        {
            found.push(path);
        }
    }
    found
}

/// The uncompressed point of a certificate's P-256 key, as hex.
fn point_hex(cert: &X509) -> String {
    let key = cert.public_key().unwrap().ec_key().unwrap();
    let mut ctx = openssl::bn::BigNumContext::new().unwrap();
    let bytes = key
        .public_key()
        .to_bytes(
            key.group(),
            openssl::ec::PointConversionForm::UNCOMPRESSED,
            &mut ctx,
        )
        .unwrap();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn read_cert(path: &Path) -> X509 {
    X509::from_pem(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn a_ca_in_softhsm2_signs_everything_and_no_key_file_exists() {
    let tmp = tempfile::tempdir().unwrap();
    let moto = Moto::start(tmp.path());
    let operator = Operator::new(tmp.path(), &moto);
    let hsm = SoftHsm::new(tmp.path(), "ca");
    let uri = "pkcs11:token=ca;object=fleet-ca";

    // ---- ca init: the key is generated in the token, the certificate signed there.
    let out = hsm.ok(&operator, &["ca", "init", "--module", MODULE, "--key", uri]);
    assert!(out.contains("Generated a P-256 key in the token"), "{out}");
    let ca = operator.ca_cert();
    assert!(ca.verify(&ca.public_key().unwrap()).unwrap(), "self-signed");
    let toml = std::fs::read_to_string(operator.home.join("ca/ca.toml")).unwrap();
    assert!(
        toml.contains("key = \"pkcs11:token=ca;object=fleet-ca;type=private\""),
        "{toml}"
    );
    assert!(toml.contains(&format!("module = \"{MODULE}\"")), "{toml}");
    assert!(!operator.home.join("ca/ca.key").exists());
    // The token made the key and will not give it out; ca.crt carries its public key.
    let keys = hsm.pkcs11_tool("ca", &["--list-objects", "--type", "privkey"]);
    assert!(keys.contains("label:      fleet-ca"), "{keys}");
    assert!(keys.contains("never extractable, local"), "{keys}");
    let public = hsm.pkcs11_tool("ca", &["--list-objects", "--type", "pubkey"]);
    assert!(
        public.contains(&format!("EC_POINT:   0441{}", point_hex(&ca))),
        "ca.crt's key is the token's: {public}"
    );
    // Again: nothing changes, nothing is generated.
    let out = hsm.ok(&operator, &["ca", "init", "--module", MODULE, "--key", uri]);
    assert!(out.contains("nothing changed"), "{out}");
    assert_eq!(operator.ca_cert().to_der().unwrap(), ca.to_der().unwrap());
    let keys = hsm.pkcs11_tool("ca", &["--list-objects", "--type", "privkey"]);
    assert_eq!(keys.matches("Private Key Object").count(), 1, "{keys}");

    // ---- ca status: where the key lives; without a PIN it says what it could not check.
    let status = hsm.ok(&operator, &["ca", "status"]);
    for needle in [
        "PKCS#11 token",
        "pkcs11:token=ca;object=fleet-ca",
        MODULE,
        "key \"fleet-ca\"",
        "subject:     CN=zkiot device CA",
        "valid until:",
        "check:       OK",
    ] {
        assert!(status.contains(needle), "{needle:?} in {status}");
    }
    let out = hsm.run(&operator, &["ca", "status"], false);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("check:       not made") && text.contains("ZKIOT_CA_PIN"),
        "{text}"
    );

    // ---- register-ca: the verification certificate is signed in the token.
    let out = hsm.ok(&operator, &["aws", "register-ca"]);
    operator.verification_certificate(&out, &ca);
    let registered = moto.py(&format!(
        "result = iot.describe_ca_certificate(certificateId='{}')['certificateDescription']['status']",
        cert_id(&ca)
    ));
    assert_eq!(registered, "ACTIVE");
    hsm.ok(&operator, &["aws", "setup"]);
    let provider = Provider::start(&moto, ENDPOINT, &tmp.path().join("provider"));

    // ---- ca sign: refused without the PIN, signed in the token with it.
    let key_dir = tmp.path().join("keys");
    std::fs::create_dir_all(&key_dir).unwrap();
    let single_key = p256();
    let single_csr = tmp.path().join("single.csr");
    std::fs::write(&single_csr, csr("single-0", &single_key).to_pem().unwrap()).unwrap();
    let sign = ["ca", "sign", "--csr", single_csr.to_str().unwrap()];
    hsm.refused(&operator, &sign, false, "ZKIOT_CA_PIN");
    assert!(!operator.home.join("devices/single-0").exists());
    hsm.ok(&operator, &sign);
    hsm.ok(
        &operator,
        &["aws", "register-device", "--thing", "single-0"],
    );
    let mut keys = std::collections::BTreeMap::new();
    keys.insert(
        "single-0".to_string(),
        write_key_file(&key_dir, "single-0", &single_key),
    );

    // ---- fleet provision: four devices whose certificates expire in 20 days.
    let csr_dir = tmp.path().join("csrs");
    for (thing, key) in write_csrs(&csr_dir, (0..4).map(|i| format!("tok-{i}"))) {
        keys.insert(thing.clone(), write_key_file(&key_dir, &thing, &key));
    }
    let out = hsm.ok(
        &operator,
        &[
            "fleet",
            "provision",
            "--csr-dir",
            csr_dir.to_str().unwrap(),
            "--days",
            "20",
        ],
    );
    assert!(out.contains("4 provisioned"), "{out}");
    let devices = operator.home.join("devices");
    for (thing, key) in &keys {
        let cert = read_cert(&devices.join(thing).join("device.crt"));
        assert!(cert.verify(&ca.public_key().unwrap()).unwrap(), "{thing}");
        let (status, body) =
            provider.answer(&devices.join(thing).join("device.crt"), key, ALIAS, thing);
        assert_eq!(status, 200, "{thing}: {body}");
    }

    // ---- fleet renew: the four due ones get new certificates, signed in the token.
    let out = hsm.ok(&operator, &["fleet", "renew", "--within", "30d"]);
    assert!(out.contains("4 renewed"), "{out}");
    assert!(!devices.join("single-0/renewal.crt").exists());
    for (thing, key) in keys.iter().filter(|(t, _)| t.starts_with("tok-")) {
        let old = read_cert(&devices.join(thing).join("device.crt"));
        let renewed = read_cert(&devices.join(thing).join("renewal.crt"));
        assert!(
            renewed.verify(&ca.public_key().unwrap()).unwrap(),
            "{thing}"
        );
        assert!(renewed
            .public_key()
            .unwrap()
            .public_eq(&old.public_key().unwrap()));
        assert!(renewed.not_after() > old.not_after(), "{thing}");
        let (status, body) =
            provider.answer(&devices.join(thing).join("renewal.crt"), key, ALIAS, thing);
        assert_eq!(status, 200, "{thing}: {body}");
    }

    // ---- No private key, and no PIN, anywhere in the operator's folder.
    assert_eq!(private_key_files(&operator.home), Vec::<PathBuf>::new());
    assert_eq!(files_containing(&operator.home, PIN), Vec::<PathBuf>::new());
    // The search finds a file CA's key, so finding none above means something.
    let file_ca = Operator::new(&tmp.path().join("file-ca"), &moto);
    file_ca.ok(&["ca", "init"]);
    assert_eq!(
        private_key_files(&file_ca.home),
        vec![file_ca.home.join("ca/ca.key")]
    );
    let der_key = file_ca.home.join("key.der");
    std::fs::write(&der_key, p256().private_key_to_der().unwrap()).unwrap();
    assert!(private_key_files(&file_ca.home).contains(&der_key));
}

#[test]
fn a_file_ca_moves_into_the_token_and_keeps_its_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let moto = Moto::start(tmp.path());
    let operator = Operator::new(tmp.path(), &moto);
    let hsm = SoftHsm::new(tmp.path(), "ca");
    operator.ok(&["ca", "init"]);
    let ca_pem = std::fs::read(operator.home.join("ca/ca.crt")).unwrap();
    let ca = operator.ca_cert();
    let key_path = operator.home.join("ca/ca.key");
    let uri = "pkcs11:token=ca;object=moved-ca";

    // Before the key is in the token, --key refuses and leaves the token as it was.
    let init = ["ca", "init", "--module", MODULE, "--key", uri];
    hsm.refused(&operator, &init, true, "import its key");
    let keys = hsm.pkcs11_tool("ca", &["--list-objects"]);
    assert!(!keys.contains("moved-ca"), "{keys}");

    // The README's way: the private key and its public key, with one id, into the token.
    let public_der = tmp.path().join("ca.pub.der");
    let key = PKey::private_key_from_pem(&std::fs::read(&key_path).unwrap()).unwrap();
    std::fs::write(&public_der, key.public_key_to_der().unwrap()).unwrap();
    for (file, kind) in [(&key_path, "privkey"), (&public_der, "pubkey")] {
        hsm.pkcs11_tool(
            "ca",
            &[
                "--write-object",
                file.to_str().unwrap(),
                "--type",
                kind,
                "--id",
                "0a",
                "--label",
                "moved-ca",
            ],
        );
    }
    let out = hsm.ok(&operator, &init);
    assert!(out.contains("now taken from the token"), "{out}");
    assert!(out.contains("shred -u"), "{out}");
    assert_eq!(
        std::fs::read(operator.home.join("ca/ca.crt")).unwrap(),
        ca_pem
    );

    // While the key file is still there, nothing signs.
    let device_key = p256();
    let csr_path = tmp.path().join("moved-1.csr");
    std::fs::write(&csr_path, csr("moved-1", &device_key).to_pem().unwrap()).unwrap();
    let sign = ["ca", "sign", "--csr", csr_path.to_str().unwrap()];
    hsm.refused(&operator, &sign, true, "destroy it");
    std::fs::remove_file(&key_path).unwrap();

    // Then the token signs for the same CA certificate.
    hsm.ok(&operator, &sign);
    let cert = read_cert(&operator.home.join("devices/moved-1/device.crt"));
    assert!(cert.verify(&ca.public_key().unwrap()).unwrap());
    let status = hsm.ok(&operator, &["ca", "status"]);
    assert!(status.contains("key \"moved-ca\" (id 0a)"), "{status}");
    assert!(status.contains("check:       OK"), "{status}");
    assert_eq!(private_key_files(&operator.home), Vec::<PathBuf>::new());

    // A token key that is not the CA's is refused, and ca.crt stays.
    hsm.refused(
        &operator,
        &[
            "ca",
            "init",
            "--module",
            MODULE,
            "--key",
            "pkcs11:token=ca;object=other",
        ],
        true,
        "import its key",
    );
    let out = hsm.ok(
        &operator,
        &[
            "ca",
            "init",
            "--module",
            MODULE,
            "--key",
            "pkcs11:token=ca;object=other",
            "--force",
        ],
    );
    assert!(out.contains("Generated a P-256 key"), "{out}");
    let new_ca = operator.ca_cert();
    assert_ne!(new_ca.to_der().unwrap(), ca.to_der().unwrap());
    hsm.refused(
        &operator,
        &["ca", "init", "--module", MODULE, "--key", uri],
        true,
        "does not match",
    );
    assert_eq!(
        operator.ca_cert().to_der().unwrap(),
        new_ca.to_der().unwrap()
    );
}

#[test]
fn register_ca_sni_only_sends_no_verification_certificate_and_needs_no_pin() {
    let tmp = tempfile::tempdir().unwrap();
    let moto = Moto::start(tmp.path());
    // moto ignores certificateMode and verification certificates: the proxy sees the requests.
    // Each rule marks a request with a fault of its own kind, retried by the client.
    let proxy = FaultProxy::start(
        &moto,
        &tmp.path().join("proxy"),
        &[
            (
                r#"^POST /cacertificate\S* .*"certificateMode":"SNI_ONLY""#,
                1,
                "500",
            ),
            (
                r#"^POST /cacertificate\S* .*"verificationCertificate""#,
                1,
                "throttle",
            ),
            (r"^GET /registrationcode", 1, "lost"),
        ],
    );
    let operator = Operator::new(tmp.path(), &moto);
    let hsm = SoftHsm::new(tmp.path(), "ca");
    hsm.ok(
        &operator,
        &[
            "ca",
            "init",
            "--module",
            MODULE,
            "--key",
            "pkcs11:token=ca;object=shared-ca",
        ],
    );
    let ca = operator.ca_cert();

    // No PIN: SNI_ONLY needs the CA certificate only.
    let args = [
        "aws",
        "register-ca",
        "--sni-only",
        "--endpoint-url",
        &proxy.url,
    ];
    let out = hsm.run(&operator, &args, false);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("SNI_ONLY"), "{text}");
    assert!(!operator.home.join("aws/verification.crt").exists());
    let injected = proxy.injected();
    assert!(
        injected.len() == 1 && injected[0].starts_with("injected 500: POST /cacertificate"),
        "one SNI_ONLY request, no verification certificate, no registration code: {injected:?}"
    );
    let described = moto.py(&format!(
        "d = iot.describe_ca_certificate(certificateId='{}')['certificateDescription']\n\
         result = [d['status'], d['certificatePem']]",
        cert_id(&ca)
    ));
    assert_eq!(described[0], "ACTIVE");
    assert_eq!(
        X509::from_pem(described[1].as_str().unwrap().as_bytes())
            .unwrap()
            .to_der()
            .unwrap(),
        ca.to_der().unwrap()
    );
    // Again: already registered, nothing sent.
    let out = hsm.run(&operator, &args, false);
    assert!(String::from_utf8_lossy(&out.stdout).contains("already registered"));

    // The rules do see a DEFAULT registration: a verification certificate and a code.
    let other = Operator::new(&tmp.path().join("other"), &moto);
    other.ok(&["ca", "init"]);
    other.ok(&["aws", "register-ca", "--endpoint-url", &proxy.url]);
    let injected = proxy.injected();
    assert_eq!(injected.len(), 3, "{injected:?}");
    assert!(
        injected[1].starts_with("injected lost: GET /registrationcode"),
        "{injected:?}"
    );
    assert!(
        injected[2].starts_with("injected throttle: POST /cacertificate"),
        "{injected:?}"
    );
}

/// The operator's own Zymkey holds the CA key through this project's module: an HSM6 (emulated)
/// generates it; a ZYMKEY4i, which cannot generate keys, refuses and holds it in a factory slot.
#[test]
fn a_zymkey_holds_the_ca_key_through_the_module() {
    let tmp = tempfile::tempdir().unwrap();
    let module = built_library("libzkpkcs11.so");
    let module = module.to_str().unwrap();
    let run = |model: &str, home: &Path, args: &[&str]| -> Output {
        let state = tmp.path().join(model);
        std::fs::create_dir_all(state.join("emu")).unwrap();
        let conf = state.join("zkiot.toml");
        std::fs::write(
            &conf,
            format!("store = \"{}\"\n", state.join("store.sqlite3").display()),
        )
        .unwrap();
        Command::new(zkiot_bin())
            .args(args)
            .env("ZKIOT_HOME", home)
            .env("ZKIOT_ZKLIB", built_library("libzkemu.so"))
            .env("ZKIOT_EMU_DIR", state.join("emu"))
            .env("ZKIOT_EMU_MODEL", model)
            .env("ZKIOT_CONF", &conf)
            .env_remove("ZKIOT_CA_PIN")
            .env_remove("ZKIOT_PIN")
            .env_remove("ZKIOT_EMU_TRACE")
            .output()
            .unwrap()
    };
    let ok = |out: Output| -> String {
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let device_csr = tmp.path().join("zk-dev.csr");
    std::fs::write(&device_csr, csr("zk-dev", &p256()).to_pem().unwrap()).unwrap();
    let sign = ["ca", "sign", "--csr", device_csr.to_str().unwrap()];

    let home = tmp.path().join("hsm6-operator");
    let init = [
        "ca",
        "init",
        "--module",
        module,
        "--key",
        "pkcs11:token=zymkey;object=fleet-ca",
    ];
    let out = ok(run("HSM6", &home, &init));
    assert!(out.contains("Generated a P-256 key in the token"), "{out}");
    assert!(out.contains("model HSM6"), "{out}");
    ok(run("HSM6", &home, &sign));
    let ca = read_cert(&home.join("ca/ca.crt"));
    let cert = read_cert(&home.join("devices/zk-dev/device.crt"));
    assert!(cert.verify(&ca.public_key().unwrap()).unwrap());
    assert_eq!(private_key_files(&home), Vec::<PathBuf>::new());

    let home = tmp.path().join("zymkey4i-operator");
    let out = run("ZYMKEY4i", &home, &init);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let error = stderr
        .lines()
        .filter(|l| l.starts_with("zkiot: error:"))
        .collect::<Vec<_>>();
    assert_eq!(error.len(), 1, "{stderr}");
    assert!(error[0].contains("object=slot1"), "{stderr}");
    assert!(!home.join("ca/ca.crt").exists());
    let slot1 = [
        "ca",
        "init",
        "--module",
        module,
        "--key",
        "pkcs11:token=zymkey;object=slot1",
    ];
    let out = ok(run("ZYMKEY4i", &home, &slot1));
    assert!(out.contains("with the key already in the token"), "{out}");
    ok(run("ZYMKEY4i", &home, &sign));
    let ca = read_cert(&home.join("ca/ca.crt"));
    let cert = read_cert(&home.join("devices/zk-dev/device.crt"));
    assert!(cert.verify(&ca.public_key().unwrap()).unwrap());
}
