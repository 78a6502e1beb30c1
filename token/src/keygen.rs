//! Key-pair generation and removal (PKCS#11 2.40 §5.14) on models with a
//! key store (HSM6, SCM): `C_GenerateKeyPair` makes a new device slot,
//! `C_DestroyObject` of its private key removes it. Factory slots are never
//! removed. The changes of the device's key store themselves, and what a
//! process killed in the middle of one leaves, are `Token`'s
//! (`token/key_store.rs`).

use cryptoki_sys::*;

use crate::attribute::{template_bool, template_ulong, template_value, Attribute, TemplateUse};
use crate::curve::Curve;
use crate::error::{Error, Result};
use crate::key::KeySlot;
use crate::module::Module;
use crate::token::Token;

/// Checks a key template: every attribute and length against the attribute
/// table, then the class, key type and token attributes it may carry.
fn check_key_template(template: &[Attribute], class: CK_OBJECT_CLASS) -> Result<()> {
    TemplateUse::GenerateKeyPair.check(template)?;
    if let Some(c) = template_ulong(template, CKA_CLASS)? {
        if c != class {
            return Err(Error::TemplateInconsistent(
                "CKA_CLASS does not fit the key",
            ));
        }
    }
    if let Some(t) = template_ulong(template, CKA_KEY_TYPE)? {
        if t != CKK_EC {
            return Err(Error::TemplateInconsistent(
                "only CKK_EC keys are generated",
            ));
        }
    }
    if template_bool(template, CKA_TOKEN)? == Some(false) {
        return Err(Error::TemplateInconsistent(
            "device keys are token objects (CKA_TOKEN=TRUE)",
        ));
    }
    if template_bool(template, CKA_EXTRACTABLE)? == Some(true)
        || template_bool(template, CKA_SENSITIVE)? == Some(false)
    {
        return Err(Error::TemplateInconsistent(
            "device keys never leave the device",
        ));
    }
    // Tools ask for usages by default (pkcs11-tool sets CKA_DERIVE): the
    // key is made all the same, with the usages it really has.
    for kind in [CKA_DECRYPT, CKA_UNWRAP, CKA_DERIVE, CKA_ENCRYPT, CKA_WRAP] {
        if template_bool(template, kind)? == Some(true) {
            tracing::info!(
                attribute = kind,
                "requested key usage not available; device keys only sign and verify"
            );
        }
    }
    Ok(())
}

impl Module {
    /// `C_GenerateKeyPair`; returns (public key handle, private key handle).
    pub fn generate_key_pair(
        &self,
        session: CK_SESSION_HANDLE,
        mechanism: CK_MECHANISM_TYPE,
        has_parameter: bool,
        public_template: &[Attribute],
        private_template: &[Attribute],
    ) -> Result<(CK_OBJECT_HANDLE, CK_OBJECT_HANDLE)> {
        let token = self.token()?;
        {
            let sessions = self.lock_sessions();
            let s = sessions.get(session)?;
            if mechanism != CKM_EC_KEY_PAIR_GEN {
                return Err(Error::MechanismInvalid(mechanism));
            }
            if !token.caps.key_store {
                tracing::warn!(
                    model = %token.info.model,
                    "C_GenerateKeyPair refused: this Zymkey model cannot generate keys \
                     (only HSM6 and SCM have a key store); use its factory slots"
                );
                return Err(Error::MechanismInvalid(mechanism));
            }
            if has_parameter {
                return Err(Error::MechanismParamInvalid);
            }
            if !s.read_write {
                return Err(Error::SessionReadOnly);
            }
            if !self.private_access(&sessions) {
                return Err(Error::UserNotLoggedIn);
            }
        }
        check_key_template(public_template, CKO_PUBLIC_KEY)?;
        check_key_template(private_template, CKO_PRIVATE_KEY)?;
        let curve = match template_value(public_template, CKA_EC_PARAMS)
            .or_else(|| template_value(private_template, CKA_EC_PARAMS))
        {
            None => Curve::P256,
            Some(der) => match Curve::from_params(der) {
                Some(c) if c.is_ecdsa() => c,
                _ => return Err(Error::AttributeValueInvalid(CKA_EC_PARAMS)),
            },
        };
        let label = template_value(private_template, CKA_LABEL)
            .or_else(|| template_value(public_template, CKA_LABEL))
            .map(|l| String::from_utf8_lossy(l).into_owned());
        let id = template_value(private_template, CKA_ID)
            .or_else(|| template_value(public_template, CKA_ID))
            .map(<[u8]>::to_vec);

        let entry = token.generate_key(curve, label, id, &self.config)?;
        tracing::info!(
            slot = entry.key.slot.number,
            curve = curve.name(),
            label = %entry.key.label,
            "key pair generated"
        );
        Ok((
            entry.key.slot.public_handle(),
            entry.key.slot.private_handle(),
        ))
    }

    /// Destroys a key object: the private key of a generated slot removes
    /// the key from the device; foreign public keys leave the keyring.
    pub(crate) fn destroy_key(&self, token: &Token, slot: KeySlot, public: bool) -> Result<()> {
        if token.key(slot).is_none() {
            // Tools destroy both objects of a pair; the public one went
            // with its private key.
            return if public && !slot.foreign && token.take_removed(slot) {
                Ok(())
            } else {
                Err(Error::ObjectHandleInvalid)
            };
        }
        if !public && slot.foreign {
            return Err(Error::ObjectHandleInvalid);
        }
        if public && !slot.foreign {
            return Err(Error::ActionProhibited(
                "the public key goes with its private key: destroy that",
            ));
        }
        if !token.is_removable(slot) {
            return Err(Error::ActionProhibited("factory keys cannot be removed"));
        }
        token.remove_key(slot, &self.config)?;
        tracing::info!(slot = slot.number, foreign = slot.foreign, "key removed");
        Ok(())
    }
}
