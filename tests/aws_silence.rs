//! Silencing renewed devices, against moto and the local credentials provider: renewal, then
//! silence, then unsilence of the same devices (by Thing and by group); the certificates that
//! renewal retires are detached once revoked, so later runs stop reading them; the operator's
//! `devices/<thing>/device.crt` follows the device's switch; a device whose old certificate
//! expired before it switched is told apart from one still waiting. Devices use keys in files
//! and curl; their switch to a renewed certificate is what `zkiot device credentials` records,
//! written here straight into the Thing's attribute.

#![cfg(feature = "aws")]

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use openssl::pkey::PKey;
use openssl::x509::X509;
use support::*;

const ENDPOINT: &str = "s1l3nc.credentials.iot.us-east-1.amazonaws.com";
const ALIAS: &str = "zkiot-device-alias";
const GROUP: &str = "renewed";

/// One device with its key in a file.
struct FileDevice {
    key: PathBuf,
}

/// The HTTP status the credentials provider gives `thing` with the certificate in `cert`.
fn asks(provider: &Provider, thing: &str, cert: &Path, key: &Path) -> u16 {
    let (status, body) = provider.answer(cert, key, ALIAS, thing);
    if status == 200 {
        assert!(body["credentials"]["accessKeyId"].is_string(), "{body}");
    }
    status
}

/// Per thing: (certificate id, status) of each attached certificate, oldest first.
fn attached(moto: &Moto) -> BTreeMap<String, Vec<(String, String)>> {
    let value = moto.py(
        "from cryptography import x509\n\
         result = {}\n\
         for t in iot.list_things()['things']:\n\
         \x20   rows = []\n\
         \x20   for p in iot.list_thing_principals(thingName=t['thingName'])['principals']:\n\
         \x20       d = iot.describe_certificate(certificateId=p.split('/')[-1])['certificateDescription']\n\
         \x20       c = x509.load_pem_x509_certificate(d['certificatePem'].encode())\n\
         \x20       rows.append([c.not_valid_after_utc.isoformat(), d['certificateId'], d['status']])\n\
         \x20   result[t['thingName']] = [r[1:] for r in sorted(rows)]",
    );
    serde_json::from_value(value).unwrap()
}

/// What the device does once it has switched: records the certificate in its Thing.
fn record_switch(moto: &Moto, thing: &str, certificate_id: &str) {
    moto.py(&format!(
        "iot.update_thing(thingName='{thing}', attributePayload={{'attributes': \
         {{'zkiot_certificate': '{certificate_id}'}}, 'merge': True}})"
    ));
}

fn read_cert(path: &Path) -> X509 {
    X509::from_pem(&std::fs::read(path).unwrap()).unwrap()
}

/// Three devices provisioned with 20-day certificates, put in [`GROUP`], renewed, switched;
/// their old certificates deactivated by the next `fleet renew` (grace 0 s: revoked by the
/// one after).
struct Renewed {
    _tmp: tempfile::TempDir,
    moto: Moto,
    operator: Operator,
    provider: Provider,
    _broker: Broker,
    devices: BTreeMap<String, FileDevice>,
}

