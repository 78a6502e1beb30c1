//! `zkiot fleet provision` against moto: many devices at once, a record, and runs cut short.
//!
//! Two ways a run is cut short, and what each can honestly show:
//! - the `zkiot` process is killed (SIGKILL) mid-run while moto keeps its state: the re-run
//!   completes and AWS holds exactly one certificate per device, the ones issued before the kill;
//! - moto itself dies mid-run. moto keeps its state in memory only, so it comes back empty:
//!   the run stops cleanly (non-zero, a record, devices not attempted once AWS is unreachable),
//!   and once the service is back (`register-ca` and `setup` re-run, as after any loss) the same
//!   command completes without issuing a second certificate to any device, and without
//!   duplicates in the service.

#![cfg(feature = "aws")]

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use openssl::pkey::{PKey, Public};
use openssl::x509::X509;
use support::*;

/// Writes `count` CSRs (keys in memory) and returns each thing's public key.
fn make_csrs(dir: &Path, count: usize) -> BTreeMap<String, PKey<Public>> {
    write_csrs(dir, (0..count).map(|i| format!("fleet-{i:03}")))
        .into_iter()
        .map(|(thing, key)| {
            let public = PKey::public_key_from_pem(&key.public_key_to_pem().unwrap()).unwrap();
            (thing, public)
        })
        .collect()
}

fn registered_count(path: &Path) -> usize {
    read_record(path)
        .iter()
        .filter(|e| e["step"] == "registered")
        .count()
}

/// Certificate ids of the device certificates on disk.
fn issued(operator: &Operator) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Ok(dirs) = std::fs::read_dir(operator.home.join("devices")) else {
        return out;
    };
    for entry in dirs {
        let dir = entry.unwrap().path();
        if let Ok(pem) = std::fs::read(dir.join("device.crt")) {
            let thing = dir.file_name().unwrap().to_string_lossy().to_string();
            out.insert(thing, cert_id(&X509::from_pem(&pem).unwrap()));
        }
    }
    out
}

/// `fleet provision` of `csr_dir` with its record in `record`, `concurrency` devices at a time.
fn provision_args<'a>(csr_dir: &'a Path, record: &'a Path, concurrency: &'a str) -> [&'a str; 8] {
    [
        "fleet",
        "provision",
        "--csr-dir",
        csr_dir.to_str().unwrap(),
        "--record",
        record.to_str().unwrap(),
        "--concurrency",
        concurrency,
    ]
}

