//! Signing and verification (PKCS#11 2.40 §5.11, §5.13).
//!
//! Length rules: a NULL output buffer asks for the length, answered from the
//! key size without touching the device; a short buffer gets
//! `CKR_BUFFER_TOO_SMALL` with the length and the operation stays active.
//! Every other failure of `C_Sign`, `C_SignUpdate`, `C_SignFinal` (and of
//! their verifying counterparts) ends the operation (§5.11, §5.13).
//! Any call that produces a signature makes exactly one device signature,
//! with no token lock held while the device works.

use cryptoki_sys::*;

use crate::curve::Curve;
use crate::error::{Error, Result};
use crate::key::KeySlot;
use crate::mechanism::{self, Input, SignMechanism, DIGEST_LEN, SIGNATURE_LEN};
use crate::module::{Module, SignOp, VerifyOp};
use crate::object::ObjectRef;

/// Checks an output buffer against the signature length: `None` asks for
/// the length only.
fn output_ready(out: Option<&[u8]>) -> Result<bool> {
    match out {
        None => Ok(false),
        Some(buf) if buf.len() < SIGNATURE_LEN => Err(Error::BufferTooSmall {
            required: SIGNATURE_LEN,
        }),
        Some(_) => Ok(true),
    }
}

impl Module {
    /// Ends the session's signing operation, if there is one: `C_SignInit`
    /// with no mechanism, or a call whose arguments were refused before
    /// they reached the token (a failed call ends the operation).
    pub fn end_sign(&self, session: CK_SESSION_HANDLE) -> Result<()> {
        self.lock_sessions().get_mut(session)?.sign = None;
        Ok(())
    }

    /// As [`Module::end_sign`], for verification.
    pub fn end_verify(&self, session: CK_SESSION_HANDLE) -> Result<()> {
        self.lock_sessions().get_mut(session)?.verify = None;
        Ok(())
    }

    pub fn sign_init(
        &self,
        session: CK_SESSION_HANDLE,
        mechanism: CK_MECHANISM_TYPE,
        has_parameter: bool,
        key: CK_OBJECT_HANDLE,
    ) -> Result<()> {
        let token = self.token()?;
        let mut sessions = self.lock_sessions();
        let private_access = self.private_access(&sessions);
        let s = sessions.get_mut(session)?;
        if s.sign.is_some() {
            return Err(Error::OperationActive);
        }
        let mechanism = SignMechanism::from_ck(mechanism, has_parameter)?;
        let slot = match ObjectRef::from_handle(key).map_err(|_| Error::KeyHandleInvalid)? {
            ObjectRef::Key {
                slot,
                public: false,
            } if !slot.foreign => slot,
            ObjectRef::Key { .. } => return Err(Error::KeyFunctionNotPermitted),
            _ => return Err(Error::KeyHandleInvalid),
        };
        let entry = token.key(slot).ok_or(Error::KeyHandleInvalid)?;
        if !private_access {
            return Err(Error::UserNotLoggedIn);
        }
        if !entry.key.curve.is_ecdsa() {
            return Err(Error::KeyTypeInconsistent);
        }
        s.sign = Some(SignOp {
            slot,
            mechanism,
            input: Input::new(mechanism),
            multi_part: false,
        });
        Ok(())
    }

    /// `C_Sign`: returns the signature length; writes the signature when
    /// `out` is given and large enough.
    pub fn sign(
        &self,
        session: CK_SESSION_HANDLE,
        data: &[u8],
        out: Option<&mut [u8]>,
    ) -> Result<usize> {
        let mut sessions = self.lock_sessions();
        let s = sessions.get_mut(session)?;
        let op = s.sign.as_ref().ok_or(Error::OperationNotInitialized)?;
        if op.multi_part {
            s.sign = None;
            return Err(Error::OperationActive);
        }
        if !output_ready(out.as_deref())? {
            return Ok(SIGNATURE_LEN);
        }
        // From here on the operation ends, whatever the outcome.
        let op = s.sign.take().ok_or(Error::OperationNotInitialized)?;
        drop(sessions);
        let digest = Input::digest_of(op.mechanism, data)?;
        let signature = self.device_sign(op.slot, &digest)?;
        if let Some(buf) = out {
            buf[..SIGNATURE_LEN].copy_from_slice(&signature);
        }
        Ok(SIGNATURE_LEN)
    }

    pub fn sign_update(&self, session: CK_SESSION_HANDLE, data: &[u8]) -> Result<()> {
        let mut sessions = self.lock_sessions();
        let s = sessions.get_mut(session)?;
        let op = s.sign.as_mut().ok_or(Error::OperationNotInitialized)?;
        op.multi_part = true;
        if let Err(e) = op.input.update(data) {
            s.sign = None;
            return Err(e);
        }
        Ok(())
    }

    pub fn sign_final(&self, session: CK_SESSION_HANDLE, out: Option<&mut [u8]>) -> Result<usize> {
        let mut sessions = self.lock_sessions();
        let s = sessions.get_mut(session)?;
        let op = s.sign.as_ref().ok_or(Error::OperationNotInitialized)?;
        if op.mechanism == SignMechanism::Ecdsa {
            s.sign = None;
            return Err(Error::FunctionNotSupported("CKM_ECDSA is single-part"));
        }
        if !output_ready(out.as_deref())? {
            return Ok(SIGNATURE_LEN);
        }
        let op = s.sign.take().ok_or(Error::OperationNotInitialized)?;
        drop(sessions);
        let digest = op.input.peek_digest()?;
        let signature = self.device_sign(op.slot, &digest)?;
        if let Some(buf) = out {
            buf[..SIGNATURE_LEN].copy_from_slice(&signature);
        }
        Ok(SIGNATURE_LEN)
    }

