//! Which token and which key the device commands use, by label.
//!
//! Each label comes from the first source that names it:
//! 1. the command line: `--token-label` (or `ZKIOT_TOKEN_LABEL`), `--key-label`;
//! 2. for `device credentials` only, `device.toml`: the labels `install-cert` was given on its
//!    command line (it saves no others);
//! 3. the zkiot configuration the module reads ([`zkconf::Config::discover`]): `token_label`,
//!    and the `[labels]` entry of slot 0 ([`zkconf::Config::key_label`]), which default to
//!    `zymkey` and `slot0`.
//!
//! So without flags `zkiot` looks for the token and the key under the names the module gives
//! them, as every other consumer sees them, and a label renamed in `zkiot.toml` is followed
//! everywhere.

use anyhow::Result;

use crate::p11::{P11Key, P11Token};
use crate::GlobalOpts;

/// The token's label and the device key's label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labels {
    pub token: String,
    pub key: String,
}

impl Labels {
    /// `token` and `key` where given, else the configuration's (read only then).
    pub fn resolve(token: Option<&str>, key: Option<&str>) -> Result<Self> {
        if let (Some(token), Some(key)) = (token, key) {
            return Ok(Self {
                token: token.to_string(),
                key: key.to_string(),
            });
        }
        let config = zkconf::Config::discover(None)?;
        Ok(Self {
            token: token.map_or_else(|| config.token_label().to_string(), str::to_string),
            key: key.map_or_else(|| config.key_label(zkconf::DEVICE_KEY_SLOT), str::to_string),
        })
    }

    /// The labels the command line gives, else the configuration's.
    pub fn of(global: &GlobalOpts, key: Option<&str>) -> Result<Self> {
        Self::resolve(global.token_label.as_deref(), key)
    }

    /// Opens the token and finds the key.
    pub fn open(&self, global: &GlobalOpts) -> Result<(P11Token, P11Key)> {
        let token = P11Token::open(&global.module, &self.token)?;
        let key = token.find_key(&self.key)?;
        Ok((token, key))
    }
}

/// The token's label: the command line's, else the configuration's.
pub fn token_label(global: &GlobalOpts) -> Result<String> {
    match &global.token_label {
        Some(label) => Ok(label.clone()),
        None => Ok(zkconf::Config::discover(None)?.token_label().to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_labels_need_no_configuration() {
        let labels = Labels::resolve(Some("edge01"), Some("device")).unwrap();
        assert_eq!(
            labels,
            Labels {
                token: "edge01".into(),
                key: "device".into()
            }
        );
    }
}
