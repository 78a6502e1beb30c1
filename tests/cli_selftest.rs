//! `zkiot device selftest` through the built binary: passes on both emulated models, and fails,
//! saying why, with an injected device fault and with a library that lacks a required function.
//!
//! Needs `libzkpkcs11.so` and `libzkemu.so` beside the binary: `cargo build --workspace`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A fresh emulated Zymkey of `model`, its trace, and a token store of its own.
struct Device {
    tmp: tempfile::TempDir,
}

impl Device {
    fn new(model: &str) -> Device {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("emu")).unwrap();
        std::fs::write(
            tmp.path().join("zkiot.toml"),
            format!(
                "store = \"{}\"\n",
                tmp.path().join("store.sqlite3").display()
            ),
        )
        .unwrap();
        std::fs::write(tmp.path().join("model"), model).unwrap();
        Device { tmp }
    }

    fn emu_dir(&self) -> PathBuf {
        self.tmp.path().join("emu")
    }

    fn selftest(&self, extra: &[&str], zklib: &Path) -> Output {
        let model = std::fs::read_to_string(self.tmp.path().join("model")).unwrap();
        Command::new(env!("CARGO_BIN_EXE_zkiot"))
            .args(["--module"])
            .arg(testkit::built::module())
            .args(["device", "selftest"])
            .args(extra)
            .env("ZKIOT_ZKLIB", zklib)
            .env("ZKIOT_EMU_DIR", self.emu_dir())
            .env("ZKIOT_EMU_MODEL", model)
            .env("ZKIOT_EMU_TRACE", self.tmp.path().join("trace"))
            .env("ZKIOT_CONF", self.tmp.path().join("zkiot.toml"))
            .env_remove("ZKIOT_PIN")
            .output()
            .unwrap()
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn passes_on(model: &str, slots: &[i32]) {
    let device = Device::new(model);
    let emulator = testkit::built::emulator();
    let out = device.selftest(&[], &emulator);
    let report = text(&out);
    assert!(out.status.success(), "{model}: {report}");
    assert!(report.contains(&format!("model {model}")), "{report}");
    assert!(!report.contains("MISMATCH"), "{report}");
    assert!(report.contains("result    ok"), "{report}");
    assert!(
        report.contains("verifies with the token's public key object: yes"),
        "{report}"
    );

    let out = device.selftest(&["--json"], &emulator);
    assert!(out.status.success(), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["device"]["model"], model);
    assert_eq!(json["library"]["path"], emulator.to_str().unwrap());
    assert_eq!(json["problems"].as_array().unwrap().len(), 0);
    let tested: Vec<i64> = json["device"]["slots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["slot"].as_i64().unwrap())
        .collect();
    assert_eq!(
        tested,
        slots.iter().map(|&s| i64::from(s)).collect::<Vec<_>>()
    );
    for slot in json["device"]["slots"].as_array().unwrap() {
        assert_eq!(slot["curve"], "P-256", "{slot}");
        assert_eq!(slot["public_key_len"], 64, "{slot}");
        assert_eq!(slot["public_key_format"], "raw X||Y", "{slot}");
        assert_eq!(slot["signature_len"], 64, "{slot}");
        assert_eq!(slot["signature_verifies"], true, "{slot}");
        assert_eq!(slot["device_verifies"], true, "{slot}");
    }
    assert_eq!(json["pkcs11"]["signature_verifies"], true);
    assert_eq!(json["pkcs11"]["same_key_as_device"], true);
    let ops: Vec<&str> = json["operations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    for op in [
        "zkOpen, zkGetModelNumberString",
        "zkGetRandBytes",
        "zkGetTime",
        "C_Sign (CKM_ECDSA)",
    ] {
        assert!(ops.contains(&op), "{op} not timed: {ops:?}");
    }
}

#[test]
fn passes_on_zymkey4i() {
    // Its three factory slots.
    passes_on("ZYMKEY4i", &[0, 1, 2]);
}

#[test]
fn passes_on_hsm6() {
    // The HSM6 lists its twelve factory slots.
    passes_on("HSM6", &(0..12).collect::<Vec<_>>());
}

impl Device {
    /// pkcs11-tool over the built module and this device.
    fn pkcs11_tool(&self, args: &[&str]) -> Output {
        let model = std::fs::read_to_string(self.tmp.path().join("model")).unwrap();
        Command::new("pkcs11-tool")
            .arg("--module")
            .arg(testkit::built::module())
            .args(args)
            .env("ZKIOT_ZKLIB", testkit::built::emulator())
            .env("ZKIOT_EMU_DIR", self.emu_dir())
            .env("ZKIOT_EMU_MODEL", model)
            .env("ZKIOT_CONF", self.tmp.path().join("zkiot.toml"))
            .output()
            .expect("pkcs11-tool (OpenSC)")
    }
}

#[test]
fn reports_curves_pools_ed25519_and_what_the_module_concluded() {
    let device = Device::new("HSM6");
    let made = device.pkcs11_tool(&[
        "--keypairgen",
        "--key-type",
        "EC:secp256k1",
        "--label",
        "wallet",
    ]);
    assert!(made.status.success(), "{}", text(&made));
    let out = device.selftest(&["--json", "--ed25519"], &testkit::built::emulator());
    assert!(out.status.success(), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let d = &json["device"];
    assert_eq!(d["key_slots"], 512);
    assert_eq!(d["foreign_slots"], 128);
    let slot16 = d["slots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["slot"] == 16)
        .expect("the generated key's slot is tested");
    assert_eq!(slot16["curve"], "secp256k1");
    assert_eq!(slot16["signature_verifies"], true);
    let finding = d["ed25519"].as_str().unwrap();
    assert!(
        finding.starts_with("slot 17: the device refuses to sign"),
        "{finding}"
    );
    assert!(
        !device.emu_dir().join("keys/slot-17.pem").exists(),
        "the temporary Ed25519 key is removed"
    );
    let m = &json["pkcs11"];
    assert_eq!(m["key_generation"], true);
    let shown = m["slots_shown"].as_array().unwrap();
    assert!(
        shown.contains(&serde_json::json!([16, "secp256k1"])),
        "{shown:?}"
    );
    assert!(
        shown.contains(&serde_json::json!([0, "P-256"])),
        "{shown:?}"
    );
    let text_report = text(&device.selftest(&[], &testkit::built::emulator()));
    assert!(
        text_report.contains("pool      key store 512 slots; foreign keyring 128 slots (0 in use)"),
        "{text_report}"
    );
    assert!(
        text_report.contains("module    key generation offered: yes; slots shown: 0 P-256"),
        "{text_report}"
    );

    let device = Device::new("ZYMKEY4i");
    let out = device.selftest(&["--json", "--ed25519"], &testkit::built::emulator());
    assert!(out.status.success(), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["device"]["key_slots"], 3);
    assert_eq!(json["pkcs11"]["key_generation"], false);
    assert!(json["device"]["ed25519"]
        .as_str()
        .unwrap()
        .starts_with("not checked"));
}

#[test]
fn fails_on_a_device_fault() {
    let device = Device::new("ZYMKEY4i");
    std::fs::write(device.emu_dir().join("fail-next"), "sign\n").unwrap();
    let out = device.selftest(&[], &testkit::built::emulator());
    let report = text(&out);
    assert!(!out.status.success(), "{report}");
    assert!(
        report.contains("MISMATCH  zkGenECDSASigFromDigest slot 0 failed"),
        "{report}"
    );
    assert!(
        report.contains("result    FAILED: 1 problem(s)"),
        "{report}"
    );
}

#[test]
fn fails_on_a_library_lacking_a_required_function() {
    // Zymbit's interface less zkGenECDSASigFromDigest.
    let tmp = tempfile::tempdir().unwrap();
    let source = tmp.path().join("stub.c");
    let functions = [
        "zkOpen",
        "zkClose",
        "zkGetRandBytes",
        "zkVerifyECDSASigFromDigest",
        "zkGetECDSAPubKey",
        "zkGetModelNumberString",
        "zkGetFirmwareVersionString",
        "zkGetSerialNumberString",
        "zkGetTime",
    ];
    let body: String = functions
        .iter()
        .map(|f| format!("int {f}(void) {{ return -1; }}\n"))
        .collect();
    std::fs::write(&source, body).unwrap();
    let stub = tmp.path().join("libzk_stub.so");
    let cc = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&stub)
        .arg(&source)
        .output()
        .expect("a C compiler (cc)");
    assert!(cc.status.success(), "{}", text(&cc));

    let device = Device::new("ZYMKEY4i");
    let out = device.selftest(&[], &stub);
    let report = text(&out);
    assert!(!out.status.success(), "{report}");
    assert!(report.contains("NOT loaded"), "{report}");
    assert!(
        report.contains("MISMATCH  load library failed")
            && report.contains("zkGenECDSASigFromDigest"),
        "{report}"
    );
}
