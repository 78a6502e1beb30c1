//! `zkiot device tamper` through the built binary over the emulator: each channel's latched
//! breach shown and cleared once reported, actions set only when confirmed, production mode and
//! its one setting per channel, self-destruct, bad settings refused before any change, and a
//! library without the perimeter functions.
//!
//! Needs `libzkemu.so` beside the binary: `cargo build -p zkemu` (or `--workspace`) first.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, UNIX_EPOCH};

fn emulator() -> PathBuf {
    testkit::built::emulator()
}

/// A fresh emulated Zymkey of `model`, its trace and a device folder.
struct Device {
    tmp: tempfile::TempDir,
    model: String,
}

impl Device {
    fn new(model: &str) -> Device {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("emu")).unwrap();
        std::fs::write(tmp.path().join("zkiot.toml"), "").unwrap();
        Device {
            tmp,
            model: model.to_string(),
        }
    }

    fn emu(&self) -> PathBuf {
        self.tmp.path().join("emu")
    }

    fn device_dir(&self) -> PathBuf {
        self.tmp.path().join("device")
    }

    fn command(&self, args: &[&str]) -> Command {
        self.command_with(args, &emulator())
    }

    fn command_with(&self, args: &[&str], zklib: &Path) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_zkiot"));
        command
            .args(["device", "tamper"])
            .args(args)
            .stdin(Stdio::null());
        self.environment(&mut command, zklib);
        command
    }

    /// The emulator, its trace, and the configuration, home and device folders of this device.
    fn environment(&self, command: &mut Command, zklib: &Path) {
        command
            .env("ZKIOT_ZKLIB", zklib)
            .env("ZKIOT_EMU_DIR", self.emu())
            .env("ZKIOT_EMU_MODEL", &self.model)
            .env("ZKIOT_EMU_TRACE", self.tmp.path().join("trace"))
            .env("ZKIOT_CONF", self.tmp.path().join("zkiot.toml"))
            .env("ZKIOT_HOME", self.tmp.path().join("home"))
            .env("ZKIOT_DEVICE_DIR", self.device_dir());
    }

    fn tamper(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs it and parses its `--json` report; it must succeed.
    fn report(&self, args: &[&str]) -> serde_json::Value {
        let out = self.tamper(&[&["--json"], args].concat());
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// A breach of `channels` at `time`, as a test injects it.
    fn breach(&self, channels: &str, time: u32) {
        let path = self.emu().join("perimeter-next");
        std::fs::write(&path, channels).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(UNIX_EPOCH + Duration::from_secs(time.into()))
            .unwrap();
    }

    /// The emulator's perimeter state.
    fn state(&self) -> serde_json::Value {
        match std::fs::read(self.emu().join("tamper.json")) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap(),
            Err(_) => serde_json::json!({"actions": [0, 0], "first_breach": [0, 0]}),
        }
    }

    fn trace(&self) -> Vec<String> {
        let trace = std::fs::read_to_string(self.tmp.path().join("trace")).unwrap_or_default();
        trace.lines().map(str::to_string).collect()
    }

    fn serial(&self) -> String {
        let identity: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.emu().join("device.json")).unwrap())
                .unwrap();
        identity["serial"].as_str().unwrap().to_string()
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn shows_each_channel_and_clears_the_breaches_once_reported() {
    let device = Device::new("HSM6");
    let out = device.tamper(&[]);
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    assert!(shown.contains("zymkey    HSM6, serial EMU-"), "{shown}");
    assert!(
        shown.contains("mode      developer (binding not locked)"),
        "{shown}"
    );
    for channel in [0, 1] {
        assert!(
            shown.contains(&format!(
                "channel {channel} no breach since the events were last cleared"
            )),
            "{shown}"
        );
    }
    assert!(
        shown.contains("action unknown: not set through zkiot"),
        "{shown}"
    );
    // What it costs: the device's model and serial, its mode, its latched breaches.
    assert_eq!(
        device.trace(),
        [
            "open -",
            "info -",
            "info -",
            "binding -",
            "perimeter -",
            "close -"
        ]
    );

    // A breach while nothing ran: latched, shown with its time.
    device.breach("1", 1_796_000_000);
    let shown = text(&device.tamper(&[]));
    assert!(
        shown.contains(
            "channel 1 BREACHED: first breach 2026-11-30T00:53:20Z (epoch 1796000000), \
             latched until cleared"
        ),
        "{shown}"
    );
    assert!(
        shown.contains("channel 0 no breach since the events were last cleared"),
        "{shown}"
    );
    let report = device.report(&[]);
    assert_eq!(report["model"], "HSM6");
    assert_eq!(report["serial"], device.serial());
    assert_eq!(report["production_mode"], false);
    assert_eq!(report["cleared"], false);
    let channels = report["channels"].as_array().unwrap();
    assert_eq!(channels.len(), 2);
    assert_eq!(channels[0]["breached"], false);
    assert_eq!(channels[0]["first_breach"], serde_json::Value::Null);
    assert_eq!(channels[1]["breached"], true);
    assert_eq!(channels[1]["first_breach"], 1_796_000_000);
    assert_eq!(channels[1]["first_breach_utc"], "2026-11-30T00:53:20Z");

    // --clear: the report still shows what was latched, then the device has nothing.
    let out = device.tamper(&["--clear"]);
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    let breached = shown.find("channel 1 BREACHED").expect("reported first");
    let cleared = shown
        .find("cleared   the latched breaches")
        .expect("then cleared");
    assert!(breached < cleared, "{shown}");
    assert_eq!(device.state()["first_breach"], serde_json::json!([0, 0]));
    device.breach("0", 1_796_000_100);
    let report = device.report(&["--clear"]);
    assert_eq!(report["cleared"], true);
    assert_eq!(report["channels"][0]["first_breach"], 1_796_000_100);
    let report = device.report(&[]);
    assert_eq!(report["channels"][0]["breached"], false);
}

