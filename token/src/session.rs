//! Sessions and login (PKCS#11 2.40 §5.6).

use cryptoki_sys::*;

use crate::error::{Error, Result};
use crate::module::{Module, SLOT_ID};

/// The longest PIN the token takes (`ulMaxPinLen`): a longer one is refused
/// before any comparison, so a caller's length is never read in full.
pub const MAX_PIN_LEN: usize = 255;

/// Compares two secrets in time that depends only on their lengths.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len().max(b.len());
    let mut diff = (a.len() ^ b.len()) as u8 | u8::from(a.len() != b.len());
    for i in 0..n {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

impl Module {
    pub fn open_session(&self, slot: CK_SLOT_ID, flags: CK_FLAGS) -> Result<CK_SESSION_HANDLE> {
        self.check_slot(slot)?;
        if flags & CKF_SERIAL_SESSION == 0 {
            return Err(Error::SessionParallelNotSupported);
        }
        self.token()?;
        self.lock_sessions().open(flags & CKF_RW_SESSION != 0)
    }

    pub fn close_session(&self, handle: CK_SESSION_HANDLE) -> Result<()> {
        let mut sessions = self.lock_sessions();
        sessions
            .map
            .remove(&handle)
            .ok_or(Error::SessionHandleInvalid)?;
        if sessions.map.is_empty() {
            sessions.logged_in = false;
        }
        drop(sessions);
        self.lock_session_objects()
            .retain(|_, (owner, _)| *owner != handle);
        Ok(())
    }

    pub fn close_all_sessions(&self, slot: CK_SLOT_ID) -> Result<()> {
        self.check_slot(slot)?;
        let mut sessions = self.lock_sessions();
        sessions.map.clear();
        sessions.logged_in = false;
        drop(sessions);
        self.lock_session_objects().clear();
        Ok(())
    }

    pub fn session_info(&self, handle: CK_SESSION_HANDLE) -> Result<CK_SESSION_INFO> {
        let sessions = self.lock_sessions();
        let s = sessions.get(handle)?;
        let state = match (s.read_write, sessions.logged_in) {
            (false, false) => CKS_RO_PUBLIC_SESSION,
            (true, false) => CKS_RW_PUBLIC_SESSION,
            (false, true) => CKS_RO_USER_FUNCTIONS,
            (true, true) => CKS_RW_USER_FUNCTIONS,
        };
        let mut flags = CKF_SERIAL_SESSION;
        if s.read_write {
            flags |= CKF_RW_SESSION;
        }
        Ok(CK_SESSION_INFO {
            slotID: SLOT_ID,
            state,
            flags,
            ulDeviceError: 0,
        })
    }

    /// `C_Login`. Without a configured PIN any PIN is accepted (consumers
    /// log in whether or not the token asks them to).
    pub fn login(
        &self,
        handle: CK_SESSION_HANDLE,
        user: CK_USER_TYPE,
        pin: Option<&[u8]>,
    ) -> Result<()> {
        let token = self.token()?;
        let mut sessions = self.lock_sessions();
        sessions.get(handle)?;
        match user {
            CKU_USER => {}
            CKU_SO => {
                // The token has no security officer: nothing can be
                // administered through PKCS#11.
                return Err(Error::PinIncorrect);
            }
            CKU_CONTEXT_SPECIFIC => {
                // No key needs per-operation authentication.
                return Err(Error::OperationNotInitialized);
            }
            _ => return Err(Error::UserTypeInvalid),
        }
        if sessions.logged_in {
            return Err(Error::UserAlreadyLoggedIn);
        }
        if token.login_required {
            let expected = self.config.pin.as_deref().unwrap_or_default().as_bytes();
            let given = pin.ok_or(Error::ArgumentsBad("a PIN is required"))?;
            if given.len() > MAX_PIN_LEN || !constant_time_eq(given, expected) {
                tracing::info!("C_Login with an incorrect PIN");
                return Err(Error::PinIncorrect);
            }
        }
        sessions.logged_in = true;
        Ok(())
    }

    pub fn logout(&self, handle: CK_SESSION_HANDLE) -> Result<()> {
        let mut sessions = self.lock_sessions();
        sessions.get(handle)?;
        if !sessions.logged_in {
            return Err(Error::UserNotLoggedIn);
        }
        sessions.logged_in = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_comparison() {
        assert!(constant_time_eq(b"1234", b"1234"));
        assert!(!constant_time_eq(b"1234", b"1235"));
        assert!(!constant_time_eq(b"1234", b"12345"));
        assert!(!constant_time_eq(b"", b"1"));
        assert!(constant_time_eq(b"", b""));
        // Same bytes but a length difference that wraps a u8.
        let long = vec![0u8; 256];
        assert!(!constant_time_eq(&long, b""));
    }
}
