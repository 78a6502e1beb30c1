//! Fleet commands at AWS's scale, against moto:
//! - behind a proxy that throttles every API above 10 requests a second (AWS's default quota
//!   for most certificate APIs), `fleet provision` of 100 devices keeps to AWS's quotas and
//!   comes through without a failure;
//! - a daily `fleet renew` reads the Things a page at a time and looks only at the devices due
//!   (and at renewals under way); `aws status` reads pages only; a second operator on another
//!   machine, with the CA alone, sees the same fleet and carries on where the first left off.

#![cfg(feature = "aws")]

mod support;

use openssl::x509::X509;
use support::*;

#[test]
fn a_throttled_fleet_run_slows_down_and_fails_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let moto = Moto::start(tmp.path());
    let mut operator = Operator::new(tmp.path(), &moto);
    operator.set_up();
    let csr_dir = tmp.path().join("csrs");
    let count: u32 = 100;
    write_csrs(&csr_dir, (0..count).map(|i| format!("quota-{i:03}")));

    let proxy = FaultProxy::throttling_above(&moto, &tmp.path().join("proxy"), 10);
    operator.endpoint_url = proxy.url.clone();
    let started = std::time::Instant::now();
    let out = operator.ok(&[
        "fleet",
        "provision",
        "--csr-dir",
        csr_dir.to_str().unwrap(),
        "--concurrency",
        "32",
    ]);
    let elapsed = started.elapsed();
    assert!(
        out.contains(&format!("fleet: {count} devices in ",))
            && out.contains(&format!(
                ": {count} provisioned, 0 already done, 0 failed\n"
            )),
        "{out}"
    );
    let counts = proxy.counts(false);
    eprintln!("fleet provision of {count} devices took {elapsed:?}; requests by API: {counts}");
    // Each device's certificate was registered once (a throttled request went again), at most
    // 10 a second.
    let answered = |api: &str| {
        counts["requests"][api].as_u64().unwrap_or(0)
            - counts["throttled"][api].as_u64().unwrap_or(0)
    };
    assert_eq!(answered("RegisterCertificate"), u64::from(count));
    assert!(
        elapsed.as_secs_f64() >= f64::from(count) / 10.0 - 1.0,
        "{elapsed:?}"
    );
    let inventory = moto.inventory();
    assert_eq!(
        inventory["things"].as_array().unwrap().len(),
        count as usize
    );
}

/// Requests of each API since the last call, from the proxy's counts.
fn requests(proxy: &FaultProxy) -> std::collections::BTreeMap<String, u64> {
    serde_json::from_value(proxy.counts(true)["requests"].clone()).unwrap()
}

/// The requests made for one Thing or certificate at a time (not pages, not the checks a run
/// makes once).
fn per_device(counts: &std::collections::BTreeMap<String, u64>) -> u64 {
    const PER_DEVICE: &[&str] = &[
        "DescribeThing",
        "ListThingPrincipals",
        "DescribeCertificate",
        "UpdateCertificate",
        "RegisterCertificate",
        "CreateThing",
        "UpdateThing",
        "AttachThingPrincipal",
        "AttachPolicy",
        "ListAttachedPolicies",
    ];
    PER_DEVICE.iter().filter_map(|api| counts.get(*api)).sum()
}