impl Renewed {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let moto = Moto::start(tmp.path());
        let mut operator = Operator::new(tmp.path(), &moto);
        operator.set_up();
        let provider = Provider::start(&moto, ENDPOINT, &tmp.path().join("provider"));
        let broker = Broker::start(&moto, &tmp.path().join("broker"));
        operator.iot_data_url = Some(broker.data_url.clone());
        let csr_dir = tmp.path().join("csrs");
        let key_dir = tmp.path().join("keys");
        std::fs::create_dir_all(&key_dir).unwrap();
        let keys = write_csrs(&csr_dir, (0..3).map(|i| format!("renewed-{i}")));
        operator.ok(&[
            "fleet",
            "provision",
            "--csr-dir",
            csr_dir.to_str().unwrap(),
            "--days",
            "20",
        ]);
        let devices = keys
            .iter()
            .map(|(thing, key)| {
                operator.ok(&["aws", "register-device", "--thing", thing, "--group", GROUP]);
                let device = FileDevice {
                    key: write_key_file(&key_dir, thing, key),
                };
                (thing.clone(), device)
            })
            .collect();
        let out = operator.ok(&["fleet", "renew", "--within", "30d", "--grace", "0s"]);
        assert!(out.contains("3 renewed"), "{out}");
        let renewed = Self {
            _tmp: tmp,
            moto,
            operator,
            provider,
            _broker: broker,
            devices,
        };
        for thing in renewed.devices.keys() {
            let id = cert_id(&read_cert(&renewed.renewal(thing)));
            record_switch(&renewed.moto, thing, &id);
        }
        let out = renewed.renew();
        assert!(out.contains("3 old certificates deactivated"), "{out}");
        renewed
    }

    fn renewal(&self, thing: &str) -> PathBuf {
        self.operator
            .home
            .join("devices")
            .join(thing)
            .join("renewal.crt")
    }

    fn device_crt(&self, thing: &str) -> PathBuf {
        self.operator
            .home
            .join("devices")
            .join(thing)
            .join("device.crt")
    }

    fn renew(&self) -> String {
        self.operator
            .ok(&["fleet", "renew", "--within", "30d", "--grace", "0s"])
    }

    /// The HTTP status each device gets with its renewed certificate.
    fn statuses(&self) -> BTreeMap<String, u16> {
        self.devices
            .iter()
            .map(|(thing, d)| {
                let status = asks(&self.provider, thing, &self.renewal(thing), &d.key);
                (thing.clone(), status)
            })
            .collect()
    }

    fn all(&self, status: u16) -> BTreeMap<String, u16> {
        self.devices.keys().map(|t| (t.clone(), status)).collect()
    }
}

#[test]
fn renewed_devices_are_silenced_and_unsilenced() {
    let r = Renewed::new();
    let things: Vec<String> = r.devices.keys().cloned().collect();
    assert_eq!(r.statuses(), r.all(200));

    // Mid-grace: the retired certificate is INACTIVE, still attached. Silence and unsilence
    // bring back the certificate the device uses, not the one renewal retired.
    let out = r.operator.ok(&["aws", "silence", "--group", GROUP]);
    assert!(out.contains("3 things: 3 changed"), "{out}");
    assert_eq!(r.statuses(), r.all(403));
    let out = r.operator.ok(&["aws", "unsilence", "--group", GROUP]);
    assert!(
        out.contains("3 things: 3 changed, 0 already done, 0 failed"),
        "{out}"
    );
    assert_eq!(r.statuses(), r.all(200));
    for (thing, rows) in attached(&r.moto) {
        let statuses: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
        assert_eq!(statuses, ["INACTIVE", "ACTIVE"], "{thing}: {rows:?}");
    }

    // A retired certificate revoked but still attached (by hand, or by an earlier zkiot):
    // unsilence passes over it, by group and by Thing, and says so.
    let first = &things[0];
    r.moto.py(&format!(
        "p = sorted(iot.list_thing_principals(thingName='{first}')['principals'])\n\
         for arn in p:\n\
         \x20   d = iot.describe_certificate(certificateId=arn.split('/')[-1])['certificateDescription']\n\
         \x20   if d['status'] == 'INACTIVE':\n\
         \x20       iot.update_certificate(certificateId=d['certificateId'], newStatus='REVOKED')"
    ));
    r.operator.ok(&["aws", "silence", "--group", GROUP]);
    assert_eq!(r.statuses(), r.all(403));
    let out = r.operator.ok(&["aws", "unsilence", "--group", GROUP]);
    assert!(
        out.contains("3 things: 3 changed, 0 already done, 0 failed"),
        "{out}"
    );
    assert!(out.contains("retired"), "{out}");
    assert_eq!(r.statuses(), r.all(200));
    r.operator.ok(&["aws", "silence", "--thing", first]);
    assert_eq!(
        asks(&r.provider, first, &r.renewal(first), &r.devices[first].key),
        403
    );
    let out = r.operator.ok(&["aws", "unsilence", "--thing", first]);
    assert!(out.contains("is now ACTIVE"), "{out}");
    assert_eq!(r.statuses(), r.all(200));

    // A device whose every certificate is revoked cannot come back: that is the message.
    r.operator.ok(&["aws", "revoke", "--thing", first, "--yes"]);
    r.operator.refused(
        &["aws", "unsilence", "--thing", first],
        "is REVOKED, which is final; the device needs a new certificate",
    );
}

