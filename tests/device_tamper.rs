//! The tamper alarm, end to end, against moto, the local credentials provider and its IAM gate,
//! with emulated Zymkeys and their agents (`zkiot device agent`): a perimeter breach on 3 of 20
//! devices is reported on their Things within seconds and `zkiot aws sweep` silences exactly
//! those 3; a breach latched while the agent was not running is reported when it starts; a
//! device that stops sending heartbeats is swept with `--stale`, one that keeps sending them is
//! not; and a device's credentials cannot clear or forge another device's report.

#![cfg(feature = "aws")]

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use support::*;

const ENDPOINT: &str = "t4mper.credentials.iot.us-east-1.amazonaws.com";
const ALIAS: &str = "zkiot-device-alias";

/// A running agent, killed (with its watcher, which leaves once its parent is gone) on drop.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_agent(device: &Device, provider: &Provider, heartbeat: &str) -> Agent {
    let log = std::fs::File::create(device.dir.join("agent.log")).unwrap();
    let mut cmd = Command::new(zkiot_bin());
    cmd.args(["device", "agent", "--connect", &provider.connect()])
        .args(["--listen", "off", "--heartbeat", heartbeat])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    device.env(&mut cmd);
    Agent(cmd.spawn().unwrap())
}

/// A breach of channel 0 at `time`, injected in one write as the emulator asks.
fn breach(device: &Device, time: SystemTime) {
    let staged = device.dir.join("perimeter-next.staged");
    std::fs::write(&staged, "0").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&staged)
        .unwrap()
        .set_modified(time)
        .unwrap();
    std::fs::rename(&staged, device.dir.join("emu").join("perimeter-next")).unwrap();
}

/// Every Thing's attributes, by name: one ListThings page straight from moto over HTTP (moto
/// checks no signature; the Authorization header names the service), in milliseconds, so the
/// time a report is seen is close to the time it was made.
fn attributes(moto: &Moto) -> serde_json::Map<String, Value> {
    use std::io::{Read, Write};
    let address = moto.url().trim_start_matches("http://").to_string();
    let mut stream = std::net::TcpStream::connect(&address).unwrap();
    write!(
        stream,
        "GET /things?maxResults=250 HTTP/1.0\r\nHost: {address}\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=testing/20261207/us-east-1/iot/aws4_request, \
         SignedHeaders=host, Signature=00\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.contains(" 200 "), "{answer}");
    let page: Value = serde_json::from_str(body).unwrap();
    assert!(
        page.get("nextToken").is_none(),
        "more than one page: {page}"
    );
    page["things"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let attributes = t.get("attributes").cloned();
            (
                t["thingName"].as_str().unwrap().to_string(),
                attributes.unwrap_or_else(|| Value::Object(Default::default())),
            )
        })
        .collect()
}

