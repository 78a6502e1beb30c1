//! The zkiot configuration, one for the PKCS#11 module and the `zkiot`
//! tool: optional, TOML.
//!
//! Where it comes from, first match wins:
//! 1. for the module, `C_Initialize`'s `pReserved` (a NUL-terminated
//!    string): TOML text when it holds a `=` or a newline, otherwise the
//!    path of a TOML file;
//! 2. the file named by `ZKIOT_CONF`;
//! 3. `/etc/zkiot/zkiot.toml` if it exists;
//! 4. nothing: every key has a default.
//!
//! The tool logs in to a token that requires it with `$ZKIOT_PIN`, else
//! the `pin` of this configuration ([`login_pin`]), and looks for the token
//! and the device key by the labels the module gives them
//! ([`Config::token_label`], [`Config::key_label`]), so both read the PIN
//! and the labels from the same place. The tool also keeps its own files in
//! the folder of [`data_dir`], where the module keeps its store by default.
//!
//! ```toml
//! zklib = "/usr/lib/libzk_app_utils.so"   # ZKIOT_ZKLIB overrides it
//! token_label = "zymkey"
//! store = "/var/lib/zkiot/token.sqlite3"
//! pin = "1234"                   # optional user PIN; no PIN by default
//! log_level = "warn"             # ZKIOT_LOG overrides it
//! log_file = "/var/log/zkiot-pkcs11.log"
//! expose_non_ecdsa_keys = false  # Ed25519/X25519 slots (hidden by default)
//! [labels]
//! 0 = "device"                   # CKA_LABEL of device slot 0 (default "slot0")
//! ```

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Environment variable naming the configuration file.
pub const CONFIG_ENV: &str = "ZKIOT_CONF";
/// Configuration file read when `ZKIOT_CONF` is unset and it exists.
pub const SYSTEM_CONFIG: &str = "/etc/zkiot/zkiot.toml";
/// Environment variable that sets the module's log filter (`warn`, `debug`, …).
pub const LOG_ENV: &str = "ZKIOT_LOG";
/// Environment variable with the user PIN the tool logs in with; it
/// overrides the configuration's `pin`.
pub const PIN_ENV: &str = "ZKIOT_PIN";
/// Default token label.
pub const DEFAULT_TOKEN_LABEL: &str = "zymkey";
/// Device slot of the device key: the factory key in slot 0.
pub const DEVICE_KEY_SLOT: u32 = 0;
/// Folder of the module's store when it runs as root.
pub const SYSTEM_DATA_DIR: &str = "/var/lib/zkiot";

#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Path of Zymbit's library (or the emulator).
    pub zklib: Option<PathBuf>,
    pub token_label: Option<String>,
    /// Path of the token's object store.
    pub store: Option<PathBuf>,
    /// The user PIN; when unset the token needs no login.
    pub pin: Option<String>,
    pub log_level: Option<String>,
    pub log_file: Option<PathBuf>,
    /// CKA_LABEL per device slot number.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Show Ed25519/X25519 key slots (libp11 0.4.12 fails on unknown key types).
    #[serde(default)]
    pub expose_non_ecdsa_keys: bool,
    /// Where this configuration was read from, for messages.
    #[serde(skip)]
    pub source: Option<String>,
    /// The process runs as root (effective uid 0): the default store is
    /// then system-wide. Set by the caller, which knows the process.
    #[serde(skip)]
    pub system_wide: bool,
}

/// Shows everything but the PIN.
impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("zklib", &self.zklib)
            .field("token_label", &self.token_label)
            .field("store", &self.store)
            .field("pin", &self.pin.as_ref().map(|_| "(set)"))
            .field("log_level", &self.log_level)
            .field("log_file", &self.log_file)
            .field("labels", &self.labels)
            .field("expose_non_ecdsa_keys", &self.expose_non_ecdsa_keys)
            .field("source", &self.source)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration file {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("invalid configuration in {source_name}: {reason}")]
    Parse { source_name: String, reason: String },
    #[error("{name} is not UTF-8")]
    NotUnicode { name: &'static str },
}

