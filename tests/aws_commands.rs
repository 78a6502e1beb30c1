//! `zkiot aws …` against moto: re-runs converge without duplicates, the checks moto skips are
//! made by the CLI, and bad inputs end in one clear line and a non-zero exit with nothing
//! half-written.

#![cfg(feature = "aws")]

mod support;

use std::time::{Duration, Instant};

use openssl::pkey::PKey;
use support::*;

#[test]
fn every_command_twice_gives_the_same_state() {
    let tmp = tempfile::tempdir().unwrap();
    let moto = Moto::start(tmp.path());
    let operator = Operator::new(tmp.path(), &moto);
    operator.set_up();
    let key = p256();
    let cert = operator.sign_and_register(
        tmp.path(),
        "twice-1",
        &csr("twice-1", &key).to_pem().unwrap(),
    );
    let first = moto.inventory();
    let state = operator.state();

    let out = operator.ok(&["aws", "register-ca"]);
    assert!(out.contains("already registered"), "{out}");
    let out = operator.ok(&["aws", "setup"]);
    assert!(out.contains("exists"), "{out}");
    assert!(!out.contains("created"), "{out}");
    let out = operator.ok(&["aws", "register-device", "--thing", "twice-1"]);
    assert!(out.contains("nothing to do"), "{out}");
    let cert_path = operator.home.join("devices/twice-1/device.crt");
    let out = operator.ok(&[
        "aws",
        "register-device",
        "--cert",
        cert_path.to_str().unwrap(),
    ]);
    assert!(out.contains("nothing to do"), "{out}");
    assert_eq!(moto.inventory(), first);
    assert_eq!(operator.state(), state);

    // moto silently replaces a Thing on CreateThing; the CLI must not call it for an existing one.
    let thing_id = moto.py("result = iot.describe_thing(thingName='twice-1')['thingId']");
    operator.ok(&["aws", "register-device", "--thing", "twice-1"]);
    assert_eq!(
        moto.py("result = iot.describe_thing(thingName='twice-1')['thingId']"),
        thing_id
    );

    // setup converges to changed settings: a new duration updates the alias (and the role's
    // MaxSessionDuration), a second run changes nothing more.
    let out = operator.ok(&["aws", "setup", "--duration", "7200"]);
    assert!(out.contains("raised MaxSessionDuration"), "{out}");
    assert!(out.contains("updated"), "{out}");
    let after = moto.py(
        "result = [iam.get_role(RoleName='zkiot-device')['Role']['MaxSessionDuration'],\n\
         iot.describe_role_alias(roleAlias='zkiot-device-alias')['roleAliasDescription']['credentialDurationSeconds']]",
    );
    assert_eq!(after, serde_json::json!([7200, 7200]));
    let out = operator.ok(&["aws", "setup", "--duration", "7200"]);
    assert!(!out.contains("updated") && !out.contains("raised"), "{out}");

    // A permissions policy goes on the role, once.
    let perms = tmp.path().join("perms.json");
    std::fs::write(
        &perms,
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::bucket/${credentials-iot:ThingName}/*"}]}"#,
    )
    .unwrap();
    let p = perms.to_str().unwrap();
    let out = operator.ok(&[
        "aws",
        "setup",
        "--duration",
        "7200",
        "--permissions-policy",
        p,
    ]);
    assert!(out.contains("written"), "{out}");
    let out = operator.ok(&[
        "aws",
        "setup",
        "--duration",
        "7200",
        "--permissions-policy",
        p,
    ]);
    assert!(out.contains("unchanged"), "{out}");
    let doc = moto.py(
        "d = iam.get_role_policy(RoleName='zkiot-device', PolicyName='zkiot-device-permissions')['PolicyDocument']\n\
         result = d if isinstance(d, dict) else json.loads(d)",
    );
    assert_eq!(doc["Statement"][0]["Action"], "s3:GetObject");
    assert_eq!(
        moto.py("result = len(iam.list_role_policies(RoleName='zkiot-device')['PolicyNames'])"),
        1
    );

    // A certificate registered by someone else (status INACTIVE): adopted, not re-registered,
    // and not silently reactivated.
    let key2 = p256();
    let csr2 = tmp.path().join("twice-2.csr");
    std::fs::write(&csr2, csr("twice-2", &key2).to_pem().unwrap()).unwrap();
    operator.ok(&["ca", "sign", "--csr", csr2.to_str().unwrap()]);
    let cert2 = std::fs::read_to_string(operator.home.join("devices/twice-2/device.crt")).unwrap();
    let ca_pem = std::fs::read_to_string(operator.home.join("ca/ca.crt")).unwrap();
    moto.py(&format!(
        "iot.register_certificate(certificatePem='''{cert2}''', caCertificatePem='''{ca_pem}''', status='INACTIVE')"
    ));
    let out = operator.ok(&["aws", "register-device", "--thing", "twice-2"]);
    assert!(out.contains("INACTIVE"), "{out}");
    let inv = moto.inventory();
    assert_eq!(inv["certs"].as_array().unwrap().len(), 2);

    // status lists what exists: the fleet from its pages, one Thing in full.
    let out = operator.ok(&["aws", "status"]);
    let expires = cert.not_after().to_string();
    for needle in [
        format!("CA: {} ACTIVE", cert_id(&operator.ca_cert())),
        "role alias: arn:aws:iot:us-east-1:123456789012:rolealias/zkiot-device-alias (7200 s)"
            .to_string(),
        "IoT policy: zkiot-device-policy".to_string(),
        "certificates of our CA: 1 ACTIVE, 1 INACTIVE\n".to_string(),
        "things: 2".to_string(),
        "twice-1: expires 20".to_string(),
        "twice-2: expires 20".to_string(),
    ] {
        assert!(out.contains(&needle), "{needle:?} not in:\n{out}");
    }
    let out = operator.ok(&["aws", "status", "--thing", "twice-1"]);
    assert!(
        out.contains(&format!(
            "twice-1: certificate {} ACTIVE, policies: zkiot-device-policy, expires {expires}",
            cert_id(&cert)
        )),
        "{out}"
    );
}

#[test]
fn the_cli_checks_what_moto_does_not() {
    let tmp = tempfile::tempdir().unwrap();
    let moto = Moto::start(tmp.path());
    let operator = Operator::new(tmp.path(), &moto);
    operator.ok(&["ca", "init"]);

    // Before register-ca / setup: register-device says what to run first.
    let key = p256();
    let csr_path = tmp.path().join("early.csr");
    std::fs::write(&csr_path, csr("early", &key).to_pem().unwrap()).unwrap();
    operator.ok(&["ca", "sign", "--csr", csr_path.to_str().unwrap()]);
    operator.refused(
        &["aws", "register-device", "--thing", "early"],
        "register-ca",
    );
    operator.ok(&["aws", "register-ca"]);
    operator.refused(&["aws", "register-device", "--thing", "early"], "aws setup");
    operator.ok(&["aws", "setup"]);
    operator.ok(&["aws", "register-device", "--thing", "early"]);

    // A certificate from another CA (moto would register it under ours).
    let other_ca_key = p256();
    let other_ca = issue("other CA", &other_ca_key, None, true, None, (0, 30));
    let foreign = issue(
        "foreign",
        &key,
        Some((&other_ca, &other_ca_key)),
        false,
        None,
        (0, 10),
    );
    let foreign_path = tmp.path().join("foreign.crt");
    std::fs::write(&foreign_path, foreign.to_pem().unwrap()).unwrap();
    operator.refused(
        &[
            "aws",
            "register-device",
            "--cert",
            foreign_path.to_str().unwrap(),
        ],
        "does not chain",
    );
    // An expired certificate of our CA.
    let ca_key =
        PKey::private_key_from_pem(&std::fs::read(operator.home.join("ca/ca.key")).unwrap())
            .unwrap();
    let expired = issue(
        "expired",
        &key,
        Some((&operator.ca_cert(), &ca_key)),
        false,
        None,
        (-20, 10),
    );
    let expired_path = tmp.path().join("expired.crt");
    std::fs::write(&expired_path, expired.to_pem().unwrap()).unwrap();
    operator.refused(
        &[
            "aws",
            "register-device",
            "--cert",
            expired_path.to_str().unwrap(),
        ],
        "expired",
    );
    // A CN that does not match the thing asked for.
    let early = operator.home.join("devices/early/device.crt");
    operator.refused(
        &[
            "aws",
            "register-device",
            "--cert",
            early.to_str().unwrap(),
            "--thing",
            "someone-else",
        ],
        "not the thing name",
    );
    // None of these reached moto.
    assert_eq!(moto.inventory()["certs"].as_array().unwrap().len(), 1);

    // An existing role that the credentials provider could not assume is not taken over.
    moto.py(
        "iam.create_role(RoleName='ec2-role', AssumeRolePolicyDocument=json.dumps({'Version': '2012-10-17', \
         'Statement': [{'Effect': 'Allow', 'Principal': {'Service': 'ec2.amazonaws.com'}, 'Action': 'sts:AssumeRole'}]}))",
    );
    operator.refused(
        &["aws", "setup", "--role-name", "ec2-role"],
        "does not trust credentials.iot.amazonaws.com",
    );

    // A new alias: the device policy gets a new default version naming it (AWS keeps versions).
    let out = operator.ok(&["aws", "setup", "--role-alias", "second-alias"]);
    assert!(out.contains("new default version"), "{out}");
    let policy = moto.py(
        "p = iot.get_policy(policyName='zkiot-device-policy')\n\
         result = [json.loads(p['policyDocument'])['Statement'][0]['Resource'], len(iot.list_policy_versions(policyName='zkiot-device-policy')['policyVersions'])]",
    );
    assert_eq!(
        policy,
        serde_json::json!([
            "arn:aws:iot:us-east-1:123456789012:rolealias/second-alias",
            2
        ])
    );
    assert_eq!(operator.state()["role_alias"], "second-alias");

    // Status changes on things that do not exist, or have no certificate.
    operator.refused(&["aws", "silence", "--thing", "ghost"], "does not exist");
    moto.py("iot.create_thing(thingName='bare')");
    operator.refused(&["aws", "silence", "--thing", "bare"], "no certificate");
    // revoke without --yes and without a terminal refuses.
    operator.refused(&["aws", "revoke", "--thing", "early"], "--yes");
    assert_eq!(
        moto.py("result = [c['status'] for c in iot.list_certificates()['certificates']]"),
        serde_json::json!(["ACTIVE"])
    );
}

#[test]
fn bad_inputs_get_one_line_and_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let moto = Moto::start(tmp.path());
    let operator = Operator::new(tmp.path(), &moto);
    operator.ok(&["ca", "init"]);
    operator.ok(&["aws", "register-ca"]);
    let before = moto.inventory();

    for duration in ["899", "43201", "0", "-5"] {
        let arg = format!("--duration={duration}");
        operator.refused(&["aws", "setup", &arg], "900 to 43200");
    }
    let bad_json = tmp.path().join("bad.json");
    std::fs::write(&bad_json, "{not json").unwrap();
    operator.refused(
        &[
            "aws",
            "setup",
            "--permissions-policy",
            bad_json.to_str().unwrap(),
        ],
        "not valid JSON",
    );
    let not_policy = tmp.path().join("not-policy.json");
    std::fs::write(&not_policy, r#"{"Version":"2012-10-17"}"#).unwrap();
    operator.refused(
        &[
            "aws",
            "setup",
            "--permissions-policy",
            not_policy.to_str().unwrap(),
        ],
        "Statement",
    );
    operator.refused(
        &["aws", "setup", "--role-alias", "bad alias"],
        "--role-alias",
    );
    assert_eq!(
        moto.inventory(),
        before,
        "nothing created by refused setups"
    );
    let state = operator.state();
    assert!(state.get("role_alias").is_none(), "{state}");

    // A CA key that does not match the CA certificate.
    let good_key = std::fs::read(operator.home.join("ca/ca.key")).unwrap();
    std::fs::write(
        operator.home.join("ca/ca.key"),
        p256().private_key_to_pem_pkcs8().unwrap(),
    )
    .unwrap();
    operator.refused(&["aws", "register-ca"], "does not match");
    std::fs::write(operator.home.join("ca/ca.key"), good_key).unwrap();

    // No AWS credentials at all.
    let out = operator
        .command(&["aws", "register-ca"])
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .output()
        .unwrap();
    refused_output(&out, &["aws", "register-ca"], "no AWS credentials found");

    // An endpoint where nothing listens: one line, quickly.
    let dead = format!("http://127.0.0.1:{}", free_port());
    for args in [
        vec!["aws", "register-ca", "--endpoint-url", &dead],
        vec!["aws", "setup", "--endpoint-url", &dead],
        vec!["aws", "silence", "--thing", "x", "--endpoint-url", &dead],
    ] {
        let started = Instant::now();
        let err = operator.refused(&args, "cannot reach");
        assert!(err.contains(&dead), "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{args:?} took {:?}",
            started.elapsed()
        );
    }
}

/// Throttling and 5xx answers on the calls that create things are retried: `aws setup` and
/// `register-device` succeed through them, a re-run changes nothing, and faults that persist
/// end in a clear error.
#[test]
fn operator_commands_retry_transient_faults() {
    let tmp = tempfile::tempdir().unwrap();
    let moto = Moto::start(tmp.path());
    let rules = [
        ("Action=CreateRole&", 2, "throttle"),
        ("^POST /role-aliases/", 1, "500"),
        ("^POST /policies/", 1, "throttle"),
        ("^POST /certificate/register", 2, "500"),
        ("^POST /things/", 1, "throttle"),
    ];
    let proxy = FaultProxy::start(&moto, &tmp.path().join("proxy"), &rules);
    let mut operator = Operator::new(tmp.path(), &moto);
    operator.endpoint_url = proxy.url.clone();
    operator.set_up();
    let key = p256();
    operator.sign_and_register(tmp.path(), "dev-r", &csr("dev-r", &key).to_pem().unwrap());
    let injected = proxy.injected();
    assert_eq!(
        injected.len(),
        rules.iter().map(|r| r.1 as usize).sum::<usize>(),
        "{injected:?}"
    );

    let before = moto.inventory();
    assert_eq!(before["certs"].as_array().unwrap().len(), 1, "{before}");
    assert_eq!(before["things"], serde_json::json!(["dev-r"]));
    operator.ok(&["aws", "setup"]);
    let out = operator.ok(&["aws", "register-device", "--thing", "dev-r"]);
    assert!(out.contains("nothing to do"), "{out}");
    assert_eq!(moto.inventory(), before);

    // Faults that persist: the command gives up and says why (throttling left to the SDK's
    // three attempts, without the limiter's wait).
    let stuck = FaultProxy::start(
        &moto,
        &tmp.path().join("stuck"),
        &[("^GET /role-aliases/", 1000, "throttle")],
    );
    operator.endpoint_url = stuck.url.clone();
    operator.refused(
        &["aws", "setup", "--throttle-wait", "0"],
        "DescribeRoleAlias failed: ThrottlingException: Rate exceeded (gave up after 3 attempts)",
    );
    assert_eq!(stuck.injected().len(), 3);
}

/// AWS IoT refuses a role IAM has not propagated yet (InvalidRequestException, HTTP 400):
/// `aws setup` waits for a role it just created, saying so, and gives up after `--iam-wait`
/// naming the role, leaving only the role, so that a re-run adds exactly what was missing. A
/// role that existed before the run is not waited for.
#[test]
fn setup_waits_for_iam_to_propagate_a_new_role() {
    let tmp = tempfile::tempdir().unwrap();
    let waiting = "IAM role zkiot-device: AWS IoT cannot use it yet";

    // Refused twice, then accepted: setup waits and succeeds.
    let moto = Moto::start(tmp.path());
    let rules = [("^POST /role-aliases/", 2, "role-not-ready")];
    let proxy = FaultProxy::start(&moto, &tmp.path().join("proxy"), &rules);
    let mut operator = Operator::new(&tmp.path().join("a"), &moto);
    operator.ok(&["ca", "init"]);
    operator.ok(&["aws", "register-ca"]);
    operator.endpoint_url = proxy.url.clone();
    let started = Instant::now();
    let out = operator
        .command(&["aws", "setup"])
        .env("ZKIOT_IAM_WAIT", "30s")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.matches(waiting).count(), 2, "{stdout}");
    assert!(
        stdout.contains("role alias zkiot-device-alias: created"),
        "{stdout}"
    );
    assert_eq!(proxy.injected().len(), 2, "{:?}", proxy.injected());
    assert!(started.elapsed() < Duration::from_secs(20));
    let inventory = moto.inventory();
    assert_eq!(
        inventory["aliases"],
        serde_json::json!(["zkiot-device-alias"])
    );
    assert_eq!(inventory["roles"], serde_json::json!(["zkiot-device"]));

    // Refused forever: setup gives up after --iam-wait with the role's name, one error line.
    let moto = Moto::start(tmp.path());
    let stuck = FaultProxy::start(
        &moto,
        &tmp.path().join("stuck"),
        &[("^POST /role-aliases/", FOREVER, "role-not-ready")],
    );
    let mut operator = Operator::new(&tmp.path().join("b"), &moto);
    operator.ok(&["ca", "init"]);
    operator.ok(&["aws", "register-ca"]);
    let before = moto.inventory();
    operator.endpoint_url = stuck.url.clone();
    let started = Instant::now();
    let args = ["aws", "setup", "--iam-wait", "2s"];
    let out = operator.run(&args);
    let elapsed = started.elapsed();
    refused_output(
        &out,
        &args,
        "CreateRoleAlias failed: AWS IoT still cannot use IAM role zkiot-device after",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(waiting), "{stdout}");
    assert!(
        elapsed >= Duration::from_secs(2) && elapsed < Duration::from_secs(15),
        "gave up after {elapsed:?}"
    );
    let attempts = stuck.injected().len();
    assert!(attempts >= 3, "{:?}", stuck.injected());
    // Only the role was made; nothing that depends on the alias.
    let after_failure = moto.inventory();
    assert_eq!(after_failure["roles"], serde_json::json!(["zkiot-device"]));
    assert_eq!(after_failure["aliases"], serde_json::json!([]));
    assert_eq!(after_failure["policies"], before["policies"]);

    // The role now exists from an earlier run: a refusal is the role's fault, not IAM's delay,
    // and is not waited for.
    let started = Instant::now();
    operator.refused(&args, "which existed unchanged before this run");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(stuck.injected().len(), attempts + 1);

    // Once AWS IoT accepts the role, a re-run adds exactly what was missing, and converges.
    operator.endpoint_url = moto.url();
    let out = operator.ok(&["aws", "setup"]);
    assert!(!out.contains(waiting), "{out}");
    assert!(out.contains("IAM role zkiot-device: exists"), "{out}");
    let done = moto.inventory();
    assert_eq!(done["roles"], after_failure["roles"]);
    assert_eq!(done["aliases"], serde_json::json!(["zkiot-device-alias"]));
    assert_eq!(done["policies"], serde_json::json!(["zkiot-device-policy"]));
    assert_eq!(done["certs"], before["certs"]);
    operator.ok(&["aws", "setup"]);
    assert_eq!(moto.inventory(), done);
}
