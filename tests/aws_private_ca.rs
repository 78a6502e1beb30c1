//! AWS Private CA (moto's acm-pca) as the fleet's CA: `ca init --private-ca` takes its
//! certificate, register-ca's verification certificate is issued by it, `fleet provision` has it
//! issue twenty device certificates for the devices' CSRs (moto's acm-pca keeps the CSR's key),
//! and each device gets credentials from the local credentials provider: nineteen with keys in
//! files and curl, one from an emulated Zymkey through `zkiot device credentials`.
//!
//! moto's acm-pca quirks: the CA key is RSA-2048 whatever is asked, every certificate is valid
//! for 365 days (Validity is ignored), and a template other than EndEntityCertificate/V1 adds no
//! extensions; so the checks here are the chain, the key and the subject.

#![cfg(feature = "aws")]

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use openssl::x509::{X509Req, X509};
use serde_json::Value;
use support::*;

const ENDPOINT: &str = "pr1v4t3.credentials.iot.us-east-1.amazonaws.com";
const ALIAS: &str = "zkiot-device-alias";

/// A root Private CA in moto, made the way AWS documents (CSR, self-issued root certificate,
/// imported); its ARN and certificate.
fn make_private_ca(moto: &Moto) -> (String, X509) {
    let made = moto.py(
        "pca = s.client('acm-pca', endpoint_url=iot.meta.endpoint_url)\n\
         arn = pca.create_certificate_authority(CertificateAuthorityType='ROOT', CertificateAuthorityConfiguration={'KeyAlgorithm': 'RSA_2048', 'SigningAlgorithm': 'SHA256WITHRSA', 'Subject': {'CommonName': 'Fleet Private CA', 'Organization': 'zkiot tests'}})['CertificateAuthorityArn']\n\
         csr = pca.get_certificate_authority_csr(CertificateAuthorityArn=arn)['Csr']\n\
         c = pca.issue_certificate(CertificateAuthorityArn=arn, Csr=csr.encode(), SigningAlgorithm='SHA256WITHRSA', TemplateArn='arn:aws:acm-pca:::template/RootCACertificate/V1', Validity={'Value': 3650, 'Type': 'DAYS'})['CertificateArn']\n\
         pem = pca.get_certificate(CertificateAuthorityArn=arn, CertificateArn=c)['Certificate']\n\
         pca.import_certificate_authority_certificate(CertificateAuthorityArn=arn, Certificate=pem.encode())\n\
         result = [arn, pem]",
    );
    (
        made[0].as_str().unwrap().to_string(),
        X509::from_pem(made[1].as_str().unwrap().as_bytes()).unwrap(),
    )
}

/// Every file under `dir` holding a private key in PEM armour (PKCS#8, SEC1, RSA, encrypted).
fn private_key_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                pending.push(entry.unwrap().path());
            }
        } else if String::from_utf8_lossy(&std::fs::read(&path).unwrap())
            .contains("PRIVATE KEY-----")
            || openssl::pkey::PKey::private_key_from_der(&std::fs::read(&path).unwrap()).is_ok()
        {
            found.push(path);
        }
    }
    found
}

