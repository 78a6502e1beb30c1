//! Changes of the device's key store (HSM6, SCM): key generation and
//! removal, as `Token` makes them for `C_GenerateKeyPair` and
//! `C_DestroyObject` (`keygen.rs`).
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

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use zkconf::Config;

use super::Token;
use crate::curve::Curve;
use crate::error::{Error, Result};
use crate::key::{KeyEntry, KeySlot};
use crate::lock::{lock, write, FileLock};
use crate::store::KeyGeneration;

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
    /// Shows a key just generated in `slot`, and records it (with the label
    /// and id the caller gave) in the store for later processes, ending
    /// its generation `row`. The device cache learns the slot first: a
    /// process that dies before the store's record leaves an unfinished
    /// generation, which is bound to this slot later (see the top of this file).
    pub(crate) fn add_generated_key(
        &self,
        row: i64,
        slot: KeySlot,
        raw: Vec<u8>,
        generation: &KeyGeneration,
        config: &Config,
    ) -> Arc<KeyEntry> {
        if let Some(cache) = &self.device_cache {
            cache.update_slots(&self.anchor, |slots| slots.push(slot));
        }
        if let Err(e) = self.with_store(|s| s.record_generated_key(row, slot, &raw, generation)) {
            // The key exists on the device and is shown; the next key
            // generation gives it its label and id for later processes.
            tracing::error!(slot = slot.number, "generated key not recorded: {e}");
        }
        self.show_generated_key(slot, raw, generation, config)
    }

    /// Shows `slot`'s key with the label and id of its generation.
    pub(crate) fn show_generated_key(
        &self,
        slot: KeySlot,
        raw: Vec<u8>,
        generation: &KeyGeneration,
        config: &Config,
    ) -> Arc<KeyEntry> {
        let key = self.device_key(
            slot,
            generation.curve,
            raw,
            generation.label.clone(),
            generation.id.clone(),
            config,
        );
        let entry = Arc::new(KeyEntry::new(key, self.login_required));
        write(&self.keys).insert(slot, entry.clone());
        entry
    }

    /// The lock every change of the device's key store (generation,
    /// removal) through this store holds, in any process.
    pub(crate) fn key_store_lock_path(&self) -> Result<PathBuf> {
        let path = self.store_path()?;
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(".keystore.lock");
        Ok(path.with_file_name(name))
    }

    /// Forgets a key removed from the device: from the objects shown, the
    /// device cache and the store, which ends its removal.
    pub(crate) fn forget_removed_key(&self, slot: KeySlot) {
        if write(&self.keys).remove(&slot).is_some() && !slot.foreign {
            lock(&self.removed).insert(slot);
        }
        if let Some(cache) = &self.device_cache {
            cache.update_slots(&self.anchor, |slots| slots.retain(|s| *s != slot));
        }
        if let Err(e) = self.with_store(|s| s.forget_key(slot)) {
            // Its removal stays noted: the next change of the key store ends it.
            tracing::error!(
                slot = slot.number,
                "removed key still cached in the store: {e}"
            );
        }
    }

    /// Whether `slot`'s key was removed through this module and its public
    /// key object not yet destroyed; true once.
    pub(crate) fn take_removed(&self, slot: KeySlot) -> bool {
        lock(&self.removed).remove(&slot)
    }

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
    pub(crate) fn generate_key(
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
        let row = self.with_store(|s| s.begin_key_generation(&generation))?;
        match self.make_key(curve) {
            Ok((slot, raw)) => Ok(self.add_generated_key(row, slot, raw, &generation, config)),
            Err((error, left_on_device)) => {
                if !left_on_device {
                    if let Err(e) = self.with_store(|s| s.end_key_generation(row)) {
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
            .read_public_key(slot)
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
        self.with_store(|s| s.begin_key_removal(slot, &raw))?;
        if let Err(e) = self.device.remove_key(slot.zymkey()) {
            tracing::error!(slot = slot.number, "key removal failed: {e}");
            if let Err(e) = self.with_store(|s| s.end_key_removal(slot)) {
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
            .read_store(|s| s.has_unfinished_changes())
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
        let removals = self.read_store(|s| s.unfinished_key_removals())?;
        for (slot, raw) in removals {
            if self.slots_in_use(slot.foreign)?.contains(&slot.number) {
                let now = self.read_public_key(slot)?;
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
        let generations = self.read_store(|s| s.unfinished_key_generations())?;
        if !generations.is_empty() {
            let now = self.slots_in_use(false)?;
            for (row, generation) in generations {
                let appeared: Vec<KeySlot> = now
                    .iter()
                    .filter(|n| {
                        **n >= self.caps.first_free_slot() && !generation.slots_before.contains(n)
                    })
                    .map(|n| KeySlot::device(*n))
                    .filter(|slot| !finished.bound.contains(slot))
                    .collect();
                let key = match appeared[..] {
                    [slot] => self
                        .read_public_key(slot)
                        .ok()
                        .filter(|raw| {
                            Curve::detect(raw, Some(generation.curve)) == Some(generation.curve)
                        })
                        .map(|raw| (slot, raw)),
                    _ => None,
                };
                match key {
                    Some((slot, raw)) => {
                        self.with_store(|s| s.record_generated_key(row, slot, &raw, &generation))?;
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
                        self.with_store(|s| s.end_key_generation(row))?;
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
