//! Session management (PKCS#11 2.40 §5.6).

use cryptoki_sys::*;
use zktoken::Result;

use crate::{export, input, module, not_supported, out_param};

export!(C_OpenSession(
    slotID: CK_SLOT_ID,
    flags: CK_FLAGS,
    _pApplication: CK_VOID_PTR,
    _Notify: CK_NOTIFY,
    phSession: CK_SESSION_HANDLE_PTR,
) = unsafe open_session);

/// `C_OpenSession` (§5.6). Notification callbacks are never called.
///
/// # Safety
/// `phSession` is NULL or valid for writing a handle.
unsafe fn open_session(
    slotID: CK_SLOT_ID,
    flags: CK_FLAGS,
    _pApplication: CK_VOID_PTR,
    _Notify: CK_NOTIFY,
    phSession: CK_SESSION_HANDLE_PTR,
) -> Result<()> {
    let m = module()?;
    // SAFETY: by the contract above.
    let out = unsafe { out_param(phSession) }?;
    *out = m.open_session(slotID, flags)?;
    Ok(())
}

export!(C_CloseSession(hSession: CK_SESSION_HANDLE) = close_session);

/// `C_CloseSession` (§5.6).
fn close_session(hSession: CK_SESSION_HANDLE) -> Result<()> {
    module()?.close_session(hSession)
}

export!(C_CloseAllSessions(slotID: CK_SLOT_ID) = close_all_sessions);

/// `C_CloseAllSessions` (§5.6).
fn close_all_sessions(slotID: CK_SLOT_ID) -> Result<()> {
    module()?.close_all_sessions(slotID)
}

export!(C_GetSessionInfo(
    hSession: CK_SESSION_HANDLE,
    pInfo: CK_SESSION_INFO_PTR,
) = unsafe get_session_info);

/// `C_GetSessionInfo` (§5.6).
///
/// # Safety
/// `pInfo` is NULL or valid for writing a `CK_SESSION_INFO`.
unsafe fn get_session_info(hSession: CK_SESSION_HANDLE, pInfo: CK_SESSION_INFO_PTR) -> Result<()> {
    let m = module()?;
    // SAFETY: by the contract above.
    let out = unsafe { out_param(pInfo) }?;
    *out = m.session_info(hSession)?;
    Ok(())
}

not_supported! {
    /// `C_GetOperationState` (§5.6): operation state cannot be saved.
    C_GetOperationState(hSession, CK_BYTE_PTR, CK_ULONG_PTR);
    /// `C_SetOperationState` (§5.6): operation state cannot be restored.
    C_SetOperationState(hSession, CK_BYTE_PTR, CK_ULONG, CK_OBJECT_HANDLE, CK_OBJECT_HANDLE);
}

export!(C_Login(
    hSession: CK_SESSION_HANDLE,
    userType: CK_USER_TYPE,
    pPin: CK_UTF8CHAR_PTR,
    ulPinLen: CK_ULONG,
) = unsafe login);

/// `C_Login` (§5.6). A NULL `pPin` (the specification's protected
/// authentication path) is passed on as no PIN.
///
/// # Safety
/// `pPin` is NULL or valid for reading `ulPinLen` bytes.
unsafe fn login(
    hSession: CK_SESSION_HANDLE,
    userType: CK_USER_TYPE,
    pPin: CK_UTF8CHAR_PTR,
    ulPinLen: CK_ULONG,
) -> Result<()> {
    let m = module()?;
    let pin = if pPin.is_null() {
        None
    } else {
        // SAFETY: by the contract above.
        Some(unsafe { input(pPin, ulPinLen) }?)
    };
    m.login(hSession, userType, pin)
}

export!(C_Logout(hSession: CK_SESSION_HANDLE) = logout);

/// `C_Logout` (§5.6).
fn logout(hSession: CK_SESSION_HANDLE) -> Result<()> {
    module()?.logout(hSession)
}
