//! `zkiot device check`: is this device set up to work, in the manner of `aziotctl check`.
//!
//! Every check has a name, a status (`ok`, `warn`, `fail`, `skip` when what it needs failed
//! before it) and, when it does not pass, a hint that says what to do. `--json` prints the same
//! for machines. The command exits non-zero when any check fails; warnings do not fail it.
//!
//! Device operations: the Zymkey's serial number and clock are read straight from Zymbit's
//! library (open, serial, time); the token's side comes from the module's device cache.

use std::net::ToSocketAddrs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Result};
use serde::Serialize;
use time::OffsetDateTime;

use super::agent::schedule::{jitter_of, Validity, DEFAULT_SHARE};
use super::certificate::check_device_certificate;
use super::cli::CheckArgs;
use super::config::{DeviceConfig, CA_FILE};
use super::net::http::Endpoint;
use super::selftest::configured_library;
use super::settings::DeviceSettings;
use crate::p11::{P11Key, P11Token};
use crate::x509::{read_certificate, verify_chain};
use crate::GlobalOpts;

/// The systemd unit of the agent.
pub const AGENT_UNIT: &str = "zkiot-agent.service";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
    Skip,
}

/// One check's result.
#[derive(Debug, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub detail: String,
    /// What to do about it, when it did not pass.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

#[derive(Default)]
struct Checks(Vec<Check>);

impl Checks {
    fn ok(&mut self, name: &'static str, detail: impl Into<String>) {
        self.push(name, Status::Ok, detail.into(), None);
    }

    fn warn(&mut self, name: &'static str, detail: impl Into<String>, hint: impl Into<String>) {
        self.push(name, Status::Warn, detail.into(), Some(hint.into()));
    }

    fn fail(&mut self, name: &'static str, detail: impl Into<String>, hint: impl Into<String>) {
        self.push(name, Status::Fail, detail.into(), Some(hint.into()));
    }

    fn skip(&mut self, name: &'static str, because: &str) {
        self.push(name, Status::Skip, format!("not checked: {because}"), None);
    }

    fn push(&mut self, name: &'static str, status: Status, detail: String, hint: Option<String>) {
        self.0.push(Check {
            name,
            status,
            detail,
            hint,
        });
    }
}

/// Runs every check and prints them; fails when one failed.
pub(crate) fn run(args: CheckArgs, global: &GlobalOpts) -> Result<()> {
    let library = args.library.clone().unwrap_or_else(configured_library);
    let checks = check(&args, &library, global);
    let failed = checks.iter().filter(|c| c.status == Status::Fail).count();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&checks)?);
    } else {
        for c in &checks {
            let tag = match c.status {
                Status::Ok => "[ok]  ",
                Status::Warn => "[warn]",
                Status::Fail => "[FAIL]",
                Status::Skip => "[skip]",
            };
            println!("{tag} {}: {}", c.name, c.detail);
            if let Some(hint) = &c.hint {
                println!("       hint: {hint}");
            }
        }
        let count = |s: Status| checks.iter().filter(|c| c.status == s).count();
        println!(
            "{} checks: {} ok, {} warnings, {failed} failed, {} skipped",
            checks.len(),
            count(Status::Ok),
            count(Status::Warn),
            count(Status::Skip)
        );
    }
    if failed > 0 {
        bail!("device check: {failed} of {} checks failed", checks.len());
    }
    Ok(())
}

