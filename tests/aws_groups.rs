//! Silencing many devices at once: `aws register-device --group`, then `aws silence`,
//! `unsilence` and `revoke` by `--group` and `--things-file`, against moto, the local
//! credentials provider (and its IAM gate) and the local AWS IoT broker. Twenty devices with
//! keys in files each hold fresh credentials, used against the AWS IoT API, and an open MQTT
//! session; silencing a group of ten refuses their credentials already issued and closes their
//! sessions within 5 s, and leaves the other ten alone.

#![cfg(feature = "aws")]

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use openssl::x509::X509;
use serde_json::{json, Value};
use support::*;

const ENDPOINT: &str = "g7h8i9.credentials.iot.us-east-1.amazonaws.com";
const ALIAS: &str = "zkiot-device-alias";
const GROUP: &str = "bad-batch";

struct FileDevice {
    cert: PathBuf,
    key: PathBuf,
}

/// The HTTP status each device gets from the credentials provider, with its thing name.
fn statuses(provider: &Provider, devices: &BTreeMap<String, FileDevice>) -> BTreeMap<String, u16> {
    devices
        .iter()
        .map(|(thing, d)| {
            let (status, body) = provider.answer(&d.cert, &d.key, ALIAS, thing);
            if status == 200 {
                assert!(
                    body["credentials"]["accessKeyId"].is_string(),
                    "{thing}: {body}"
                );
            }
            (thing.clone(), status)
        })
        .collect()
}

fn expect(devices: &BTreeMap<String, FileDevice>, refused: &[String]) -> BTreeMap<String, u16> {
    devices
        .keys()
        .map(|t| (t.clone(), if refused.contains(t) { 403 } else { 200 }))
        .collect()
}

/// What each device's credentials already issued and MQTT session do now.
type Uses = BTreeMap<String, (String, String)>;

fn probe(fleet: &mut Fleet) -> Uses {
    let answer = fleet.ask(json!({"cmd": "probe"}));
    answer
        .as_object()
        .unwrap()
        .iter()
        .map(|(thing, r)| {
            let text = |v: &Value| v.as_str().unwrap().to_string();
            (thing.clone(), (text(&r["credentials"]), text(&r["mqtt"])))
        })
        .collect()
}

/// Every device "ok" on both, but those of `cut`: their credentials refused by an explicit
/// deny and their session closed.
fn uses(devices: &BTreeMap<String, FileDevice>, cut: &[String]) -> Uses {
    devices
        .keys()
        .map(|t| {
            let pair = if cut.contains(t) {
                ("AccessDeniedException", "closed")
            } else {
                ("ok", "ok")
            };
            (t.clone(), (pair.0.to_string(), pair.1.to_string()))
        })
        .collect()
}