/// Waits until `done` holds for the Things' attributes; returns them and how long it took.
fn wait_for(
    moto: &Moto,
    what: &str,
    mut done: impl FnMut(&serde_json::Map<String, Value>) -> bool,
) -> (serde_json::Map<String, Value>, Duration) {
    let started = Instant::now();
    loop {
        let things = attributes(moto);
        if done(&things) {
            return (things, started.elapsed());
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "{what}: not after 90 s: {things:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Each Thing's certificate statuses.
fn statuses(moto: &Moto) -> std::collections::BTreeMap<String, Vec<String>> {
    let value = moto.py("result = {}\n\
         for t in iot.list_things(maxResults=250)['things']:\n\
         \x20   result[t['thingName']] = [iot.describe_certificate(certificateId=p.split('/')[-1])\
         ['certificateDescription']['status'] for p in \
         iot.list_thing_principals(thingName=t['thingName'])['principals']]");
    serde_json::from_value(value).unwrap()
}

/// moto, the operator set up, the credentials provider, and the broker whose iot-data endpoint
/// closes the silenced devices' MQTT connections.
fn set_up(tmp: &Path) -> (Moto, Operator, Provider, Broker) {
    let moto = Moto::start(tmp);
    let mut operator = Operator::new(tmp, &moto);
    operator.set_up();
    let broker = Broker::start(&moto, &tmp.join("broker"));
    operator.iot_data_url = Some(broker.data_url.clone());
    // The reports need UpdateThing on the device's own Thing.
    operator.ok(&["aws", "setup", "--renewal"]);
    let provider = Provider::start(&moto, ENDPOINT, &tmp.join("provider"));
    (moto, operator, provider, broker)
}

/// Runs the Python `body` with `c`, a boto3 AWS IoT client of the IoT API gate signing with the
/// device credentials `creds`; returns what it printed.
fn as_device(provider: &Provider, creds: &Value, body: &str) -> String {
    let program = format!(
        "import boto3, botocore, time\n\
         c = boto3.client('iot', region_name='us-east-1', endpoint_url='{url}',\n\
         \x20   aws_access_key_id='{key}', aws_secret_access_key='{secret}', aws_session_token='{token}')\n\
         {body}",
        url = provider.iot_api(),
        key = creds["accessKeyId"].as_str().unwrap(),
        secret = creds["secretAccessKey"].as_str().unwrap(),
        token = creds["sessionToken"].as_str().unwrap(),
    );
    let out = Command::new(venv().join("bin/python"))
        .args(["-c", &program])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// UpdateThing of `thing`'s zkiot_tamper to `value` with the credentials `creds`, through the
/// IoT API gate; returns the error code, or "ok".
fn update_tamper_as(provider: &Provider, creds: &Value, thing: &str, value: &str) -> String {
    as_device(
        provider,
        creds,
        &format!(
            "try:\n\
             \x20   c.update_thing(thingName='{thing}', attributePayload={{'attributes': {{'zkiot_tamper': '{value}'}}, 'merge': True}})\n\
             \x20   print('ok')\n\
             except botocore.exceptions.ClientError as e:\n\
             \x20   print(e.response['Error']['Code'])"
        ),
    )
}

/// `things` enrolled, their Zymkeys notifying the host of a breach on either channel, their
/// agents running with heartbeat `heartbeat`; returns once each has sent its first heartbeat.
fn armed_fleet(
    env: (&Moto, &Operator, &Provider),
    dir: &Path,
    things: &[String],
    heartbeat: &str,
) -> (Vec<Device>, Vec<Agent>) {
    let (moto, operator, provider) = env;
    let devices: Vec<Device> = things
        .iter()
        .map(|t| enrolled_device(operator, provider, dir, t, ALIAS, 365).0)
        .collect();
    for device in &devices {
        device.ok(&["device", "tamper", "--set", "all=notify", "--yes"]);
    }
    let agents: Vec<Agent> = devices
        .iter()
        .map(|d| start_agent(d, provider, heartbeat))
        .collect();
    wait_for(moto, "every device seen", |seen| {
        seen.values()
            .filter(|a| a["zkiot_seen"].is_string())
            .count()
            == things.len()
    });
    (devices, agents)
}

#[test]
fn a_breach_on_three_of_twenty_devices_is_reported_at_once_and_swept() {
    let tmp = tempfile::tempdir().unwrap();
    let (moto, operator, provider, _broker) = set_up(tmp.path());
    let dir = tmp.path().join("devices");
    let things: Vec<String> = (0..20).map(|i| format!("perimeter-{i:02}")).collect();
    let (devices, agents) = armed_fleet((&moto, &operator, &provider), &dir, &things, "6h");

    let breached = [3, 7, 12];
    let at = SystemTime::now();
    for &i in &breached {
        breach(&devices[i], at);
    }
    let (reported, delay) = wait_for(&moto, "three breaches reported", |things| {
        things
            .values()
            .filter(|a| a["zkiot_tamper"].is_string())
            .count()
            == 3
    });
    eprintln!(
        "tamper: breach to report on the Thing, 3 devices: {} ms",
        delay.as_millis()
    );
    let breach_time = at.duration_since(UNIX_EPOCH).unwrap().as_secs();
    for (i, thing) in things.iter().enumerate() {
        let tamper = &reported[thing]["zkiot_tamper"];
        if breached.contains(&i) {
            let value = tamper.as_str().unwrap();
            let (channel, time) = value.split_once('@').unwrap();
            assert_eq!(channel, "0", "{thing}: {value}");
            let time =
                time::OffsetDateTime::parse(time, &time::format_description::well_known::Rfc3339)
                    .unwrap();
            assert_eq!(
                time.unix_timestamp() as u64,
                breach_time,
                "{thing}: {value}"
            );
        } else {
            assert!(tamper.is_null(), "{thing}: {tamper}");
        }
    }

    // No device can clear another's report or forge one; each may write its own Thing.
    let creds: Value = serde_json::from_slice(&devices[0].credentials(&provider, &[]).stdout)
        .expect("device 0's credentials");
    assert_eq!(
        update_tamper_as(&provider, &creds, &things[3], ""),
        "AccessDeniedException"
    );
    assert_eq!(
        update_tamper_as(&provider, &creds, &things[1], "0@2026-01-01T00:00:00Z"),
        "AccessDeniedException"
    );
    assert_eq!(update_tamper_as(&provider, &creds, &things[0], ""), "ok");
    let after = attributes(&moto);
    assert!(after[&things[3]]["zkiot_tamper"].is_string());
    assert!(after[&things[1]]["zkiot_tamper"].is_null());

    let status = operator.ok(&["aws", "status"]);
    assert_eq!(
        status.matches("PERIMETER BREACH reported").count(),
        3,
        "{status}"
    );
    assert_eq!(status.matches(", last seen 20").count(), 20, "{status}");

    let out = operator.ok(&["aws", "sweep"]);
    assert!(out.contains("20 things read: 3 reported a breach"), "{out}");
    assert!(out.contains("3 things: 3 changed"), "{out}");
    let after = statuses(&moto);
    for (i, thing) in things.iter().enumerate() {
        let expected = if breached.contains(&i) {
            "INACTIVE"
        } else {
            "ACTIVE"
        };
        assert_eq!(after[thing], vec![expected.to_string()], "{thing}");
    }
    // Again: nothing more to change.
    let out = operator.ok(&["aws", "sweep"]);
    assert!(out.contains("3 things: 0 changed, 3 already done"), "{out}");
    drop(agents);
}

#[test]
fn a_breach_latched_while_the_agent_was_down_is_reported_when_it_starts() {
    let tmp = tempfile::tempdir().unwrap();
    let (moto, operator, provider, _broker) = set_up(tmp.path());
    let dir = tmp.path().join("devices");
    let (device, _) = enrolled_device(&operator, &provider, &dir, "reboot-00", ALIAS, 365);
    // A breach while no agent runs (the channel's action left at none), latched by the Zymkey.
    let at = UNIX_EPOCH + Duration::from_secs(1_796_000_000);
    breach(&device, at);
    let shown: Value = serde_json::from_str(&device.ok(&["device", "tamper", "--json"])).unwrap();
    assert_eq!(shown["channels"][0]["first_breach"], 1_796_000_000u32);
    assert!(attributes(&moto)["reboot-00"]["zkiot_tamper"].is_null());

    let agent = start_agent(&device, &provider, "off");
    let (things, _) = wait_for(&moto, "the latched breach reported", |things| {
        things["reboot-00"]["zkiot_tamper"].is_string()
    });
    assert_eq!(
        things["reboot-00"]["zkiot_tamper"],
        "0@2026-11-30T00:53:20Z"
    );
    // With the heartbeat off, a report still says when the device was seen.
    assert!(things["reboot-00"]["zkiot_seen"].is_string());
    drop(agent);
    let log = std::fs::read_to_string(device.dir.join("agent.log")).unwrap();
    assert!(log.contains("perimeter breach reported"), "{log}");
}

#[test]
fn a_device_that_stops_reporting_is_swept_as_stale_and_one_that_reports_is_not() {
    let tmp = tempfile::tempdir().unwrap();
    let (moto, operator, provider, _broker) = set_up(tmp.path());
    let dir = tmp.path().join("devices");
    let alive = enrolled_device(&operator, &provider, &dir, "alive", ALIAS, 365).0;
    let quiet = enrolled_device(&operator, &provider, &dir, "quiet", ALIAS, 365).0;
    // Enrolled, never ran its agent.
    enrolled_device(&operator, &provider, &dir, "unborn", ALIAS, 365);

    let _alive = start_agent(&alive, &provider, "2s");
    let quiet_agent = start_agent(&quiet, &provider, "2s");
    let (first, _) = wait_for(&moto, "both seen", |things| {
        things["alive"]["zkiot_seen"].is_string() && things["quiet"]["zkiot_seen"].is_string()
    });
    drop(quiet_agent);
    // The live device's heartbeats go on: its last-seen time moves.
    let (_, _) = wait_for(&moto, "a later heartbeat", |things| {
        things["alive"]["zkiot_seen"] != first["alive"]["zkiot_seen"]
    });
    std::thread::sleep(Duration::from_secs(12));

    let out = operator.ok(&[
        "aws",
        "sweep",
        "--stale",
        "10s",
        "--never-seen",
        "--dry-run",
    ]);
    assert!(out.contains("sweep: quiet: not seen since"), "{out}");
    assert!(out.contains("sweep: unborn: never reported"), "{out}");
    assert!(!out.contains("sweep: alive"), "{out}");
    assert!(out.contains("nothing silenced"), "{out}");
    assert_eq!(statuses(&moto)["quiet"], vec!["ACTIVE".to_string()]);

    let out = operator.ok(&["aws", "sweep", "--stale", "10s"]);
    assert!(
        out.contains("0 reported a breach, 1 not seen for 10s, 1 of ours never reported (not swept without --never-seen); 1 to silence"),
        "{out}"
    );
    let after = statuses(&moto);
    assert_eq!(after["quiet"], vec!["INACTIVE".to_string()]);
    assert_eq!(after["alive"], vec!["ACTIVE".to_string()]);
    assert_eq!(after["unborn"], vec!["ACTIVE".to_string()]);
}

/// The benchmark of `scripts/bench-tamper.sh` (not a test: it asserts no time): from a breach
/// injected on N devices at once to its report on each Thing, per round, against the peer
/// measured in the same run, one `UpdateThing` of the same attribute through the same gate with
/// a device's credentials (boto3): what the path to AWS costs at least.
#[test]
#[ignore]
fn bench_breach_to_report() {
    let n: usize = std::env::var("ZKIOT_BENCH_DEVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let rounds: usize = std::env::var("ZKIOT_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let tmp = tempfile::tempdir().unwrap();
    let (moto, operator, provider, _broker) = set_up(tmp.path());
    let dir = tmp.path().join("devices");
    let things: Vec<String> = (0..n).map(|i| format!("bench-{i:03}")).collect();
    let (devices, _agents) = armed_fleet((&moto, &operator, &provider), &dir, &things, "6h");

    let mut delays = Vec::new();
    for round in 0..rounds {
        // A breach dated to a second of its own, so each round's report differs.
        let at = UNIX_EPOCH + Duration::from_secs(1_800_000_000 + round as u64 * 10);
        let expected = format!(
            "0@{}",
            time::OffsetDateTime::from_unix_timestamp(1_800_000_000 + round as i64 * 10)
                .unwrap()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap()
        );
        for device in &devices {
            device.ok(&["device", "tamper", "--clear", "--json"]);
        }
        let injected = Instant::now();
        for device in &devices {
            breach(device, at);
        }
        let mut seen = std::collections::BTreeMap::new();
        while seen.len() < n {
            for (thing, a) in attributes(&moto) {
                if a["zkiot_tamper"] == expected.as_str() {
                    seen.entry(thing).or_insert_with(|| injected.elapsed());
                }
            }
            assert!(
                injected.elapsed() < Duration::from_secs(120),
                "round {round}: {seen:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        delays.extend(seen.into_values());
    }
    delays.sort();

    let creds: Value = serde_json::from_slice(&devices[0].credentials(&provider, &[]).stdout)
        .expect("device 0's credentials");
    let bare: f64 = as_device(
        &provider,
        &creds,
        &format!(
            "times = []\n\
             for i in range(20):\n\
             \x20   t = time.monotonic()\n\
             \x20   c.update_thing(thingName='{}', attributePayload={{'attributes': {{'zkiot_seen': '2026-01-01T00:00:00Z'}}, 'merge': True}})\n\
             \x20   times.append(time.monotonic() - t)\n\
             print(sorted(times)[len(times) // 2])",
            things[0]
        ),
    )
    .parse()
    .unwrap();

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let median = delays[delays.len() / 2];
    let worst = *delays.last().unwrap();
    println!(
        "breach to report, {n} devices at once, {rounds} rounds ({} reports):",
        delays.len()
    );
    println!("  {:<48} {:>10}", "what", "ms");
    println!(
        "  {:<48} {:>10.1}",
        "peer: one UpdateThing through the gate (median)",
        bare * 1000.0
    );
    println!("  {:<48} {:>10.1}", "breach to report (median)", ms(median));
    println!("  {:<48} {:>10.1}", "breach to report (worst)", ms(worst));
    println!(
        "  ratio, median report to one UpdateThing: {:.1}x; worst: {:.1}x",
        ms(median) / (bare * 1000.0),
        ms(worst) / (bare * 1000.0)
    );
}