fn spawn_fleet(operator: &Operator, csr_dir: &Path, record: &Path, concurrency: &str) -> Child {
    operator
        .command(&provision_args(csr_dir, record, concurrency))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until the record shows at least `n` registered devices; panics if the run ended first.
fn wait_for_progress(child: &mut Child, record: &Path, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while registered_count(record) < n {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the fleet run ended ({status}) before it could be cut short");
        }
        assert!(Instant::now() < deadline, "no progress in the fleet run");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// AWS holds exactly one certificate per device, the one on disk, attached to its thing with
/// the policy; every certificate verifies under the CA and carries the CSR's key.
fn check_complete(operator: &Operator, moto: &Moto, keys: &BTreeMap<String, PKey<Public>>) {
    let inventory = moto.inventory();
    let on_disk = issued(operator);
    assert_eq!(on_disk.len(), keys.len());
    assert_eq!(
        inventory["certs"].as_array().unwrap().len(),
        keys.len(),
        "one certificate per device"
    );
    let things: Vec<&str> = inventory["things"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(things, keys.keys().map(String::as_str).collect::<Vec<_>>());
    let ca = operator.ca_cert();
    for (thing, key) in keys {
        let id = &on_disk[thing];
        assert_eq!(
            inventory["principals"][thing],
            serde_json::json!([format!("arn:aws:iot:{REGION}:{ACCOUNT}:cert/{id}")]),
            "{thing}"
        );
        assert_eq!(
            inventory["attached"][id],
            serde_json::json!(["zkiot-device-policy"])
        );
        let cert = X509::from_pem(
            &std::fs::read(operator.home.join("devices").join(thing).join("device.crt")).unwrap(),
        )
        .unwrap();
        assert!(cert.verify(&ca.public_key().unwrap()).unwrap(), "{thing}");
        assert!(
            cert.public_key().unwrap().public_eq(key),
            "{thing} carries its CSR's key"
        );
    }
}

#[test]
fn fleet_provisions_and_a_killed_run_resumes_without_duplicates() {
    let tmp = tempfile::tempdir().unwrap();
    let moto = Moto::start(tmp.path());
    let operator = Operator::new(tmp.path(), &moto);
    operator.set_up();
    let csr_dir = tmp.path().join("csrs");
    let keys = make_csrs(&csr_dir, 60);
    let record_path = tmp.path().join("record.jsonl");

    // Cut the run short with SIGKILL.
    let mut child = spawn_fleet(&operator, &csr_dir, &record_path, "1");
    wait_for_progress(&mut child, &record_path, 5);
    child.kill().unwrap();
    child.wait().unwrap();
    let done_before = registered_count(&record_path);
    assert!(
        done_before < keys.len(),
        "the run was cut short ({done_before} done)"
    );
    let issued_before = issued(&operator);

    // The same command finishes the job.
    let out = operator.ok(&provision_args(&csr_dir, &record_path, "8"));
    assert!(out.contains("0 failed"), "{out}");
    check_complete(&operator, &moto, &keys);
    // Certificates issued before the kill were kept, not issued again.
    let issued_after = issued(&operator);
    for (thing, id) in &issued_before {
        assert_eq!(
            &issued_after[thing], id,
            "{thing} was issued a second certificate"
        );
    }
    // The record: every device signed exactly once, registered at least once.
    let entries = read_record(&record_path);
    for thing in keys.keys() {
        let signed = entries
            .iter()
            .filter(|e| e["thing"] == thing.as_str() && e["step"] == "signed")
            .count();
        assert_eq!(signed, 1, "{thing}");
        assert!(entries
            .iter()
            .any(|e| e["thing"] == thing.as_str() && e["step"] == "registered"));
    }

    // A third run finds everything done.
    let before = moto.inventory();
    let out = operator.ok(&[
        "fleet",
        "provision",
        "--csr-dir",
        csr_dir.to_str().unwrap(),
        "--record",
        record_path.to_str().unwrap(),
    ]);
    assert!(
        out.contains(&format!(
            "0 provisioned, {} already done, 0 failed",
            keys.len()
        )),
        "{out}"
    );
    assert_eq!(moto.inventory(), before);
}

#[test]
fn fleet_survives_the_service_dying_mid_run() {
    let tmp = tempfile::tempdir().unwrap();
    let mut moto = Moto::start(tmp.path());
    let port = moto.port;
    let operator = Operator::new(tmp.path(), &moto);
    operator.set_up();
    let csr_dir = tmp.path().join("csrs");
    let keys = make_csrs(&csr_dir, 40);
    let record_path = tmp.path().join("record.jsonl");

    let mut child = spawn_fleet(&operator, &csr_dir, &record_path, "2");
    wait_for_progress(&mut child, &record_path, 5);
    moto.kill();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stdout}{stderr}");
    assert!(stderr.contains("cannot reach"), "{stderr}");
    assert!(stderr.contains("run the same command again"), "{stderr}");
    assert!(
        stdout.contains("not attempted (AWS unreachable)"),
        "{stdout}{stderr}"
    );
    let issued_before = issued(&operator);
    assert!(!issued_before.is_empty() && issued_before.len() < keys.len());

    // The service comes back empty (moto keeps no state): the one-time steps converge again,
    // then the same fleet command completes.
    let moto = Moto::start_on(tmp.path(), port);
    operator.ok(&["aws", "register-ca"]);
    operator.ok(&["aws", "setup"]);
    let out = operator.ok(&[
        "fleet",
        "provision",
        "--csr-dir",
        csr_dir.to_str().unwrap(),
        "--record",
        record_path.to_str().unwrap(),
    ]);
    assert!(out.contains("0 failed"), "{out}");
    check_complete(&operator, &moto, &keys);
    let issued_after = issued(&operator);
    for (thing, id) in &issued_before {
        assert_eq!(
            &issued_after[thing], id,
            "{thing} was issued a second certificate"
        );
    }
}

#[test]
fn fleet_refuses_a_bad_folder_before_doing_anything() {
    let tmp = tempfile::tempdir().unwrap();
    let moto = Moto::start(tmp.path());
    let operator = Operator::new(tmp.path(), &moto);
    operator.set_up();
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    operator.refused(
        &["fleet", "provision", "--csr-dir", empty.to_str().unwrap()],
        "no *.csr files",
    );

    // Two CSRs for one thing.
    let dup = tmp.path().join("dup");
    std::fs::create_dir_all(&dup).unwrap();
    for name in ["a", "b"] {
        std::fs::write(
            dup.join(format!("{name}.csr")),
            csr("same-thing", &p256()).to_pem().unwrap(),
        )
        .unwrap();
    }
    operator.refused(
        &["fleet", "provision", "--csr-dir", dup.to_str().unwrap()],
        "both ask for thing same-thing",
    );

    // A CSR whose signature does not verify: that device fails, the others go through.
    let mixed = tmp.path().join("mixed");
    make_csrs(&mixed, 3);
    let good = csr("forged", &p256()).to_der().unwrap();
    let mut forged = good.clone();
    let last = forged.len() - 1;
    forged[last] ^= 0x01; // inside the signature
    std::fs::write(mixed.join("forged.csr"), forged).unwrap();
    let out = operator.run(&["fleet", "provision", "--csr-dir", mixed.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("forged: ") && stderr.contains("signature"),
        "{stderr}"
    );
    assert!(
        stdout.contains("3 provisioned, 0 already done, 1 failed"),
        "{stdout}"
    );
    assert_eq!(moto.inventory()["certs"].as_array().unwrap().len(), 3);
    assert!(!operator.home.join("devices/forged").exists());
}

/// Faults on the calls `fleet provision` makes for each device, through the fault proxy:
/// transient ones (throttling, 5xx, answers lost after the call took effect) are retried and
/// converge; persistent ones fail only the devices they hit, each with one line naming the
/// call, while the others are provisioned; the same command then finishes the job without a
/// duplicate Thing or certificate.
#[test]
fn fleet_retries_transient_faults_and_isolates_persistent_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let moto = Moto::start(tmp.path());
    let mut operator = Operator::new(tmp.path(), &moto);
    operator.set_up();
    let csr_dir = tmp.path().join("csrs");
    let keys = make_csrs(&csr_dir, 6);
    let record_path = tmp.path().join("record.jsonl");
    let before = moto.inventory();

    let rules = [
        // RegisterCertificate takes effect, its answer is lost: the retry finds it registered.
        ("^POST /certificate/register ", 2, "lost"),
        ("^GET /certificates/", 2, "throttle"),
        // CreateThing: one device for ever, others transiently.
        ("^POST /things/fleet-002 ", FOREVER, "500"),
        ("^POST /things/[^/ ]+ ", 2, "lost"),
        // AttachThingPrincipal: one device for ever, others transiently.
        ("^PUT /things/fleet-004/principals", FOREVER, "throttle"),
        ("^PUT /things/[^/ ]+/principals", 2, "500"),
        // AttachPolicy.
        ("^PUT /target-policies/", 2, "throttle"),
    ];
    let proxy = FaultProxy::start(&moto, &tmp.path().join("proxy"), &rules);
    operator.endpoint_url = proxy.url.clone();
    let args = provision_args(&csr_dir, &record_path, "3");
    // Throttling left to the SDK's three attempts (no wait for it in the limiter), so that the
    // one that persists fails within the test.
    let started = Instant::now();
    let out = operator
        .command(&args)
        .env("ZKIOT_THROTTLE_WAIT", "0")
        .output()
        .unwrap();
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stdout}{stderr}");
    assert!(elapsed < Duration::from_secs(60), "took {elapsed:?}");
    assert!(
        stdout.contains("4 provisioned, 0 already done, 2 failed"),
        "{stdout}{stderr}"
    );
    let failures: Vec<&str> = stderr.lines().filter(|l| l.starts_with("fleet-")).collect();
    assert_eq!(failures.len(), 2, "{stderr}");
    assert!(
        failures[0].starts_with(
            "fleet-002: CreateThing failed: InternalFailureException: Internal failure (gave up after 3 attempts)"
        ),
        "{stderr}"
    );
    assert!(
        failures[1].starts_with(
            "fleet-004: AttachThingPrincipal failed: ThrottlingException: Rate exceeded (gave up after 3 attempts)"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "2 of 6 devices not provisioned; fix the cause and run the same command again"
        ),
        "{stderr}"
    );
    let injected = proxy.injected();
    let transient = injected
        .iter()
        .filter(|l| !l.ends_with("/things/fleet-002") && !l.contains("/things/fleet-004/"))
        .count();
    assert_eq!(transient, 10, "every transient fault was met: {injected:?}");
    assert_eq!(
        injected.len(),
        transient + 6,
        "3 attempts for each persistent fault: {injected:?}"
    );

    // What the failed run left: every certificate once (one per device), the others complete.
    let partial = moto.inventory();
    assert_eq!(partial["certs"].as_array().unwrap().len(), 6, "{partial}");
    let things: Vec<&str> = partial["things"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(
        things,
        [
            "fleet-000",
            "fleet-001",
            "fleet-003",
            "fleet-004",
            "fleet-005"
        ]
    );
    assert_eq!(partial["principals"]["fleet-004"], serde_json::json!([]));
    assert_eq!(partial["roles"], before["roles"]);
    assert_eq!(partial["aliases"], before["aliases"]);
    let issued_before = issued(&operator);
    assert_eq!(issued_before.len(), 6);
    assert_eq!(registered_count(&record_path), 4);

    // Faults gone: the same command finishes the two devices and touches nothing else.
    operator.endpoint_url = moto.url();
    let out = operator.ok(&args);
    assert!(
        out.contains("2 provisioned, 4 already done, 0 failed"),
        "{out}"
    );
    check_complete(&operator, &moto, &keys);
    assert_eq!(
        issued(&operator),
        issued_before,
        "no certificate issued twice"
    );
    let done = moto.inventory();
    assert_eq!(done["certs"], partial["certs"]);
    let out = operator.ok(&args);
    assert!(
        out.contains("0 provisioned, 6 already done, 0 failed"),
        "{out}"
    );
    assert_eq!(moto.inventory(), done);
}

/// A fault that persists on every device: each device's call gets all its attempts, however
/// many devices failed before it (the SDK's shared retry quota would stop retrying after about
/// a hundred failed retries, and the later devices would fail at their first fault while
/// saying they gave up after 3 attempts).
#[test]
fn fleet_gives_every_device_all_its_attempts() {
    let tmp = tempfile::tempdir().unwrap();
    let moto = Moto::start(tmp.path());
    let mut operator = Operator::new(tmp.path(), &moto);
    operator.set_up();
    let csr_dir = tmp.path().join("csrs");
    let devices = 50;
    make_csrs(&csr_dir, devices);
    let proxy = FaultProxy::start(
        &moto,
        &tmp.path().join("proxy"),
        &[("^POST /things/[^/ ]+ ", FOREVER, "500")],
    );
    operator.endpoint_url = proxy.url.clone();
    let out = operator.run(&[
        "fleet",
        "provision",
        "--csr-dir",
        csr_dir.to_str().unwrap(),
        "--concurrency",
        "16",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stdout.contains(&format!("0 provisioned, 0 already done, {devices} failed")),
        "{stdout}{stderr}"
    );
    assert_eq!(
        stderr
            .matches("CreateThing failed: InternalFailureException: Internal failure (gave up after 3 attempts)")
            .count(),
        devices,
        "{stderr}"
    );
    assert_eq!(proxy.injected().len(), 3 * devices);
    let inventory = moto.inventory();
    assert_eq!(inventory["certs"].as_array().unwrap().len(), devices);
    assert_eq!(inventory["things"], serde_json::json!([]));
}