/// Probes until the devices use what `wanted` says, for at most 5 s; returns how long it took.
fn within_five_seconds(fleet: &mut Fleet, wanted: &Uses) -> Duration {
    let started = Instant::now();
    loop {
        let now = probe(fleet);
        if &now == wanted {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "not cut within 5 s: {now:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The certificate ids in the role's deny list.
fn denied(moto: &Moto) -> Vec<String> {
    let value = moto.py(
        "import json, urllib.parse\n\
         try:\n\
         \x20   d = iam.get_role_policy(RoleName='zkiot-device', PolicyName='zkiot-silenced')['PolicyDocument']\n\
         \x20   d = json.loads(urllib.parse.unquote(d)) if isinstance(d, str) else d\n\
         \x20   result = sorted(i for s in d['Statement'] for i in s['Condition']['StringEquals']['credentials-iot:AwsCertificateId'])\n\
         except iam.exceptions.NoSuchEntityException:\n\
         \x20   result = []",
    );
    serde_json::from_value(value).unwrap()
}

fn certificate_statuses(moto: &Moto) -> BTreeMap<String, String> {
    let value = moto.py(
        "result = {}\n\
         for t in iot.list_things()['things']:\n\
         \x20   for p in iot.list_thing_principals(thingName=t['thingName'])['principals']:\n\
         \x20       result[t['thingName']] = iot.describe_certificate(certificateId=p.split('/')[-1])['certificateDescription']['status']",
    );
    serde_json::from_value(value).unwrap()
}

#[test]
fn a_group_of_ten_out_of_twenty_is_silenced_unsilenced_and_revoked() {
    let tmp = tempfile::tempdir().unwrap();
    let moto = Moto::start(tmp.path());
    let mut operator = Operator::new(tmp.path(), &moto);
    operator.set_up();
    // Devices may read their own Thing with their credentials.
    let permissions = tmp.path().join("permissions.json");
    std::fs::write(
        &permissions,
        json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
            "Action": "iot:DescribeThing",
            "Resource": "arn:aws:iot:*:*:thing/${credentials-iot:ThingName}"}]})
        .to_string(),
    )
    .unwrap();
    let out = operator.ok(&[
        "aws",
        "setup",
        "--permissions-policy",
        permissions.to_str().unwrap(),
    ]);
    assert!(out.contains("silencing window"), "{out}");
    assert!(out.contains("900 s (15 min)"), "{out}");
    let provider = Provider::start(&moto, ENDPOINT, &tmp.path().join("provider"));
    let broker = Broker::start(&moto, &tmp.path().join("broker"));
    operator.iot_data_url = Some(broker.data_url.clone());

    // Twenty devices, provisioned as a fleet; keys stay in files here.
    let csr_dir = tmp.path().join("csrs");
    let key_dir = tmp.path().join("keys");
    std::fs::create_dir_all(&key_dir).unwrap();
    let keys = write_csrs(&csr_dir, (0..20).map(|i| format!("dev-{i:02}")));
    operator.ok(&["fleet", "provision", "--csr-dir", csr_dir.to_str().unwrap()]);
    let devices: BTreeMap<String, FileDevice> = keys
        .iter()
        .map(|(thing, key)| {
            let device = FileDevice {
                cert: operator.home.join("devices").join(thing).join("device.crt"),
                key: write_key_file(&key_dir, thing, key),
            };
            (thing.clone(), device)
        })
        .collect();
    let group: Vec<String> = devices.keys().step_by(2).cloned().collect();
    assert_eq!(group.len(), 10);

    // Each device: fresh credentials, used once, and an open MQTT session.
    let listed: Vec<(String, PathBuf, PathBuf)> = devices
        .iter()
        .map(|(t, d)| (t.clone(), d.cert.clone(), d.key.clone()))
        .collect();
    let mut fleet = Fleet::start(tmp.path(), &provider, ALIAS, &broker, &listed);
    let all = |answer: Value, wanted: Value| {
        let map = answer.as_object().unwrap();
        assert_eq!(map.len(), 20);
        assert!(map.values().all(|v| *v == wanted), "{answer}");
    };
    all(fleet.ask(json!({"cmd": "credentials"})), json!(200));
    all(fleet.ask(json!({"cmd": "connect"})), json!("connected"));
    assert_eq!(probe(&mut fleet), uses(&devices, &[]));

    // register-device --group: creates the group once, adds each member once.
    for (i, thing) in group.iter().enumerate() {
        let out = operator.ok(&["aws", "register-device", "--thing", thing, "--group", GROUP]);
        let wanted = if i == 0 {
            format!("created group {GROUP}, added to it")
        } else {
            format!("added to group {GROUP}")
        };
        assert!(out.contains(&wanted), "{out}");
    }
    let out = operator.ok(&[
        "aws",
        "register-device",
        "--thing",
        &group[0],
        "--group",
        GROUP,
    ]);
    assert!(out.contains("nothing to do"), "{out}");
    let members = moto.py(&format!(
        "result = sorted(iot.list_things_in_thing_group(thingGroupName='{GROUP}')['things'])"
    ));
    assert_eq!(members, serde_json::json!(group));
    assert_eq!(statuses(&provider, &devices), expect(&devices, &[]));

    // Silence the group: its ten lose their credentials already issued and their MQTT
    // sessions within 5 s, and new credentials and connections are refused; the other ten
    // are unaffected.
    let out = operator.ok(&["aws", "silence", "--group", GROUP]);
    assert!(
        out.contains(&format!(
            "silence --group {GROUP}: 10 things: 10 changed, 0 already done, 0 failed"
        )),
        "{out}"
    );
    assert_eq!(out.matches("is now INACTIVE").count(), 10, "{out}");
    let reports: Vec<&str> = out.lines().filter(|l| l.contains(": cut: ")).collect();
    assert_eq!(reports.len(), 10, "{out}");
    for line in &reports {
        assert!(line.contains("certificate INACTIVE, MQTT connection closed, credentials already issued denied (role zkiot-device, policy zkiot-silenced); worst case left: IAM applying the Deny"), "{line}");
    }
    let took = within_five_seconds(&mut fleet, &uses(&devices, &group));
    eprintln!("silence: cut off in {took:?} after the command returned");
    let ids: Vec<String> = group
        .iter()
        .map(|t| cert_id(&X509::from_pem(&std::fs::read(&devices[t].cert).unwrap()).unwrap()))
        .collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(denied(&moto), sorted);
    assert_eq!(statuses(&provider, &devices), expect(&devices, &group));
    let reconnect = fleet.ask(json!({"cmd": "connect", "things": group}));
    assert!(
        reconnect
            .as_object()
            .unwrap()
            .values()
            .all(|v| v.as_str().unwrap().starts_with("refused")),
        "{reconnect}"
    );
    // Again: nothing changes.
    let out = operator.ok(&["aws", "silence", "--group", GROUP, "--concurrency", "3"]);
    assert!(
        out.contains("10 things: 0 changed, 10 already done, 0 failed"),
        "{out}"
    );

    // Unsilence by a file of names (comments, blank lines and repeats are fine).
    let list = tmp.path().join("things.txt");
    let mut text = String::from("# found compromised, then cleared\n\n");
    for thing in &group {
        text.push_str(&format!("{thing}\n"));
    }
    text.push_str(&format!("  {}  \n", group[3]));
    std::fs::write(&list, text).unwrap();
    let out = operator.ok(&["aws", "unsilence", "--things-file", list.to_str().unwrap()]);
    assert!(
        out.contains("10 things: 10 changed, 0 already done, 0 failed"),
        "{out}"
    );
    assert_eq!(
        out.matches(": back: certificate ACTIVE").count(),
        10,
        "{out}"
    );
    assert_eq!(statuses(&provider, &devices), expect(&devices, &[]));
    // Unsilenced: their credentials work again and they reconnect.
    assert!(denied(&moto).is_empty());
    let again = fleet.ask(json!({"cmd": "connect", "things": group}));
    assert!(
        again
            .as_object()
            .unwrap()
            .values()
            .all(|v| v == "connected"),
        "{again}"
    );
    assert_eq!(probe(&mut fleet), uses(&devices, &[]));

    // Revoke the group: confirmation first, then final.
    operator.refused(&["aws", "revoke", "--group", GROUP], "--yes");
    let out = operator.ok(&["aws", "revoke", "--group", GROUP, "--yes"]);
    assert!(
        out.contains("10 things: 10 changed, 0 already done, 0 failed"),
        "{out}"
    );
    assert_eq!(
        out.matches(
            "certificate REVOKED, MQTT connection closed, credentials already issued denied"
        )
        .count(),
        10,
        "{out}"
    );
    let took = within_five_seconds(&mut fleet, &uses(&devices, &group));
    eprintln!("revoke: cut off in {took:?} after the command returned");
    assert_eq!(denied(&moto), sorted);
    assert_eq!(statuses(&provider, &devices), expect(&devices, &group));
    let reconnect = fleet.ask(json!({"cmd": "connect", "things": group}));
    assert!(
        reconnect
            .as_object()
            .unwrap()
            .values()
            .all(|v| v.as_str().unwrap().starts_with("refused")),
        "{reconnect}"
    );
    let out = operator.run(&["aws", "unsilence", "--group", GROUP]);
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("10 things: 0 changed, 0 already done, 10 failed"),
        "{stdout}"
    );
    assert_eq!(
        stderr.matches("is REVOKED, which is final").count(),
        10,
        "{stderr}"
    );
    assert!(
        stderr.contains("zkiot: error: 10 of 10 things not changed"),
        "{stderr}"
    );
    assert_eq!(statuses(&provider, &devices), expect(&devices, &group));
    let mut wanted = BTreeMap::new();
    for thing in devices.keys() {
        let status = if group.contains(thing) {
            "REVOKED"
        } else {
            "ACTIVE"
        };
        wanted.insert(thing.clone(), status.to_string());
    }
    assert_eq!(certificate_statuses(&moto), wanted);

    // Status shows each certificate with its status and expiry.
    let out = operator.ok(&["aws", "status", "--thing", &group[0]]);
    assert!(
        out.contains("REVOKED, policies: zkiot-device-policy, expires "),
        "{out}"
    );
    assert!(
        out.contains("(in 364 days)") || out.contains("(in 365 days)"),
        "{out}"
    );

    // Names that lead nowhere.
    operator.refused(
        &["aws", "silence", "--group", "no-such-group"],
        "does not exist",
    );
    let empty = tmp.path().join("empty.txt");
    std::fs::write(&empty, "# nobody\n").unwrap();
    operator.refused(
        &["aws", "silence", "--things-file", empty.to_str().unwrap()],
        "names no Thing",
    );
    let out = operator.run(&["aws", "silence", "--thing", &group[0], "--group", GROUP]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be used with"));
}
