//! Sessions, login state and the operations a session carries
//! (PKCS#11 2.40 §5.6).

use std::collections::HashMap;

use cryptoki_sys::*;

use crate::error::{Error, Result};
use crate::key::{Curve, KeySlot};
use crate::mechanism::{Input, SignMechanism};
use crate::module::Module;

/// Sessions open at once, per process.
pub const MAX_SESSIONS: usize = 1024;

/// An active `C_FindObjects` search: the matches, fixed at `C_FindObjectsInit`.
#[derive(Debug, Clone)]
pub struct Find {
    pub handles: Vec<CK_OBJECT_HANDLE>,
    pub next: usize,
}

/// An active sign operation.
#[derive(Debug, Clone)]
pub struct SignOp {
    pub slot: KeySlot,
    pub mechanism: SignMechanism,
    pub input: Input,
    /// `C_SignUpdate` was called: only `C_SignUpdate`/`C_SignFinal` may follow.
    pub multi_part: bool,
}

/// An active verify operation; the key's point is copied in so the
/// operation survives a concurrent key removal.
#[derive(Debug, Clone)]
pub struct VerifyOp {
    pub curve: Curve,
    pub raw_public: Vec<u8>,
    pub mechanism: SignMechanism,
    pub input: Input,
    pub multi_part: bool,
}

#[derive(Debug, Clone)]
pub struct Session {
    pub read_write: bool,
    pub find: Option<Find>,
    pub sign: Option<SignOp>,
    pub verify: Option<VerifyOp>,
}

#[derive(Debug, Default)]
pub struct Sessions {
    pub map: HashMap<CK_SESSION_HANDLE, Session>,
    last_handle: CK_SESSION_HANDLE,
    pub logged_in: bool,
}

impl Sessions {
    pub fn get(&self, handle: CK_SESSION_HANDLE) -> Result<&Session> {
        self.map.get(&handle).ok_or(Error::SessionHandleInvalid)
    }

    pub fn get_mut(&mut self, handle: CK_SESSION_HANDLE) -> Result<&mut Session> {
        self.map.get_mut(&handle).ok_or(Error::SessionHandleInvalid)
    }

    /// (all sessions, read-write sessions)
    pub fn counts(&self) -> (usize, usize) {
        (
            self.map.len(),
            self.map.values().filter(|s| s.read_write).count(),
        )
    }
}

/// Compares two secrets in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len().max(b.len());
    let mut diff = (a.len() ^ b.len()) as u8 | u8::from(a.len() != b.len());
    for i in 0..n {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

impl Module {
    pub(crate) fn lock_sessions(&self) -> std::sync::MutexGuard<'_, Sessions> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn open_session(&self, slot: CK_SLOT_ID, flags: CK_FLAGS) -> Result<CK_SESSION_HANDLE> {
        self.check_slot(slot)?;
        if flags & CKF_SERIAL_SESSION == 0 {
            return Err(Error::SessionParallelNotSupported);
        }
        self.token()?;
        let mut sessions = self.lock_sessions();
        if sessions.map.len() >= MAX_SESSIONS {
            return Err(Error::SessionCount);
        }
        sessions.last_handle += 1;
        let handle = sessions.last_handle;
        sessions.map.insert(
            handle,
            Session {
                read_write: flags & CKF_RW_SESSION != 0,
                find: None,
                sign: None,
                verify: None,
            },
        );
        Ok(handle)
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
        self.session_objects
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, (owner, _)| *owner != handle);
        Ok(())
    }

    pub fn close_all_sessions(&self, slot: CK_SLOT_ID) -> Result<()> {
        self.check_slot(slot)?;
        let mut sessions = self.lock_sessions();
        sessions.map.clear();
        sessions.logged_in = false;
        drop(sessions);
        self.session_objects
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
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
            slotID: crate::module::SLOT_ID,
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
            if !constant_time_eq(given, expected) {
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

    /// Whether private objects are accessible now.
    pub(crate) fn private_access(&self, sessions: &Sessions) -> bool {
        self.config.pin.is_none() || sessions.logged_in
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
