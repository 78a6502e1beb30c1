//! Session management (PKCS#11 2.40 §5.6).

use cryptoki_sys::*;
use zktoken::Error;

use crate::{cryptoki_fn, input, module, out_param};

cryptoki_fn! {
    /// `C_OpenSession`. Notification callbacks are never called.
    fn C_OpenSession(slotID: CK_SLOT_ID, flags: CK_FLAGS, _pApplication: CK_VOID_PTR, _Notify: CK_NOTIFY, phSession: CK_SESSION_HANDLE_PTR) {
        let m = module()?;
        // SAFETY: a valid out-pointer per the contract.
        let out = unsafe { out_param(phSession) }?;
        *out = m.open_session(slotID, flags)?;
        Ok(())
    }
}

cryptoki_fn! {
    /// `C_CloseSession`.
    fn C_CloseSession(hSession: CK_SESSION_HANDLE) {
        module()?.close_session(hSession)
    }
}

cryptoki_fn! {
    /// `C_CloseAllSessions`.
    fn C_CloseAllSessions(slotID: CK_SLOT_ID) {
        module()?.close_all_sessions(slotID)
    }
}

cryptoki_fn! {
    /// `C_GetSessionInfo`.
    fn C_GetSessionInfo(hSession: CK_SESSION_HANDLE, pInfo: CK_SESSION_INFO_PTR) {
        let m = module()?;
        // SAFETY: a valid out-pointer per the contract.
        let out = unsafe { out_param(pInfo) }?;
        *out = m.session_info(hSession)?;
        Ok(())
    }
}

cryptoki_fn! {
    /// `C_GetOperationState`: operation state cannot be saved.
    fn C_GetOperationState(hSession: CK_SESSION_HANDLE, _pOperationState: CK_BYTE_PTR, _pulOperationStateLen: CK_ULONG_PTR) {
        module()?.session_info(hSession)?;
        Err(Error::FunctionNotSupported("C_GetOperationState"))
    }
}

cryptoki_fn! {
    /// `C_SetOperationState`: operation state cannot be restored.
    fn C_SetOperationState(hSession: CK_SESSION_HANDLE, _pOperationState: CK_BYTE_PTR, _ulOperationStateLen: CK_ULONG, _hEncryptionKey: CK_OBJECT_HANDLE, _hAuthenticationKey: CK_OBJECT_HANDLE) {
        module()?.session_info(hSession)?;
        Err(Error::FunctionNotSupported("C_SetOperationState"))
    }
}

cryptoki_fn! {
    /// `C_Login`. Without a configured PIN any PIN is accepted.
    fn C_Login(hSession: CK_SESSION_HANDLE, userType: CK_USER_TYPE, pPin: CK_UTF8CHAR_PTR, ulPinLen: CK_ULONG) {
        let m = module()?;
        let pin = if pPin.is_null() {
            None
        } else {
            // SAFETY: pPin holds ulPinLen bytes per the contract.
            Some(unsafe { input(pPin, ulPinLen) }?)
        };
        m.login(hSession, userType, pin)
    }
}

cryptoki_fn! {
    /// `C_Logout`.
    fn C_Logout(hSession: CK_SESSION_HANDLE) {
        module()?.logout(hSession)
    }
}