fn check(args: &CheckArgs, library: &Path, global: &GlobalOpts) -> Vec<Check> {
    let mut c = Checks::default();

    // The Zymkey library, and the device straight through it.
    let zymkey = match zymkey::Zymkey::load(library) {
        Ok(z) => {
            c.ok("zymkey-library", format!("{} loaded", library.display()));
            Some(z)
        }
        Err(e) => {
            c.fail(
                "zymkey-library",
                format!("{}: {e}", library.display()),
                "install Zymbit's software (zkapputilslib provides /usr/lib/libzk_app_utils.so), \
                 or point ZKIOT_ZKLIB or `zklib` in the zkiot configuration at the library",
            );
            None
        }
    };

    // The module, its registration, the token and the key.
    let module_loads = match cryptoki::context::Pkcs11::new(&global.module) {
        Ok(_) => {
            c.ok(
                "pkcs11-module",
                format!("{} loads", global.module.display()),
            );
            true
        }
        Err(e) => {
            c.fail(
                "pkcs11-module",
                format!("{}: {e}", global.module.display()),
                "install the zkiot-device package (or scripts/install-module.sh), or point \
                 --module / ZKIOT_PKCS11_MODULE at libzkpkcs11.so",
            );
            false
        }
    };
    match p11_kit_registration(&p11_kit_folders()) {
        Some(file) => c.ok("p11-kit-registration", format!("{}", file.display())),
        None => c.fail(
            "p11-kit-registration",
            "no p11-kit module file names libzkpkcs11.so",
            "install the zkiot-device package, or run scripts/install-module.sh: openssl, curl \
             and GnuTLS find the token through p11-kit",
        ),
    }
    let settings = DeviceSettings::resolve(&args.connection, global);
    let labels = match &settings {
        Ok(s) => s.labels(),
        Err(_) => super::labels::Labels::of(global, args.connection.key_label.as_deref()),
    };
    let token: Option<(P11Token, P11Key)> = match (module_loads, labels) {
        (false, _) => {
            c.skip("token", "the module does not load");
            None
        }
        (true, Err(e)) => {
            c.fail(
                "token",
                format!("{e:#}"),
                "fix the zkiot configuration (ZKIOT_CONF)",
            );
            None
        }
        (true, Ok(labels)) => match labels.open(global) {
            Ok((token, key)) => {
                c.ok(
                    "token",
                    format!(
                        "token {:?} ({} {}, serial {}), key {:?}",
                        token.label(),
                        token.manufacturer(),
                        token.model(),
                        token.serial_number(),
                        key.label
                    ),
                );
                Some((token, key))
            }
            Err(e) => {
                c.fail(
                    "token",
                    format!("{e:#}"),
                    "`pkcs11-tool --module … -L -O` shows what the module sees; \
                     `zkiot device selftest` checks the library and the device",
                );
                None
            }
        },
    };
    device_cache(&mut c, zymkey.as_ref(), token.as_ref().map(|(t, _)| t));

    // The device folder, the certificate and its CA.
    let settings = match settings {
        Ok(s) => {
            c.ok(
                "device-config",
                format!(
                    "{}: thing {}, endpoint {}, role alias {}",
                    s.dir.display(),
                    s.request.thing,
                    s.request.endpoint,
                    s.request.role_alias
                ),
            );
            Some(s)
        }
        Err(e) => {
            c.fail(
                "device-config",
                format!("{e:#}"),
                "run `zkiot device install-cert --cert … --ca … --endpoint … --role-alias …`",
            );
            None
        }
    };
    certificate(&mut c, settings.as_ref(), token.as_ref());
    clock(&mut c, zymkey.as_ref(), args.max_clock_skew);
    perimeter(&mut c, zymkey.as_ref());
    endpoints(&mut c, settings.as_ref());
    agent_service(&mut c);
    c.0
}

/// The folders p11-kit reads module files from: the package's and the administrator's, and
/// for a user other than root (p11-kit ignores it for root) `~/.config/pkcs11/modules`.
fn p11_kit_folders() -> Vec<PathBuf> {
    let mut folders = vec![
        PathBuf::from("/usr/share/p11-kit/modules"),
        PathBuf::from("/etc/pkcs11/modules"),
    ];
    if let (false, Some(home)) = (super::config::running_as_root(), std::env::var_os("HOME")) {
        folders.push(Path::new(&home).join(".config/pkcs11/modules"));
    }
    folders
}

/// The first module file in `folders` that names libzkpkcs11.so, if any.
fn p11_kit_registration(folders: &[PathBuf]) -> Option<PathBuf> {
    folders.iter().find_map(|folder| {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(folder)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "module"))
            .collect();
        entries.sort();
        entries.into_iter().find(|path| {
            std::fs::read_to_string(path).is_ok_and(|text| {
                text.lines().any(|l| {
                    l.trim()
                        .strip_prefix("module:")
                        .is_some_and(|m| m.trim().ends_with("libzkpkcs11.so"))
                })
            })
        })
    })
}

