//! What the commands that act on many Things share (`src/aws/batch.rs`, and the listings they
//! start from), against moto:
//! - AWS going away mid-run: `fleet provision`, `fleet renew` and `aws silence --group` each
//!   stop starting Things, count those as not attempted (nothing was done to them), report the
//!   Thing that met the outage as the one failure, and the same command finishes the job once
//!   AWS is back;
//! - listing Things across pages (250 a page, as zkiot asks), retried within a page like any
//!   call.

#![cfg(feature = "aws")]

mod support;

use std::collections::BTreeMap;
use std::process::Output;

use support::*;

const GROUP: &str = "batch-group";

fn things() -> Vec<String> {
    (0..6).map(|i| format!("batch-{i:02}")).collect()
}

/// A run, one Thing at a time, through a proxy that goes down at the request `rule` matches
/// (one about `batch-03`): the three Things before it are done, it fails, the two after it are
/// not attempted.
fn run_until_down(operator: &mut Operator, moto: &Moto, dir: &str, rule: &str, args: &[&str]) {
    let proxy = FaultProxy::start(moto, &operator.home.join(dir), &[(rule, 1, "down")]);
    operator.endpoint_url = proxy.url.clone();
    let mut args = args.to_vec();
    args.extend(["--concurrency", "1"]);
    let out = operator.run(&args);
    operator.endpoint_url = moto.url();
    check_stopped(&out, &args);
    // The call that met the outage, with its retries, and no call after it.
    let injected = proxy.injected();
    assert_eq!(injected.len(), 3, "{injected:?}");
    assert!(
        injected.iter().all(|l| l.contains("/things/batch-03")),
        "{injected:?}"
    );
}

/// Exit status, the one failure line and the closing error of a run that met the outage.
fn check_stopped(out: &Output, args: &[&str]) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?}: {stdout}{stderr}");
    assert!(
        stdout.contains("1 failed, 2 not attempted (AWS unreachable)"),
        "{args:?}: {stdout}{stderr}"
    );
    let failures: Vec<&str> = stderr.lines().filter(|l| l.starts_with("batch-")).collect();
    assert_eq!(failures.len(), 1, "{stderr}");
    assert!(
        failures[0].starts_with("batch-03: ") && failures[0].contains("cannot reach"),
        "{stderr}"
    );
    assert!(
        stderr.contains("3 of 6 ") && stderr.contains("run the same command again to finish"),
        "{stderr}"
    );
}

/// Each Thing's certificate statuses, in the order AWS IoT lists its principals.
fn statuses(moto: &Moto) -> BTreeMap<String, Vec<String>> {
    let value = moto.py(
        "result = {}\n\
         for t in iot.list_things()['things']:\n\
         \x20   result[t['thingName']] = [iot.describe_certificate(certificateId=p.split('/')[-1])['certificateDescription']['status'] for p in iot.list_thing_principals(thingName=t['thingName'])['principals']]",
    );
    serde_json::from_value(value).unwrap()
}