    /// One device signature. The device connection has its own lock; no
    /// module lock is held here.
    ///
    /// The signature is checked in software against the key's public point
    /// before it is returned (tens of microseconds, against a device
    /// signature of tens of milliseconds): a device fault never reaches the
    /// caller, and a slot whose key was replaced is noticed. A factory
    /// slot's cached public key is then refreshed; a generated slot's key
    /// was destroyed and another one made in its place (by another process
    /// or tool), so the handle is stale: it fails from now on rather than
    /// sign with a key its caller never chose.
    fn device_sign(&self, slot: KeySlot, digest: &[u8; DIGEST_LEN]) -> Result<[u8; SIGNATURE_LEN]> {
        let token = self.token()?;
        let signature = token
            .device
            .sign_digest(slot.zymkey().number, digest)
            .map_err(|e| {
                tracing::error!(slot = slot.number, "device signature failed: {e}");
                Error::from(e)
            })?;
        let entry = token.key(slot).ok_or(Error::KeyHandleInvalid)?;
        let key = &entry.key;
        let verified = match &entry.verifier {
            Some(verifier) => verifier.verify(digest, &signature),
            None => mechanism::verify_digest(key.curve, &key.raw_public, digest, &signature),
        };
        if verified.is_ok() {
            return Ok(signature);
        }
        tracing::warn!(
            slot = slot.number,
            "signature does not match the cached public key; reading the key from the device"
        );
        let raw = token.read_public_key(slot).map_err(|e| {
            tracing::error!(slot = slot.number, "public key unreadable: {e}");
            Error::from(e)
        })?;
        let curve = Curve::detect(&raw, Some(key.curve))
            .filter(|c| mechanism::verify_digest(*c, &raw, digest, &signature).is_ok())
            .ok_or_else(|| {
                tracing::error!(
                    slot = slot.number,
                    "the device returned a signature that does not verify"
                );
                Error::DeviceError(format!(
                    "slot {} returned an invalid signature",
                    slot.number
                ))
            })?;
        if token.is_removable(slot) {
            tracing::warn!(
                slot = slot.number,
                "the generated key of this slot was replaced; its handles are stale"
            );
            token.retire_key(slot, curve, raw);
            return Err(Error::KeyHandleInvalid);
        }
        token.replace_key(slot, curve, raw);
        Ok(signature)
    }

    pub fn verify_init(
        &self,
        session: CK_SESSION_HANDLE,
        mechanism: CK_MECHANISM_TYPE,
        has_parameter: bool,
        key: CK_OBJECT_HANDLE,
    ) -> Result<()> {
        let token = self.token()?;
        let mut sessions = self.lock_sessions();
        let private_access = self.private_access(&sessions);
        let s = sessions.get_mut(session)?;
        if s.verify.is_some() {
            return Err(Error::OperationActive);
        }
        let mechanism = SignMechanism::from_ck(mechanism, has_parameter)?;
        let (slot, public) =
            match ObjectRef::from_handle(key).map_err(|_| Error::KeyHandleInvalid)? {
                ObjectRef::Key { slot, public } => (slot, public),
                _ => return Err(Error::KeyHandleInvalid),
            };
        let entry = token.key(slot).ok_or(Error::KeyHandleInvalid)?;
        if !public && !private_access {
            return Err(Error::UserNotLoggedIn);
        }
        if !entry.key.curve.is_ecdsa() {
            return Err(Error::KeyTypeInconsistent);
        }
        s.verify = Some(VerifyOp {
            curve: entry.key.curve,
            raw_public: entry.key.raw_public.clone(),
            mechanism,
            input: Input::new(mechanism),
            multi_part: false,
        });
        Ok(())
    }

    pub fn verify(&self, session: CK_SESSION_HANDLE, data: &[u8], signature: &[u8]) -> Result<()> {
        let op = {
            let mut sessions = self.lock_sessions();
            let s = sessions.get_mut(session)?;
            if s.verify
                .as_ref()
                .ok_or(Error::OperationNotInitialized)?
                .multi_part
            {
                s.verify = None;
                return Err(Error::OperationActive);
            }
            s.verify.take().ok_or(Error::OperationNotInitialized)?
        };
        let digest = Input::digest_of(op.mechanism, data)?;
        mechanism::verify_digest(op.curve, &op.raw_public, &digest, signature)
    }

    pub fn verify_update(&self, session: CK_SESSION_HANDLE, data: &[u8]) -> Result<()> {
        let mut sessions = self.lock_sessions();
        let s = sessions.get_mut(session)?;
        let op = s.verify.as_mut().ok_or(Error::OperationNotInitialized)?;
        op.multi_part = true;
        if let Err(e) = op.input.update(data) {
            s.verify = None;
            return Err(e);
        }
        Ok(())
    }

    pub fn verify_final(&self, session: CK_SESSION_HANDLE, signature: &[u8]) -> Result<()> {
        let op = {
            let mut sessions = self.lock_sessions();
            let s = sessions.get_mut(session)?;
            s.verify.take().ok_or(Error::OperationNotInitialized)?
        };
        if op.mechanism == SignMechanism::Ecdsa {
            return Err(Error::FunctionNotSupported("CKM_ECDSA is single-part"));
        }
        let digest = op.input.peek_digest()?;
        mechanism::verify_digest(op.curve, &op.raw_public, &digest, signature)
    }
}
