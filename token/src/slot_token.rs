//! Library, slot and token information and the mechanism list
//! (PKCS#11 2.40 §5.4 `C_GetInfo`, §5.5).

use cryptoki_sys::*;

use crate::error::Result;
use crate::mechanism;
use crate::module::{Module, MAX_SESSIONS, SLOT_ID};
use crate::session::MAX_PIN_LEN;

pub(crate) const LIBRARY_MANUFACTURER: &str = "zkiot";
pub(crate) const LIBRARY_DESCRIPTION: &str = "Zymkey PKCS#11 module";
pub(crate) const TOKEN_MANUFACTURER: &str = "Zymbit";

impl Module {
    fn token_present(&self) -> bool {
        self.token().is_ok()
    }

    /// `C_GetInfo`. `cryptoki_version` is the version of the function list
    /// the call came through (2.40 or 3.0), which only the C ABI knows.
    pub fn info(&self, cryptoki_version: CK_VERSION) -> CK_INFO {
        CK_INFO {
            cryptokiVersion: cryptoki_version,
            manufacturerID: padded(LIBRARY_MANUFACTURER),
            flags: 0,
            libraryDescription: padded(LIBRARY_DESCRIPTION),
            libraryVersion: crate_version(),
        }
    }

    pub fn slot_list(&self, token_present: bool) -> Vec<CK_SLOT_ID> {
        if token_present && !self.token_present() {
            Vec::new()
        } else {
            vec![SLOT_ID]
        }
    }

    pub fn slot_info(&self, slot: CK_SLOT_ID) -> Result<CK_SLOT_INFO> {
        self.check_slot(slot)?;
        let token = self.token().ok();
        let mut flags = CKF_HW_SLOT;
        let description = match &token {
            Some(t) => {
                flags |= CKF_TOKEN_PRESENT;
                format!("Zymbit {}", t.info.model)
            }
            None => "Zymbit security module (no device)".to_string(),
        };
        let firmware = token
            .as_ref()
            .map(|t| parse_version(&t.info.firmware))
            .unwrap_or(CK_VERSION { major: 0, minor: 0 });
        Ok(CK_SLOT_INFO {
            slotDescription: padded(&description),
            manufacturerID: padded(TOKEN_MANUFACTURER),
            flags,
            hardwareVersion: CK_VERSION { major: 1, minor: 0 },
            firmwareVersion: firmware,
        })
    }

    pub fn token_info(&self, slot: CK_SLOT_ID) -> Result<CK_TOKEN_INFO> {
        self.check_slot(slot)?;
        let token = self.token()?;
        let mut flags = CKF_TOKEN_INITIALIZED | CKF_RNG;
        if token.login_required {
            flags |= CKF_LOGIN_REQUIRED | CKF_USER_PIN_INITIALIZED;
        }
        let (count, rw_count) = self.lock_sessions().counts();
        Ok(CK_TOKEN_INFO {
            label: padded(&token.label),
            manufacturerID: padded(TOKEN_MANUFACTURER),
            model: padded(&token.info.model),
            serialNumber: padded(&token.info.serial),
            flags,
            ulMaxSessionCount: MAX_SESSIONS as CK_ULONG,
            ulSessionCount: count as CK_ULONG,
            ulMaxRwSessionCount: MAX_SESSIONS as CK_ULONG,
            ulRwSessionCount: rw_count as CK_ULONG,
            ulMaxPinLen: MAX_PIN_LEN as CK_ULONG,
            ulMinPinLen: if token.login_required { 1 } else { 0 },
            ulTotalPublicMemory: CK_UNAVAILABLE_INFORMATION,
            ulFreePublicMemory: CK_UNAVAILABLE_INFORMATION,
            ulTotalPrivateMemory: CK_UNAVAILABLE_INFORMATION,
            ulFreePrivateMemory: CK_UNAVAILABLE_INFORMATION,
            hardwareVersion: CK_VERSION { major: 1, minor: 0 },
            firmwareVersion: parse_version(&token.info.firmware),
            utcTime: [b' '; 16],
        })
    }

    pub fn mechanism_list(&self, slot: CK_SLOT_ID) -> Result<Vec<CK_MECHANISM_TYPE>> {
        self.check_slot(slot)?;
        let token = self.token()?;
        Ok(mechanism::mechanism_list(token.caps.key_store))
    }

    pub fn mechanism_info(
        &self,
        slot: CK_SLOT_ID,
        mechanism: CK_MECHANISM_TYPE,
    ) -> Result<CK_MECHANISM_INFO> {
        self.check_slot(slot)?;
        let token = self.token()?;
        mechanism::mechanism_info(mechanism, token.caps.key_store)
    }
}

/// A blank-padded, truncated fixed-size text field.
pub(crate) fn padded<const N: usize>(text: &str) -> [CK_UTF8CHAR; N] {
    let mut out = [b' '; N];
    // Truncate on a character boundary so the field stays valid UTF-8.
    let mut end = text.len().min(N);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    out[..end].copy_from_slice(&text.as_bytes()[..end]);
    out
}

/// "1.2.3" → 1.2; anything unparsable → 0.0.
pub(crate) fn parse_version(text: &str) -> CK_VERSION {
    let mut parts = text
        .trim()
        .trim_start_matches(|c: char| !c.is_ascii_digit())
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u8>().unwrap_or(0));
    CK_VERSION {
        major: parts.next().unwrap_or(0),
        minor: parts.next().unwrap_or(0),
    }
}

fn crate_version() -> CK_VERSION {
    parse_version(env!("CARGO_PKG_VERSION"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_and_truncation() {
        let f: [u8; 8] = padded("zymkey");
        assert_eq!(&f, b"zymkey  ");
        let f: [u8; 4] = padded("serial-number");
        assert_eq!(&f, b"seri");
        let f: [u8; 4] = padded("aé€");
        assert_eq!(&f, "aé ".as_bytes());
    }

    #[test]
    fn versions() {
        let v = parse_version("1.2.3");
        assert_eq!((v.major, v.minor), (1, 2));
        let v = parse_version("v01.0.7-emu");
        assert_eq!((v.major, v.minor), (1, 0));
        let v = parse_version("unknown");
        assert_eq!((v.major, v.minor), (0, 0));
    }
}
