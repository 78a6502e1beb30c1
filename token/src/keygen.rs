//! Key-pair generation and removal (PKCS#11 2.40 §5.14) on models with a
//! key store (HSM6, SCM): `C_GenerateKeyPair` makes a new device slot,
//! `C_DestroyObject` of its private key removes it. Factory slots are never
//! removed.
//!
//! A process can be killed between the device's answer and the store's
//! record. For a generation, whose slot the device picks, that would leave
//! a key without the label and id its caller asked for; for a removal, a
//! key the token still shows. So each change of the key store, in any
//! process of the store, holds the store's key store lock and notes itself
//! in the store before asking the device (a generation: what it asks for
//! and the slots in use; a removal: the slot and its public key); the
//! transaction that records the outcome ends the note. A note left behind
//! is a change whose process died, and the next change, or the next
//! process that loads the token while no change runs, finishes it: a
//! generation's key is the one slot that appeared since, and gets the label
//! and id asked for; a removal removes the key if the slot still holds
//! exactly that key, and forgets it. A key is never removed on a guess:
//! when the slots do not tell (none appeared, or several did, made by
//! other tools), the note is dropped and such keys show with the slot's
//! defaults, as any key made outside this module does.

use std::sync::Arc;
use std::time::Duration;

use cryptoki_sys::*;
use zkconf::Config;

use crate::attribute::{template_bool, template_ulong, template_value, Attribute, TemplateUse};
use crate::curve::{normalize_public_key, Curve};
use crate::error::{Error, Result};
use crate::key::{KeyEntry, KeySlot};
use crate::lock::FileLock;
use crate::module::Module;
use crate::store::KeyGeneration;
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

/// How long a change of the key store waits for one in progress (in any
/// process): generations and removals take well under a second.
const KEY_STORE_WAIT: Duration = Duration::from_secs(30);

/// What finishing the changes of processes that died did.
#[derive(Debug, Default)]
pub(crate) struct FinishedChanges {
    /// Slots whose generated key got the label and id asked for.
    pub(crate) bound: Vec<KeySlot>,
    /// Slots whose key is gone.
    pub(crate) removed: Vec<KeySlot>,
}

impl Token {
    /// Takes the key store lock, waiting for a change in progress.
    fn lock_key_store(&self) -> Result<FileLock> {
        let path = self.key_store_lock_path()?;
        FileLock::exclusive_within(&path, KEY_STORE_WAIT)
            .map_err(|e| Error::GeneralError(format!("key store lock {}: {e}", path.display())))?
            .ok_or_else(|| {
                Error::FunctionFailed(format!(
                    "another change of the key store held {} for {} s",
                    path.display(),
                    KEY_STORE_WAIT.as_secs()
                ))
            })
    }

    /// Makes a key on `curve` and shows it with `label` and `id`; see the
    /// top of this file for what a process killed meanwhile leaves.
    fn generate_key(
        &self,
        curve: Curve,
        label: Option<String>,
        id: Option<Vec<u8>>,
        config: &Config,
    ) -> Result<Arc<KeyEntry>> {
        let _lock = self.lock_key_store()?;
        self.finish_interrupted_changes(config)?;
        let generation = KeyGeneration {
            curve,
            label,
            id,
            slots_before: self.slots_in_use(false)?,
        };
        let row = self.with_store(|s| s.begin_key_generation(&generation).map_err(Error::from))?;
        match self.make_key(curve) {
            Ok((slot, raw)) => Ok(self.add_generated_key(row, slot, raw, &generation, config)),
            Err((error, left_on_device)) => {
                if !left_on_device {
                    if let Err(e) =
                        self.with_store(|s| s.end_key_generation(row).map_err(Error::from))
                    {
                        tracing::warn!("failed key generation left noted: {e}");
                    }
                }
                Err(error)
            }
        }
    }

    /// Asks the device for a key and reads its public key. On failure, says
    /// whether a key the token cannot use may be left on the device.
    fn make_key(&self, curve: Curve) -> std::result::Result<(KeySlot, Vec<u8>), (Error, bool)> {
        let number = self.device.generate_key(curve.zymkey_type()).map_err(|e| {
            tracing::error!("key generation on the device failed: {e}");
            (Error::from(e), false)
        })?;
        let slot = u32::try_from(number).map(KeySlot::device).map_err(|_| {
            (
                Error::DeviceError(format!("key generation returned slot {number}")),
                true,
            )
        })?;
        let checked = self
            .device
            .public_key(slot.zymkey())
            .map(normalize_public_key)
            .map_err(|e| {
                tracing::error!(slot = slot.number, "new key's public key unreadable: {e}");
                Error::from(e)
            })
            .and_then(|raw| {
                if Curve::detect(&raw, Some(curve)) == Some(curve) {
                    Ok(raw)
                } else {
                    Err(Error::DeviceError(format!(
                        "slot {} holds a {}-byte key that is not on {}",
                        slot.number,
                        raw.len(),
                        curve.name()
                    )))
                }
            });
        match checked {
            Ok(raw) => Ok((slot, raw)),
            // Nobody asked for that key: it goes, if the device lets it.
            Err(error) => Err((error, self.device.remove_key(slot.zymkey()).is_err())),
        }
    }

