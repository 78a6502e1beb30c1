//! Sessions and login (PKCS#11 2.40 §5.6).

use std::ptr::null_mut;

use cryptoki_sys::*;
use testkit::call;

use super::Harness;
use crate::p11::op::{Handle, Slot};
use crate::p11::oracle::check_rv;

impl Harness {
    pub(super) fn open_session(&mut self, slot: Slot, flags: u8) {
        let mut handle: CK_SESSION_HANDLE = 0;
        let flags = (flags as CK_FLAGS & 0x7)
            | if flags & 0x80 != 0 {
                0
            } else {
                CKF_SERIAL_SESSION
            };
        let rv = check_rv(
            "C_OpenSession",
            call!(
                self.raw(),
                C_OpenSession(slot.id(), flags, null_mut(), None, &mut handle)
            ),
        );
        if rv == CKR_OK {
            self.sessions.push(handle);
        }
    }

    pub(super) fn close_session(&mut self, h: Handle) {
        let s = self.session(h);
        if check_rv("C_CloseSession", call!(self.raw(), C_CloseSession(s))) == CKR_OK {
            self.signing.remove(&s);
        }
    }

    pub(super) fn close_all_sessions(&mut self, slot: Slot) {
        if check_rv(
            "C_CloseAllSessions",
            call!(self.raw(), C_CloseAllSessions(slot.id())),
        ) == CKR_OK
        {
            self.signing.clear();
        }
    }

    pub(super) fn get_session_info(&mut self, h: Handle) {
        let mut info = CK_SESSION_INFO::default();
        check_rv(
            "C_GetSessionInfo",
            call!(self.raw(), C_GetSessionInfo(self.session(h), &mut info)),
        );
    }

    pub(super) fn login(&mut self, session: Handle, user: u8, pin: Option<&[u8]>) {
        let user = match user % 4 {
            0 => CKU_SO,
            1 | 2 => CKU_USER,
            _ => CKU_CONTEXT_SPECIFIC,
        };
        let (p, len) = match pin {
            None => (null_mut(), 0),
            Some(pin) => (pin.as_ptr() as *mut u8, pin.len() as CK_ULONG),
        };
        check_rv(
            "C_Login",
            call!(self.raw(), C_Login(self.session(session), user, p, len)),
        );
    }

    pub(super) fn logout(&mut self, h: Handle) {
        check_rv("C_Logout", call!(self.raw(), C_Logout(self.session(h))));
    }
}
