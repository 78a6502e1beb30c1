//! `zkiot ca …` through the built binary: idempotent init, issuing, and every refusal.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use openssl::x509::{X509Req, X509};
use testkit::x509::{csr, p256, Cert};

struct Home {
    _tmp: tempfile::TempDir,
    home: PathBuf,
}

impl Home {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("home");
        Self { _tmp: tmp, home }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.home.join(rel)
    }

    fn zkiot(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_zkiot"))
            .args(args)
            .env("ZKIOT_HOME", &self.home)
            .output()
            .unwrap()
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

    /// Runs a command that must fail with one `zkiot: error:` line containing `needle`.
    fn refused(&self, args: &[&str], needle: &str) {
        let out = self.zkiot(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "zkiot {args:?} should fail");
        assert_eq!(stderr.lines().count(), 1, "one error line, got: {stderr}");
        assert!(stderr.starts_with("zkiot: error: "), "{stderr}");
        assert!(stderr.contains(needle), "expected {needle:?} in: {stderr}");
    }
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
}

fn openssl_text(cert: &Path) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(cert)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn ca_init_creates_once_and_keeps_the_key_private() {
    let h = Home::new();
    let first = h.ok(&[
        "ca",
        "init",
        "--subject",
        "/CN=Test Fleet CA/O=zkiot tests",
        "--days",
        "30",
    ]);
    assert!(first.contains("Created CA key"), "{first}");
    assert!(first.contains("Next:"), "{first}");
    let key_mode = std::fs::metadata(h.path("ca/ca.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600);
    let cert_pem = std::fs::read(h.path("ca/ca.crt")).unwrap();
    let key_pem = std::fs::read(h.path("ca/ca.key")).unwrap();

    let cert = X509::from_pem(&cert_pem).unwrap();
    assert!(
        cert.verify(&cert.public_key().unwrap()).unwrap(),
        "self-signed"
    );
    let text = openssl_text(&h.path("ca/ca.crt"));
    assert!(text.contains("CA:TRUE, pathlen:0"), "{text}");
    assert!(text.contains("Certificate Sign, CRL Sign"), "{text}");
    assert!(text.contains("Subject Key Identifier"), "{text}");
    assert!(
        text.contains("CN = Test Fleet CA, O = zkiot tests"),
        "{text}"
    );
    assert!(
        text.contains("prime256v1") || text.contains("P-256"),
        "{text}"
    );

    let second = h.ok(&["ca", "init"]);
    assert!(second.contains("nothing changed"), "{second}");
    assert_eq!(std::fs::read(h.path("ca/ca.crt")).unwrap(), cert_pem);
    assert_eq!(std::fs::read(h.path("ca/ca.key")).unwrap(), key_pem);

    // --force makes a new CA.
    h.ok(&["ca", "init", "--force"]);
    assert_ne!(std::fs::read(h.path("ca/ca.key")).unwrap(), key_pem);
}

#[test]
fn ca_init_refuses_half_a_ca() {
    let h = Home::new();
    h.ok(&["ca", "init"]);
    let cert_pem = std::fs::read(h.path("ca/ca.crt")).unwrap();
    std::fs::remove_file(h.path("ca/ca.key")).unwrap();
    h.refused(&["ca", "init"], "ca.key does not");
    assert!(!h.path("ca/ca.key").exists());
    assert_eq!(std::fs::read(h.path("ca/ca.crt")).unwrap(), cert_pem);
}

#[test]
fn ca_sign_issues_a_client_certificate_for_the_csr_key() {
    let h = Home::new();
    h.ok(&["ca", "init"]);
    let key = p256();
    let csr_path = h.home.join("dev.csr");
    write(&csr_path, &csr("thing-01", &key).to_pem().unwrap());

    let out = h.ok(&[
        "ca",
        "sign",
        "--csr",
        csr_path.to_str().unwrap(),
        "--days",
        "10",
    ]);
    assert!(out.contains("Issued device certificate"), "{out}");
    let cert_path = h.path("devices/thing-01/device.crt");
    let cert = X509::from_pem(&std::fs::read(&cert_path).unwrap()).unwrap();

    let verify = Command::new("openssl")
        .args(["verify", "-purpose", "sslclient", "-CAfile"])
        .arg(h.path("ca/ca.crt"))
        .arg(&cert_path)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    assert!(cert.public_key().unwrap().public_eq(&key));
    let text = openssl_text(&cert_path);
    assert!(text.contains("TLS Web Client Authentication"), "{text}");
    assert!(text.contains("CA:FALSE"), "{text}");
    assert!(text.contains("Digital Signature"), "{text}");
    assert!(text.contains("ecdsa-with-SHA256"), "{text}");
    assert!(text.contains("Authority Key Identifier"), "{text}");
    let serial = cert.serial_number().to_bn().unwrap();
    assert!(!serial.is_negative() && serial.num_bits() > 64 && serial.num_bits() <= 128);
    let days = cert.not_before().diff(cert.not_after()).unwrap().days;
    assert!((10..=11).contains(&days), "{days} days");

    // Re-running finds the certificate and leaves it alone.
    let before = std::fs::read(&cert_path).unwrap();
    let again = h.ok(&["ca", "sign", "--csr", csr_path.to_str().unwrap()]);
    assert!(again.contains("nothing changed"), "{again}");
    assert_eq!(std::fs::read(&cert_path).unwrap(), before);

    // A CSR for another key does not silently replace it.
    let other = h.home.join("other.csr");
    write(&other, &csr("thing-01", &p256()).to_pem().unwrap());
    h.refused(&["ca", "sign", "--csr", other.to_str().unwrap()], "--force");
    assert_eq!(std::fs::read(&cert_path).unwrap(), before);
}

#[test]
fn ca_sign_refuses_a_csr_with_a_bad_signature() {
    let h = Home::new();
    h.ok(&["ca", "init"]);
    let mut der = csr("thing-02", &p256()).to_der().unwrap();
    let last = der.len() - 1;
    der[last] ^= 0x01; // inside the signature's s
    let csr_path = h.home.join("bad.csr");
    write(
        &csr_path,
        &X509Req::from_der(&der).unwrap().to_pem().unwrap(),
    );
    let out = h.home.join("bad.crt");
    h.refused(
        &[
            "ca",
            "sign",
            "--csr",
            csr_path.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        "signature does not verify",
    );
    assert!(!out.exists());
    assert!(!h.path("devices/thing-02").exists());
}

#[test]
fn ca_sign_refuses_the_wrong_or_an_invalid_cn() {
    let h = Home::new();
    h.ok(&["ca", "init"]);
    let key = p256();
    let csr_path = h.home.join("dev.csr");
    let out = h.home.join("dev.crt");
    write(&csr_path, &csr("thing-03", &key).to_pem().unwrap());
    h.refused(
        &[
            "ca",
            "sign",
            "--csr",
            csr_path.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--expect-cn",
            "thing-04",
        ],
        "expected \"thing-04\"",
    );
    assert!(!out.exists());

    write(&csr_path, &csr("not a thing/name", &key).to_pem().unwrap());
    h.refused(
        &[
            "ca",
            "sign",
            "--csr",
            csr_path.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        "thing name",
    );
    assert!(!out.exists());
}

#[test]
fn ca_sign_refuses_a_ca_key_that_does_not_match() {
    let h = Home::new();
    h.ok(&["ca", "init"]);
    write(
        &h.path("ca/ca.key"),
        &p256().private_key_to_pem_pkcs8().unwrap(),
    );
    let csr_path = h.home.join("dev.csr");
    write(&csr_path, &csr("thing-05", &p256()).to_pem().unwrap());
    let out = h.home.join("dev.crt");
    h.refused(
        &[
            "ca",
            "sign",
            "--csr",
            csr_path.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        "does not match the CA certificate",
    );
    assert!(!out.exists());
}

#[test]
fn ca_sign_refuses_an_expired_ca() {
    let h = Home::new();
    // An expired CA, made with OpenSSL directly.
    let key = p256();
    let cert = Cert::new("Expired CA")
        .serial(7)
        .days(-20, 19)
        .ca()
        .build(&key);
    std::fs::create_dir_all(h.path("ca")).unwrap();
    write(&h.path("ca/ca.crt"), &cert.to_pem().unwrap());
    write(
        &h.path("ca/ca.key"),
        &key.private_key_to_pem_pkcs8().unwrap(),
    );

    let csr_path = h.home.join("dev.csr");
    write(&csr_path, &csr("thing-06", &p256()).to_pem().unwrap());
    let out = h.home.join("dev.crt");
    h.refused(
        &[
            "ca",
            "sign",
            "--csr",
            csr_path.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        "expired",
    );
    assert!(!out.exists());
    // ca init does not paper over it either.
    h.refused(&["ca", "init"], "expired");
}
