//! The device folder and its `device.toml`.
//!
//! `zkiot device install-cert` writes the folder (as root `/etc/zkiot/device`, otherwise
//! `$ZKIOT_HOME/device`): `device.crt`, `ca.crt` (the fleet CA), `device.toml`, and later the
//! credentials cache `credentials.json` (0600). `device.toml` lets `zkiot device credentials`
//! run with no flags, as AWS's `credential_process` calls it:
//!
//! ```toml
//! thing = "zk-0123456789abcdef"
//! token_label = "zymkey"                            # only if install-cert was given --token-label
//! key_label = "slot0"                               # only if install-cert was given --key-label
//! certificate = "device.crt"
//! ca = "ca.crt"
//! endpoint = "c1234.credentials.iot.eu-west-1.amazonaws.com"
//! role_alias = "zkiot-device"
//! ca_bundle = "/etc/ssl/certs/AmazonRootCA1.pem"
//! iot_api = "https://iot.eu-west-1.amazonaws.com"   # optional: where renewal looks
//! renew_within_days = 30                            # optional
//! ```
//!
//! and, for `zkiot device agent`, optionally (written by hand, never by install-cert):
//!
//! ```toml
//! renew_at = "2/3"                     # share of the lifetime after which to renew
//! renew_poll = "6h"                    # how often to look again while renewal waits
//! on_switch = "systemctl try-restart sensor.service"   # run after a switch
//! listen = "127.0.0.1:9911"            # the local credentials endpoint, or "off"
//! token_file = "/run/zkiot/credentials-token"
//! token_group = "zkiot-credentials"    # may read the token file
//! new_key = false                      # renew for the same key even where the Zymkey makes keys
//! heartbeat = "6h"                     # how often the device reports that it is alive, or "off"
//! ```

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::fsutil;
use crate::GlobalOpts;

/// Name of the configuration file in the device folder.
pub const CONFIG_FILE: &str = "device.toml";
/// Name of the device certificate in the device folder.
pub const CERT_FILE: &str = "device.crt";
/// Name of the fleet CA certificate in the device folder.
pub const CA_FILE: &str = "ca.crt";
/// Name of the credentials cache in the device folder.
pub const CACHE_FILE: &str = "credentials.json";
/// The device folder when running as root.
pub const SYSTEM_DEVICE_DIR: &str = "/etc/zkiot/device";
/// Renew when the certificate expires within this many days, unless device.toml says otherwise.
pub const DEFAULT_RENEW_WITHIN_DAYS: u32 = 30;

/// What `device.toml` holds. Relative paths are relative to the device folder.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thing: Option<String>,
    /// The token and key labels `install-cert` was given on its command line; without them
    /// the labels follow the zkiot configuration ([`super::labels`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_label: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_label: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role_alias: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<PathBuf>,
    /// AWS IoT API endpoint for certificate renewal (default `https://iot.<region>.amazonaws.com`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iot_api: Option<String>,
    /// Region to sign AWS IoT API calls for (default: the credentials endpoint's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Look for a renewed certificate when the current one expires within this many days
    /// (default 30; 0 turns renewal off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub renew_within_days: Option<u32>,
    /// The agent renews after this share of the certificate's lifetime (`2/3`, `0.75`, `80%`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub renew_at: Option<String>,
    /// How often the agent looks again while renewal waits for the operator (`6h`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub renew_poll: Option<String>,
    /// Command run with `sh -c` after the device switched to a new certificate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_switch: Option<String>,
    /// The agent's local credentials endpoint (`127.0.0.1:9911`), or `off`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// The file with the local endpoint's authorization token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// The group that may read the token file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_group: Option<String>,
    /// Whether the agent renews with a fresh key where the Zymkey makes keys (default true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_key: Option<bool>,
    /// How often the agent reports that the device is alive (`6h`), or `off`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat: Option<String>,
}

impl DeviceConfig {
    /// Reads `dir/device.toml`; a missing file is an empty configuration.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(CONFIG_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).with_context(|| format!("bad {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Writes `dir/device.toml` atomically.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let text = toml::to_string(self)?;
        fsutil::write_atomic(&dir.join(CONFIG_FILE), text.as_bytes(), fsutil::PUBLIC_MODE)
    }

    /// `path` made absolute against the device folder.
    pub fn resolve(dir: &Path, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            dir.join(path)
        }
    }
}

/// The device folder: `--dir` if given, else `$ZKIOT_HOME/device` when the home was chosen
/// explicitly, else `/etc/zkiot/device` for root, else `<home>/device`.
pub fn device_dir(explicit: Option<&Path>, global: &GlobalOpts) -> PathBuf {
    if let Some(dir) = explicit {
        return dir.to_path_buf();
    }
    if !global.home_explicit && running_as_root() {
        return PathBuf::from(SYSTEM_DEVICE_DIR);
    }
    global.home.join("device")
}

pub(crate) fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
