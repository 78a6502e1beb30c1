//! Where the CA's private key lives, as the operator's folder records it.
//!
//! `ca/ca.crt` is always the CA certificate. Its key is
//! - a file, `ca/ca.key` (0600), when there is no `ca/ca.toml`: what `ca init` makes by default,
//!   and what every zkiot before `ca.toml` made;
//! - in a PKCS#11 token when `ca/ca.toml` says `key = "pkcs11:…"` and `module = "/path/to.so"`;
//! - in AWS Private CA when `ca/ca.toml` says `private_ca = "arn:aws:acm-pca:…"`.
//!
//! `ca.toml` never holds a PIN: a token's PIN comes from `ZKIOT_CA_PIN` or from the file the
//! URI's `pin-source` names. A key file left beside a CA whose key is elsewhere is refused: it
//! would be a second copy of a key that should exist only in the token, or a stale key.

use std::path::PathBuf;

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};

use super::pkcs11_uri::Pkcs11Uri;
use crate::{fsutil, GlobalOpts};

/// The environment variable holding the CA token's user PIN.
pub const CA_PIN_ENV: &str = "ZKIOT_CA_PIN";

/// Where the CA's private key is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyLocation {
    /// A PEM file in the operator's folder.
    File(PathBuf),
    /// A key in a PKCS#11 token, reached through `module`.
    Token { uri: Pkcs11Uri, module: PathBuf },
    /// An AWS Private CA, which holds its key and issues the certificates itself.
    PrivateCa(PrivateCaArn),
}

/// `ca/ca.toml` as written.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaToml {
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    module: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    private_ca: Option<String>,
}

/// `home/ca/ca.toml`.
pub fn config_path(global: &GlobalOpts) -> PathBuf {
    global.ca_cert_path().with_file_name("ca.toml")
}

impl KeyLocation {
    /// What the operator's folder says; refuses a key file beside a `ca.toml`.
    pub fn read(global: &GlobalOpts) -> Result<Self> {
        let path = config_path(global);
        if !path.exists() {
            return Ok(Self::File(global.ca_key_path()));
        }
        let text = String::from_utf8(fsutil::read(&path)?)
            .with_context(|| format!("{} is not UTF-8", path.display()))?;
        let location = Self::parse(&text).with_context(|| format!("{}", path.display()))?;
        let key_file = global.ca_key_path();
        if key_file.exists() {
            bail!(
                "{} puts the CA key in {}, yet {} is still there: once the CA works without \
                 it, destroy it (shred -u {}); zkiot does not sign beside a loose CA key",
                path.display(),
                location.short(),
                key_file.display(),
                key_file.display()
            );
        }
        Ok(location)
    }

    fn parse(text: &str) -> Result<Self> {
        let toml: CaToml = toml::from_str(text).context("not a CA description")?;
        match (toml.key, toml.module, toml.private_ca) {
            (Some(key), Some(module), None) => {
                let uri = Pkcs11Uri::parse(&key)?;
                ensure!(
                    uri.module_path.is_none(),
                    "the key's URI names module-path; the module is `module`"
                );
                Ok(Self::Token { uri, module })
            }
            (Some(_), None, None) => bail!("`key` needs `module`, the PKCS#11 module's path"),
            (None, None, Some(arn)) => Ok(Self::PrivateCa(PrivateCaArn::parse(&arn)?)),
            (None, None, None) => bail!("names no CA key: `key` and `module`, or `private_ca`"),
            _ => bail!("names both a token key and a Private CA; keep one"),
        }
    }

