//! The local credentials provider (`tests/credprov/server.py`) answers like AWS's: every check
//! of DESIGN.md §6, in order, against moto's state at the time of the request. Devices here use
//! keys in files and curl, so each case controls exactly one thing (the token path is covered by
//! `aws_flow`).

#![cfg(feature = "aws")]

mod support;

use std::path::{Path, PathBuf};

use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use support::*;

const ENDPOINT: &str = "a1b2c3.credentials.iot.us-east-1.amazonaws.com";
const ALIAS: &str = "zkiot-device-alias";

struct FileDevice {
    cert: PathBuf,
    key: PathBuf,
    x509: X509,
}

/// A device with a key in a file, signed by `zkiot ca sign` and registered by
/// `zkiot aws register-device`.
fn file_device(operator: &Operator, dir: &Path, thing: &str) -> FileDevice {
    let key = p256();
    let x509 = operator.sign_and_register(dir, thing, &csr(thing, &key).to_pem().unwrap());
    write_device(dir, thing, &key, x509)
}

fn write_device(dir: &Path, thing: &str, key: &PKey<Private>, x509: X509) -> FileDevice {
    let cert = dir.join(format!("{thing}.crt"));
    let key_path = dir.join(format!("{thing}.key"));
    std::fs::write(&cert, x509.to_pem().unwrap()).unwrap();
    std::fs::write(&key_path, key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    FileDevice {
        cert,
        key: key_path,
        x509,
    }
}

fn ask(
    provider: &Provider,
    d: &FileDevice,
    alias: &str,
    thing: Option<&str>,
) -> (u16, serde_json::Value, String) {
    provider
        .curl(&d.cert, Some(&d.key), alias, thing, None)
        .unwrap_or_else(|code| panic!("no HTTP answer (curl exit {code})"))
}

fn assert_refused(
    answer: (u16, serde_json::Value, String),
    status: u16,
    message: &str,
    error_type: &str,
) {
    let (got, body, head) = answer;
    assert_eq!(got, status, "{body} {head}");
    assert_eq!(body, serde_json::json!({ "message": message }));
    assert!(
        head.to_ascii_lowercase().contains(&format!(
            "x-amzn-errortype: {}",
            error_type.to_ascii_lowercase()
        )),
        "{head}"
    );
}

fn assert_credentials(answer: (u16, serde_json::Value, String)) {
    let (status, body, _) = answer;
    assert_eq!(status, 200, "{body}");
    let creds = &body["credentials"];
    assert!(creds["accessKeyId"].as_str().unwrap().starts_with("ASIA"));
    assert!(!creds["secretAccessKey"].as_str().unwrap().is_empty());
    assert!(!creds["sessionToken"].as_str().unwrap().is_empty());
    let expiration = creds["expiration"].as_str().unwrap();
    assert_eq!(expiration.len(), 20, "{expiration}");
    assert!(
        expiration.ends_with('Z') && expiration.as_bytes()[10] == b'T',
        "{expiration}"
    );
}

#[test]
fn provider_checks_in_aws_order() {
    let tmp = tempfile::tempdir().unwrap();
    let moto = Moto::start(tmp.path());
    let mut operator = Operator::new(tmp.path(), &moto);
    operator.set_up();
    let provider = Provider::start(&moto, ENDPOINT, &tmp.path().join("provider"));
    let broker = Broker::start(&moto, &tmp.path().join("broker"));
    operator.iot_data_url = Some(broker.data_url.clone());
    let a = file_device(&operator, tmp.path(), "dev-a");
    let b = file_device(&operator, tmp.path(), "dev-b");
    let arn = |d: &FileDevice| format!("arn:aws:iot:{REGION}:{ACCOUNT}:cert/{}", cert_id(&d.x509));

    // Valid device, with and without the thing header.
    assert_credentials(ask(&provider, &a, ALIAS, Some("dev-a")));
    assert_credentials(ask(&provider, &a, ALIAS, None));

    // 1. TLS: no client certificate, or one from a CA nobody registered: no handshake.
    assert!(provider.curl(&a.cert, None, ALIAS, None, None).is_err());
    let stranger_ca_key = p256();
    let stranger_ca = issue("stranger CA", &stranger_ca_key, None, true, None, (0, 30));
    let stranger_key = p256();
    let stranger = issue(
        "dev-s",
        &stranger_key,
        Some((&stranger_ca, &stranger_ca_key)),
        false,
        None,
        (0, 10),
    );
    let stranger = write_device(tmp.path(), "dev-s", &stranger_key, stranger);
    assert!(provider
        .curl(&stranger.cert, Some(&stranger.key), ALIAS, None, None)
        .is_err());
    // A certificate of our CA that has expired: no handshake either.
    let ca_key =
        PKey::private_key_from_pem(&std::fs::read(operator.home.join("ca/ca.key")).unwrap())
            .unwrap();
    let ca = operator.ca_cert();
    let old_key = p256();
    let old = issue(
        "dev-old",
        &old_key,
        Some((&ca, &ca_key)),
        false,
        None,
        (-20, 10),
    );
    let old = write_device(tmp.path(), "dev-old", &old_key, old);
    assert!(provider
        .curl(&old.cert, Some(&old.key), ALIAS, None, None)
        .is_err());

    // TLS 1.1 is refused even when the client offers it; TLS 1.2 completes.
    let handshake = |version: &str| {
        moto.py(&format!(
            "import socket, ssl\n\
             ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)\n\
             ctx.check_hostname = False\n\
             ctx.verify_mode = ssl.CERT_NONE\n\
             ctx.set_ciphers('DEFAULT:@SECLEVEL=0')\n\
             ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.{version}\n\
             ctx.load_cert_chain('{cert}', '{key}')\n\
             try:\n\
             \x20   tls = ctx.wrap_socket(socket.create_connection(('127.0.0.1', {port})), server_hostname='{ENDPOINT}')\n\
             \x20   result = tls.version()\n\
             except ssl.SSLError as e:\n\
             \x20   result = 'refused: ' + str(e)",
            cert = a.cert.display(),
            key = a.key.display(),
            port = provider.port,
        ))
    };
    assert_eq!(handshake("TLSv1_2"), "TLSv1.2");
    let old_tls = handshake("TLSv1_1");
    assert!(
        old_tls.as_str().unwrap().starts_with("refused"),
        "{old_tls}"
    );

    // 2. SNI other than the endpoint host.
    assert_refused(
        provider
            .curl(
                &a.cert,
                Some(&a.key),
                ALIAS,
                None,
                Some("other.credentials.iot.us-east-1.amazonaws.com"),
            )
            .unwrap(),
        403,
        "Certificate is invalid on this endpoint",
        "AccessDeniedException",
    );

    // 3. A certificate of our CA that was never registered.
    let unregistered_key = p256();
    let unregistered = issue(
        "dev-u",
        &unregistered_key,
        Some((&ca, &ca_key)),
        false,
        None,
        (0, 10),
    );
    let unregistered = write_device(tmp.path(), "dev-u", &unregistered_key, unregistered);
    assert_refused(
        ask(&provider, &unregistered, ALIAS, None),
        403,
        "Access Denied",
        "AccessDeniedException",
    );

    // 4. A thing that is not this certificate's.
    assert_refused(
        ask(&provider, &a, ALIAS, Some("dev-b")),
        403,
        "Invalid thing name passed",
        "AccessDeniedException",
    );
    assert_refused(
        ask(&provider, &a, ALIAS, Some("no-such-thing")),
        403,
        "Invalid thing name passed",
        "AccessDeniedException",
    );

    // 5. Policies: another alias that the policy does not name; no policy attached; a Deny.
    moto.py(&format!(
        "iot.create_role_alias(roleAlias='other-alias', roleArn='arn:aws:iam::{ACCOUNT}:role/zkiot-device', credentialDurationSeconds=900)"
    ));
    assert_refused(
        ask(&provider, &a, "other-alias", None),
        403,
        "Access Denied",
        "AccessDeniedException",
    );
    moto.py(&format!(
        "iot.detach_policy(policyName='zkiot-device-policy', target='{}')",
        arn(&b)
    ));
    assert_refused(
        ask(&provider, &b, ALIAS, None),
        403,
        "Access Denied",
        "AccessDeniedException",
    );
    moto.py(&format!(
        "iot.create_policy(policyName='deny-alias', policyDocument=json.dumps({{'Version': '2012-10-17', 'Statement': [{{'Effect': 'Deny', 'Action': 'iot:*', 'Resource': '*'}}]}}))\n\
         iot.attach_policy(policyName='zkiot-device-policy', target='{b}')\n\
         iot.attach_policy(policyName='deny-alias', target='{b}')",
        b = arn(&b)
    ));
    assert_refused(
        ask(&provider, &b, ALIAS, None),
        403,
        "Access Denied",
        "AccessDeniedException",
    );
    moto.py(&format!(
        "iot.detach_policy(policyName='deny-alias', target='{}')",
        arn(&b)
    ));
    assert_credentials(ask(&provider, &b, ALIAS, None));

    // 6. An alias the policy allows (by wildcard) but that does not exist.
    moto.py(&format!(
        "iot.create_policy(policyName='any-alias', policyDocument=json.dumps({{'Version': '2012-10-17', 'Statement': [{{'Effect': 'Allow', 'Action': 'iot:AssumeRoleWithCertificate', 'Resource': 'arn:aws:iot:{REGION}:{ACCOUNT}:rolealias/*'}}]}}))\n\
         iot.attach_policy(policyName='any-alias', target='{}')",
        arn(&a)
    ));
    assert_refused(
        ask(&provider, &a, "no-such-alias", None),
        404,
        "Role alias does not exist",
        "ResourceNotFoundException",
    );

    // 7. The role behind an alias: does not trust the credentials provider; too short sessions.
    moto.py(&format!(
        "iam.create_role(RoleName='ec2-only', AssumeRolePolicyDocument=json.dumps({{'Version': '2012-10-17', 'Statement': [{{'Effect': 'Allow', 'Principal': {{'Service': 'ec2.amazonaws.com'}}, 'Action': 'sts:AssumeRole'}}]}}))\n\
         iot.create_role_alias(roleAlias='ec2-alias', roleArn='arn:aws:iam::{ACCOUNT}:role/ec2-only', credentialDurationSeconds=900)\n\
         iot.create_role_alias(roleAlias='long-alias', roleArn='arn:aws:iam::{ACCOUNT}:role/zkiot-device', credentialDurationSeconds=7200)\n\
         iot.create_role_alias(roleAlias='ghost-alias', roleArn='arn:aws:iam::{ACCOUNT}:role/no-such-role', credentialDurationSeconds=900)"
    ));
    let unable = "Unable to assume the role, or the role to assume does not exist";
    assert_refused(
        ask(&provider, &a, "ec2-alias", None),
        400,
        unable,
        "InvalidRequestException",
    );
    assert_refused(
        ask(&provider, &a, "ghost-alias", None),
        400,
        unable,
        "InvalidRequestException",
    );
    assert_refused(
        ask(&provider, &a, "long-alias", None),
        400,
        "The requested CredentialDurationSeconds exceeds the MaxSessionDuration set for the role",
        "InvalidRequestException",
    );
    // The device's own alias still works for it: `other-alias` too, now that a policy names it.
    assert_credentials(ask(&provider, &a, "other-alias", None));

    // The order of the checks shows when two fail at once: the earlier one answers.
    // Policy (5) before alias (6): b's policy names only its alias.
    assert_refused(
        ask(&provider, &b, "no-such-alias", None),
        403,
        "Access Denied",
        "AccessDeniedException",
    );
    // Thing (4) before policy (5).
    assert_refused(
        ask(&provider, &b, "other-alias", Some("dev-a")),
        403,
        "Invalid thing name passed",
        "AccessDeniedException",
    );

    // Silence and revoke take effect at once, for that device only.
    operator.ok(&["aws", "silence", "--thing", "dev-a"]);
    assert_refused(
        ask(&provider, &a, ALIAS, None),
        403,
        "Access Denied",
        "AccessDeniedException",
    );
    assert_credentials(ask(&provider, &b, ALIAS, None));
    // Status (3) before thing (4); SNI (2) before status (3).
    assert_refused(
        ask(&provider, &a, ALIAS, Some("dev-b")),
        403,
        "Access Denied",
        "AccessDeniedException",
    );
    assert_refused(
        provider
            .curl(
                &a.cert,
                Some(&a.key),
                ALIAS,
                None,
                Some("x.credentials.iot.us-east-1.amazonaws.com"),
            )
            .unwrap(),
        403,
        "Certificate is invalid on this endpoint",
        "AccessDeniedException",
    );
    operator.ok(&["aws", "unsilence", "--thing", "dev-a"]);
    assert_credentials(ask(&provider, &a, ALIAS, None));
    operator.ok(&["aws", "revoke", "--thing", "dev-a", "--yes"]);
    assert_refused(
        ask(&provider, &a, ALIAS, None),
        403,
        "Access Denied",
        "AccessDeniedException",
    );
    assert_credentials(ask(&provider, &b, ALIAS, None));

    // A deactivated CA: its certificates no longer complete the handshake.
    moto.py(&format!(
        "iot.update_ca_certificate(certificateId='{}', newStatus='INACTIVE')",
        cert_id(&ca)
    ));
    assert!(provider
        .curl(&b.cert, Some(&b.key), ALIAS, None, None)
        .is_err());
}

/// `device credentials` against a provider that fails: each fault gives a clear error and a
/// non-zero exit, leaves the cache as it was (or absent), and the next run succeeds.
#[test]
fn device_credentials_survive_provider_faults() {
    use std::os::unix::fs::PermissionsExt;

    let tmp = tempfile::tempdir().unwrap();
    let moto = Moto::start(tmp.path());
    let operator = Operator::new(tmp.path(), &moto);
    operator.set_up();
    let provider = Provider::start(&moto, ENDPOINT, &tmp.path().join("provider"));
    let device = Device::new(&tmp.path().join("dev-f"));
    let cert = operator.sign_and_register(tmp.path(), "dev-f", &device.csr("dev-f"));
    device.install(&cert, &operator.home.join("ca/ca.crt"), &provider, ALIAS);
    let cache = device.device_dir().join("credentials.json");
    let connect = provider.connect();
    let credentials = || {
        device.run(&[
            "device",
            "credentials",
            "--connect",
            &connect,
            "--timeout",
            "1",
            "--format",
            "json",
        ])
    };
    let succeeds = || -> serde_json::Value {
        let out = credentials();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(got["accessKeyId"].as_str().unwrap().starts_with("ASIA"));
        assert_eq!(
            std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777,
            0o600
        );
        got
    };
    let fails = |mode: &str, message: &str| {
        provider.inject_faults(mode, 1);
        let started = std::time::Instant::now();
        let out = credentials();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{mode}: {stderr}");
        assert!(out.stdout.is_empty(), "{mode}");
        assert!(stderr.contains(message), "{mode}: {stderr}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(PROVIDER_HANG_SECONDS),
            "{mode}: the client waited for the provider past its timeout"
        );
    };

    succeeds();
    // Cached credentials due for refresh: every run asks the provider.
    let mut stale: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cache).unwrap()).unwrap();
    let soon = time::OffsetDateTime::now_utc() + std::time::Duration::from_secs(60);
    stale["credentials"]["expiration"] = soon
        .replace_nanosecond(0)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
        .into();
    let stale_expiration = stale["credentials"]["expiration"].clone();
    let stale = serde_json::to_vec(&stale).unwrap();
    std::fs::write(&cache, &stale).unwrap();
    for (mode, message) in [
        ("500", "the credentials provider answered 500"),
        ("throttle", "the credentials provider answered 429"),
        ("hang", "did not answer within 1 s"),
        ("malformed", "not the expected JSON"),
    ] {
        fails(mode, message);
        assert_eq!(std::fs::read(&cache).unwrap(), stale, "{mode}");
    }
    let fresh = succeeds();
    assert_ne!(std::fs::read(&cache).unwrap(), stale);
    assert_ne!(fresh["expiration"], stale_expiration);

    // No cache yet: a fault writes none.
    std::fs::remove_file(&cache).unwrap();
    for (mode, message) in [
        ("malformed", "not the expected JSON"),
        ("500", "answered 500"),
    ] {
        fails(mode, message);
        assert!(!cache.exists(), "{mode}");
    }
    succeeds();
}