#[test]
fn sets_actions_only_when_confirmed() {
    let device = Device::new("ZYMKEY5");
    // No terminal and no --yes: nothing is set, and the warning is there.
    let out = device.tamper(&["--set", "0=notify", "--set", "1=notify+self-destruct"]);
    let shown = text(&out);
    assert!(!out.status.success(), "{shown}");
    assert!(shown.contains("pass --yes"), "{shown}");
    assert!(
        shown.contains("In production mode this is PERMANENT FOR THE DEVICE"),
        "{shown}"
    );
    assert_eq!(device.state()["actions"], serde_json::json!([0, 0]));
    assert!(!device.device_dir().join("tamper.toml").exists());

    let report = device.report(&[
        "--set",
        "0=notify",
        "--set",
        "1=notify+self-destruct",
        "--yes",
    ]);
    assert_eq!(
        report["set"],
        serde_json::json!([
            {"channel": 0, "action": "notify"},
            {"channel": 1, "action": "notify+self-destruct"}
        ])
    );
    assert_eq!(device.state()["actions"], serde_json::json!([1, 3]));
    // The device cannot be asked: the command shows what it set, as its own record.
    let report = device.report(&[]);
    assert_eq!(report["channels"][0]["recorded_action"], "notify");
    assert_eq!(
        report["channels"][1]["recorded_action"],
        "notify+self-destruct"
    );
    let record = std::fs::read_to_string(device.device_dir().join("tamper.toml")).unwrap();
    assert!(
        record.contains(&format!("zymkey_serial = \"{}\"", device.serial())),
        "{record}"
    );
    let shown = text(&device.tamper(&[]));
    assert!(
        shown.contains("action notify+self-destruct, as zkiot set it at "),
        "{shown}"
    );

    // `all` names every channel.
    device.report(&["--set", "all=none", "--yes"]);
    assert_eq!(device.state()["actions"], serde_json::json!([0, 0]));
}

