//! `zkiot fleet renew` against moto and the local credentials provider: twenty devices whose
//! certificates expire within 30 days get new ones for the same keys, a run killed midway
//! finishes without a second certificate for anyone, a device that has not switched keeps its
//! old certificate, and at every step each device can get credentials with what it holds.
//! Devices use keys in files and curl.

#![cfg(feature = "aws")]

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use serde_json::Value;
use support::*;

const ENDPOINT: &str = "r3n3w.credentials.iot.us-east-1.amazonaws.com";
const ALIAS: &str = "zkiot-device-alias";

fn key_file(dir: &Path, thing: &str, key: &PKey<Private>) -> PathBuf {
    let path = dir.join(format!("{thing}.key"));
    std::fs::write(&path, key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    path
}

/// Asserts that each device gets credentials with the certificate file `cert_of` names.
fn all_get_credentials(
    provider: &Provider,
    keys: &BTreeMap<String, PathBuf>,
    cert_of: impl Fn(&str) -> PathBuf,
) {
    for (thing, key) in keys {
        let (status, body, _) = provider
            .curl(&cert_of(thing), Some(key), ALIAS, Some(thing), None)
            .unwrap_or_else(|code| panic!("{thing}: no HTTP answer (curl exit {code})"));
        assert_eq!(status, 200, "{thing}: {body}");
    }
}

/// Per thing: (certificate id, status, days of validity left) of each attached certificate.
fn certificates(moto: &Moto) -> BTreeMap<String, Vec<(String, String, i64)>> {
    let value = moto.py(
        "import datetime\n\
         from cryptography import x509\n\
         result = {}\n\
         for t in iot.list_things()['things']:\n\
         \x20   rows = []\n\
         \x20   for p in iot.list_thing_principals(thingName=t['thingName'])['principals']:\n\
         \x20       d = iot.describe_certificate(certificateId=p.split('/')[-1])['certificateDescription']\n\
         \x20       c = x509.load_pem_x509_certificate(d['certificatePem'].encode())\n\
         \x20       left = c.not_valid_after_utc - datetime.datetime.now(datetime.timezone.utc)\n\
         \x20       rows.append([d['certificateId'], d['status'], left.days])\n\
         \x20   result[t['thingName']] = sorted(rows, key=lambda r: r[2])",
    );
    serde_json::from_value(value).unwrap()
}

fn record(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn twenty_devices_renewed_for_their_own_keys_and_a_killed_run_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let moto = Moto::start(tmp.path());
    let operator = Operator::new(tmp.path(), &moto);
    operator.set_up();
    let provider = Provider::start(&moto, ENDPOINT, &tmp.path().join("provider"));

    // Twenty devices with certificates that expire in 20 days.
    let csr_dir = tmp.path().join("csrs");
    let key_dir = tmp.path().join("keys");
    std::fs::create_dir_all(&csr_dir).unwrap();
    std::fs::create_dir_all(&key_dir).unwrap();
    let mut keys = BTreeMap::new();
    let mut public = BTreeMap::new();
    for i in 0..20 {
        let thing = format!("renew-{i:02}");
        let key = p256();
        std::fs::write(
            csr_dir.join(format!("{thing}.csr")),
            csr(&thing, &key).to_pem().unwrap(),
        )
        .unwrap();
        keys.insert(thing.clone(), key_file(&key_dir, &thing, &key));
        public.insert(thing, key);
    }
    operator.ok(&[
        "fleet",
        "provision",
        "--csr-dir",
        csr_dir.to_str().unwrap(),
        "--days",
        "20",
    ]);
    let devices = operator.home.join("devices");
    let old_cert = |thing: &str| devices.join(thing).join("device.crt");
    let new_cert = |thing: &str| devices.join(thing).join("renewal.crt");
    all_get_credentials(&provider, &keys, old_cert);

    // A stranger's certificate from another CA on a Thing: not ours to renew.
    let other_ca_key = p256();
    let other_ca = issue("other CA", &other_ca_key, None, true, None, (0, 100));
    let stranger = issue(
        "stranger",
        &p256(),
        Some((&other_ca, &other_ca_key)),
        false,
        None,
        (0, 10),
    );
    moto.py(&format!(
        "c = iot.register_certificate_without_ca(certificatePem='''{}''', status='ACTIVE')\n\
         iot.create_thing(thingName='stranger')\n\
         iot.attach_thing_principal(thingName='stranger', principal=c['certificateArn'])",
        String::from_utf8(stranger.to_pem().unwrap()).unwrap()
    ));

    // A renewal run cut short with SIGKILL.
    let record_path = tmp.path().join("renew.jsonl");
    let mut child = operator
        .command(&[
            "fleet",
            "renew",
            "--within",
            "30d",
            "--concurrency",
            "1",
            "--record",
            record_path.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while record(&record_path).len() < 4 {
        assert!(Instant::now() < deadline, "no progress in the renewal run");
        assert!(child.try_wait().unwrap().is_none(), "the run ended early");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let renewed_before = record(&record_path).len();
    assert!(
        renewed_before < 20,
        "the run was cut short ({renewed_before} done)"
    );
    // Cut short, every device still gets credentials with the certificate it holds.
    all_get_credentials(&provider, &keys, old_cert);

    // The same command finishes the job.
    let out = operator.ok(&[
        "fleet",
        "renew",
        "--within",
        "30d",
        "--record",
        record_path.to_str().unwrap(),
    ]);
    assert!(
        out.contains(&format!("{} renewed", 20 - renewed_before)),
        "{out}"
    );
    assert!(out.contains("0 failed"), "{out}");

    // Each device: its old certificate still ACTIVE (it has not switched), one new one ACTIVE
    // for the full term, for the same key, from our CA; no duplicates.
    let ca = operator.ca_cert();
    let held = certificates(&moto);
    for (thing, key) in &public {
        let rows = &held[thing];
        assert_eq!(rows.len(), 2, "{thing}: {rows:?}");
        assert_eq!(rows[0].1, "ACTIVE", "{thing}: {rows:?}");
        assert!(rows[0].2 < 21, "{thing}: {rows:?}");
        assert_eq!(rows[1].1, "ACTIVE", "{thing}: {rows:?}");
        assert!(rows[1].2 >= 364, "{thing}: {rows:?}");
        let renewal = X509::from_pem(&std::fs::read(new_cert(thing)).unwrap()).unwrap();
        assert_eq!(cert_id(&renewal), rows[1].0, "{thing}");
        assert!(renewal.public_key().unwrap().public_eq(key), "{thing}");
        assert!(
            renewal.verify(&ca.public_key().unwrap()).unwrap(),
            "{thing}"
        );
        let old = X509::from_pem(&std::fs::read(old_cert(thing)).unwrap()).unwrap();
        assert_eq!(
            renewal.subject_name().to_der().unwrap(),
            old.subject_name().to_der().unwrap()
        );
    }
    assert_eq!(held["stranger"].len(), 1);
    let renewed: Vec<Value> = record(&record_path)
        .into_iter()
        .filter(|e| e["step"] == "renewed")
        .collect();
    assert_eq!(renewed.len(), 20, "{renewed:?}");
    // Both certificates work: the device may switch whenever it likes.
    all_get_credentials(&provider, &keys, old_cert);
    all_get_credentials(&provider, &keys, new_cert);

    // Again: nothing to renew, and nobody's old certificate is touched before the switch.
    let out = operator.ok(&["fleet", "renew", "--within", "30d"]);
    assert!(
        out.contains("0 renewed, 20 waiting for the device to switch"),
        "{out}"
    );
    assert_eq!(certificates(&moto), held);

    // Status shows both, with their expiry.
    let out = operator.ok(&["aws", "status", "--thing", "renew-00"]);
    assert_eq!(
        out.matches("ACTIVE, policies: zkiot-device-policy, expires")
            .count(),
        2,
        "{out}"
    );
}
