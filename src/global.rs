//! Options every subcommand shares.

use std::path::{Path, PathBuf};

/// The installed PKCS#11 module (see the project's install step).
pub const INSTALLED_MODULE: &str = "/usr/local/lib/zkiot/libzkpkcs11.so";

/// Where p11-kit's proxy module lives on Debian-family systems, most specific first.
const P11_KIT_PROXY_CANDIDATES: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/p11-kit-proxy.so",
    "/usr/lib/aarch64-linux-gnu/p11-kit-proxy.so",
    "/usr/lib/arm-linux-gnueabihf/p11-kit-proxy.so",
    "/usr/lib64/p11-kit-proxy.so",
    "/usr/lib/p11-kit-proxy.so",
];

/// The options of the `zkiot` command line that every subcommand may use.
#[derive(Debug, Clone)]
pub struct GlobalOpts {
    /// The operator's folder: `ca/ca.key` (0600), `ca/ca.crt`, `devices/<thing>/…`.
    pub home: PathBuf,
    /// Whether `home` was chosen explicitly (`--home` or `ZKIOT_HOME`) rather than defaulted.
    pub home_explicit: bool,
    /// The PKCS#11 module the device commands load.
    pub module: PathBuf,
    /// Label of the token that holds the device keys, when chosen (`--token-label` or
    /// `ZKIOT_TOKEN_LABEL`); otherwise the device commands take the one the zkiot configuration
    /// gives the module (`device::labels`).
    pub token_label: Option<String>,
    /// Print more about what was read and decided.
    pub verbose: bool,
}

impl GlobalOpts {
    /// `home/ca/ca.crt`.
    pub fn ca_cert_path(&self) -> PathBuf {
        self.home.join("ca").join("ca.crt")
    }

    /// `home/ca/ca.key`.
    pub fn ca_key_path(&self) -> PathBuf {
        self.home.join("ca").join("ca.key")
    }

    /// `home/devices/<thing>`: what the operator keeps for one device.
    pub fn device_record_dir(&self, thing: &str) -> PathBuf {
        self.home.join("devices").join(thing)
    }
}

/// `${XDG_DATA_HOME:-$HOME/.local/share}/zkiot`, the folder the module's
/// store is in by default ([`zkconf::data_dir`]).
pub fn default_home() -> PathBuf {
    zkconf::data_dir().unwrap_or_else(|| PathBuf::from(".local/share/zkiot"))
}

/// The installed module if present, else p11-kit's proxy (which loads every registered module).
pub fn default_module() -> PathBuf {
    if Path::new(INSTALLED_MODULE).exists() {
        return PathBuf::from(INSTALLED_MODULE);
    }
    P11_KIT_PROXY_CANDIDATES
        .iter()
        .map(Path::new)
        .find(|p| p.exists())
        .unwrap_or(Path::new(INSTALLED_MODULE))
        .to_path_buf()
}
