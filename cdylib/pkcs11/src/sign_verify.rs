//! Signing and verification (PKCS#11 2.40 §5.11, §5.12).
//!
//! Which mechanisms sign and verify, and with what input, is the token's
//! (its mechanism list); this file only moves the caller's buffers.

use cryptoki_sys::*;
use zktoken::Result;

use crate::{export, input, mechanism, module, not_supported, out_param, output};

/// Arguments refused here never reach the token, yet the call failed, and a
/// failed call ends the operation (§5.11, §5.12): `end` ends it.
fn ending<T>(arguments: Result<T>, end: impl FnOnce() -> Result<()>) -> Result<T> {
    if arguments.is_err() {
        let _ = end();
    }
    arguments
}

/// Stores a signature length, also when the buffer was too small.
fn answer_length(result: Result<usize>, len_out: &mut CK_ULONG) -> Result<()> {
    match result {
        Ok(n) => {
            *len_out = n as CK_ULONG;
            Ok(())
        }
        Err(e) => {
            if let Some(n) = e.required_len() {
                *len_out = n as CK_ULONG;
            }
            Err(e)
        }
    }
}

export!(C_SignInit(
    hSession: CK_SESSION_HANDLE,
    pMechanism: CK_MECHANISM_PTR,
    hKey: CK_OBJECT_HANDLE,
) = unsafe sign_init);

/// `C_SignInit` (§5.11), with a device private key. No mechanism cancels
/// the active operation (PKCS#11 3.0 §5.13; pkcs11-provider relies on it).
///
/// # Safety
/// `pMechanism` is NULL or points to a valid `CK_MECHANISM`.
unsafe fn sign_init(
    hSession: CK_SESSION_HANDLE,
    pMechanism: CK_MECHANISM_PTR,
    hKey: CK_OBJECT_HANDLE,
) -> Result<()> {
    let m = module()?;
    if pMechanism.is_null() {
        return m.end_sign(hSession);
    }
    // SAFETY: by the contract above.
    let (mech, has_parameter) = unsafe { mechanism(pMechanism) }?;
    m.sign_init(hSession, mech, has_parameter, hKey)
}

export!(C_Sign(
    hSession: CK_SESSION_HANDLE,
    pData: CK_BYTE_PTR,
    ulDataLen: CK_ULONG,
    pSignature: CK_BYTE_PTR,
    pulSignatureLen: CK_ULONG_PTR,
) = unsafe sign);

/// `C_Sign` (§5.11). A NULL `pSignature` asks for the length (§5.2).
///
/// # Safety
/// `pData` is NULL or holds `ulDataLen` bytes; `pulSignatureLen` is NULL or
/// valid; `pSignature` is NULL or holds `*pulSignatureLen` bytes.
unsafe fn sign(
    hSession: CK_SESSION_HANDLE,
    pData: CK_BYTE_PTR,
    ulDataLen: CK_ULONG,
    pSignature: CK_BYTE_PTR,
    pulSignatureLen: CK_ULONG_PTR,
) -> Result<()> {
    let m = module()?;
    let arguments = || {
        // SAFETY: by the contract above.
        let (data, len) = unsafe { (input(pData, ulDataLen)?, out_param(pulSignatureLen)?) };
        // SAFETY: by the contract above.
        let out = unsafe { output(pSignature, *len) }?;
        Ok((data, len, out))
    };
    let (data, len, out) = ending(arguments(), || m.end_sign(hSession))?;
    answer_length(m.sign(hSession, data, out), len)
}

export!(C_SignUpdate(
    hSession: CK_SESSION_HANDLE,
    pPart: CK_BYTE_PTR,
    ulPartLen: CK_ULONG,
) = unsafe sign_update);

/// `C_SignUpdate` (§5.11).
///
/// # Safety
/// `pPart` is NULL or holds `ulPartLen` bytes.
unsafe fn sign_update(
    hSession: CK_SESSION_HANDLE,
    pPart: CK_BYTE_PTR,
    ulPartLen: CK_ULONG,
) -> Result<()> {
    let m = module()?;
    // SAFETY: by the contract above.
    let part = ending(unsafe { input(pPart, ulPartLen) }, || m.end_sign(hSession))?;
    m.sign_update(hSession, part)
}

export!(C_SignFinal(
    hSession: CK_SESSION_HANDLE,
    pSignature: CK_BYTE_PTR,
    pulSignatureLen: CK_ULONG_PTR,
) = unsafe sign_final);

/// `C_SignFinal` (§5.11). A NULL `pSignature` asks for the length (§5.2).
///
/// # Safety
/// `pulSignatureLen` is NULL or valid; `pSignature` is NULL or holds
/// `*pulSignatureLen` bytes.
unsafe fn sign_final(
    hSession: CK_SESSION_HANDLE,
    pSignature: CK_BYTE_PTR,
    pulSignatureLen: CK_ULONG_PTR,
) -> Result<()> {
    let m = module()?;
    let arguments = || {
        // SAFETY: by the contract above.
        let len = unsafe { out_param(pulSignatureLen) }?;
        // SAFETY: by the contract above.
        let out = unsafe { output(pSignature, *len) }?;
        Ok((len, out))
    };
    let (len, out) = ending(arguments(), || m.end_sign(hSession))?;
    answer_length(m.sign_final(hSession, out), len)
}

