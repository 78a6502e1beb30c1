//! Key management (PKCS#11 2.40 §5.14).

use cryptoki_sys::*;
use zktoken::{Result, TemplateUse};

use crate::{export, mechanism, module, not_supported, out_param, template};

export!(C_GenerateKeyPair(
    hSession: CK_SESSION_HANDLE,
    pMechanism: CK_MECHANISM_PTR,
    pPublicKeyTemplate: CK_ATTRIBUTE_PTR,
    ulPublicKeyAttributeCount: CK_ULONG,
    pPrivateKeyTemplate: CK_ATTRIBUTE_PTR,
    ulPrivateKeyAttributeCount: CK_ULONG,
    phPublicKey: CK_OBJECT_HANDLE_PTR,
    phPrivateKey: CK_OBJECT_HANDLE_PTR,
) = unsafe generate_key_pair);

/// `C_GenerateKeyPair` (§5.14): `CKM_EC_KEY_PAIR_GEN` on models with a key
/// store (HSM6, SCM); the device makes the key in a new slot.
///
/// # Safety
/// The pointers are NULL or valid as PKCS#11 describes for the function.
#[allow(clippy::too_many_arguments)]
unsafe fn generate_key_pair(
    hSession: CK_SESSION_HANDLE,
    pMechanism: CK_MECHANISM_PTR,
    pPublicKeyTemplate: CK_ATTRIBUTE_PTR,
    ulPublicKeyAttributeCount: CK_ULONG,
    pPrivateKeyTemplate: CK_ATTRIBUTE_PTR,
    ulPrivateKeyAttributeCount: CK_ULONG,
    phPublicKey: CK_OBJECT_HANDLE_PTR,
    phPrivateKey: CK_OBJECT_HANDLE_PTR,
) -> Result<()> {
    const GENERATE: TemplateUse = TemplateUse::GenerateKeyPair;
    let m = module()?;
    // SAFETY: by the contract above.
    let ((mech, has_parameter), public, private, public_out, private_out) = unsafe {
        (
            mechanism(pMechanism)?,
            template(pPublicKeyTemplate, ulPublicKeyAttributeCount, GENERATE)?,
            template(pPrivateKeyTemplate, ulPrivateKeyAttributeCount, GENERATE)?,
            out_param(phPublicKey)?,
            out_param(phPrivateKey)?,
        )
    };
    let (public_handle, private_handle) =
        m.generate_key_pair(hSession, mech, has_parameter, &public, &private)?;
    *public_out = public_handle;
    *private_out = private_handle;
    Ok(())
}

not_supported! {
    /// `C_GenerateKey` (§5.14): the token holds no secret keys.
    C_GenerateKey(hSession, CK_MECHANISM_PTR, CK_ATTRIBUTE_PTR, CK_ULONG, CK_OBJECT_HANDLE_PTR);
    /// `C_WrapKey` (§5.14): device keys never leave the device.
    C_WrapKey(
        hSession,
        CK_MECHANISM_PTR,
        CK_OBJECT_HANDLE,
        CK_OBJECT_HANDLE,
        CK_BYTE_PTR,
        CK_ULONG_PTR,
    );
    /// `C_UnwrapKey` (§5.14): keys cannot be imported.
    C_UnwrapKey(
        hSession,
        CK_MECHANISM_PTR,
        CK_OBJECT_HANDLE,
        CK_BYTE_PTR,
        CK_ULONG,
        CK_ATTRIBUTE_PTR,
        CK_ULONG,
        CK_OBJECT_HANDLE_PTR,
    );
    /// `C_DeriveKey` (§5.14): no mechanism derives keys.
    C_DeriveKey(
        hSession,
        CK_MECHANISM_PTR,
        CK_OBJECT_HANDLE,
        CK_ATTRIBUTE_PTR,
        CK_ULONG,
        CK_OBJECT_HANDLE_PTR,
    );
}