#[test]
fn retired_certificates_are_detached_and_device_crt_follows_the_switch() {
    let r = Renewed::new();
    // The retired certificates are revoked, then detached from their Things.
    let out = r.renew();
    assert!(out.contains("3 revoked"), "{out}");
    let held = attached(&r.moto);
    for thing in r.devices.keys() {
        let current = cert_id(&read_cert(&r.renewal(thing)));
        assert_eq!(
            held[thing],
            [(current.clone(), "ACTIVE".to_string())],
            "{thing}"
        );
        // The operator's copy of the device's certificate is the one it uses now.
        assert_eq!(
            cert_id(&read_cert(&r.device_crt(thing))),
            current,
            "{thing}"
        );
    }

    // With nothing due and nothing left to retire, a run reads no certificate at all: the
    // Things' attributes say so.
    let before = described_certificates(&r.moto);
    let out = r.renew();
    assert!(out.contains("0 looked at one by one: 0 renewed"), "{out}");
    assert_eq!(described_certificates(&r.moto) - before, 0, "{out}");

    // register-device --group on a renewed device finds its current certificate.
    let thing = r.devices.keys().next().unwrap();
    let out = r.operator.ok(&[
        "aws",
        "register-device",
        "--thing",
        thing,
        "--group",
        "more",
    ]);
    assert!(out.contains("group more, added to it"), "{out}");
    assert!(out.contains("ACTIVE"), "{out}");
    assert!(!out.contains("REVOKED"), "{out}");

    // Silence and unsilence the group: nothing revoked is in the way.
    r.operator.ok(&["aws", "silence", "--group", GROUP]);
    assert_eq!(r.statuses(), r.all(403));
    r.operator.ok(&["aws", "unsilence", "--group", GROUP]);
    assert_eq!(r.statuses(), r.all(200));
}

/// How many DescribeCertificate calls moto has answered so far (from its request log).
fn described_certificates(moto: &Moto) -> usize {
    std::fs::read_to_string(&moto.log)
        .unwrap()
        .lines()
        .filter(|l| l.contains("\"GET /certificates/"))
        .count()
}

#[test]
fn a_stranded_device_is_told_apart_from_a_waiting_one() {
    let tmp = tempfile::tempdir().unwrap();
    let moto = Moto::start(tmp.path());
    let operator = Operator::new(tmp.path(), &moto);
    operator.set_up();

    // Waiting: its certificate lasts 20 more days.
    let csr_dir = tmp.path().join("csrs");
    write_csrs(&csr_dir, ["waiting-0".to_string()]);
    operator.ok(&[
        "fleet",
        "provision",
        "--csr-dir",
        csr_dir.to_str().unwrap(),
        "--days",
        "20",
    ]);
    // Stranded: its certificate, from our CA, expired 10 days ago.
    let ca = operator.ca_cert();
    let ca_key =
        PKey::private_key_from_pem(&std::fs::read(operator.home.join("ca/ca.key")).unwrap())
            .unwrap();
    let expired = issue(
        "stranded-0",
        &p256(),
        Some((&ca, &ca_key)),
        false,
        None,
        (-30, 20),
    );
    moto.py(&format!(
        "c = iot.register_certificate(certificatePem='''{}''', caCertificatePem='''{}''', status='ACTIVE')\n\
         iot.create_thing(thingName='stranded-0')\n\
         iot.attach_thing_principal(thingName='stranded-0', principal=c['certificateArn'])\n\
         iot.attach_policy(policyName='zkiot-device-policy', target=c['certificateArn'])",
        String::from_utf8(expired.to_pem().unwrap()).unwrap(),
        String::from_utf8(ca.to_pem().unwrap()).unwrap()
    ));

    let out = operator.ok(&["fleet", "renew", "--within", "30d"]);
    assert!(out.contains("2 renewed"), "{out}");
    let out = operator.ok(&["fleet", "renew", "--within", "30d"]);
    assert!(
        out.contains("0 renewed, 1 waiting for the device to switch, 1 stranded"),
        "{out}"
    );
    let line = out
        .lines()
        .find(|l| l.starts_with("stranded-0:"))
        .unwrap_or_else(|| panic!("no line for stranded-0: {out}"));
    assert!(line.contains("expired"), "{line}");
    assert!(line.contains("devices/stranded-0/renewal.crt"), "{line}");
    assert!(line.contains("zkiot device install-cert"), "{line}");
    assert!(!out.contains("waiting-0:"), "{out}");
}

