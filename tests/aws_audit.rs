//! `zkiot aws audit` against moto: a healthy fleet passes; then one Thing per problem is
//! planted, and the audit finds each of them and nothing else (a renewal waiting for its
//! device, an old certificate retiring after one, a revoked certificate on no Thing and another
//! CA's certificate are no findings). A CA that expires soon is found too.

#![cfg(feature = "aws")]

mod support;

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;
use support::*;

/// The id of the certificate `zkiot` keeps in `path`.
fn id_of(path: &Path) -> String {
    cert_id(&openssl::x509::X509::from_pem(&std::fs::read(path).unwrap()).unwrap())
}

/// A certificate for `thing` from the operator's CA (a new key unless `csr` is given), written
/// to `out` and registered on the Thing with `register-device`.
fn add_certificate(operator: &Operator, dir: &Path, thing: &str, csr: Option<&Path>, out: &str) {
    let csr = match csr {
        Some(csr) => csr.to_path_buf(),
        None => {
            let path = dir.join(format!("{out}.csr"));
            std::fs::write(&path, support::csr(thing, &p256()).to_pem().unwrap()).unwrap();
            path
        }
    };
    let out = dir.join(out);
    operator.ok(&[
        "ca",
        "sign",
        "--csr",
        csr.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    operator.ok(&[
        "aws",
        "register-device",
        "--thing",
        thing,
        "--cert",
        out.to_str().unwrap(),
    ]);
}

/// (check, certificate, things) of each finding.
fn findings(report: &Value) -> BTreeSet<(String, String, String)> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["check"].as_str().unwrap().to_string(),
                f["certificate"].as_str().unwrap_or("").to_string(),
                f["things"]
                    .as_array()
                    .map(|t| {
                        t.iter()
                            .map(|t| t.as_str().unwrap())
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .unwrap_or_default(),
            )
        })
        .collect()
}

/// Runs `aws audit --json`: its exit status and report.
fn audit(operator: &Operator) -> (bool, Value) {
    let out = operator.run(&["aws", "audit", "--json"]);
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), report)
}

