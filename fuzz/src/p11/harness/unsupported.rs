//! The functions the module does not offer (PKCS#11 2.40 §5.8–5.10, 5.13,
//! 5.16): each must answer, in any state, without a crash or a secret.

use std::ptr::null_mut;

use cryptoki_sys::*;
use testkit::call;

use super::Harness;
use crate::p11::oracle::check_rv;

impl Harness {
    pub(super) fn unsupported(&mut self, which: u8, s: CK_SESSION_HANDLE) {
        let f = self.raw();
        let mut len: CK_ULONG = 16;
        let mut buf = [0u8; 16];
        let (p, l) = (buf.as_mut_ptr(), &mut len as *mut CK_ULONG);
        let (name, rv) = match which % 16 {
            0 => ("C_EncryptInit", call!(f, C_EncryptInit(s, null_mut(), 0))),
            1 => ("C_Encrypt", call!(f, C_Encrypt(s, p, 16, p, l))),
            2 => ("C_DecryptInit", call!(f, C_DecryptInit(s, null_mut(), 0))),
            3 => ("C_Decrypt", call!(f, C_Decrypt(s, p, 16, p, l))),
            4 => ("C_DigestInit", call!(f, C_DigestInit(s, null_mut()))),
            5 => ("C_Digest", call!(f, C_Digest(s, p, 16, p, l))),
            6 => (
                "C_GetOperationState",
                call!(f, C_GetOperationState(s, p, l)),
            ),
            7 => (
                "C_SetOperationState",
                call!(f, C_SetOperationState(s, p, 16, 0, 0)),
            ),
            8 => (
                "C_SignRecoverInit",
                call!(f, C_SignRecoverInit(s, null_mut(), 0)),
            ),
            9 => ("C_VerifyRecover", call!(f, C_VerifyRecover(s, p, 16, p, l))),
            10 => (
                "C_GenerateKey",
                call!(f, C_GenerateKey(s, null_mut(), null_mut(), 0, null_mut())),
            ),
            11 => ("C_WrapKey", call!(f, C_WrapKey(s, null_mut(), 0, 0, p, l))),
            12 => (
                "C_DeriveKey",
                call!(
                    f,
                    C_DeriveKey(s, null_mut(), 0, null_mut(), 0, null_mut())
                ),
            ),
            13 => ("C_GetFunctionStatus", call!(f, C_GetFunctionStatus(s))),
            14 => ("C_CancelFunction", call!(f, C_CancelFunction(s))),
            _ => (
                "C_WaitForSlotEvent",
                call!(
                    f,
                    C_WaitForSlotEvent(CKF_DONT_BLOCK, null_mut(), null_mut())
                ),
            ),
        };
        check_rv(name, rv);
        self.check_output(name, &buf);
    }
}
