//! The module state between `C_Initialize` and `C_Finalize`: the device
//! library, the token (loaded on first use), sessions and session objects.
//! Every method takes `&self`; each piece of state has its own lock, and no
//! lock is held across a device signature.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use cryptoki_sys::*;

use crate::config::Config;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::mechanism;
use crate::object::Object;
use crate::session::Sessions;
use crate::token::Token;

/// The one slot of the module.
pub const SLOT_ID: CK_SLOT_ID = 0;

pub const LIBRARY_MANUFACTURER: &str = "zkiot";
pub const LIBRARY_DESCRIPTION: &str = "Zymkey PKCS#11 module";
pub const TOKEN_MANUFACTURER: &str = "Zymbit";

pub struct Module {
    pid: u32,
    finalized: AtomicBool,
    pub(crate) config: Config,
    library_path: PathBuf,
    device: Option<Arc<dyn Device>>,
    token: Mutex<Option<Arc<Token>>>,
    pub(crate) sessions: Mutex<Sessions>,
    /// Session objects: handle → (owning session, object).
    pub(crate) session_objects: Mutex<BTreeMap<CK_OBJECT_HANDLE, (CK_SESSION_HANDLE, Object)>>,
}

impl std::fmt::Debug for Module {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Module")
            .field("pid", &self.pid)
            .field("library", &self.library_path)
            .finish()
    }
}

impl Module {
    /// Sets the module up with the Zymkey library named by the configuration.
    /// A library that cannot be loaded is no error: the slot then shows no
    /// token, and the log says what was tried.
    pub fn new(config: Config) -> Module {
        let library_path = config.library_path();
        let device: Option<Arc<dyn Device>> = match zymkey::Zymkey::load(&library_path) {
            Ok(z) => {
                tracing::debug!(library = %library_path.display(), "Zymkey library loaded");
                Some(Arc::new(z))
            }
            Err(e @ zymkey::Error::LibraryNotFound { .. }) => {
                // The error names the path and how to point elsewhere.
                tracing::warn!("{e}; the slot shows no token");
                None
            }
            Err(e) => {
                tracing::warn!(
                    "{e}; the slot shows no token (set ZKIOT_ZKLIB or `zklib` in the \
                     configuration file to use another library)"
                );
                None
            }
        };
        Module::with_device(config, library_path, device)
    }

    /// Sets the module up over a given device (tests use an in-memory one).
    pub fn with_device(
        config: Config,
        library_path: PathBuf,
        device: Option<Arc<dyn Device>>,
    ) -> Module {
        Module {
            pid: std::process::id(),
            finalized: AtomicBool::new(false),
            config,
            library_path,
            device,
            token: Mutex::new(None),
            sessions: Mutex::new(Sessions::default()),
            session_objects: Mutex::new(BTreeMap::new()),
        }
    }

    /// The process that initialised the module (a forked child must re-initialise).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// True between `Module::new` and `finalize`, in the process that made it.
    pub fn is_active(&self) -> bool {
        !self.finalized.load(Ordering::Acquire) && self.pid == std::process::id()
    }

    /// `C_Finalize`: ends every session, closes the store and the device
    /// connection. The library itself stays loaded: hosts finalize from
    /// their exit handlers, and code still referenced then must not be
    /// unmapped.
    pub fn finalize(&self) {
        self.finalized.store(true, Ordering::Release);
        {
            let mut sessions = self.lock_sessions();
            sessions.map.clear();
            sessions.logged_in = false;
        }
        self.session_objects
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.token.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(d) = &self.device {
            d.close();
            std::mem::forget(d.clone());
        }
    }

    /// The token, loading it from the device on first use. A failed load
    /// is retried by the next call.
    pub fn token(&self) -> Result<Arc<Token>> {
        if self.finalized.load(Ordering::Acquire) {
            return Err(Error::CryptokiNotInitialized);
        }
        let device = self.device.as_ref().ok_or(Error::TokenNotPresent)?;
        let mut guard = self.token.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = guard.as_ref() {
            return Ok(t.clone());
        }
        let token = Arc::new(Token::load(device.clone(), &self.config).map_err(|e| {
            tracing::error!("cannot read the Zymkey: {e}");
            e
        })?);
        *guard = Some(token.clone());
        Ok(token)
    }

    pub(crate) fn check_slot(&self, slot: CK_SLOT_ID) -> Result<()> {
        if slot == SLOT_ID {
            Ok(())
        } else {
            Err(Error::SlotIdInvalid)
        }
    }

    fn token_present(&self) -> bool {
        self.token().is_ok()
    }

    pub fn info(&self) -> CK_INFO {
        CK_INFO {
            cryptokiVersion: CK_VERSION {
                major: 2,
                minor: 40,
            },
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
        let (count, rw_count) = self
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .counts();
        Ok(CK_TOKEN_INFO {
            label: padded(&token.label),
            manufacturerID: padded(TOKEN_MANUFACTURER),
            model: padded(&token.info.model),
            serialNumber: padded(&token.info.serial),
            flags,
            ulMaxSessionCount: crate::session::MAX_SESSIONS as CK_ULONG,
            ulSessionCount: count as CK_ULONG,
            ulMaxRwSessionCount: crate::session::MAX_SESSIONS as CK_ULONG,
            ulRwSessionCount: rw_count as CK_ULONG,
            ulMaxPinLen: 255,
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

    /// `C_GenerateRandom`: bytes from the device's generator.
    pub fn generate_random(&self, session: CK_SESSION_HANDLE, out: &mut [u8]) -> Result<()> {
        self.session_info(session)?;
        if out.is_empty() {
            return Ok(());
        }
        let token = self.token()?;
        let bytes = token.device.random(out.len()).map_err(|e| {
            tracing::error!("random bytes from the device failed: {e}");
            Error::from(e)
        })?;
        if bytes.len() != out.len() {
            return Err(Error::DeviceError(format!(
                "the device returned {} random bytes, not {}",
                bytes.len(),
                out.len()
            )));
        }
        out.copy_from_slice(&bytes);
        Ok(())
    }
}

/// A blank-padded, truncated fixed-size text field.
pub fn padded<const N: usize>(text: &str) -> [CK_UTF8CHAR; N] {
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
pub fn parse_version(text: &str) -> CK_VERSION {
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