/// Runs the command on a pseudo-terminal (util-linux `script`) and types `answer`.
fn on_a_terminal(device: &Device, args: &[&str], answer: &str) -> Option<Output> {
    let script = Command::new("script").arg("--version").output();
    if !script.is_ok_and(|o| o.status.success()) {
        eprintln!("SKIPPED: no script(1) to give the prompt a terminal");
        return None;
    }
    let mut line = format!("{} device tamper", env!("CARGO_BIN_EXE_zkiot"));
    for arg in args {
        line.push_str(&format!(" '{arg}'"));
    }
    let mut script = Command::new("script");
    device.environment(&mut script, &emulator());
    script
        .args(["-qec", &line, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = script.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let answer = format!("{answer}\n");
    let typist = std::thread::spawn(move || {
        // Typed a little later, as a person would; the terminal keeps what comes early.
        std::thread::sleep(Duration::from_millis(500));
        use std::io::Write;
        let _ = stdin.write_all(answer.as_bytes());
        std::thread::sleep(Duration::from_millis(500));
    });
    let out = child.wait_with_output().unwrap();
    typist.join().unwrap();
    Some(out)
}

#[test]
fn the_prompt_wants_the_serial_number_for_self_destruct() {
    let device = Device::new("HSM60");
    device.tamper(&[]);
    let Some(out) = on_a_terminal(&device, &["--set", "1=self-destruct"], "yes") else {
        return;
    };
    let shown = text(&out);
    assert!(
        shown.contains(&format!("Type {} to confirm", device.serial())),
        "{shown}"
    );
    assert!(shown.contains("not confirmed; no action set"), "{shown}");
    assert_eq!(device.state()["actions"], serde_json::json!([0, 0]));

    let serial = device.serial();
    let out = on_a_terminal(&device, &["--set", "1=self-destruct"], &serial).unwrap();
    let shown = text(&out);
    assert!(
        shown.contains("set       channel 1: self-destruct"),
        "{shown}"
    );
    assert_eq!(device.state()["actions"], serde_json::json!([0, 2]));

    let out = on_a_terminal(&device, &["--set", "0=notify"], "yes").unwrap();
    assert!(
        text(&out).contains("set       channel 0: notify"),
        "{}",
        text(&out)
    );
    assert_eq!(device.state()["actions"], serde_json::json!([1, 2]));
}

#[test]
fn in_production_mode_each_channel_takes_one_setting_and_self_destruct_destroys() {
    // An HSM6 whose binding is locked (the emulator's record of zkLockBinding).
    let device = Device::new("HSM6");
    std::fs::write(
        device.emu().join("tamper.json"),
        r#"{"actions":[0,0],"first_breach":[0,0],"binding_locked":true}"#,
    )
    .unwrap();
    let shown = text(&device.tamper(&[]));
    assert!(
        shown.contains("mode      production (binding locked): a breach of a self-destruct channel destroys every key of this Zymkey, for good"),
        "{shown}"
    );
    let out = device.tamper(&["--set", "0=notify+self-destruct"]);
    let shown = text(&out);
    assert!(!out.status.success());
    assert!(
        shown.contains("Zymbit allows each channel's action to be set only once after the lock"),
        "{shown}"
    );
    assert_eq!(device.report(&[])["production_mode"], true);

    device.report(&["--set", "0=notify+self-destruct", "--yes"]);
    let out = device.tamper(&["--set", "0=notify", "--yes"]);
    let shown = text(&out);
    assert!(!out.status.success(), "{shown}");
    assert!(
        shown.contains("channel 0: the Zymkey refused the action")
            && shown.contains("set only once after the binding is locked"),
        "{shown}"
    );
    assert_eq!(device.state()["actions"], serde_json::json!([3, 0]));

    // The breach destroys every key; the breach itself can still be read.
    device.breach("0", 1_796_000_000);
    let report = device.report(&[]);
    assert_eq!(report["channels"][0]["first_breach"], 1_796_000_000);
    assert_eq!(
        std::fs::read_dir(device.emu().join("keys"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn a_zymkey4i_does_not_say_its_mode() {
    let device = Device::new("ZYMKEY4i");
    let report = device.report(&[]);
    assert_eq!(report["production_mode"], serde_json::Value::Null);
    let shown = text(&device.tamper(&[]));
    assert!(
        shown.contains("mode      unknown: the device does not say (a ZYMKEY4i is in production mode once its lock tab is cut)"),
        "{shown}"
    );
    // Its lock tab cut: self-destruct destroys.
    std::fs::write(device.emu().join("lock-tab-cut"), "").unwrap();
    device.report(&["--set", "1=self-destruct", "--yes"]);
    device.breach("1", 1_796_000_000);
    let report = device.report(&[]);
    assert_eq!(report["channels"][1]["breached"], true);
    assert_eq!(
        std::fs::read_dir(device.emu().join("keys"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn bad_settings_are_refused_before_anything_changes() {
    let device = Device::new("HSM6");
    for (args, says) in [
        (
            vec!["--set", "2=notify", "--yes"],
            "this Zymkey has channels 0 to 1, not 2",
        ),
        (
            vec!["--set", "0=explode", "--yes"],
            "--set 0=explode: \"explode\" is not a perimeter action",
        ),
        (vec!["--set", "notify", "--yes"], "expected CHANNEL=ACTION"),
        (
            vec!["--set", "0=notify", "--set", "all=none", "--yes"],
            "channel 0 is named more than once",
        ),
    ] {
        let out = device.tamper(&args);
        let shown = text(&out);
        assert!(!out.status.success(), "{args:?}: {shown}");
        assert!(shown.contains(says), "{args:?}: {shown}");
    }
    assert!(
        !device.emu().join("tamper.json").exists(),
        "no action was set"
    );
}

#[test]
fn a_library_without_the_perimeter_functions_is_named() {
    // Zymbit's older interface: opens, names the device, and nothing of the perimeter.
    let tmp = tempfile::tempdir().unwrap();
    let source = tmp.path().join("stub.c");
    std::fs::write(
        &source,
        r#"
#include <stdlib.h>
#include <string.h>
int zkOpen(void **ctx) { *ctx = (void *)1; return 0; }
int zkClose(void *ctx) { (void)ctx; return 0; }
static int text(char **out) { *out = strdup("STUB"); return 0; }
int zkGetModelNumberString(void *ctx, char **s) { (void)ctx; return text(s); }
int zkGetSerialNumberString(void *ctx, char **s) { (void)ctx; return text(s); }
int zkGetFirmwareVersionString(void *ctx, char **s) { (void)ctx; return text(s); }
int zkGetRandBytes(void) { return -1; }
int zkGenECDSASigFromDigest(void) { return -1; }
int zkVerifyECDSASigFromDigest(void) { return -1; }
int zkGetECDSAPubKey(void) { return -1; }
int zkGetTime(void) { return -1; }
"#,
    )
    .unwrap();
    let stub = tmp.path().join("libzk_stub.so");
    let cc = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&stub)
        .arg(&source)
        .output()
        .expect("a C compiler (cc)");
    assert!(cc.status.success(), "{}", text(&cc));

    let device = Device::new("HSM6");
    let out = device.command_with(&[], &stub).output().unwrap();
    let shown = text(&out);
    assert!(!out.status.success(), "{shown}");
    assert!(
        shown.contains("zkGetPerimeterDetectInfo is not supported by this Zymkey library")
            && shown.contains("has no perimeter functions"),
        "{shown}"
    );
}