impl Config {
    /// Parses TOML text; `source_name` names it in error messages.
    pub fn parse(text: &str, source_name: &str) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            source_name: source_name.to_string(),
            // The message and line only: toml's full text quotes the line,
            // which could hold the PIN.
            reason: match e.span() {
                Some(span) => format!(
                    "line {}: {}",
                    text[..span.start.min(text.len())].matches('\n').count() + 1,
                    e.message()
                ),
                None => e.message().to_string(),
            },
        })?;
        for (slot, label) in &config.labels {
            if slot.parse::<u32>().is_err() {
                return Err(ConfigError::Parse {
                    source_name: source_name.to_string(),
                    reason: format!("[labels] key {slot:?} is not a slot number"),
                });
            }
            if label.is_empty() {
                return Err(ConfigError::Parse {
                    source_name: source_name.to_string(),
                    reason: format!("[labels] label of slot {slot} is empty"),
                });
            }
        }
        config.source = Some(source_name.to_string());
        Ok(config)
    }

    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Config::parse(&text, &path.display().to_string())
    }

    /// Finds the configuration: `init_arg` (from `pReserved`), else
    /// `ZKIOT_CONF`, else the system file, else defaults.
    pub fn discover(init_arg: Option<&str>) -> Result<Config, ConfigError> {
        discover_in(
            init_arg,
            std::env::var_os(CONFIG_ENV).as_deref(),
            Path::new(SYSTEM_CONFIG),
        )
    }

    /// A PIN guards the token: private objects need a login.
    pub fn login_required(&self) -> bool {
        self.pin.is_some()
    }

    pub fn token_label(&self) -> &str {
        self.token_label
            .as_deref()
            .filter(|l| !l.is_empty())
            .unwrap_or(DEFAULT_TOKEN_LABEL)
    }

    /// The configured label of a device slot, if any.
    pub fn slot_label(&self, slot: u32) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k.parse::<u32>().ok() == Some(slot))
            .map(|(_, v)| v.as_str())
    }

    /// The label of the key in device slot `slot`: its `[labels]` entry,
    /// else [`default_key_label`].
    pub fn key_label(&self, slot: u32) -> String {
        self.slot_label(slot)
            .map(str::to_string)
            .unwrap_or_else(|| default_key_label(slot))
    }

    /// The log filter: `ZKIOT_LOG`, else `log_level`, else `warn`.
    pub fn log_filter(&self) -> String {
        std::env::var(LOG_ENV)
            .ok()
            .filter(|v| !v.is_empty())
            .or_else(|| self.log_level.clone())
            .unwrap_or_else(|| "warn".to_string())
    }

    /// The store path: `store`, else a per-device file in the store folder.
    pub fn store_path(&self, device_serial: &str) -> Option<PathBuf> {
        if let Some(p) = &self.store {
            return Some(p.clone());
        }
        let file = format!("{}.sqlite3", file_safe(device_serial));
        Some(self.store_dir()?.join(file))
    }

    /// Where the device's information is cached between processes
    /// (by the module): beside the configured store (its name and
    /// `.device.toml`), else `device.toml` beside the per-device stores.
    pub fn device_cache_path(&self) -> Option<PathBuf> {
        if let Some(p) = &self.store {
            let mut name = p.file_name()?.to_os_string();
            name.push(".device.toml");
            return Some(p.with_file_name(name));
        }
        Some(self.store_dir()?.join("device.toml"))
    }

    /// The directory of the per-device stores: [`SYSTEM_DATA_DIR`] for
    /// root, [`data_dir`] otherwise.
    fn store_dir(&self) -> Option<PathBuf> {
        if self.system_wide {
            return Some(PathBuf::from(SYSTEM_DATA_DIR));
        }
        data_dir()
    }
}

/// The label of the key in device slot `slot` when `[labels]` names none:
/// `slot{N}`.
pub fn default_key_label(slot: u32) -> String {
    format!("slot{slot}")
}

