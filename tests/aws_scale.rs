//! Fleet commands at AWS's scale, against moto: behind a proxy that throttles every API above
//! 10 requests a second (AWS's default quota for most certificate APIs), `fleet provision` of
//! 100 devices keeps to AWS's quotas and comes through without a failure.

#![cfg(feature = "aws")]

mod support;

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