/// The token's serial number (from the module's device cache) against the device's.
fn device_cache(c: &mut Checks, zymkey: Option<&zymkey::Zymkey>, token: Option<&P11Token>) {
    let (Some(zymkey), Some(token)) = (zymkey, token) else {
        c.skip("device-cache", "needs the Zymkey library and the token");
        return;
    };
    let cache = zkconf::Config::discover(None)
        .ok()
        .and_then(|config| config.device_cache_path())
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "the module's device cache".into());
    match zymkey.serial_number() {
        Ok(serial) if serial.trim() == token.serial_number() => c.ok(
            "device-cache",
            format!(
                "the token shows the Zymkey's serial number {}",
                serial.trim()
            ),
        ),
        Ok(serial) => c.fail(
            "device-cache",
            format!(
                "the token shows serial number {} but the Zymkey is {}",
                token.serial_number(),
                serial.trim()
            ),
            format!("delete {cache}: the module then reads the device again"),
        ),
        Err(e) => c.fail(
            "device-cache",
            format!("cannot read the Zymkey's serial number: {e}"),
            "check that zkifc runs (systemctl status zkifc) and the Zymkey's LED blinks once \
             every 3 seconds",
        ),
    }
}

fn certificate(
    c: &mut Checks,
    settings: Option<&DeviceSettings>,
    token: Option<&(P11Token, P11Key)>,
) {
    let Some(settings) = settings else {
        for name in [
            "certificate-key",
            "certificate-chain",
            "certificate-lifetime",
            "certificate-on-token",
        ] {
            c.skip(name, "no device configuration");
        }
        return;
    };
    let cert = &settings.cert;
    let path = settings.cert_path.display();
    match token {
        Some((_, key)) => match check_device_certificate(cert, key, None) {
            Ok(()) => c.ok("certificate-key", format!("{path} is for key {:?}", key.label)),
            Err(e) => c.fail(
                "certificate-key",
                format!("{path}: {e:#}"),
                "install the certificate issued for this token's key (`zkiot device install-cert --force`)",
            ),
        },
        None => c.skip("certificate-key", "the token did not open"),
    }
    let ca_path = settings
        .config
        .ca
        .as_ref()
        .map(|p| DeviceConfig::resolve(&settings.dir, p))
        .unwrap_or_else(|| settings.dir.join(CA_FILE));
    match read_certificate(&ca_path).and_then(|ca| verify_chain(cert, &ca)) {
        Ok(()) => c.ok(
            "certificate-chain",
            format!("{path} chains to {}", ca_path.display()),
        ),
        Err(e) => c.fail(
            "certificate-chain",
            format!("{e:#}"),
            "install the fleet CA that issued the certificate (`zkiot device install-cert --ca`)",
        ),
    }
    lifetime(c, settings);
    match token {
        Some((token, key)) => match (
            token.certificates_with_id(&key.id),
            cert.to_der().map_err(anyhow::Error::from),
        ) {
            (Ok(on_token), Ok(der)) if on_token.contains(&der) => c.ok(
                "certificate-on-token",
                "the token holds the same certificate for the key",
            ),
            (Ok(_), Ok(_)) => c.warn(
                "certificate-on-token",
                format!("the token holds no copy of {path} for key {:?}", key.label),
                "`zkiot device install-cert --cert … --ca …` stores it (clients that take the \
                 certificate from the token, pkcs11:…;type=cert, need it)",
            ),
            (Err(e), _) | (_, Err(e)) => c.warn(
                "certificate-on-token",
                format!("{e:#}"),
                "`pkcs11-tool --module … -O` lists the token's objects",
            ),
        },
        None => c.skip("certificate-on-token", "the token did not open"),
    }
}

