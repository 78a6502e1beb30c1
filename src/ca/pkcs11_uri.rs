//! RFC 7512 PKCS#11 URIs naming the CA's key: `pkcs11:token=ca;object=fleet-ca`.
//!
//! The token is chosen by `token` (its label), `manufacturer`, `serial` and `model`; the key by
//! `object` (its `CKA_LABEL`) and `id` (its `CKA_ID`). Of the query attributes, `pin-source` (a
//! file holding the PIN) and `module-path` are taken; `pin-value` is refused, since the URI is
//! recorded in `ca/ca.toml` and a PIN must never be written there. Attributes this parser does
//! not know are refused rather than ignored: a URI that names a key more narrowly than it is
//! read would pick another key.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{bail, ensure, Context, Result};

use crate::p11::TokenMatch;

/// A parsed `pkcs11:` URI naming one private key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pkcs11Uri {
    /// `token`, `manufacturer`, `serial`, `model`.
    pub token: TokenMatch,
    /// `object`: the key's `CKA_LABEL`.
    pub object: Option<String>,
    /// `id`: the key's `CKA_ID`.
    pub id: Option<Vec<u8>>,
    /// `pin-source`: where the PIN is read from (a file), never the PIN itself.
    pub pin_source: Option<String>,
    /// `module-path`: the PKCS#11 module.
    pub module_path: Option<PathBuf>,
}

impl Pkcs11Uri {
    /// Parses `text`; refuses what does not name one private key.
    pub fn parse(text: &str) -> Result<Self> {
        let body = text
            .strip_prefix("pkcs11:")
            .with_context(|| format!("{text:?} is not a PKCS#11 URI (pkcs11:token=…;object=…)"))?;
        let (path, query) = match body.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (body, None),
        };
        let mut uri = Self::default();
        for part in path.split(';').filter(|p| !p.is_empty()) {
            let (name, value) = part
                .split_once('=')
                .with_context(|| format!("{part:?} in the PKCS#11 URI is not name=value"))?;
            let bytes = percent_decode(value)
                .with_context(|| format!("bad percent-encoding in {part:?}"))?;
            let text_value = || {
                String::from_utf8(bytes.clone())
                    .with_context(|| format!("{name} in the PKCS#11 URI is not UTF-8"))
            };
            let slot = match name {
                "token" => &mut uri.token.label,
                "manufacturer" => &mut uri.token.manufacturer,
                "serial" => &mut uri.token.serial,
                "model" => &mut uri.token.model,
                "object" => &mut uri.object,
                "id" => {
                    ensure!(uri.id.is_none(), "id appears twice in the PKCS#11 URI");
                    ensure!(!bytes.is_empty(), "id in the PKCS#11 URI is empty");
                    uri.id = Some(bytes);
                    continue;
                }
                "type" => {
                    let kind = text_value()?;
                    ensure!(
                        kind == "private",
                        "the CA key's URI names type={kind}; the CA key is type=private"
                    );
                    continue;
                }
                other => bail!(
                    "the PKCS#11 URI attribute {other:?} is not supported here (use token, \
                     manufacturer, serial, model, object, id, type)"
                ),
            };
            ensure!(slot.is_none(), "{name} appears twice in the PKCS#11 URI");
            *slot = Some(text_value()?);
        }
        for part in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (name, value) = part
                .split_once('=')
                // Not echoed: it may hold a PIN.
                .context("a query attribute of the PKCS#11 URI is not name=value")?;
            match name {
                "pin-value" => bail!(
                    "a PIN inside the key's URI would be recorded in ca/ca.toml; give it in \
                     ZKIOT_CA_PIN or through pin-source=file:…"
                ),
                "pin-source" => {
                    let bytes =
                        percent_decode(value).context("bad percent-encoding in pin-source")?;
                    uri.pin_source =
                        Some(String::from_utf8(bytes).context("pin-source is not UTF-8")?);
                }
                "module-path" => {
                    let bytes =
                        percent_decode(value).context("bad percent-encoding in module-path")?;
                    uri.module_path = Some(PathBuf::from(
                        String::from_utf8(bytes).context("module-path is not UTF-8")?,
                    ));
                }
                other => bail!(
                    "the PKCS#11 URI query attribute {other:?} is not supported here (use \
                     pin-source, module-path, or --module)"
                ),
            }
        }
        ensure!(
            uri.object.is_some() || uri.id.is_some(),
            "the PKCS#11 URI names no key: add object=<label> (and/or id=…)"
        );
        Ok(uri)
    }

    /// The URI in canonical form, without `module-path` (recorded beside it): what
    /// `ca/ca.toml` holds.
    pub fn to_uri_string(&self) -> String {
        let mut parts = Vec::new();
        for (name, value) in [
            ("token", &self.token.label),
            ("manufacturer", &self.token.manufacturer),
            ("serial", &self.token.serial),
            ("model", &self.token.model),
            ("object", &self.object),
        ] {
            if let Some(value) = value {
                parts.push(format!(
                    "{name}={}",
                    percent_encode(value.as_bytes(), false)
                ));
            }
        }
        if let Some(id) = &self.id {
            parts.push(format!("id={}", percent_encode(id, true)));
        }
        parts.push("type=private".into());
        let mut text = format!("pkcs11:{}", parts.join(";"));
        if let Some(source) = &self.pin_source {
            let _ = write!(
                text,
                "?pin-source={}",
                percent_encode(source.as_bytes(), false)
            );
        }
        text
    }

    /// The file `pin-source` names: `file:/path`, `file:///path` or a plain path.
    pub fn pin_file(&self) -> Option<PathBuf> {
        let source = self.pin_source.as_deref()?;
        let path = source
            .strip_prefix("file://")
            .or_else(|| source.strip_prefix("file:"))
            .unwrap_or(source);
        Some(PathBuf::from(path))
    }
}