#[test]
fn the_audit_finds_each_planted_problem_and_nothing_else() {
    let tmp = tempfile::tempdir().unwrap();
    let moto = Moto::start(tmp.path());
    let operator = Operator::new(tmp.path(), &moto);
    operator.set_up();
    let dir = tmp.path().join("work");
    let devices = operator.home.join("devices");
    let lasting = tmp.path().join("lasting");
    let short = tmp.path().join("short");
    write_csrs(
        &lasting,
        [
            "ok-1", "ok-2", "shared-a", "two-keys", "silenced", "revoked", "retiring",
        ]
        .map(String::from),
    );
    write_csrs(&short, ["expiring", "renewing"].map(String::from));
    let provision = |csrs: &Path, days: &str| {
        operator.ok(&[
            "fleet",
            "provision",
            "--csr-dir",
            csrs.to_str().unwrap(),
            "--days",
            days,
        ]);
    };

    // A healthy fleet: no finding, exit 0.
    provision(&lasting, "365");
    let out = operator.ok(&["aws", "audit"]);
    assert!(out.contains("audit: 0 findings; 0 renewals"), "{out}");
    assert!(out.contains(": 7 certificates, 7 things;"), "{out}");

    // expiring: its certificate expires within 30 days.
    provision(&short, "10");
    let expiring = id_of(&devices.join("expiring/device.crt"));
    std::fs::create_dir_all(&dir).unwrap();

    // renewing: a renewal for the same key, its device yet to switch: no finding.
    add_certificate(
        &operator,
        &dir,
        "renewing",
        Some(&short.join("renewing.csr")),
        "renewing-new.crt",
    );
    // retiring: renewed, the old certificate silenced: no finding.
    let retiring_old = id_of(&devices.join("retiring/device.crt"));
    add_certificate(
        &operator,
        &dir,
        "retiring",
        Some(&lasting.join("retiring.csr")),
        "retiring-new.crt",
    );
    moto.py(&format!(
        "iot.update_certificate(certificateId='{retiring_old}', newStatus='INACTIVE')"
    ));
    // shared-a's certificate also on shared-b.
    let shared = id_of(&devices.join("shared-a/device.crt"));
    moto.py(&format!(
        "iot.create_thing(thingName='shared-b')\n\
         iot.attach_thing_principal(thingName='shared-b', principal='arn:aws:iot:us-east-1:123456789012:cert/{shared}')"
    ));
    // two-keys: a second ACTIVE certificate, for another key.
    let two_keys_first = id_of(&devices.join("two-keys/device.crt"));
    add_certificate(&operator, &dir, "two-keys", None, "two-keys-2.crt");
    let two_keys_second = id_of(&dir.join("two-keys-2.crt"));
    // Certificates of our CA on no Thing: one ACTIVE (a finding), one REVOKED (none).
    let ca_pem = std::fs::read_to_string(operator.home.join("ca/ca.crt")).unwrap();
    let mut orphans = Vec::new();
    for (name, status) in [("orphan", "ACTIVE"), ("gone", "REVOKED")] {
        let csr = dir.join(format!("{name}.csr"));
        std::fs::write(&csr, support::csr(name, &p256()).to_pem().unwrap()).unwrap();
        let out = dir.join(format!("{name}.crt"));
        operator.ok(&[
            "ca",
            "sign",
            "--csr",
            csr.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        let pem = std::fs::read_to_string(&out).unwrap();
        moto.py(&format!(
            "iot.register_certificate(certificatePem='''{pem}''', caCertificatePem='''{ca_pem}''', status='{status}')"
        ));
        orphans.push(id_of(&out));
    }
    // Another CA's certificate on ok-1: not ours, not audited.
    let other_key = p256();
    let other = issue("ok-1", &other_key, None, false, None, (0, 5));
    let other_pem = String::from_utf8(other.to_pem().unwrap()).unwrap();
    moto.py(&format!(
        "arn = iot.register_certificate_without_ca(certificatePem='''{other_pem}''', status='ACTIVE')['certificateArn']\n\
         iot.attach_thing_principal(thingName='ok-1', principal=arn)"
    ));
    // Silenced and revoked (as `aws silence` and `aws revoke` leave them), still attached.
    let silenced = id_of(&devices.join("silenced/device.crt"));
    let revoked = id_of(&devices.join("revoked/device.crt"));
    moto.py(&format!(
        "iot.update_certificate(certificateId='{silenced}', newStatus='INACTIVE')\n\
         iot.update_certificate(certificateId='{revoked}', newStatus='REVOKED')"
    ));

    let (ok, report) = audit(&operator);
    assert!(!ok);
    let expected = BTreeSet::from([
        (
            "DEVICE_CERTIFICATE_EXPIRING".to_string(),
            expiring.clone(),
            "expiring".to_string(),
        ),
        (
            "CERTIFICATE_ON_SEVERAL_THINGS".into(),
            shared.clone(),
            "shared-a,shared-b".into(),
        ),
        (
            "THING_WITH_SEVERAL_ACTIVE_CERTIFICATES".into(),
            String::new(),
            "two-keys".into(),
        ),
        (
            "CERTIFICATE_WITHOUT_THING".into(),
            orphans[0].clone(),
            String::new(),
        ),
        (
            "INACTIVE_CERTIFICATE_ATTACHED".into(),
            silenced.clone(),
            "silenced".into(),
        ),
        (
            "REVOKED_CERTIFICATE_ATTACHED".into(),
            revoked.clone(),
            "revoked".into(),
        ),
    ]);
    assert_eq!(findings(&report), expected, "{report:#}");
    assert_eq!(report["renewals_waiting"], serde_json::json!(["renewing"]));
    // Our CA's certificates: 9 provisioned, 3 added on Things, 2 on none.
    assert_eq!(report["certificates"], 14, "{report:#}");
    assert_eq!(report["things"], 10, "{report:#}");
    let detail = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == "THING_WITH_SEVERAL_ACTIVE_CERTIFICATES")
        .unwrap()["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        detail.contains(&two_keys_first) && detail.contains(&two_keys_second),
        "{detail}"
    );

    // The same as lines, with a summary and what was not checked; exit 1.
    let out = operator.run(&["aws", "audit"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!(
            "REVOKED_CERTIFICATE_ATTACHED {revoked}: REVOKED certificate still attached to thing revoked\n"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("audit: 6 findings (1 DEVICE_CERTIFICATE_EXPIRING, 1 CERTIFICATE_ON_SEVERAL_THINGS, 1 THING_WITH_SEVERAL_ACTIVE_CERTIFICATES, 1 CERTIFICATE_WITHOUT_THING, 1 INACTIVE_CERTIFICATE_ATTACHED, 1 REVOKED_CERTIFICATE_ATTACHED); 1 renewal waiting for the device to switch\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("not checked: DEVICE_NOT_SEEN, PERIMETER_BREACH: "),
        "{stdout}"
    );
    assert_eq!(stderr, "zkiot: error: audit: 6 findings\n");

    // A CA that expires within the window (another operator, another CA, the same account).
    let soon = Operator::new(&tmp.path().join("soon"), &moto);
    soon.ok(&["ca", "init", "--days", "20"]);
    soon.ok(&["aws", "register-ca"]);
    let (ok, report) = audit(&soon);
    assert!(!ok);
    assert_eq!(
        findings(&report),
        BTreeSet::from([(
            "CA_CERTIFICATE_EXPIRING".to_string(),
            cert_id(&soon.ca_cert()),
            String::new()
        )]),
        "{report:#}"
    );
    // With a shorter window, nothing.
    let out = soon.ok(&["aws", "audit", "--within", "10d"]);
    assert!(out.contains("audit: 0 findings; 0 renewals"), "{out}");
}