/// [`Config::discover`] with the environment and the system file given.
fn discover_in(
    init_arg: Option<&str>,
    config_env: Option<&OsStr>,
    system: &Path,
) -> Result<Config, ConfigError> {
    if let Some(arg) = init_arg.map(str::trim).filter(|a| !a.is_empty()) {
        return if is_inline(arg) {
            Config::parse(arg, "C_Initialize pReserved")
        } else {
            Config::from_file(Path::new(arg))
        };
    }
    if let Some(path) = config_env.filter(|p| !p.is_empty()) {
        return Config::from_file(Path::new(path));
    }
    if system.exists() {
        return Config::from_file(system);
    }
    Ok(Config::default())
}

/// The user PIN a client of the token logs in with: `$ZKIOT_PIN`, else
/// `pin` in the configuration the module reads ([`Config::discover`]).
pub fn login_pin() -> Result<Option<String>, ConfigError> {
    if let Some(pin) = std::env::var_os(PIN_ENV) {
        return pin
            .into_string()
            .map(Some)
            .map_err(|_| ConfigError::NotUnicode { name: PIN_ENV });
    }
    Ok(Config::discover(None)?.pin)
}

/// The user's zkiot data folder: `${XDG_DATA_HOME:-$HOME/.local/share}/zkiot`
/// (`None` when neither variable is set).
pub fn data_dir() -> Option<PathBuf> {
    let data = std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| Path::new(&h).join(".local/share"))
        })?;
    Some(data.join("zkiot"))
}

/// Whether a `pReserved` string is configuration text rather than a path.
pub fn is_inline(arg: &str) -> bool {
    arg.contains('=') || arg.contains('\n')
}

/// The top-level keys of the configuration (the fields of [`Config`]).
pub const KEYS: &[&str] = &[
    "zklib",
    "token_label",
    "store",
    "pin",
    "log_level",
    "log_file",
    "labels",
    "expose_non_ecdsa_keys",
];

/// Whether configuration text is meant for this module: some line sets
/// one of its [`KEYS`] (or opens `[labels]`), however wrong the rest is.
/// Other hosts' parameters in `pReserved` (NSS's `configdir='…' …`) use
/// none of them.
pub fn is_for_this_module(text: &str) -> bool {
    text.lines().any(|line| {
        let line = line.trim();
        let key = match line.strip_prefix('[') {
            Some(table) => table.trim_end_matches(']'),
            None => line.split('=').next().unwrap_or_default(),
        };
        KEYS.contains(&key.trim().trim_matches('"'))
    })
}