    /// Records a token key or a Private CA in `ca/ca.toml`; for a key file, removes `ca.toml`.
    pub fn save(&self, global: &GlobalOpts) -> Result<()> {
        let path = config_path(global);
        let toml = match self {
            Self::File(_) => {
                if path.exists() {
                    std::fs::remove_file(&path)
                        .with_context(|| format!("cannot remove {}", path.display()))?;
                }
                return Ok(());
            }
            Self::Token { uri, module } => CaToml {
                key: Some(uri.to_uri_string()),
                module: Some(module.clone()),
                private_ca: None,
            },
            Self::PrivateCa(arn) => CaToml {
                private_ca: Some(arn.arn.clone()),
                ..CaToml::default()
            },
        };
        let text = format!(
            "# Where the key of ca.crt lives, written by `zkiot ca init`. No PIN belongs here: a\n\
             # token's PIN comes from {CA_PIN_ENV} or the URI's pin-source.\n{}",
            toml::to_string(&toml)?
        );
        if let Some(dir) = path.parent() {
            fsutil::ensure_dir(dir, 0o700)?;
        }
        fsutil::write_atomic(&path, text.as_bytes(), fsutil::PUBLIC_MODE)
    }

    /// A few words: "the key file ca/ca.key", "token \"ca\"", "AWS Private CA arn:…".
    pub fn short(&self) -> String {
        match self {
            Self::File(path) => format!("the key file {}", path.display()),
            Self::Token { uri, .. } => format!("the PKCS#11 key {}", uri.to_uri_string()),
            Self::PrivateCa(arn) => format!("AWS Private CA {}", arn.arn),
        }
    }
}

/// The ARN of an AWS Private CA: `arn:<partition>:acm-pca:<region>:<account>:certificate-authority/<id>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivateCaArn {
    pub arn: String,
    pub partition: String,
    pub region: String,
}

impl PrivateCaArn {
    pub fn parse(arn: &str) -> Result<Self> {
        let parts: Vec<&str> = arn.splitn(6, ':').collect();
        match parts.as_slice() {
            ["arn", partition, "acm-pca", region, account, resource]
                if !partition.is_empty()
                    && !region.is_empty()
                    && account.len() == 12
                    && account.bytes().all(|b| b.is_ascii_digit())
                    && resource
                        .strip_prefix("certificate-authority/")
                        .is_some_and(|id| !id.is_empty() && !id.contains('/')) =>
            {
                Ok(Self {
                    arn: arn.to_string(),
                    partition: partition.to_string(),
                    region: region.to_string(),
                })
            }
            _ => bail!(
                "{arn:?} is not the ARN of an AWS Private CA \
                 (arn:aws:acm-pca:<region>:<account>:certificate-authority/<id>)"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn reads_what_it_writes_and_refuses_the_rest() {
        let token = KeyLocation::parse(
            "key = \"pkcs11:token=ca;object=fleet-ca;type=private\"\nmodule = \"/usr/lib/softhsm/libsofthsm2.so\"\n",
        )
        .unwrap();
        let KeyLocation::Token { uri, module } = &token else {
            panic!("{token:?}")
        };
        assert_eq!(uri.object.as_deref(), Some("fleet-ca"));
        assert_eq!(module, Path::new("/usr/lib/softhsm/libsofthsm2.so"));
        let arn = "arn:aws:acm-pca:eu-west-1:123456789012:certificate-authority/11111111-2222";
        let pca = KeyLocation::parse(&format!("private_ca = \"{arn}\"\n")).unwrap();
        assert_eq!(
            pca,
            KeyLocation::PrivateCa(PrivateCaArn {
                arn: arn.into(),
                partition: "aws".into(),
                region: "eu-west-1".into()
            })
        );
        for (text, needle) in [
            ("key = \"pkcs11:token=ca;object=k\"\n", "needs `module`"),
            ("", "names no CA key"),
            ("pin = \"1234\"\n", "not a CA description"),
            (
                &format!("key = \"pkcs11:token=ca;object=k\"\nmodule = \"/m.so\"\nprivate_ca = \"{arn}\"\n"),
                "keep one",
            ),
            ("private_ca = \"arn:aws:iot:us-east-1:123456789012:cert/x\"\n", "not the ARN"),
        ] {
            let err = format!("{:#}", KeyLocation::parse(text).unwrap_err());
            assert!(err.contains(needle), "{text}: {err}");
        }
    }
}
