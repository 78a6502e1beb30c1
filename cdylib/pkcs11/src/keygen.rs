//! Key management (PKCS#11 2.40 §5.14).

use cryptoki_sys::*;
use zktoken::Error;

use crate::{cryptoki_fn, mechanism, module, out_param, template};

cryptoki_fn! {
    /// `C_GenerateKeyPair`: `CKM_EC_KEY_PAIR_GEN` on models with a key
    /// store (HSM6, SCM); the key is made by the device in a new slot.
    fn C_GenerateKeyPair(
        hSession: CK_SESSION_HANDLE,
        pMechanism: CK_MECHANISM_PTR,
        pPublicKeyTemplate: CK_ATTRIBUTE_PTR,
        ulPublicKeyAttributeCount: CK_ULONG,
        pPrivateKeyTemplate: CK_ATTRIBUTE_PTR,
        ulPrivateKeyAttributeCount: CK_ULONG,
        phPublicKey: CK_OBJECT_HANDLE_PTR,
        phPrivateKey: CK_OBJECT_HANDLE_PTR,
    ) {
        let m = module()?;
        // SAFETY: all pointers are NULL or valid per the contract.
        let (mech, has_parameter, public, private, public_out, private_out) = unsafe {
            let (mech, has_parameter) = mechanism(pMechanism)?;
            (
                mech,
                has_parameter,
                template(pPublicKeyTemplate, ulPublicKeyAttributeCount)?,
                template(pPrivateKeyTemplate, ulPrivateKeyAttributeCount)?,
                out_param(phPublicKey)?,
                out_param(phPrivateKey)?,
            )
        };
        let (public_handle, private_handle) = m.generate_key_pair(hSession, mech, has_parameter, &public, &private)?;
        *public_out = public_handle;
        *private_out = private_handle;
        Ok(())
    }
}

cryptoki_fn! {
    /// `C_GenerateKey`: the token holds no secret keys.
    fn C_GenerateKey(hSession: CK_SESSION_HANDLE, _pMechanism: CK_MECHANISM_PTR, _pTemplate: CK_ATTRIBUTE_PTR, _ulCount: CK_ULONG, _phKey: CK_OBJECT_HANDLE_PTR) {
        module()?.session_info(hSession)?;
        Err(Error::FunctionNotSupported("C_GenerateKey"))
    }
}

cryptoki_fn! {
    /// `C_WrapKey`: device keys never leave the device.
    fn C_WrapKey(hSession: CK_SESSION_HANDLE, _pMechanism: CK_MECHANISM_PTR, _hWrappingKey: CK_OBJECT_HANDLE, _hKey: CK_OBJECT_HANDLE, _pWrappedKey: CK_BYTE_PTR, _pulWrappedKeyLen: CK_ULONG_PTR) {
        module()?.session_info(hSession)?;
        Err(Error::FunctionNotSupported("C_WrapKey"))
    }
}

cryptoki_fn! {
    /// `C_UnwrapKey`: keys cannot be imported.
    fn C_UnwrapKey(hSession: CK_SESSION_HANDLE, _pMechanism: CK_MECHANISM_PTR, _hUnwrappingKey: CK_OBJECT_HANDLE, _pWrappedKey: CK_BYTE_PTR, _ulWrappedKeyLen: CK_ULONG, _pTemplate: CK_ATTRIBUTE_PTR, _ulAttributeCount: CK_ULONG, _phKey: CK_OBJECT_HANDLE_PTR) {
        module()?.session_info(hSession)?;
        Err(Error::FunctionNotSupported("C_UnwrapKey"))
    }
}

cryptoki_fn! {
    /// `C_DeriveKey`: not offered.
    fn C_DeriveKey(hSession: CK_SESSION_HANDLE, _pMechanism: CK_MECHANISM_PTR, _hBaseKey: CK_OBJECT_HANDLE, _pTemplate: CK_ATTRIBUTE_PTR, _ulAttributeCount: CK_ULONG, _phKey: CK_OBJECT_HANDLE_PTR) {
        module()?.session_info(hSession)?;
        Err(Error::FunctionNotSupported("C_DeriveKey"))
    }
}