fn credentials_of(out: &std::process::Output) -> Value {
    assert!(
        out.status.success(),
        "device credentials failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn twenty_devices_from_a_private_ca_get_credentials() {
    let tmp = tempfile::tempdir().unwrap();
    let moto = Moto::start(tmp.path());
    let operator = Operator::new(tmp.path(), &moto);
    let (arn, pca_cert) = make_private_ca(&moto);

    // ---- ca init: the Private CA's certificate becomes ca.crt; no key anywhere.
    let out = operator.ok(&["ca", "init", "--private-ca", &arn]);
    assert!(out.contains("AWS Private CA"), "{out}");
    let ca = operator.ca_cert();
    assert_eq!(ca.to_der().unwrap(), pca_cert.to_der().unwrap());
    let toml = std::fs::read_to_string(operator.home.join("ca/ca.toml")).unwrap();
    assert!(toml.contains(&format!("private_ca = \"{arn}\"")), "{toml}");
    assert!(!operator.home.join("ca/ca.key").exists());
    let out = operator.ok(&["ca", "init", "--private-ca", &arn]);
    assert!(out.contains("nothing changed"), "{out}");
    let status = operator.ok(&["ca", "status"]);
    for needle in [
        "AWS Private CA",
        arn.as_str(),
        "ACTIVE, ROOT",
        "CN=Fleet Private CA",
        "check:       OK",
    ] {
        assert!(status.contains(needle), "{needle:?} in {status}");
    }

    // ---- register-ca: the Private CA issues the verification certificate.
    let out = operator.ok(&["aws", "register-ca"]);
    operator.verification_certificate(&out, &ca);
    operator.ok(&["aws", "setup"]);
    let provider = Provider::start(&moto, ENDPOINT, &tmp.path().join("provider"));

    // ---- Twenty CSRs: nineteen keys in files, one key in an emulated Zymkey.
    let csr_dir = tmp.path().join("csrs");
    let key_dir = tmp.path().join("keys");
    std::fs::create_dir_all(&key_dir).unwrap();
    let keys: BTreeMap<String, PathBuf> =
        write_csrs(&csr_dir, (0..19).map(|i| format!("pca-{i:02}")))
            .into_iter()
            .map(|(thing, key)| {
                let path = write_key_file(&key_dir, &thing, &key);
                (thing, path)
            })
            .collect();
    let device = Device::new(&tmp.path().join("zymkey-device"));
    let device_csr = device.csr("pca-zymkey");
    std::fs::write(csr_dir.join("pca-zymkey.csr"), &device_csr).unwrap();

    // moto's Private CA lives 365 days, and no certificate may outlive its CA.
    let out = operator.ok(&[
        "fleet",
        "provision",
        "--csr-dir",
        csr_dir.to_str().unwrap(),
        "--days",
        "300",
    ]);
    assert!(out.contains("20 provisioned"), "{out}");
    let inventory = moto.inventory();
    assert_eq!(inventory["certs"].as_array().unwrap().len(), 20);
    let devices = operator.home.join("devices");
    let cert_of = |thing: &str| {
        X509::from_pem(&std::fs::read(devices.join(thing).join("device.crt")).unwrap()).unwrap()
    };
    for thing in keys.keys().map(String::as_str).chain(["pca-zymkey"]) {
        let cert = cert_of(thing);
        assert!(cert.verify(&ca.public_key().unwrap()).unwrap(), "{thing}");
        assert_eq!(
            cert.issuer_name().to_der().unwrap(),
            ca.subject_name().to_der().unwrap()
        );
        let csr = X509Req::from_pem(&std::fs::read(csr_dir.join(format!("{thing}.csr"))).unwrap())
            .unwrap();
        assert!(
            cert.public_key()
                .unwrap()
                .public_eq(&csr.public_key().unwrap()),
            "{thing} carries its CSR's key"
        );
        assert_eq!(
            inventory["principals"][thing],
            serde_json::json!([format!(
                "arn:aws:iot:{REGION}:{ACCOUNT}:cert/{}",
                cert_id(&cert)
            )])
        );
    }

    // ---- Each device gets credentials with the certificate the Private CA issued (the
    // nineteen at once, as a fleet would ask).
    std::thread::scope(|scope| {
        for (thing, key) in &keys {
            let cert = devices.join(thing).join("device.crt");
            let provider = &provider;
            scope.spawn(move || {
                let (status, body) = provider.answer(&cert, key, ALIAS, thing);
                assert_eq!(status, 200, "{thing}: {body}");
            });
        }
    });
    device.install(
        &cert_of("pca-zymkey"),
        &operator.home.join("ca/ca.crt"),
        &provider,
        ALIAS,
    );
    let creds = credentials_of(&device.credentials(&provider, &[]));
    assert!(
        creds["accessKeyId"].as_str().unwrap().starts_with("ASIA"),
        "{creds}"
    );

    // ---- A re-run issues nothing; no private key in the operator's folder.
    let out = operator.ok(&[
        "fleet",
        "provision",
        "--csr-dir",
        csr_dir.to_str().unwrap(),
        "--days",
        "300",
    ]);
    assert!(out.contains("0 provisioned, 20 already done"), "{out}");
    assert_eq!(moto.inventory(), inventory);
    assert_eq!(private_key_files(&operator.home), Vec::<PathBuf>::new());

    // ---- Renewal needs a CSR a Private CA can take: refused, saying what to do.
    let out = operator.run(&["fleet", "renew", "--within", "400d"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("issues certificates for CSRs only"),
        "{stderr}"
    );
    assert_eq!(moto.inventory(), inventory);
}