#[test]
fn a_daily_renewal_reads_pages_and_looks_only_at_the_devices_due() {
    let tmp = tempfile::tempdir().unwrap();
    let moto = Moto::start(tmp.path());
    let mut operator = Operator::new(tmp.path(), &moto);
    operator.set_up();
    for (dir, days, range) in [("lasting", "365", 0..36), ("due", "20", 36..40)] {
        let csr_dir = tmp.path().join(dir);
        write_csrs(&csr_dir, range.map(|i| format!("daily-{i:02}")));
        operator.ok(&[
            "fleet",
            "provision",
            "--csr-dir",
            csr_dir.to_str().unwrap(),
            "--days",
            days,
        ]);
    }
    // Their Things have the type that lets them hold more than three attributes.
    let types = moto.py(
        "result = sorted({t.get('thingTypeName', '') for t in iot.list_things(maxResults=250)['things']})",
    );
    assert_eq!(types, serde_json::json!(["zkiot-device"]));
    let proxy = FaultProxy::start(&moto, &tmp.path().join("proxy"), &[]);
    operator.endpoint_url = proxy.url.clone();

    // The four due are renewed; the others cost nothing but their share of a page.
    let out = operator.ok(&["fleet", "renew"]);
    assert!(
        out.contains("fleet renew: 40 things in ")
            && out.contains(", 4 looked at one by one: 4 renewed, 0 waiting"),
        "{out}"
    );
    let counts = requests(&proxy);
    assert_eq!(counts["ListThings"], 1, "{counts:?}");
    assert!(per_device(&counts) <= 4 * 12, "{counts:?}");
    let status = operator.ok(&["aws", "status"]);
    assert_eq!(
        status
            .matches(", renewal waiting for the device to switch")
            .count(),
        4,
        "{status}"
    );
    let counts = requests(&proxy);
    assert_eq!(per_device(&counts), 0, "aws status: {counts:?}");

    // Next day: only the four waiting for their devices are looked at.
    let out = operator.ok(&["fleet", "renew"]);
    assert!(
        out.contains(", 4 looked at one by one: 0 renewed, 4 waiting"),
        "{out}"
    );
    assert!(per_device(&requests(&proxy)) <= 4 * 6);

    // The devices switch, recording it on their Things as a device does.
    let devices = operator.home.join("devices");
    for i in 36..40 {
        let thing = format!("daily-{i:02}");
        let new = X509::from_pem(&std::fs::read(devices.join(&thing).join("renewal.crt")).unwrap())
            .unwrap();
        moto.py(&format!(
            "iot.update_thing(thingName='{thing}', attributePayload={{'attributes': {{'zkiot_certificate': '{}'}}, 'merge': True}})",
            cert_id(&new)
        ));
    }

    // Another operator on another machine, with the CA and nothing else: it sees the same
    // fleet, and retires the old certificates.
    let mut other = Operator::new(&tmp.path().join("other-machine"), &moto);
    copy_dir(&operator.home.join("ca"), &other.home.join("ca"));
    other.endpoint_url = proxy.url.clone();
    let out = other.ok(&["fleet", "renew", "--grace", "0s"]);
    assert!(
        out.contains(", 4 looked at one by one: 0 renewed, 0 waiting for the device to switch, 0 stranded, 4 old certificates deactivated"),
        "{out}"
    );
    // The first operator's record knows nothing of that; the Things say since when.
    let out = operator.ok(&["fleet", "renew", "--grace", "0s"]);
    assert!(
        out.contains(", 4 looked at one by one: ") && out.contains(" 4 revoked"),
        "{out}"
    );
    // And then there is nothing left to look at.
    let out = other.ok(&["fleet", "renew", "--grace", "0s"]);
    assert!(out.contains(", 0 looked at one by one: 0 renewed"), "{out}");
    let status = other.ok(&["aws", "status"]);
    assert!(
        status.contains("certificates of our CA: 40 ACTIVE, 4 REVOKED\n"),
        "{status}"
    );
    assert_eq!(status.matches(", uses certificate ").count(), 4, "{status}");
    assert!(
        !status.contains("renewal") && !status.contains("inactive since"),
        "{status}"
    );
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[test]
fn with_fleet_indexing_a_renewal_searches_instead_of_reading_every_page() {
    let tmp = tempfile::tempdir().unwrap();
    let moto = Moto::start(tmp.path());
    let mut operator = Operator::new(tmp.path(), &moto);
    operator.set_up();
    let provision = |operator: &Operator, dir: &str, days: &str, range: std::ops::Range<u32>| {
        let csr_dir = tmp.path().join(dir);
        write_csrs(&csr_dir, range.map(|i| format!("indexed-{i:02}")));
        operator.ok(&[
            "fleet",
            "provision",
            "--csr-dir",
            csr_dir.to_str().unwrap(),
            "--days",
            days,
        ]);
    };
    provision(&operator, "lasting", "365", 0..18);
    provision(&operator, "due", "20", 18..20);
    moto.py(
        "iot.update_indexing_configuration(thingIndexingConfiguration={'thingIndexingMode': 'REGISTRY'})",
    );
    let proxy = FaultProxy::start(&moto, &tmp.path().join("proxy"), &[]);
    operator.endpoint_url = proxy.url.clone();

    // This machine has not read the whole fleet lately: it does.
    let out = operator.ok(&["fleet", "renew"]);
    assert!(out.contains(", 2 looked at one by one: 2 renewed"), "{out}");
    let counts = requests(&proxy);
    assert!(
        counts["ListThings"] >= 1 && !counts.contains_key("SearchIndex"),
        "{counts:?}"
    );

    // Three more devices come due: the index finds them, and the two waiting.
    provision(&operator, "more", "20", 20..23);
    requests(&proxy);
    let out = operator.ok(&["fleet", "renew"]);
    assert!(
        out.contains("fleet renew: 5 things found through fleet indexing")
            && out.contains(", 5 looked at one by one: 3 renewed, 2 waiting"),
        "{out}"
    );
    let counts = requests(&proxy);
    assert!(
        counts["SearchIndex"] >= 1 && !counts.contains_key("ListThings"),
        "{counts:?}"
    );

    // --walk reads every page anyway.
    let out = operator.ok(&["fleet", "renew", "--walk"]);
    assert!(out.contains("fleet renew: 23 things in "), "{out}");
    let counts = requests(&proxy);
    assert!(
        counts["ListThings"] >= 1 && !counts.contains_key("SearchIndex"),
        "{counts:?}"
    );
}
