//! The whole guide against moto and the local credentials provider, with two devices whose keys
//! live in emulated Zymkeys behind the PKCS#11 module: registration, credentials, silence,
//! unsilence, revoke, and `credential_process` from an AWS CLI profile.
//!
//! moto checks nothing cryptographic, so these tests check the certificates themselves.

#![cfg(feature = "aws")]

mod support;

use openssl::x509::{X509Req, X509};
use serde_json::Value;
use support::*;

const ENDPOINT: &str = "zkiottest.credentials.iot.us-east-1.amazonaws.com";
const ALIAS: &str = "zkiot-device-alias";

/// Parses `device credentials --format json`.
fn credentials_of(out: &std::process::Output) -> Value {
    assert!(
        out.status.success(),
        "device credentials failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn refused_with(out: &std::process::Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "credentials should be refused");
    assert!(stderr.contains(needle), "expected {needle:?} in: {stderr}");
}

#[test]
fn the_guide_end_to_end_with_emulated_devices() {
    let tmp = tempfile::tempdir().unwrap();
    let moto = Moto::start(tmp.path());
    let mut operator = Operator::new(tmp.path(), &moto);

    // ---- Operator, once: CA, registration, role/alias/policy.
    operator.ok(&["ca", "init"]);
    let out = operator.ok(&["aws", "register-ca"]);
    assert!(out.contains("registered CA"), "{out}");
    let ca = operator.ca_cert();

    // The verification certificate: CN = the registration code just fetched, signed by the CA.
    let (code, verification) = operator.verification_certificate(&out, &ca);
    assert_eq!(
        code.len(),
        36,
        "moto's registration codes are UUIDs: {code}"
    );
    assert_eq!(
        verification.issuer_name().to_der().unwrap(),
        ca.subject_name().to_der().unwrap()
    );
    // The CA id is AWS's: SHA-256 of the DER.
    let state = operator.state();
    assert_eq!(state["ca_certificate_id"], cert_id(&ca));
    let registered_ca = moto.py(&format!(
        "d = iot.describe_ca_certificate(certificateId='{}')['certificateDescription']\n\
         result = [d['status'], d['certificatePem']]",
        cert_id(&ca)
    ));
    assert_eq!(registered_ca[0], "ACTIVE");
    assert_eq!(
        X509::from_pem(registered_ca[1].as_str().unwrap().as_bytes())
            .unwrap()
            .to_der()
            .unwrap(),
        ca.to_der().unwrap()
    );

    let out = operator.ok(&["aws", "setup"]);
    let endpoint_line = out
        .lines()
        .find_map(|l| l.strip_prefix("credentials endpoint: "))
        .expect("setup prints the endpoint")
        .to_string();
    assert!(endpoint_line.ends_with(".credentials.iot.us-east-1.amazonaws.com"));
    // The endpoint is remembered: moto gives a new prefix per call, AWS a stable one.
    let again = operator.ok(&["aws", "setup"]);
    assert!(
        again.contains(&format!("credentials endpoint: {endpoint_line}")),
        "{again}"
    );

    // The policies, as stored, are valid JSON with the right actions and resources.
    let docs = moto.py(
        "r = iam.get_role(RoleName='zkiot-device')['Role']\n\
         a = iot.describe_role_alias(roleAlias='zkiot-device-alias')['roleAliasDescription']\n\
         p = iot.get_policy(policyName='zkiot-device-policy')\n\
         result = dict(trust=r['AssumeRolePolicyDocument'], role_arn=r['Arn'], max=r['MaxSessionDuration'],\n\
             alias_role=a['roleArn'], alias_arn=a['roleAliasArn'], duration=a['credentialDurationSeconds'],\n\
             policy=json.loads(p['policyDocument']))",
    );
    let trust = &docs["trust"];
    let stmt = &trust["Statement"][0];
    assert_eq!(stmt["Effect"], "Allow");
    assert_eq!(
        stmt["Principal"]["Service"],
        "credentials.iot.amazonaws.com"
    );
    assert_eq!(stmt["Action"], "sts:AssumeRole");
    assert_eq!(docs["alias_role"], docs["role_arn"]);
    assert_eq!(docs["duration"], 900);
    assert!(docs["max"].as_i64().unwrap() >= 3600);
    let alias_arn = format!("arn:aws:iot:{REGION}:{ACCOUNT}:rolealias/{ALIAS}");
    assert_eq!(docs["alias_arn"], alias_arn.as_str());
    let policy = &docs["policy"]["Statement"][0];
    assert_eq!(policy["Effect"], "Allow");
    assert_eq!(policy["Action"], "iot:AssumeRoleWithCertificate");
    assert_eq!(policy["Resource"], alias_arn.as_str());

    let provider = Provider::start(&moto, ENDPOINT, &tmp.path().join("provider"));
    let broker = Broker::start(&moto, &tmp.path().join("broker"));
    operator.iot_data_url = Some(broker.data_url.clone());

    // ---- Two devices: CSR on the token, signed by the CA, installed, registered.
    let mut devices = Vec::new();
    for thing in ["sensor-a", "sensor-b"] {
        let device = Device::new(&tmp.path().join(thing));
        let csr_pem = device.csr(thing);
        let cert = operator.sign_and_register(tmp.path(), thing, &csr_pem);
        // The device certificate verifies under the CA and carries the CSR's (the token's) key.
        assert!(cert.verify(&ca.public_key().unwrap()).unwrap());
        let csr = X509Req::from_pem(&csr_pem).unwrap();
        assert!(cert
            .public_key()
            .unwrap()
            .public_eq(&csr.public_key().unwrap()));
        device.install(&cert, &operator.home.join("ca/ca.crt"), &provider, ALIAS);
        devices.push((thing, device, cert));
    }

    // A second run of every operator command changes nothing.
    let before = moto.inventory();
    operator.ok(&["aws", "register-ca"]);
    operator.ok(&["aws", "setup"]);
    for (thing, _, _) in &devices {
        let out = operator.ok(&["aws", "register-device", "--thing", thing]);
        assert!(out.contains("nothing to do"), "{out}");
    }
    assert_eq!(moto.inventory(), before);
    assert_eq!(before["certs"].as_array().unwrap().len(), 2);
    for (thing, _, cert) in &devices {
        assert_eq!(
            before["principals"][thing],
            serde_json::json!([format!(
                "arn:aws:iot:{REGION}:{ACCOUNT}:cert/{}",
                cert_id(cert)
            )])
        );
        assert_eq!(
            before["attached"][cert_id(cert)],
            serde_json::json!(["zkiot-device-policy"])
        );
    }

    // ---- Credentials through the token's key; they work against moto.
    let (_, a, cert_a) = &devices[0];
    let (_, b, _) = &devices[1];
    let creds = credentials_of(&a.credentials(&provider, &[]));
    let key_id = creds["accessKeyId"].as_str().unwrap();
    assert!(key_id.starts_with("ASIA"), "{creds}");
    let expiration = creds["expiration"].as_str().unwrap();
    assert_eq!(
        expiration.len(),
        20,
        "expiration as %Y-%m-%dT%H:%M:%SZ: {expiration}"
    );
    let who = aws_cli(
        &[
            "sts",
            "get-caller-identity",
            "--endpoint-url",
            &moto.url(),
            "--region",
            REGION,
        ],
        &[
            ("AWS_ACCESS_KEY_ID", key_id),
            (
                "AWS_SECRET_ACCESS_KEY",
                creds["secretAccessKey"].as_str().unwrap(),
            ),
            ("AWS_SESSION_TOKEN", creds["sessionToken"].as_str().unwrap()),
        ],
        Some(&tmp.path().join("aws-config-empty")),
    );
    device_caller_identity(&who);
    credentials_of(&b.credentials(&provider, &[]));

    // Wrong thing name: the provider refuses (403).
    refused_with(
        &a.credentials(&provider, &["--thing", "sensor-b"]),
        "Invalid thing name",
    );

    // ---- Silence A: refused at once, B unaffected; unsilence: back.
    let out = operator.ok(&["aws", "silence", "--thing", "sensor-a"]);
    assert!(out.contains("INACTIVE"), "{out}");
    refused_with(&a.credentials(&provider, &[]), "403");
    credentials_of(&b.credentials(&provider, &[]));
    let out = operator.ok(&["aws", "silence", "--thing", "sensor-a"]);
    assert!(out.contains("already INACTIVE"), "{out}");
    operator.ok(&["aws", "unsilence", "--thing", "sensor-a"]);
    credentials_of(&a.credentials(&provider, &[]));

    // ---- Revoke A: final.
    operator.refused(&["aws", "revoke", "--thing", "sensor-a"], "--yes");
    let out = operator.ok(&["aws", "revoke", "--thing", "sensor-a", "--yes"]);
    assert!(out.contains("REVOKED"), "{out}");
    refused_with(&a.credentials(&provider, &[]), "403");
    credentials_of(&b.credentials(&provider, &[]));
    operator.refused(&["aws", "unsilence", "--thing", "sensor-a"], "REVOKED");
    let status = moto.py(&format!(
        "result = iot.describe_certificate(certificateId='{}')['certificateDescription']['status']",
        cert_id(cert_a)
    ));
    assert_eq!(status, "REVOKED");
    let out = operator.ok(&["aws", "revoke", "--thing", "sensor-a", "--yes"]);
    assert!(out.contains("already REVOKED"), "{out}");
    let out = operator.ok(&["aws", "status", "--thing", "sensor-a"]);
    assert!(out.contains("REVOKED"), "{out}");

    // ---- credential_process from an AWS CLI profile.
    let config = tmp.path().join("aws-profile-config");
    let zkiot = zkiot_bin();
    let connect = provider.connect();
    std::fs::write(
        &config,
        format!(
            "[profile device]\nregion = {REGION}\ncredential_process = {} device credentials --connect {connect}\n",
            zkiot.display()
        ),
    )
    .unwrap();
    let mut envs: Vec<(String, String)> = Vec::new();
    let mut probe = std::process::Command::new("true");
    b.env(&mut probe);
    for (k, v) in probe.get_envs() {
        if let (Some(v), Some(k)) = (v, k.to_str()) {
            envs.push((k.to_string(), v.to_string_lossy().to_string()));
        }
    }
    let envs_ref: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let who = aws_cli(
        &[
            "sts",
            "get-caller-identity",
            "--profile",
            "device",
            "--endpoint-url",
            &moto.url(),
        ],
        &envs_ref,
        Some(&config),
    );
    let who = device_caller_identity(&who);
    assert_eq!(who["Account"], ACCOUNT);
}
