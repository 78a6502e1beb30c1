//! Functions the token does not offer. Of PKCS#11 2.40: encryption,
//! decryption, digesting (§5.8–5.10), dual-function operations (§5.13),
//! slot events (§5.5) and the legacy parallel-function management (§5.16).
//! Of what 3.0 adds, in its 3.0 function list (and by name): login with a
//! user name and session cancellation (3.0 §5.6), and the message-based
//! functions (3.0 §5.9, 5.11, 5.14, 5.16).

use cryptoki_sys::*;
use zktoken::Error;

use crate::not_supported;

not_supported! {
    C_EncryptInit(hSession, CK_MECHANISM_PTR, CK_OBJECT_HANDLE);
    C_Encrypt(hSession, CK_BYTE_PTR, CK_ULONG, CK_BYTE_PTR, CK_ULONG_PTR);
    C_EncryptUpdate(hSession, CK_BYTE_PTR, CK_ULONG, CK_BYTE_PTR, CK_ULONG_PTR);
    C_EncryptFinal(hSession, CK_BYTE_PTR, CK_ULONG_PTR);
    C_DecryptInit(hSession, CK_MECHANISM_PTR, CK_OBJECT_HANDLE);
    C_Decrypt(hSession, CK_BYTE_PTR, CK_ULONG, CK_BYTE_PTR, CK_ULONG_PTR);
    C_DecryptUpdate(hSession, CK_BYTE_PTR, CK_ULONG, CK_BYTE_PTR, CK_ULONG_PTR);
    C_DecryptFinal(hSession, CK_BYTE_PTR, CK_ULONG_PTR);
    C_DigestInit(hSession, CK_MECHANISM_PTR);
    C_Digest(hSession, CK_BYTE_PTR, CK_ULONG, CK_BYTE_PTR, CK_ULONG_PTR);
    C_DigestUpdate(hSession, CK_BYTE_PTR, CK_ULONG);
    C_DigestKey(hSession, CK_OBJECT_HANDLE);
    C_DigestFinal(hSession, CK_BYTE_PTR, CK_ULONG_PTR);
    C_DigestEncryptUpdate(hSession, CK_BYTE_PTR, CK_ULONG, CK_BYTE_PTR, CK_ULONG_PTR);
    C_DecryptDigestUpdate(hSession, CK_BYTE_PTR, CK_ULONG, CK_BYTE_PTR, CK_ULONG_PTR);
    C_SignEncryptUpdate(hSession, CK_BYTE_PTR, CK_ULONG, CK_BYTE_PTR, CK_ULONG_PTR);
    C_DecryptVerifyUpdate(hSession, CK_BYTE_PTR, CK_ULONG, CK_BYTE_PTR, CK_ULONG_PTR);
    /// Slot events are not reported (§5.5).
    C_WaitForSlotEvent(CK_FLAGS, CK_SLOT_ID_PTR, CK_VOID_PTR);
    /// Legacy (§5.16): functions never run in parallel, which the
    /// specification answers with `CKR_FUNCTION_NOT_PARALLEL`.
    C_GetFunctionStatus(hSession) => Error::FunctionNotParallel;
    C_CancelFunction(hSession) => Error::FunctionNotParallel;
    /// The token has no user names (3.0 §5.6.9).
    C_LoginUser(hSession, CK_USER_TYPE, CK_UTF8CHAR_PTR, CK_ULONG, CK_UTF8CHAR_PTR, CK_ULONG);
    C_SessionCancel(hSession, CK_FLAGS);
    C_MessageEncryptInit(hSession, CK_MECHANISM_PTR, CK_OBJECT_HANDLE);
    C_EncryptMessage(hSession, CK_VOID_PTR, CK_ULONG, CK_BYTE_PTR, CK_ULONG, CK_BYTE_PTR,
        CK_ULONG, CK_BYTE_PTR, CK_ULONG_PTR);
    C_EncryptMessageBegin(hSession, CK_VOID_PTR, CK_ULONG, CK_BYTE_PTR, CK_ULONG);
    C_EncryptMessageNext(hSession, CK_VOID_PTR, CK_ULONG, CK_BYTE_PTR, CK_ULONG, CK_BYTE_PTR,
        CK_ULONG_PTR, CK_FLAGS);
    C_MessageEncryptFinal(hSession);
    C_MessageDecryptInit(hSession, CK_MECHANISM_PTR, CK_OBJECT_HANDLE);
    C_DecryptMessage(hSession, CK_VOID_PTR, CK_ULONG, CK_BYTE_PTR, CK_ULONG, CK_BYTE_PTR,
        CK_ULONG, CK_BYTE_PTR, CK_ULONG_PTR);
    C_DecryptMessageBegin(hSession, CK_VOID_PTR, CK_ULONG, CK_BYTE_PTR, CK_ULONG);
    C_DecryptMessageNext(hSession, CK_VOID_PTR, CK_ULONG, CK_BYTE_PTR, CK_ULONG, CK_BYTE_PTR,
        CK_ULONG_PTR, CK_FLAGS);
    C_MessageDecryptFinal(hSession);
    C_MessageSignInit(hSession, CK_MECHANISM_PTR, CK_OBJECT_HANDLE);
    C_SignMessage(hSession, CK_VOID_PTR, CK_ULONG, CK_BYTE_PTR, CK_ULONG, CK_BYTE_PTR,
        CK_ULONG_PTR);
    C_SignMessageBegin(hSession, CK_VOID_PTR, CK_ULONG);
    C_SignMessageNext(hSession, CK_VOID_PTR, CK_ULONG, CK_BYTE_PTR, CK_ULONG, CK_BYTE_PTR,
        CK_ULONG_PTR);
    C_MessageSignFinal(hSession);
    C_MessageVerifyInit(hSession, CK_MECHANISM_PTR, CK_OBJECT_HANDLE);
    C_VerifyMessage(hSession, CK_VOID_PTR, CK_ULONG, CK_BYTE_PTR, CK_ULONG, CK_BYTE_PTR, CK_ULONG);
    C_VerifyMessageBegin(hSession, CK_VOID_PTR, CK_ULONG);
    C_VerifyMessageNext(hSession, CK_VOID_PTR, CK_ULONG, CK_BYTE_PTR, CK_ULONG, CK_BYTE_PTR,
        CK_ULONG);
    C_MessageVerifyFinal(hSession);
}