    /// Removes the key shown in `slot` from the device, then from the
    /// objects shown, the device cache and the store.
    pub(crate) fn remove_key(&self, slot: KeySlot, config: &Config) -> Result<()> {
        let _lock = self.lock_key_store()?;
        self.finish_interrupted_changes(config)?;
        let raw = self
            .key(slot)
            .map(|entry| entry.key.raw_public.clone())
            .ok_or(Error::ObjectHandleInvalid)?;
        self.with_store(|s| s.begin_key_removal(slot, &raw).map_err(Error::from))?;
        if let Err(e) = self.device.remove_key(slot.zymkey()) {
            tracing::error!(slot = slot.number, "key removal failed: {e}");
            if let Err(e) = self.with_store(|s| s.end_key_removal(slot).map_err(Error::from)) {
                tracing::warn!("refused key removal left noted: {e}");
            }
            return Err(Error::from(e));
        }
        self.forget_removed_key(slot);
        Ok(())
    }

    /// The device's slots in use, of the key store or the foreign keyring.
    fn slots_in_use(&self, foreign: bool) -> Result<Vec<u32>> {
        let list = self.device.allocated_slots(foreign).map_err(|e| {
            tracing::error!(foreign, "key slots unreadable: {e}");
            Error::from(e)
        })?;
        Ok(list
            .slots
            .into_iter()
            .filter_map(|n| u32::try_from(n).ok())
            .collect())
    }

    /// At load: finishes the changes of processes that died, unless a
    /// change is running now (its note is not left behind).
    pub(crate) fn finish_interrupted_changes_if_idle(&self, config: &Config) -> FinishedChanges {
        let pending = self
            .read_store(|s| s.has_unfinished_changes().map_err(Error::from))
            .unwrap_or(false);
        if !pending {
            return FinishedChanges::default();
        }
        let lock = self
            .key_store_lock_path()
            .ok()
            .and_then(|path| FileLock::try_exclusive(&path).ok().flatten());
        if lock.is_none() {
            return FinishedChanges::default();
        }
        self.finish_interrupted_changes(config).unwrap_or_else(|e| {
            tracing::warn!("interrupted key store change not finished: {e}");
            FinishedChanges::default()
        })
    }

    /// With the key store lock held: finishes each change whose process
    /// died (see the top of this file).
    fn finish_interrupted_changes(&self, config: &Config) -> Result<FinishedChanges> {
        let mut finished = FinishedChanges::default();
        let removals = self.read_store(|s| s.unfinished_key_removals().map_err(Error::from))?;
        for (slot, raw) in removals {
            if self.slots_in_use(slot.foreign)?.contains(&slot.number) {
                let now = normalize_public_key(self.device.public_key(slot.zymkey())?);
                if now == raw {
                    self.device.remove_key(slot.zymkey())?;
                }
            }
            tracing::info!(
                slot = slot.number,
                foreign = slot.foreign,
                "the key removal of a process that died is finished"
            );
            self.forget_removed_key(slot);
            finished.removed.push(slot);
        }
        let generations =
            self.read_store(|s| s.unfinished_key_generations().map_err(Error::from))?;
        if !generations.is_empty() {
            let now = self.slots_in_use(false)?;
            for (row, generation) in generations {
                let appeared: Vec<KeySlot> = now
                    .iter()
                    .filter(|n| {
                        **n >= self.caps.first_free_slot && !generation.slots_before.contains(n)
                    })
                    .map(|n| KeySlot::device(*n))
                    .filter(|slot| !finished.bound.contains(slot))
                    .collect();
                let key = match appeared[..] {
                    [slot] => self
                        .device
                        .public_key(slot.zymkey())
                        .map(normalize_public_key)
                        .ok()
                        .filter(|raw| {
                            Curve::detect(raw, Some(generation.curve)) == Some(generation.curve)
                        })
                        .map(|raw| (slot, raw)),
                    _ => None,
                };
                match key {
                    Some((slot, raw)) => {
                        self.with_store(|s| {
                            s.record_generated_key(row, slot, &raw, &generation)
                                .map_err(Error::from)
                        })?;
                        tracing::info!(
                            slot = slot.number,
                            label = generation.label.as_deref().unwrap_or(""),
                            "the key of a generation whose process died gets the label and id asked for"
                        );
                        self.show_generated_key(slot, raw, &generation, config);
                        finished.bound.push(slot);
                    }
                    None => {
                        tracing::info!(
                            slots = ?appeared.iter().map(|s| s.number).collect::<Vec<_>>(),
                            "a generation whose process died left no key that is surely its own"
                        );
                        self.with_store(|s| s.end_key_generation(row).map_err(Error::from))?;
                    }
                }
            }
        }
        if !finished.bound.is_empty() {
            self.forget_device_cache();
        }
        Ok(finished)
    }
}