fn lifetime(c: &mut Checks, settings: &DeviceSettings) {
    let cert = &settings.cert;
    let (validity, jitter) = match (Validity::of(cert), jitter_of(cert)) {
        (Ok(v), Ok(j)) => (v, j),
        (Err(e), _) | (_, Err(e)) => {
            c.fail(
                "certificate-lifetime",
                format!("{e:#}"),
                "install a valid certificate",
            );
            return;
        }
    };
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let days = |seconds: i64| seconds as f64 / 86_400.0;
    let share = settings
        .config
        .renew_at
        .as_deref()
        .and_then(|t| super::agent::schedule::parse_share(t).ok())
        .unwrap_or(DEFAULT_SHARE);
    let renew_at = validity.renewal_time(share, jitter);
    if now >= validity.not_after {
        c.fail(
            "certificate-lifetime",
            format!("expired {:.1} days ago", days(now - validity.not_after)),
            "the device cannot get credentials: the operator issues a new certificate \
             (`zkiot ca sign`, `zkiot aws register-device`) and the device installs it",
        );
    } else if now < validity.not_before {
        c.fail(
            "certificate-lifetime",
            format!(
                "not valid for {:.1} more days",
                days(validity.not_before - now)
            ),
            "check the clock (see the clock check)",
        );
    } else if now >= renew_at {
        c.warn(
            "certificate-lifetime",
            format!(
                "{:.1} days left; renewal due since {:.1} days",
                days(validity.not_after - now),
                days(now - renew_at)
            ),
            format!(
                "the agent picks up the certificate the operator renews (`zkiot fleet renew`): \
                 check `systemctl status {AGENT_UNIT}` and that the operator's renewal runs"
            ),
        );
    } else {
        c.ok(
            "certificate-lifetime",
            format!(
                "{:.1} days left; renewal in {:.1} days",
                days(validity.not_after - now),
                days(renew_at - now)
            ),
        );
    }
}

fn clock(c: &mut Checks, zymkey: Option<&zymkey::Zymkey>, max_skew: u64) {
    let Some(zymkey) = zymkey else {
        c.skip("clock", "needs the Zymkey library");
        return;
    };
    let now = OffsetDateTime::now_utc().unix_timestamp();
    match zymkey.time(false) {
        Ok(device) => {
            let skew = now - i64::from(device);
            if skew.unsigned_abs() <= max_skew {
                c.ok("clock", format!("{skew:+} s from the Zymkey's clock"));
            } else {
                c.fail(
                    "clock",
                    format!("this machine's clock is {skew:+} s from the Zymkey's"),
                    "a wrong clock makes certificates look expired or not yet valid: check NTP \
                     (`timedatectl status`); the Zymkey keeps time across power loss while its \
                     battery lasts",
                );
            }
        }
        Err(e) => c.fail(
            "clock",
            format!("cannot read the Zymkey's clock: {e}"),
            "check that zkifc runs (systemctl status zkifc)",
        ),
    }
}

/// The breaches the Zymkey latched: none is fine; one is a warning until the operator has
/// dealt with it (the agent reports it, `aws sweep` silences the device).
fn perimeter(c: &mut Checks, zymkey: Option<&zymkey::Zymkey>) {
    let Some(zymkey) = zymkey else {
        c.skip("perimeter", "needs the Zymkey library");
        return;
    };
    match zymkey.perimeter_events() {
        Ok(events) => match super::report::tamper_value(&events) {
            None => c.ok(
                "perimeter",
                format!("no breach latched on its {} channels", events.channels()),
            ),
            Some(breaches) => c.warn(
                "perimeter",
                format!("breach latched: {breaches} (channel@first breach, UTC)"),
                "the device agent reports it on the device's Thing and `zkiot aws sweep` \
                 silences the device; once the device is dealt with, `zkiot device tamper \
                 --clear` rearms the channels",
            ),
        },
        Err(e @ zymkey::Error::Unsupported { .. }) => c.skip(
            "perimeter",
            &format!("the library has no perimeter functions ({e})"),
        ),
        Err(e) => c.fail(
            "perimeter",
            format!("cannot read the latched breaches: {e}"),
            "check that zkifc runs (systemctl status zkifc)",
        ),
    }
}

