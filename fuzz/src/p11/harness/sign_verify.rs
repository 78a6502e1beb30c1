//! Signing and verification (PKCS#11 2.40 §5.11, §5.12): every signature the
//! module returns must verify under a device key over what the harness fed
//! the operation.

use std::ptr::null_mut;

use cryptoki_sys::*;
use testkit::call;

use super::{Harness, Signing};
use crate::p11::op::{mechanism_struct, Handle, Mechanism, Out, Signature};
use crate::p11::oracle::{check_length, check_rv, check_signature};

impl Harness {
    pub(super) fn sign_init(&mut self, session: Handle, mechanism: &Mechanism, key: Handle) {
        let s = self.session(session);
        let (_param, mut m) = mechanism_struct(mechanism);
        let mp = if mechanism.null {
            null_mut()
        } else {
            &mut m as *mut _
        };
        let rv = check_rv(
            "C_SignInit",
            call!(self.raw(), C_SignInit(s, mp, self.object(key))),
        );
        if rv == CKR_OK {
            self.signing.insert(
                s,
                Signing {
                    mech: mechanism.mech,
                    data: Vec::new(),
                },
            );
        }
    }

    pub(super) fn sign(&mut self, session: Handle, data: &[u8], out: Out) {
        let s = self.session(session);
        let mut buf = out.buffer(64);
        let mut len = buf.as_ref().map_or(0, |b| b.len()) as CK_ULONG;
        let p = buf.as_mut().map_or(null_mut(), |b| b.as_mut_ptr());
        let rv = check_rv(
            "C_Sign",
            call!(
                self.raw(),
                C_Sign(
                    s,
                    data.as_ptr() as *mut _,
                    data.len() as CK_ULONG,
                    p,
                    &mut len,
                )
            ),
        );
        self.signed("C_Sign", s, rv, buf, len, Some(data));
    }

    pub(super) fn sign_update(&mut self, session: Handle, data: &[u8]) {
        let s = self.session(session);
        let rv = check_rv(
            "C_SignUpdate",
            call!(
                self.raw(),
                C_SignUpdate(s, data.as_ptr() as *mut _, data.len() as CK_ULONG)
            ),
        );
        match (rv, self.signing.get_mut(&s)) {
            (CKR_OK, Some(op)) => op.data.extend_from_slice(data),
            _ => {
                self.signing.remove(&s);
            }
        }
    }

    pub(super) fn sign_final(&mut self, session: Handle, out: Out) {
        let s = self.session(session);
        let mut buf = out.buffer(64);
        let mut len = buf.as_ref().map_or(0, |b| b.len()) as CK_ULONG;
        let p = buf.as_mut().map_or(null_mut(), |b| b.as_mut_ptr());
        let rv = check_rv(
            "C_SignFinal",
            call!(self.raw(), C_SignFinal(s, p, &mut len)),
        );
        self.signed("C_SignFinal", s, rv, buf, len, None);
    }

    /// After `C_Sign`/`C_SignFinal`: a produced signature verifies; the
    /// harness's view of the operation follows what PKCS#11 says ends it.
    fn signed(
        &mut self,
        call: &str,
        s: CK_SESSION_HANDLE,
        rv: CK_RV,
        buf: Option<Vec<u8>>,
        len: CK_ULONG,
        data: Option<&[u8]>,
    ) {
        match (rv, buf) {
            (CKR_OK, Some(buf)) => {
                check_length(call, len, buf.len());
                let sig = &buf[..len as usize];
                self.check_output(call, sig);
                if let Some(op) = self.signing.remove(&s) {
                    let signed = data.map_or(op.data.as_slice(), |d| d);
                    check_signature(&self.keys, op.mech, signed, sig);
                }
                self.last_signature = sig.to_vec();
            }
            (CKR_OK, None) | (CKR_BUFFER_TOO_SMALL, _) => {}
            _ => {
                self.signing.remove(&s);
            }
        }
    }

    pub(super) fn verify_init(&mut self, session: Handle, mechanism: &Mechanism, key: Handle) {
        let (_param, mut m) = mechanism_struct(mechanism);
        let mp = if mechanism.null {
            null_mut()
        } else {
            &mut m as *mut _
        };
        check_rv(
            "C_VerifyInit",
            call!(
                self.raw(),
                C_VerifyInit(self.session(session), mp, self.object(key))
            ),
        );
    }

    pub(super) fn verify(&mut self, session: Handle, data: &[u8], signature: &Signature) {
        let sig = self.signature_bytes(signature);
        check_rv(
            "C_Verify",
            call!(
                self.raw(),
                C_Verify(
                    self.session(session),
                    data.as_ptr() as *mut _,
                    data.len() as CK_ULONG,
                    sig.as_ptr() as *mut _,
                    sig.len() as CK_ULONG,
                )
            ),
        );
    }

    pub(super) fn verify_update(&mut self, session: Handle, data: &[u8]) {
        check_rv(
            "C_VerifyUpdate",
            call!(
                self.raw(),
                C_VerifyUpdate(
                    self.session(session),
                    data.as_ptr() as *mut _,
                    data.len() as CK_ULONG,
                )
            ),
        );
    }

    pub(super) fn verify_final(&mut self, session: Handle, signature: &Signature) {
        let sig = self.signature_bytes(signature);
        check_rv(
            "C_VerifyFinal",
            call!(
                self.raw(),
                C_VerifyFinal(
                    self.session(session),
                    sig.as_ptr() as *mut _,
                    sig.len() as CK_ULONG,
                )
            ),
        );
    }
}