#[test]
fn batch_commands_stop_starting_things_once_aws_is_unreachable() {
    let tmp = tempfile::tempdir().unwrap();
    let moto = Moto::start(tmp.path());
    let mut operator = Operator::new(tmp.path(), &moto);
    let broker = Broker::start(&moto, &tmp.path().join("broker"));
    operator.iot_data_url = Some(broker.data_url.clone());
    operator.set_up();
    let csr_dir = tmp.path().join("csrs");
    write_csrs(&csr_dir, things());
    let devices = operator.home.join("devices");

    // fleet provision (certificates for 20 days): AWS goes away at batch-03's CreateThing.
    let provision = [
        "fleet",
        "provision",
        "--csr-dir",
        csr_dir.to_str().unwrap(),
        "--days",
        "20",
    ];
    run_until_down(
        &mut operator,
        &moto,
        "proxy-provision",
        "^POST /things/batch-03 ",
        &provision,
    );
    let inventory = moto.inventory();
    assert_eq!(
        inventory["things"],
        serde_json::json!(["batch-00", "batch-01", "batch-02"])
    );
    for thing in ["batch-04", "batch-05"] {
        assert!(!devices.join(thing).exists(), "{thing} was attempted");
    }
    let out = operator.ok(&provision);
    assert!(
        out.contains("3 provisioned, 3 already done, 0 failed\n"),
        "{out}"
    );

    // fleet renew: AWS goes away at batch-03's DescribeThing.
    let renew = ["fleet", "renew", "--within", "30d"];
    run_until_down(
        &mut operator,
        &moto,
        "proxy-renew",
        "^GET /things/batch-03 ",
        &renew,
    );
    for (i, thing) in things().iter().enumerate() {
        assert_eq!(
            devices.join(thing).join("renewal.crt").exists(),
            i < 3,
            "{thing}"
        );
    }
    let out = operator.ok(&renew);
    assert!(out.contains(": 3 renewed, "), "{out}");
    assert!(out.contains(" 0 failed\n"), "{out}");

    // silence --group: AWS goes away at batch-03's DescribeThing.
    moto.py(&format!(
        "iot.create_thing_group(thingGroupName='{GROUP}')\n\
         for t in {:?}:\n\
         \x20   iot.add_thing_to_thing_group(thingGroupName='{GROUP}', thingName=t)",
        things()
    ));
    let silence = ["aws", "silence", "--group", GROUP];
    run_until_down(
        &mut operator,
        &moto,
        "proxy-silence",
        "^GET /things/batch-03 ",
        &silence,
    );
    let held = statuses(&moto);
    for (i, thing) in things().iter().enumerate() {
        let wanted = if i < 3 { "INACTIVE" } else { "ACTIVE" };
        assert_eq!(held[thing], [wanted, wanted], "{thing}");
    }
    let out = operator.ok(&silence);
    assert!(
        out.contains(&format!(
            "silence --group {GROUP}: 6 things: 3 changed, 3 already done, 0 failed\n"
        )),
        "{out}"
    );
    assert!(statuses(&moto)
        .values()
        .flatten()
        .all(|status| status == "INACTIVE"));
}

#[test]
fn things_are_listed_across_pages() {
    let tmp = tempfile::tempdir().unwrap();
    let moto = Moto::start(tmp.path());
    let mut operator = Operator::new(tmp.path(), &moto);
    operator.set_up();
    let count = 260;
    moto.py(&format!(
        "for i in range({count}):\n\
         \x20   iot.create_thing(thingName='paged-%03d' % i)"
    ));
    let pages = moto.py("result = iot.list_things(maxResults=250)['nextToken'] is not None");
    assert_eq!(pages, serde_json::json!(true), "moto lists one page");

    let out = operator.ok(&["aws", "status"]);
    assert!(out.contains(&format!("things: {count}\n")), "{out}");
    assert_eq!(out.matches(": no zkiot record yet").count(), count, "{out}");

    // A page after the first is throttled twice, then answers: the listing is whole.
    let next_page = "^GET /things\\?[^ ]*nextToken=";
    let proxy = FaultProxy::start(
        &moto,
        &tmp.path().join("proxy-throttle"),
        &[(next_page, 2, "throttle")],
    );
    operator.endpoint_url = proxy.url.clone();
    // These Things carry no record of ours, so each is looked at: without AWS's quotas (moto
    // has none), that takes no time.
    let out = operator.ok(&["fleet", "renew", "--api-rate", "*=off"]);
    assert!(
        out.contains(&format!("fleet renew: {count} things in ")),
        "{out}"
    );
    assert_eq!(proxy.injected().len(), 2);

    // A page that keeps failing fails the listing, with the call and the attempts.
    let proxy = FaultProxy::start(
        &moto,
        &tmp.path().join("proxy-500"),
        &[(next_page, FOREVER, "500")],
    );
    operator.endpoint_url = proxy.url.clone();
    operator.refused(
        &["fleet", "renew"],
        "ListThings failed: InternalFailureException: Internal failure (gave up after 3 attempts)",
    );
    assert_eq!(proxy.injected().len(), 3);
}