fn endpoints(c: &mut Checks, settings: Option<&DeviceSettings>) {
    let Some(settings) = settings else {
        c.skip("endpoint-credentials", "no device configuration");
        c.skip("endpoint-iot-api", "no device configuration");
        return;
    };
    let request = &settings.request;
    let (target, via) = match &request.connect {
        Some(addr) => (addr.clone(), format!(" (connecting to {addr})")),
        None => (
            format!("{}:{}", request.target.host, request.target.port),
            String::new(),
        ),
    };
    resolves(
        c,
        "endpoint-credentials",
        &target,
        &format!("{}{via}", request.endpoint),
        "check DNS (/etc/resolv.conf) and the endpoint in device.toml \
         (`aws iot describe-endpoint --endpoint-type iot:CredentialProvider`)",
    );
    match &settings.iot {
        Some(iot) => match Endpoint::url(&iot.url, "AWS IoT API endpoint") {
            Ok(e) => resolves(
                c,
                "endpoint-iot-api",
                &format!("{}:{}", e.host, e.port),
                &iot.url,
                "check DNS, and iot_api in device.toml (renewal and the agent's reports call \
                 AWS IoT there)",
            ),
            Err(e) => c.fail(
                "endpoint-iot-api",
                format!("{e:#}"),
                "fix iot_api in device.toml",
            ),
        },
        None => c.warn(
            "endpoint-iot-api",
            "no region known: no renewal, and no reports of breaches or heartbeats",
            "set iot_api and region in device.toml so the device can pick up renewed \
             certificates and report to its Thing",
        ),
    }
}

fn resolves(c: &mut Checks, name: &'static str, target: &str, shown: &str, hint: &str) {
    match target.to_socket_addrs().map(|a| a.count()) {
        Ok(n) if n > 0 => c.ok(name, format!("{shown} resolves ({n} addresses)")),
        Ok(_) => c.fail(name, format!("{shown} resolves to no address"), hint),
        Err(e) => c.fail(name, format!("{shown} does not resolve: {e}"), hint),
    }
}

fn agent_service(c: &mut Checks) {
    if !Path::new("/run/systemd/system").is_dir() {
        c.skip("agent-service", "systemd is not running here");
        return;
    }
    let ask = |what: &str| -> Option<String> {
        let out = Command::new("systemctl")
            .args([what, AGENT_UNIT])
            .output()
            .ok()?;
        Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let (Some(enabled), Some(active)) = (ask("is-enabled"), ask("is-active")) else {
        c.skip("agent-service", "systemctl did not answer");
        return;
    };
    let detail = format!("{AGENT_UNIT}: {enabled}, {active}");
    let logs = format!("`journalctl -u {AGENT_UNIT}` says why");
    match active.as_str() {
        "active" => c.ok("agent-service", detail),
        "failed" => c.fail("agent-service", detail, logs),
        _ if enabled == "enabled" => c.warn(
            "agent-service",
            detail,
            format!("`systemctl start {AGENT_UNIT}`; {logs}"),
        ),
        _ => c.warn(
            "agent-service",
            detail,
            format!(
                "`systemctl enable --now {AGENT_UNIT}`: without the agent, only a device that \
                 calls `zkiot device credentials` picks up renewed certificates"
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_module_file_that_names_the_module() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().to_path_buf();
        assert_eq!(p11_kit_registration(std::slice::from_ref(&folder)), None);
        std::fs::write(folder.join("other.module"), "module: libsofthsm2.so\n").unwrap();
        std::fs::write(folder.join("zkiot.txt"), "module: libzkpkcs11.so\n").unwrap();
        assert_eq!(p11_kit_registration(std::slice::from_ref(&folder)), None);
        std::fs::write(
            folder.join("zkiot.module"),
            "# zkiot\nmodule: /usr/local/lib/zkiot/libzkpkcs11.so\n",
        )
        .unwrap();
        assert_eq!(
            p11_kit_registration(&[dir.path().join("missing"), folder.clone()]),
            Some(folder.join("zkiot.module"))
        );
    }
}
