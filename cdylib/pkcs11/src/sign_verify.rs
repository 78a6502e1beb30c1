//! Signing and verification (PKCS#11 2.40 §5.11, §5.13).

use cryptoki_sys::*;
use zktoken::Error;

use crate::{cryptoki_fn, input, mechanism, module, out_param, output};

/// Stores a signature length, also when the buffer was too small.
fn answer_length(result: zktoken::Result<usize>, len_out: &mut CK_ULONG) -> zktoken::Result<()> {
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

cryptoki_fn! {
    /// `C_SignInit`: `CKM_ECDSA` or `CKM_ECDSA_SHA256` with a device private key.
    fn C_SignInit(hSession: CK_SESSION_HANDLE, pMechanism: CK_MECHANISM_PTR, hKey: CK_OBJECT_HANDLE) {
        let m = module()?;
        // SAFETY: pMechanism is NULL or valid per the contract.
        let (mech, has_parameter) = unsafe { mechanism(pMechanism) }?;
        m.sign_init(hSession, mech, has_parameter, hKey)
    }
}

cryptoki_fn! {
    /// `C_Sign`: raw r‖s, 64 bytes. A NULL `pSignature` asks for the length.
    fn C_Sign(hSession: CK_SESSION_HANDLE, pData: CK_BYTE_PTR, ulDataLen: CK_ULONG, pSignature: CK_BYTE_PTR, pulSignatureLen: CK_ULONG_PTR) {
        let m = module()?;
        // SAFETY: pData holds ulDataLen bytes per the contract.
        let data = unsafe { input(pData, ulDataLen) }?;
        // SAFETY: a valid in/out pointer per the contract.
        let len = unsafe { out_param(pulSignatureLen) }?;
        // SAFETY: pSignature is NULL or holds *pulSignatureLen bytes.
        let out = unsafe { output(pSignature, *len) }?;
        answer_length(m.sign(hSession, data, out), len)
    }
}

cryptoki_fn! {
    /// `C_SignUpdate` (`CKM_ECDSA_SHA256`).
    fn C_SignUpdate(hSession: CK_SESSION_HANDLE, pPart: CK_BYTE_PTR, ulPartLen: CK_ULONG) {
        let m = module()?;
        // SAFETY: pPart holds ulPartLen bytes per the contract.
        let part = unsafe { input(pPart, ulPartLen) }?;
        m.sign_update(hSession, part)
    }
}

cryptoki_fn! {
    /// `C_SignFinal` (`CKM_ECDSA_SHA256`).
    fn C_SignFinal(hSession: CK_SESSION_HANDLE, pSignature: CK_BYTE_PTR, pulSignatureLen: CK_ULONG_PTR) {
        let m = module()?;
        // SAFETY: a valid in/out pointer per the contract.
        let len = unsafe { out_param(pulSignatureLen) }?;
        // SAFETY: pSignature is NULL or holds *pulSignatureLen bytes.
        let out = unsafe { output(pSignature, *len) }?;
        answer_length(m.sign_final(hSession, out), len)
    }
}

cryptoki_fn! {
    /// `C_SignRecoverInit`: no mechanism recovers data from a signature.
    fn C_SignRecoverInit(hSession: CK_SESSION_HANDLE, _pMechanism: CK_MECHANISM_PTR, _hKey: CK_OBJECT_HANDLE) {
        module()?.session_info(hSession)?;
        Err(Error::FunctionNotSupported("C_SignRecoverInit"))
    }
}

cryptoki_fn! {
    /// `C_SignRecover`: not offered.
    fn C_SignRecover(hSession: CK_SESSION_HANDLE, _pData: CK_BYTE_PTR, _ulDataLen: CK_ULONG, _pSignature: CK_BYTE_PTR, _pulSignatureLen: CK_ULONG_PTR) {
        module()?.session_info(hSession)?;
        Err(Error::FunctionNotSupported("C_SignRecover"))
    }
}

cryptoki_fn! {
    /// `C_VerifyInit`: in software, against the key's public point.
    fn C_VerifyInit(hSession: CK_SESSION_HANDLE, pMechanism: CK_MECHANISM_PTR, hKey: CK_OBJECT_HANDLE) {
        let m = module()?;
        // SAFETY: pMechanism is NULL or valid per the contract.
        let (mech, has_parameter) = unsafe { mechanism(pMechanism) }?;
        m.verify_init(hSession, mech, has_parameter, hKey)
    }
}

cryptoki_fn! {
    /// `C_Verify`.
    fn C_Verify(hSession: CK_SESSION_HANDLE, pData: CK_BYTE_PTR, ulDataLen: CK_ULONG, pSignature: CK_BYTE_PTR, ulSignatureLen: CK_ULONG) {
        let m = module()?;
        // SAFETY: the buffers hold the given lengths per the contract.
        let (data, signature) = unsafe { (input(pData, ulDataLen)?, input(pSignature, ulSignatureLen)?) };
        m.verify(hSession, data, signature)
    }
}

cryptoki_fn! {
    /// `C_VerifyUpdate` (`CKM_ECDSA_SHA256`).
    fn C_VerifyUpdate(hSession: CK_SESSION_HANDLE, pPart: CK_BYTE_PTR, ulPartLen: CK_ULONG) {
        let m = module()?;
        // SAFETY: pPart holds ulPartLen bytes per the contract.
        let part = unsafe { input(pPart, ulPartLen) }?;
        m.verify_update(hSession, part)
    }
}

cryptoki_fn! {
    /// `C_VerifyFinal` (`CKM_ECDSA_SHA256`).
    fn C_VerifyFinal(hSession: CK_SESSION_HANDLE, pSignature: CK_BYTE_PTR, ulSignatureLen: CK_ULONG) {
        let m = module()?;
        // SAFETY: pSignature holds ulSignatureLen bytes per the contract.
        let signature = unsafe { input(pSignature, ulSignatureLen) }?;
        m.verify_final(hSession, signature)
    }
}

cryptoki_fn! {
    /// `C_VerifyRecoverInit`: not offered.
    fn C_VerifyRecoverInit(hSession: CK_SESSION_HANDLE, _pMechanism: CK_MECHANISM_PTR, _hKey: CK_OBJECT_HANDLE) {
        module()?.session_info(hSession)?;
        Err(Error::FunctionNotSupported("C_VerifyRecoverInit"))
    }
}

cryptoki_fn! {
    /// `C_VerifyRecover`: not offered.
    fn C_VerifyRecover(hSession: CK_SESSION_HANDLE, _pSignature: CK_BYTE_PTR, _ulSignatureLen: CK_ULONG, _pData: CK_BYTE_PTR, _pulDataLen: CK_ULONG_PTR) {
        module()?.session_info(hSession)?;
        Err(Error::FunctionNotSupported("C_VerifyRecover"))
    }
}
