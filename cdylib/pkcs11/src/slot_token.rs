//! Slot and token management (PKCS#11 2.40 §5.5).

use cryptoki_sys::*;
use zktoken::Error;

use crate::{cryptoki_fn, module, out_param, write_list};

cryptoki_fn! {
    /// `C_GetSlotList`: the one slot (when `tokenPresent`, only if the
    /// Zymkey answers).
    fn C_GetSlotList(tokenPresent: CK_BBOOL, pSlotList: CK_SLOT_ID_PTR, pulCount: CK_ULONG_PTR) {
        let m = module()?;
        let slots = m.slot_list(tokenPresent != CK_FALSE);
        // SAFETY: pSlotList holds *pulCount ids (or is NULL); pulCount is valid.
        unsafe { write_list(&slots, pSlotList, pulCount) }
    }
}

cryptoki_fn! {
    /// `C_GetSlotInfo`.
    fn C_GetSlotInfo(slotID: CK_SLOT_ID, pInfo: CK_SLOT_INFO_PTR) {
        let m = module()?;
        let info = m.slot_info(slotID)?;
        // SAFETY: a valid out-pointer per the contract.
        *unsafe { out_param(pInfo) }? = info;
        Ok(())
    }
}

cryptoki_fn! {
    /// `C_GetTokenInfo`.
    fn C_GetTokenInfo(slotID: CK_SLOT_ID, pInfo: CK_TOKEN_INFO_PTR) {
        let m = module()?;
        // SAFETY: a valid out-pointer per the contract.
        let out = unsafe { out_param(pInfo) }?;
        *out = m.token_info(slotID)?;
        Ok(())
    }
}

cryptoki_fn! {
    /// `C_GetMechanismList`.
    fn C_GetMechanismList(slotID: CK_SLOT_ID, pMechanismList: CK_MECHANISM_TYPE_PTR, pulCount: CK_ULONG_PTR) {
        let m = module()?;
        let list = m.mechanism_list(slotID)?;
        // SAFETY: pMechanismList holds *pulCount entries (or is NULL); pulCount is valid.
        unsafe { write_list(&list, pMechanismList, pulCount) }
    }
}

cryptoki_fn! {
    /// `C_GetMechanismInfo`.
    fn C_GetMechanismInfo(slotID: CK_SLOT_ID, type_: CK_MECHANISM_TYPE, pInfo: CK_MECHANISM_INFO_PTR) {
        let m = module()?;
        // SAFETY: a valid out-pointer per the contract.
        let out = unsafe { out_param(pInfo) }?;
        *out = m.mechanism_info(slotID, type_)?;
        Ok(())
    }
}

cryptoki_fn! {
    /// `C_InitToken`: the Zymkey is initialised at the factory; nothing to do here.
    fn C_InitToken(slotID: CK_SLOT_ID, _pPin: CK_UTF8CHAR_PTR, _ulPinLen: CK_ULONG, _pLabel: CK_UTF8CHAR_PTR) {
        let m = module()?;
        m.slot_info(slotID)?;
        Err(Error::FunctionNotSupported("C_InitToken: the token label and PIN come from the configuration"))
    }
}

cryptoki_fn! {
    /// `C_InitPIN`: the PIN is set in the configuration file.
    fn C_InitPIN(hSession: CK_SESSION_HANDLE, _pPin: CK_UTF8CHAR_PTR, _ulPinLen: CK_ULONG) {
        module()?.session_info(hSession)?;
        Err(Error::FunctionNotSupported("C_InitPIN: the PIN is set in the configuration file"))
    }
}

cryptoki_fn! {
    /// `C_SetPIN`: the PIN is set in the configuration file.
    fn C_SetPIN(hSession: CK_SESSION_HANDLE, _pOldPin: CK_UTF8CHAR_PTR, _ulOldLen: CK_ULONG, _pNewPin: CK_UTF8CHAR_PTR, _ulNewLen: CK_ULONG) {
        module()?.session_info(hSession)?;
        Err(Error::FunctionNotSupported("C_SetPIN: the PIN is set in the configuration file"))
    }
}
