//! Slot and token management (PKCS#11 2.40 §5.5).

use cryptoki_sys::*;
use zktoken::{Error, Result};

use crate::{export, module, not_supported, out_param, write_list};

export!(C_GetSlotList(
    tokenPresent: CK_BBOOL,
    pSlotList: CK_SLOT_ID_PTR,
    pulCount: CK_ULONG_PTR,
) = unsafe get_slot_list);

/// `C_GetSlotList` (§5.5): the one slot (with `tokenPresent`, only if the
/// Zymkey answers).
///
/// # Safety
/// `pulCount` is NULL or valid; `pSlotList` is NULL or holds `*pulCount` ids.
unsafe fn get_slot_list(
    tokenPresent: CK_BBOOL,
    pSlotList: CK_SLOT_ID_PTR,
    pulCount: CK_ULONG_PTR,
) -> Result<()> {
    let m = module()?;
    let slots = m.slot_list(tokenPresent != CK_FALSE);
    // SAFETY: by the contract above.
    unsafe { write_list(&slots, pSlotList, pulCount) }
}

export!(C_GetSlotInfo(slotID: CK_SLOT_ID, pInfo: CK_SLOT_INFO_PTR) = unsafe get_slot_info);

/// `C_GetSlotInfo` (§5.5).
///
/// # Safety
/// `pInfo` is NULL or valid for writing a `CK_SLOT_INFO`.
unsafe fn get_slot_info(slotID: CK_SLOT_ID, pInfo: CK_SLOT_INFO_PTR) -> Result<()> {
    let m = module()?;
    let info = m.slot_info(slotID)?;
    // SAFETY: by the contract above.
    *unsafe { out_param(pInfo) }? = info;
    Ok(())
}

export!(C_GetTokenInfo(slotID: CK_SLOT_ID, pInfo: CK_TOKEN_INFO_PTR) = unsafe get_token_info);

/// `C_GetTokenInfo` (§5.5).
///
/// # Safety
/// `pInfo` is NULL or valid for writing a `CK_TOKEN_INFO`.
unsafe fn get_token_info(slotID: CK_SLOT_ID, pInfo: CK_TOKEN_INFO_PTR) -> Result<()> {
    let m = module()?;
    // SAFETY: by the contract above.
    let out = unsafe { out_param(pInfo) }?;
    *out = m.token_info(slotID)?;
    Ok(())
}

export!(C_GetMechanismList(
    slotID: CK_SLOT_ID,
    pMechanismList: CK_MECHANISM_TYPE_PTR,
    pulCount: CK_ULONG_PTR,
) = unsafe get_mechanism_list);

/// `C_GetMechanismList` (§5.5).
///
/// # Safety
/// `pulCount` is NULL or valid; `pMechanismList` is NULL or holds
/// `*pulCount` entries.
unsafe fn get_mechanism_list(
    slotID: CK_SLOT_ID,
    pMechanismList: CK_MECHANISM_TYPE_PTR,
    pulCount: CK_ULONG_PTR,
) -> Result<()> {
    let m = module()?;
    let list = m.mechanism_list(slotID)?;
    // SAFETY: by the contract above.
    unsafe { write_list(&list, pMechanismList, pulCount) }
}

export!(C_GetMechanismInfo(
    slotID: CK_SLOT_ID,
    type_: CK_MECHANISM_TYPE,
    pInfo: CK_MECHANISM_INFO_PTR,
) = unsafe get_mechanism_info);

/// `C_GetMechanismInfo` (§5.5).
///
/// # Safety
/// `pInfo` is NULL or valid for writing a `CK_MECHANISM_INFO`.
unsafe fn get_mechanism_info(
    slotID: CK_SLOT_ID,
    type_: CK_MECHANISM_TYPE,
    pInfo: CK_MECHANISM_INFO_PTR,
) -> Result<()> {
    let m = module()?;
    // SAFETY: by the contract above.
    let out = unsafe { out_param(pInfo) }?;
    *out = m.mechanism_info(slotID, type_)?;
    Ok(())
}

not_supported! {
    /// `C_InitToken` (§5.5): the Zymkey is initialised at the factory.
    C_InitToken(slotID, CK_UTF8CHAR_PTR, CK_ULONG, CK_UTF8CHAR_PTR)
        => Error::FunctionNotSupported(
            "C_InitToken: the token label and PIN come from the configuration",
        );
    /// `C_InitPIN` (§5.5): the PIN is set in the configuration file.
    C_InitPIN(hSession, CK_UTF8CHAR_PTR, CK_ULONG)
        => Error::FunctionNotSupported("C_InitPIN: the PIN is set in the configuration file");
    /// `C_SetPIN` (§5.5): the PIN is set in the configuration file.
    C_SetPIN(hSession, CK_UTF8CHAR_PTR, CK_ULONG, CK_UTF8CHAR_PTR, CK_ULONG)
        => Error::FunctionNotSupported("C_SetPIN: the PIN is set in the configuration file");
}
