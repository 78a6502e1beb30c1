//! The device agent's systemd unit and the device package's maintainer scripts, without
//! building the package: `systemd-analyze verify` accepts the unit with no warning (where this
//! machine has it), the unit has the hardening a security daemon should have, and the
//! maintainer scripts, run the way dpkg runs them against a scratch root (`DPKG_ROOT`), enable
//! the unit on installation and leave nothing behind on purge.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn unit_text() -> String {
    std::fs::read_to_string(repo().join("scripts/debian/zkiot-agent.service")).unwrap()
}

/// The unit's `Key=value` settings, in order.
fn settings(unit: &str) -> Vec<(String, String)> {
    unit.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[test]
fn the_unit_is_hardened_and_restarts_on_failure() {
    let unit = unit_text();
    let settings = settings(&unit);
    let get = |key: &str| -> Vec<&str> {
        settings
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    for (key, value) in [
        ("ExecStart", "/usr/bin/zkiot device agent"),
        ("Restart", "on-failure"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("NoNewPrivileges", "yes"),
        ("StateDirectory", "zkiot"),
        ("StateDirectoryMode", "0700"),
        ("ReadWritePaths", "/etc/zkiot/device"),
        ("RuntimeDirectory", "zkiot"),
        ("CapabilityBoundingSet", "CAP_CHOWN"),
        ("SystemCallFilter", "@system-service"),
        (
            "RestrictAddressFamilies",
            "AF_UNIX AF_INET AF_INET6 AF_NETLINK",
        ),
        ("MemoryDenyWriteExecute", "yes"),
        ("WantedBy", "multi-user.target"),
        ("ConditionPathExists", "/etc/zkiot/device/device.toml"),
    ] {
        assert_eq!(get(key), [value], "{key}");
    }
    // Writable: the token's store (StateDirectory), the device folder, /run/zkiot; nothing else.
    assert_eq!(get("ReadWritePaths").len(), 1);
    assert!(
        get("User").is_empty(),
        "root, as the unit's comment explains"
    );
    assert!(unit.contains("dedicated user would see neither"));
}

#[test]
fn systemd_analyze_verify_accepts_the_unit() {
    let Ok(which) = Command::new("sh")
        .args(["-c", "command -v systemd-analyze"])
        .output()
    else {
        return;
    };
    if !which.status.success() {
        eprintln!("systemd-analyze is not on this machine: not verified");
        return;
    }
    // The unit as installed, but starting the zkiot built here (verify checks that
    // ExecStart's program exists).
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("zkiot-agent.service");
    std::fs::write(
        &unit,
        unit_text().replace("/usr/bin/zkiot", env!("CARGO_BIN_EXE_zkiot")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    // Unknown keys and bad values are only warnings to systemd-analyze: none may be printed.
    assert!(said.trim().is_empty(), "{said}");

    // A mistake is seen: the check above is not blind.
    std::fs::write(
        &unit,
        unit_text().replace("ProtectSystem=strict", "ProtectSystem=stricter"),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stderr).trim().is_empty());
}

/// Every path under `root`, sorted.
fn tree(root: &Path) -> Vec<String> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            out.push(path.strip_prefix(root).unwrap().display().to_string());
            if path.is_dir() && !path.is_symlink() {
                walk(&path, root, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

/// Runs a maintainer script as dpkg does, against the scratch root `root`.
fn maintainer_script(root: &Path, script: &str, args: &[&str]) {
    let out = Command::new("sh")
        .arg(repo().join(format!("scripts/debian/zkiot-device.{script}")))
        .args(args)
        .env("DPKG_ROOT", root)
        .env("DPKG_MAINTSCRIPT_PACKAGE", "zkiot-device")
        .env("DPKG_MAINTSCRIPT_NAME", script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_package_enables_the_unit_and_purge_leaves_nothing() {
    if !Path::new("/usr/bin/deb-systemd-helper").exists() {
        eprintln!("no deb-systemd-helper on this machine: the maintainer scripts are not run");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // A system with other units enabled, and a token store written before.
    for folder in [
        "usr/lib/systemd/system",
        "etc/systemd/system/timers.target.wants",
        "var/lib/systemd/deb-systemd-helper-enabled",
    ] {
        std::fs::create_dir_all(root.join(folder)).unwrap();
    }
    std::fs::write(
        root.join("var/lib/systemd/deb-systemd-helper-enabled/fstrim.timer.dsh-also"),
        "",
    )
    .unwrap();
    std::os::unix::fs::symlink(
        "/usr/lib/systemd/system/fstrim.timer",
        root.join("etc/systemd/system/timers.target.wants/fstrim.timer"),
    )
    .unwrap();
    let before = tree(root);
    std::fs::create_dir_all(root.join("var/lib/zkiot")).unwrap();
    std::fs::write(root.join("var/lib/zkiot/0123.sqlite3"), "store").unwrap();

    // dpkg unpacks the unit, then runs postinst.
    let unit = root.join("usr/lib/systemd/system/zkiot-agent.service");
    std::fs::write(&unit, unit_text()).unwrap();
    maintainer_script(root, "postinst", &["configure"]);
    let wants = root.join("etc/systemd/system/multi-user.target.wants/zkiot-agent.service");
    assert_eq!(
        std::fs::read_link(&wants).unwrap(),
        Path::new("/usr/lib/systemd/system/zkiot-agent.service")
    );
    // An upgrade keeps it enabled; one the administrator disabled stays disabled.
    maintainer_script(root, "postinst", &["configure", "0.1.0"]);
    assert!(wants.is_symlink());
    std::fs::remove_file(&wants).unwrap();
    maintainer_script(root, "postinst", &["configure", "0.1.0"]);
    assert!(
        !wants.exists(),
        "re-enabled a unit the administrator disabled"
    );
    maintainer_script(root, "postinst", &["configure"]);

    // Removal: the unit goes (dpkg), masked until the purge; the store stays.
    maintainer_script(root, "prerm", &["remove"]);
    std::fs::remove_file(&unit).unwrap();
    maintainer_script(root, "postrm", &["remove"]);
    assert!(root.join("var/lib/zkiot/0123.sqlite3").exists());
    assert_eq!(
        std::fs::read_link(root.join("etc/systemd/system/zkiot-agent.service")).unwrap(),
        Path::new("/dev/null")
    );

    // Purge: nothing of the package, its enablement or the store is left.
    maintainer_script(root, "postrm", &["purge"]);
    assert_eq!(tree(root), before);
}