/// A device serial as a file name: anything but `[A-Za-z0-9._-]` becomes `_`.
pub fn file_safe(serial: &str) -> String {
    let s: String = serial
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.starts_with('.') {
        format!("token{s}")
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_key() {
        let c = Config::parse(
            r#"
            zklib = "/opt/zk.so"
            token_label = "edge"
            store = "/tmp/s.sqlite3"
            pin = "1234"
            log_level = "debug"
            log_file = "/tmp/p11.log"
            expose_non_ecdsa_keys = true
            [labels]
            0 = "device"
            16 = "backup"
            "#,
            "test",
        )
        .unwrap();
        assert_eq!(c.token_label(), "edge");
        assert_eq!(c.slot_label(0), Some("device"));
        assert_eq!(c.slot_label(16), Some("backup"));
        assert_eq!(c.slot_label(1), None);
        assert_eq!(c.key_label(0), "device");
        assert_eq!(c.key_label(16), "backup");
        assert_eq!(c.key_label(1), "slot1");
        assert_eq!(c.pin.as_deref(), Some("1234"));
        assert!(c.expose_non_ecdsa_keys);
        assert_eq!(c.store_path("x").unwrap(), PathBuf::from("/tmp/s.sqlite3"));
    }

    #[test]
    fn debug_output_never_shows_the_pin() {
        let c = Config::parse("pin = \"s3cret-pin\"", "t").unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret-pin"), "{shown}");
        assert!(shown.contains("(set)"));
        let err = Config::parse("token_label = \"x\"\npin = s3cret-pin\n", "t").unwrap_err();
        let shown = err.to_string();
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("line 2"), "{shown}");
    }

    #[test]
    fn rejects_unknown_keys_and_bad_labels() {
        assert!(Config::parse("zklb = \"x\"", "t").is_err());
        assert!(Config::parse("[labels]\nzero = \"x\"", "t").is_err());
        assert!(Config::parse("[labels]\n0 = \"\"", "t").is_err());
    }

    #[test]
    fn defaults_without_any_file() {
        let c = Config::default();
        assert_eq!(c.token_label(), "zymkey");
        assert_eq!(c.key_label(DEVICE_KEY_SLOT), "slot0");
        assert!(c.pin.is_none());
        assert!(!c.expose_non_ecdsa_keys);
    }

    #[test]
    fn init_argument_is_text_or_path() {
        let c = Config::discover(Some("token_label = \"x\"")).unwrap();
        assert_eq!(c.token_label(), "x");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "token_label = \"fromfile\"\n").unwrap();
        let c = Config::discover(Some(path.to_str().unwrap())).unwrap();
        assert_eq!(c.token_label(), "fromfile");
        let err = Config::discover(Some("/nonexistent/zkiot.toml")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/zkiot.toml"));
    }

    #[test]
    fn the_environment_names_the_file_else_the_system_file_counts() {
        let dir = tempfile::tempdir().unwrap();
        let system = dir.path().join("system.toml");
        let named = dir.path().join("named.toml");
        assert!(discover_in(None, None, &system).unwrap().pin.is_none());
        std::fs::write(&system, "pin = \"1357\"\n").unwrap();
        std::fs::write(&named, "token_label = \"named\"\n").unwrap();
        let c = discover_in(None, None, &system).unwrap();
        assert_eq!(c.pin.as_deref(), Some("1357"));
        assert!(c.login_required());
        let c = discover_in(None, Some(named.as_os_str()), &system).unwrap();
        assert_eq!(c.token_label(), "named");
        assert!(c.pin.is_none());
        let c = discover_in(
            Some("token_label = \"arg\""),
            Some(named.as_os_str()),
            &system,
        );
        assert_eq!(c.unwrap().token_label(), "arg");
        std::fs::write(&system, "pin = 1357\n").unwrap();
        assert!(discover_in(None, None, &system).is_err());
    }

    #[test]
    fn every_key_is_a_field() {
        for key in KEYS {
            let err = Config::parse(&format!("{key} = []"), "t").unwrap_err();
            assert!(!err.to_string().contains("unknown field"), "{key}: {err}");
        }
        let err = Config::parse("pinn = []", "t").unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }

    #[test]
    fn text_for_this_module_is_told_from_other_hosts_parameters() {
        assert!(is_for_this_module("pin = \"1234\"\ntoken_lable = \"x\""));
        assert!(is_for_this_module("zklb = \"x\"\n[labels]\n0 = \"a\""));
        assert!(is_for_this_module("  store=\"/tmp/s\" trailing"));
        assert!(!is_for_this_module(
            "configdir='sql:/etc/pki/nssdb' certPrefix='' keyPrefix='' secmod='secmod.db' flags=readOnly"
        ));
        assert!(!is_for_this_module("zklb = \"x\""));
    }

    #[test]
    fn default_store_paths() {
        let mut c = Config {
            system_wide: true,
            ..Config::default()
        };
        assert_eq!(
            c.store_path("EMU-1").unwrap(),
            PathBuf::from("/var/lib/zkiot/EMU-1.sqlite3")
        );
        c.system_wide = false;
        let p = c.store_path("EMU-1").unwrap();
        assert!(p.ends_with("zkiot/EMU-1.sqlite3"), "{}", p.display());
        assert!(!p.starts_with("/var/lib"));
    }

    #[test]
    fn device_cache_beside_the_store() {
        let mut c = Config {
            system_wide: true,
            ..Config::default()
        };
        assert_eq!(
            c.device_cache_path().unwrap(),
            PathBuf::from("/var/lib/zkiot/device.toml")
        );
        c.store = Some(PathBuf::from("/tmp/t/store"));
        assert_eq!(
            c.device_cache_path().unwrap(),
            PathBuf::from("/tmp/t/store.device.toml")
        );
    }

    #[test]
    fn serials_become_safe_file_names() {
        assert_eq!(file_safe("4f8a-12c3"), "4f8a-12c3");
        assert_eq!(file_safe("../x y"), "token.._x_y");
        assert_eq!(file_safe(""), "token");
    }
}