fn percent_decode(text: &str) -> Result<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .with_context(|| format!("{text:?} has a % not followed by two hex digits"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// RFC 7512 percent-encoding: unreserved characters and the few the path allows stay, the rest
/// become `%XX` (every byte when `all`, as for `id`).
fn percent_encode(bytes: &[u8], all: bool) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        let keep = !all && (b.is_ascii_alphanumeric() || b"-._~:[]@!$'()*+,=&/".contains(&b));
        if keep {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_the_attributes_it_takes() {
        let uri = Pkcs11Uri::parse(
            "pkcs11:token=ca;object=fleet%20ca;id=%01%ab;type=private?pin-source=file:/run/ca.pin&module-path=/usr/lib/softhsm/libsofthsm2.so",
        )
        .unwrap();
        assert_eq!(uri.token.label.as_deref(), Some("ca"));
        assert_eq!(uri.object.as_deref(), Some("fleet ca"));
        assert_eq!(uri.id.as_deref(), Some(&[0x01, 0xab][..]));
        assert_eq!(uri.pin_file(), Some(PathBuf::from("/run/ca.pin")));
        assert_eq!(
            uri.module_path,
            Some(PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"))
        );
        let text = uri.to_uri_string();
        assert_eq!(
            text,
            "pkcs11:token=ca;object=fleet%20ca;id=%01%AB;type=private?pin-source=file:/run/ca.pin"
        );
        let again = Pkcs11Uri::parse(&text).unwrap();
        assert_eq!(again.module_path, None);
        assert_eq!(
            Pkcs11Uri {
                module_path: uri.module_path.clone(),
                ..again
            },
            uri
        );
        let plain = Pkcs11Uri::parse("pkcs11:serial=abc;object=k").unwrap();
        assert_eq!(plain.token.serial.as_deref(), Some("abc"));
        assert_eq!(
            plain.to_uri_string(),
            "pkcs11:serial=abc;object=k;type=private"
        );
    }

    #[test]
    fn refuses_what_it_cannot_honour() {
        for (text, needle) in [
            ("token=ca;object=k", "not a PKCS#11 URI"),
            ("pkcs11:token=ca", "names no key"),
            ("pkcs11:token=ca;object=k?pin-value=1234", "ZKIOT_CA_PIN"),
            ("pkcs11:token=ca;object=k;type=cert", "type=private"),
            ("pkcs11:token=ca;slot-id=0;object=k", "slot-id"),
            (
                "pkcs11:token=ca;object=k?module-name=softhsm2",
                "module-name",
            ),
            ("pkcs11:token=ca;object=a;object=b", "twice"),
            ("pkcs11:token=c%4;object=k", "percent"),
            ("pkcs11:token;object=k", "name=value"),
        ] {
            let err = format!("{:#}", Pkcs11Uri::parse(text).unwrap_err());
            assert!(err.contains(needle), "{text}: {err}");
            assert!(!err.contains("1234"), "a PIN is never echoed: {err}");
        }
    }
}