not_supported! {
    /// `C_SignRecoverInit` (§5.11): no mechanism recovers data from a signature.
    C_SignRecoverInit(hSession, CK_MECHANISM_PTR, CK_OBJECT_HANDLE);
    /// `C_SignRecover` (§5.11): no mechanism recovers data from a signature.
    C_SignRecover(hSession, CK_BYTE_PTR, CK_ULONG, CK_BYTE_PTR, CK_ULONG_PTR);
}

export!(C_VerifyInit(
    hSession: CK_SESSION_HANDLE,
    pMechanism: CK_MECHANISM_PTR,
    hKey: CK_OBJECT_HANDLE,
) = unsafe verify_init);

/// `C_VerifyInit` (§5.12): in software, against the key's public point. No
/// mechanism cancels the active operation, as for `C_SignInit`.
///
/// # Safety
/// `pMechanism` is NULL or points to a valid `CK_MECHANISM`.
unsafe fn verify_init(
    hSession: CK_SESSION_HANDLE,
    pMechanism: CK_MECHANISM_PTR,
    hKey: CK_OBJECT_HANDLE,
) -> Result<()> {
    let m = module()?;
    if pMechanism.is_null() {
        return m.end_verify(hSession);
    }
    // SAFETY: by the contract above.
    let (mech, has_parameter) = unsafe { mechanism(pMechanism) }?;
    m.verify_init(hSession, mech, has_parameter, hKey)
}

export!(C_Verify(
    hSession: CK_SESSION_HANDLE,
    pData: CK_BYTE_PTR,
    ulDataLen: CK_ULONG,
    pSignature: CK_BYTE_PTR,
    ulSignatureLen: CK_ULONG,
) = unsafe verify);

/// `C_Verify` (§5.12).
///
/// # Safety
/// `pData` and `pSignature` are NULL or hold the bytes their lengths say.
unsafe fn verify(
    hSession: CK_SESSION_HANDLE,
    pData: CK_BYTE_PTR,
    ulDataLen: CK_ULONG,
    pSignature: CK_BYTE_PTR,
    ulSignatureLen: CK_ULONG,
) -> Result<()> {
    let m = module()?;
    // SAFETY: by the contract above.
    let arguments =
        || unsafe { Ok((input(pData, ulDataLen)?, input(pSignature, ulSignatureLen)?)) };
    let (data, signature) = ending(arguments(), || m.end_verify(hSession))?;
    m.verify(hSession, data, signature)
}

export!(C_VerifyUpdate(
    hSession: CK_SESSION_HANDLE,
    pPart: CK_BYTE_PTR,
    ulPartLen: CK_ULONG,
) = unsafe verify_update);

/// `C_VerifyUpdate` (§5.12).
///
/// # Safety
/// `pPart` is NULL or holds `ulPartLen` bytes.
unsafe fn verify_update(
    hSession: CK_SESSION_HANDLE,
    pPart: CK_BYTE_PTR,
    ulPartLen: CK_ULONG,
) -> Result<()> {
    let m = module()?;
    // SAFETY: by the contract above.
    let part = ending(unsafe { input(pPart, ulPartLen) }, || {
        m.end_verify(hSession)
    })?;
    m.verify_update(hSession, part)
}

export!(C_VerifyFinal(
    hSession: CK_SESSION_HANDLE,
    pSignature: CK_BYTE_PTR,
    ulSignatureLen: CK_ULONG,
) = unsafe verify_final);

/// `C_VerifyFinal` (§5.12).
///
/// # Safety
/// `pSignature` is NULL or holds `ulSignatureLen` bytes.
unsafe fn verify_final(
    hSession: CK_SESSION_HANDLE,
    pSignature: CK_BYTE_PTR,
    ulSignatureLen: CK_ULONG,
) -> Result<()> {
    let m = module()?;
    // SAFETY: by the contract above.
    let signature = ending(unsafe { input(pSignature, ulSignatureLen) }, || {
        m.end_verify(hSession)
    })?;
    m.verify_final(hSession, signature)
}

not_supported! {
    /// `C_VerifyRecoverInit` (§5.12): no mechanism recovers data from a signature.
    C_VerifyRecoverInit(hSession, CK_MECHANISM_PTR, CK_OBJECT_HANDLE);
    /// `C_VerifyRecover` (§5.12): no mechanism recovers data from a signature.
    C_VerifyRecover(hSession, CK_BYTE_PTR, CK_ULONG, CK_BYTE_PTR, CK_ULONG_PTR);
}
