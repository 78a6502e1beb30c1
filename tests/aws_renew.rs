//! `zkiot fleet renew` against moto and the local credentials provider: twenty devices whose
//! certificates expire within 30 days get new ones for the same keys, a run killed midway
//! finishes without a second certificate for anyone, a device that has not switched keeps its
//! old certificate, and at every step each device can get credentials with what it holds.
//! Devices use keys in files and curl.

#![cfg(feature = "aws")]

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use openssl::pkey::PKey;
use openssl::x509::X509;
use serde_json::Value;
use support::*;

const ENDPOINT: &str = "r3n3w.credentials.iot.us-east-1.amazonaws.com";
const ALIAS: &str = "zkiot-device-alias";

/// Asserts that each device gets credentials with the certificate file `cert_of` names.
fn all_get_credentials(
    provider: &Provider,
    keys: &BTreeMap<String, PathBuf>,
    cert_of: impl Fn(&str) -> PathBuf,
) {
    for (thing, key) in keys {
        let (status, body) = provider.answer(&cert_of(thing), key, ALIAS, thing);
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
    std::fs::create_dir_all(&key_dir).unwrap();
    let public = write_csrs(&csr_dir, (0..20).map(|i| format!("renew-{i:02}")));
    let keys: BTreeMap<String, PathBuf> = public
        .iter()
        .map(|(thing, key)| (thing.clone(), write_key_file(&key_dir, thing, key)))
        .collect();
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
    while read_record(&record_path).len() < 4 {
        assert!(Instant::now() < deadline, "no progress in the renewal run");
        assert!(child.try_wait().unwrap().is_none(), "the run ended early");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let renewed_before = read_record(&record_path).len();
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
    let renewed: Vec<Value> = read_record(&record_path)
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

/// `device credentials` succeeds with credentials; returns its stderr.
fn device_gets_credentials(provider: &Provider, device: &Device) -> String {
    let out = device.credentials(provider, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    let creds: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(creds["accessKeyId"].is_string(), "{creds}");
    stderr
}

/// The certificate object on the device's token, read with pkcs11-tool.
fn on_token(device: &Device) -> Vec<u8> {
    let out = device.dir.join("token-cert.der");
    let mut cmd = std::process::Command::new("pkcs11-tool");
    cmd.arg("--module")
        .arg(built_library("libzkpkcs11.so"))
        .args(["--read-object", "--type", "cert", "--label", "slot0", "-o"])
        .arg(&out)
        .stdin(Stdio::null());
    device.env(&mut cmd);
    let status = cmd.output().unwrap();
    assert!(status.status.success(), "{status:?}");
    std::fs::read(out).unwrap()
}

/// [`device_gets_credentials`] with the emulator's trace on: its stderr, and how many times the
/// process opened the device (`zkOpen`) and signed with it.
fn device_gets_credentials_traced(provider: &Provider, device: &Device) -> (String, usize, usize) {
    let trace = device.dir.join("trace");
    let _ = std::fs::remove_file(&trace);
    let connect = provider.connect();
    let mut cmd = std::process::Command::new(zkiot_bin());
    cmd.args([
        "device",
        "credentials",
        "--connect",
        &connect,
        "--no-cache",
        "--format",
        "json",
    ])
    .stdin(Stdio::null());
    device.env(&mut cmd);
    let out = cmd.env("ZKIOT_EMU_TRACE", &trace).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    let creds: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(creds["accessKeyId"].is_string(), "{creds}");
    let operations = std::fs::read_to_string(&trace).unwrap();
    let count = |name: &str| {
        operations
            .lines()
            .filter(|l| l.split_whitespace().next() == Some(name))
            .count()
    };
    (stderr, count("open"), count("sign"))
}

fn installed(device: &Device) -> X509 {
    X509::from_pem(&std::fs::read(device.device_dir().join("device.crt")).unwrap()).unwrap()
}

#[test]
fn devices_pick_up_their_renewed_certificates_and_the_old_ones_retire() {
    let tmp = tempfile::tempdir().unwrap();
    let moto = Moto::start(tmp.path());
    let operator = Operator::new(tmp.path(), &moto);
    operator.set_up();
    let provider = Provider::start(&moto, ENDPOINT, &tmp.path().join("provider"));
    let dir = tmp.path().join("devices");
    let things: Vec<String> = (0..20).map(|i| format!("zk-dev-{i:02}")).collect();
    let devices: Vec<(String, Device)> = things
        .iter()
        .map(|t| {
            (
                t.clone(),
                enrolled_device(&operator, &provider, &dir, t, ALIAS, 20).0,
            )
        })
        .collect();
    let (first_thing, first) = &devices[0];
    let first_cert = installed(first);

    // Without the renewal permission set, the role may not list the Thing's principals: the
    // device still gets credentials and says why it cannot look.
    let stderr = device_gets_credentials(&provider, first);
    assert!(
        stderr.contains("not authorized to perform: iot:ListThingPrincipals"),
        "{stderr}"
    );
    let out = operator.ok(&["aws", "setup", "--renewal"]);
    assert!(out.contains("zkiot-device-renewal written"), "{out}");
    let stderr = device_gets_credentials(&provider, first);
    assert!(!stderr.contains("warning"), "{stderr}");

    // Certificates offered to a device that are not for it are refused and change nothing:
    // one from our CA for another key, one for its key from another CA.
    let ca = operator.ca_cert();
    let ca_key =
        PKey::private_key_from_pem(&std::fs::read(operator.home.join("ca/ca.key")).unwrap())
            .unwrap();
    let other_key_cert = issue(
        first_thing,
        &p256(),
        Some((&ca, &ca_key)),
        false,
        None,
        (0, 100),
    );
    // The device's own CSR, signed by another operator's CA.
    let other = Operator::new(&tmp.path().join("other"), &moto);
    other.ok(&["ca", "init", "--subject", "/CN=Other CA"]);
    let csr_path = dir.join(format!("{first_thing}.csr"));
    other.ok(&[
        "ca",
        "sign",
        "--csr",
        csr_path.to_str().unwrap(),
        "--days",
        "100",
    ]);
    let other_ca_cert = X509::from_pem(
        &std::fs::read(
            other
                .home
                .join("devices")
                .join(first_thing)
                .join("device.crt"),
        )
        .unwrap(),
    )
    .unwrap();
    let attach = |cert: &X509| {
        moto.py(&format!(
            "c = iot.register_certificate_without_ca(certificatePem='''{}''', status='ACTIVE')\n\
             iot.attach_thing_principal(thingName='{first_thing}', principal=c['certificateArn'])\n\
             result = c['certificateArn']",
            String::from_utf8(cert.to_pem().unwrap()).unwrap()
        ))
    };
    let strangers = [attach(&other_key_cert), attach(&other_ca_cert)];
    assert_eq!(on_token(first), first_cert.to_der().unwrap());
    let stderr = device_gets_credentials(&provider, first);
    assert!(stderr.contains("it is for another key"), "{stderr}");
    assert!(
        stderr.contains("refused: it does not chain to the fleet CA"),
        "{stderr}"
    );
    assert_eq!(
        installed(first).to_der().unwrap(),
        first_cert.to_der().unwrap()
    );
    assert_eq!(on_token(first), first_cert.to_der().unwrap());
    for arn in &strangers {
        moto.py(&format!(
            "iot.detach_thing_principal(thingName='{first_thing}', principal={arn})\n\
             iot.update_certificate(certificateId={arn}.split('/')[-1], newStatus='REVOKED')"
        ));
    }

    // Every device works before renewal.
    for (_, device) in &devices {
        device_gets_credentials(&provider, device);
    }

    // The operator renews; the devices switch on their next credentials call.
    let out = operator.ok(&["fleet", "renew", "--within", "30d", "--grace", "0s"]);
    assert!(out.contains("20 renewed"), "{out}");
    for (thing, device) in &devices {
        let old = installed(device);
        // One zkOpen for the whole call: the token opened for the credentials is the one the
        // renewal proves the new certificate with (one signature for each handshake).
        let (stderr, opens, signatures) = device_gets_credentials_traced(&provider, device);
        assert!(
            stderr.contains("switched to certificate"),
            "{thing}: {stderr}"
        );
        assert_eq!(
            (opens, signatures),
            (1, 2),
            "{thing}: device opens and signatures"
        );
        let new = installed(device);
        assert_eq!(
            new.to_der().unwrap(),
            operator.renewal_certificate(thing).to_der().unwrap()
        );
        assert!(new
            .public_key()
            .unwrap()
            .public_eq(&old.public_key().unwrap()));
        let left = openssl::asn1::Asn1Time::days_from_now(0)
            .unwrap()
            .diff(new.not_after())
            .unwrap()
            .days;
        assert!(left >= 364, "{thing}: {left} days");
        let recorded = moto.py(&format!(
            "result = iot.describe_thing(thingName='{thing}')['attributes'].get('zkiot_certificate')"
        ));
        assert_eq!(recorded, serde_json::json!(cert_id(&new)), "{thing}");
        // The next call changes nothing.
        let (stderr, opens, signatures) = device_gets_credentials_traced(&provider, device);
        assert!(!stderr.contains("switched"), "{thing}: {stderr}");
        assert_eq!(
            (opens, signatures),
            (1, 1),
            "{thing}: device opens and signatures"
        );
    }

    // Old certificates: deactivated, then (grace 0 s) revoked on the next run.
    let out = operator.ok(&["fleet", "renew", "--within", "30d", "--grace", "0s"]);
    assert!(out.contains("0 renewed"), "{out}");
    assert!(out.contains("20 old certificates deactivated"), "{out}");
    for (_, device) in &devices {
        device_gets_credentials(&provider, device);
    }
    let before = certificates(&moto);
    let out = operator.ok(&["fleet", "renew", "--within", "30d", "--grace", "0s"]);
    assert!(out.contains("20 revoked, 20 detached"), "{out}");
    // Each Thing keeps its current certificate; the old one, REVOKED, is detached from it.
    let held = certificates(&moto);
    for thing in &things {
        let rows = &held[thing];
        assert_eq!(rows.len(), 1, "{thing}: {rows:?}");
        assert_eq!(rows[0].1, "ACTIVE", "{thing}: {rows:?}");
        let old = &before[thing][0].0;
        let status = moto.py(&format!(
            "result = iot.describe_certificate(certificateId='{old}')['certificateDescription']['status']"
        ));
        assert_eq!(status, "REVOKED", "{thing}");
    }
    for (_, device) in &devices {
        device_gets_credentials(&provider, device);
    }
}

/// A renewal cut off after its certificate is registered but before it is attached to the
/// Thing (AWS goes away at the attach): the Thing already carries the new expiry, and still the
/// next run looks at it and finishes, instead of taking it for a device renewed long ago.
#[test]
fn a_renewal_cut_off_before_the_attach_is_finished_by_the_next_run() {
    let tmp = tempfile::tempdir().unwrap();
    let moto = Moto::start(tmp.path());
    let mut operator = Operator::new(tmp.path(), &moto);
    operator.set_up();
    let csr_dir = tmp.path().join("csrs");
    let public = write_csrs(&csr_dir, ["cut-00", "cut-01"].map(String::from));
    operator.ok(&[
        "fleet",
        "provision",
        "--csr-dir",
        csr_dir.to_str().unwrap(),
        "--days",
        "20",
    ]);

    let proxy = FaultProxy::start(
        &moto,
        &tmp.path().join("proxy"),
        &[("PUT /things/cut-01/principals", 1, "down")],
    );
    operator.endpoint_url = proxy.url.clone();
    let out = operator.run(&["fleet", "renew", "--within", "30d", "--concurrency", "1"]);
    operator.endpoint_url = moto.url();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(stdout.contains("1 renewed"), "{stdout}");
    // What the cut-off run left: cut-01's renewal registered, not attached, its expiry recorded.
    let left = moto.py(
        "result = {'attached': len(iot.list_thing_principals(thingName='cut-01')['principals']),\n\
         \x20         'registered': len(iot.list_certificates()['certificates']),\n\
         \x20         'attributes': iot.describe_thing(thingName='cut-01')['attributes']}",
    );
    assert_eq!(left["attached"], 1, "{left}");
    assert_eq!(left["registered"], 4, "{left}");

    let out = operator.ok(&["fleet", "renew", "--within", "30d"]);
    assert!(
        out.contains("1 renewed, 1 waiting for the device to switch"),
        "{out}"
    );
    let held = certificates(&moto);
    for (thing, key) in &public {
        let rows = &held[thing];
        assert_eq!(rows.len(), 2, "{thing}: {rows:?}");
        assert!(rows[1].2 >= 364, "{thing}: {rows:?}");
        let renewal = X509::from_pem(
            &std::fs::read(
                operator
                    .home
                    .join("devices")
                    .join(thing)
                    .join("renewal.crt"),
            )
            .unwrap(),
        )
        .unwrap();
        assert!(renewal.public_key().unwrap().public_eq(key), "{thing}");
    }
    let out = operator.ok(&["fleet", "renew", "--within", "30d"]);
    assert!(
        out.contains("0 renewed, 2 waiting for the device to switch"),
        "{out}"
    );
}