#[test]
fn the_deny_list_is_pruned_and_says_what_does_not_fit() {
    let tmp = tempfile::tempdir().unwrap();
    let moto = Moto::start(tmp.path());
    let mut operator = Operator::new(tmp.path(), &moto);
    operator.set_up();
    let broker = Broker::start(&moto, &tmp.path().join("broker"));
    operator.iot_data_url = Some(broker.data_url.clone());
    let csr_dir = tmp.path().join("csrs");
    write_csrs(&csr_dir, (0..3).map(|i| format!("full-{i}")));
    operator.ok(&["fleet", "provision", "--csr-dir", csr_dir.to_str().unwrap()]);
    // An entry from a silencing two hours ago (the role's longest session is 3600 s), and
    // another inline policy that leaves room for one certificate id (IAM: 10,240 characters
    // of inline policy per role, whitespace not counted).
    moto.py(
        "import json, time\n\
         iot.create_thing_group(thingGroupName='full')\n\
         for i in range(3):\n\
         \x20   iot.add_thing_to_thing_group(thingGroupName='full', thingName='full-%d' % i)\n\
         old = {'Version': '2012-10-17', 'Statement': [{'Sid': 'Silenced%d' % (time.time() - 7300),\n\
         \x20   'Effect': 'Deny', 'Action': '*', 'Resource': '*',\n\
         \x20   'Condition': {'StringEquals': {'credentials-iot:AwsCertificateId': ['f' * 64]}}}]}\n\
         iam.put_role_policy(RoleName='zkiot-device', PolicyName='zkiot-silenced', PolicyDocument=json.dumps(old))\n\
         filler = {'Version': '2012-10-17', 'Statement': [{'Effect': 'Allow', 'Action': 'iot:DescribeThing',\n\
         \x20   'Resource': 'arn:aws:iot:*:*:thing/' + 'x' * 9838}]}\n\
         iam.put_role_policy(RoleName='zkiot-device', PolicyName='filler', PolicyDocument=json.dumps(filler, separators=(',', ':')))",
    );
    let out = operator.run(&["aws", "silence", "--group", "full"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_eq!(
        stdout
            .matches("credentials already issued denied (role zkiot-device")
            .count(),
        1,
        "{stdout}"
    );
    assert_eq!(
        stdout
            .matches("credentials already issued NOT denied: the role's inline policies are full")
            .count(),
        2,
        "{stdout}"
    );
    assert_eq!(
        stdout
            .matches("worst case left: credentials already issued stay valid until they expire, at most 900 s after issue")
            .count(),
        2,
        "{stdout}"
    );
    assert!(
        stdout
            .contains("1 entries older than the role's longest session (3600 s) pruned, 1 listed"),
        "{stdout}"
    );
    assert!(
        stderr.contains("warning: 2 certificates did not fit the deny list of role zkiot-device"),
        "{stderr}"
    );
    let listed = moto.py(
        "import json, urllib.parse\n\
         d = iam.get_role_policy(RoleName='zkiot-device', PolicyName='zkiot-silenced')['PolicyDocument']\n\
         d = json.loads(urllib.parse.unquote(d)) if isinstance(d, str) else d\n\
         result = [i for s in d['Statement'] for i in s['Condition']['StringEquals']['credentials-iot:AwsCertificateId']]",
    );
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_ne!(listed[0], "f".repeat(64));
}
