//! The token: what the device is, which keys it holds, and the store.
//!
//! Everything here is read once, when the token is first needed in a
//! process, and kept: finding objects and reading attributes never call the
//! device. What the device is and which slots it uses come from the device
//! cache ([`crate::device_cache`]) and the public keys from the store, so
//! only the first process (or the first after a change the cache cannot
//! follow) reads them from the device.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use zkconf::Config;

use crate::curve::{normalize_public_key, Curve};
use crate::device::{library_path, Capabilities, Device};
use crate::device_cache::{Anchor, Cached, DeviceCache, Snapshot};
use crate::error::{Error, Result};
use crate::key::{DeviceKey, KeyEntry, KeySlot};
use crate::lock::{lock, read, write};
use crate::ownership::open_own_store;
use crate::store::Store;

mod key_store;

/// Token-info fields as the device reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeviceInfo {
    pub(crate) model: String,
    pub(crate) serial: String,
    pub(crate) firmware: String,
}

pub(crate) struct Token {
    pub(crate) device: Arc<dyn Device>,
    pub(crate) info: DeviceInfo,
    pub(crate) caps: Capabilities,
    pub(crate) label: String,
    pub(crate) login_required: bool,
    /// The keys shown, by slot. Kept in step with the device and the
    /// store's `device_keys` rows by the methods below, and nowhere else.
    keys: RwLock<BTreeMap<KeySlot, Arc<KeyEntry>>>,
    store_path: Option<PathBuf>,
    store: Mutex<Option<Store>>,
    /// The device cache and the device it is for.
    device_cache: Option<DeviceCache>,
    anchor: Anchor,
    /// Device slots removed through this module, whose public key objects
    /// are gone with them.
    removed: Mutex<HashSet<KeySlot>>,
    store_error_logged: AtomicBool,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("info", &self.info)
            .field("label", &self.label)
            .field("store", &self.store_path)
            .finish()
    }
}

impl Token {
    /// Shows the device: what it is and its key slots from the device cache,
    /// else from the device (then cached); public keys from the store, else
    /// from the device (then stored).
    pub(crate) fn load(device: Arc<dyn Device>, config: &Config) -> Result<Token> {
        let device_cache = config.device_cache_path().map(DeviceCache::new);
        let library = library_path(config);
        let anchor = Anchor::current(&library, &*device);
        let snapshot = match device_cache.as_ref().and_then(|c| c.read(&anchor)) {
            Some(Cached::Trusted(snapshot)) => snapshot,
            _ => {
                let lock = device_cache.as_ref().and_then(DeviceCache::lock);
                // Another process may have read the device while this one waited.
                match device_cache.as_ref().and_then(|c| c.read(&anchor)) {
                    Some(Cached::Trusted(snapshot)) => snapshot,
                    cached => {
                        let unconfirmed = match cached {
                            Some(Cached::Unconfirmed(snapshot)) => Some(snapshot),
                            _ => None,
                        };
                        let snapshot = match confirm(&*device, unconfirmed)? {
                            Some(snapshot) => Snapshot {
                                anchor: Anchor::current(&library, &*device),
                                ..snapshot
                            },
                            None => read_device(&*device, &library)?,
                        };
                        if let (Some(cache), Some(lock)) = (&device_cache, &lock) {
                            cache.write(lock, &snapshot);
                        }
                        snapshot
                    }
                }
            }
        };
        let Snapshot {
            anchor,
            model,
            serial,
            firmware,
            caps,
            slots,
        } = snapshot;
        let info = DeviceInfo {
            model,
            serial,
            firmware,
        };
        let store_path = config.store_path(&info.serial);
        let token = Token {
            device,
            caps,
            label: config.token_label().to_string(),
            login_required: config.login_required(),
            keys: RwLock::new(BTreeMap::new()),
            store_path,
            store: Mutex::new(None),
            device_cache,
            anchor,
            removed: Mutex::new(Default::default()),
            store_error_logged: AtomicBool::new(false),
            info,
        };
        let mut slots = slots;
        if token.caps.key_store {
            // A change of the key store whose process died may have left
            // the cached slot list behind.
            let finished = token.finish_interrupted_changes_if_idle(config);
            slots.retain(|s| !finished.removed.contains(s));
            for slot in finished.bound {
                if !slots.contains(&slot) {
                    slots.push(slot);
                }
            }
        }
        let mut keys = BTreeMap::new();
        for slot in slots {
            match token.load_key(slot, config) {
                Ok(Some(entry)) => {
                    keys.insert(slot, Arc::new(entry));
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(
                    slot = slot.number,
                    foreign = slot.foreign,
                    "key slot skipped: {e}"
                ),
            }
        }
        tracing::info!(
            model = %token.info.model,
            serial = %token.info.serial,
            keys = keys.len(),
            "token loaded"
        );
        *write(&token.keys) = keys;
        Ok(token)
    }

    fn load_key(&self, slot: KeySlot, config: &Config) -> Result<Option<KeyEntry>> {
        let record = self
            .read_store(|s| s.key_record(slot))
            .unwrap_or_else(|e| {
                tracing::debug!("public key cache unavailable: {e}");
                None
            })
            .unwrap_or_default();
        let (raw, curve) = match (&record.public_key, record.curve) {
            (Some(raw), Some(curve)) => (raw.clone(), curve),
            _ => {
                let raw = self.read_public_key(slot)?;
                let Some(curve) = Curve::detect(&raw, record.curve) else {
                    tracing::warn!(
                        slot = slot.number,
                        len = raw.len(),
                        "public key of unknown type; slot hidden"
                    );
                    return Ok(None);
                };
                if let Err(e) = self.with_store(|s| s.cache_public_key(slot, curve, &raw)) {
                    tracing::debug!("public key not cached: {e}");
                }
                (raw, curve)
            }
        };
        if !curve.is_ecdsa() && !config.expose_non_ecdsa_keys {
            tracing::info!(
                slot = slot.number,
                curve = curve.name(),
                "key hidden (set expose_non_ecdsa_keys to show it)"
            );
            return Ok(None);
        }
        Ok(Some(KeyEntry::new(
            self.device_key(slot, curve, raw, record.label, record.id, config),
            self.login_required,
        )))
    }

    /// A key as shown: the label and id given at generation, else the
    /// configured label and the slot's defaults.
    fn device_key(
        &self,
        slot: KeySlot,
        curve: Curve,
        raw: Vec<u8>,
        label: Option<String>,
        id: Option<Vec<u8>>,
        config: &Config,
    ) -> DeviceKey {
        let label = label.unwrap_or_else(|| slot.label(config));
        DeviceKey {
            slot,
            curve,
            raw_public: raw,
            label,
            id: id.unwrap_or_else(|| slot.default_id()),
            removable: self.is_removable(slot),
        }
    }

    /// Factory keys stay; keys in the free part of the key store (and
    /// foreign public keys) can be removed.
    pub(crate) fn is_removable(&self, slot: KeySlot) -> bool {
        self.caps.key_store && (slot.foreign || slot.number >= self.caps.first_free_slot())
    }

    fn store_path(&self) -> Result<&PathBuf> {
        self.store_path.as_ref().ok_or_else(|| {
            Error::GeneralError(
                "no token store path: set `store` in the configuration (HOME is not set)".into(),
            )
        })
    }

    /// Runs `f` on the store, opening it on first use. An open failure is
    /// not remembered: the next call tries again (the file may be fixed).
    pub(crate) fn with_store<T, E: Into<Error>>(
        &self,
        f: impl FnOnce(&mut Store) -> std::result::Result<T, E>,
    ) -> Result<T> {
        let mut guard = lock(&self.store);
        if guard.is_none() {
            match open_own_store(self.store_path()?, &self.info.serial, &*self.device) {
                Ok(s) => *guard = Some(s),
                Err(e) => {
                    // Said once at error level; each failing call still returns it.
                    if !self.store_error_logged.swap(true, Ordering::Relaxed) {
                        tracing::error!("{e}");
                    } else {
                        tracing::debug!("{e}");
                    }
                    return Err(e);
                }
            }
        }
        let store = guard
            .as_mut()
            .ok_or(Error::GeneralError("token store unavailable".into()))?;
        f(store).map_err(Into::into)
    }

    /// Like [`Token::with_store`] for reads: a store that does not exist yet
    /// holds nothing, and is not created just to be read (the default
    /// location may be on a read-only file system).
    pub(crate) fn read_store<T: Default, E: Into<Error>>(
        &self,
        f: impl FnOnce(&mut Store) -> std::result::Result<T, E>,
    ) -> Result<T> {
        let opened = lock(&self.store).is_some();
        let exists = self.store_path.as_ref().is_some_and(|p| p.exists());
        if !opened && !exists {
            return Ok(T::default());
        }
        self.with_store(f)
    }

    /// The public key of `slot` as the device gives it now (one device
    /// operation), in the raw form the token keeps.
    pub(crate) fn read_public_key(&self, slot: KeySlot) -> zymkey::Result<Vec<u8>> {
        self.device
            .public_key(slot.zymkey())
            .map(normalize_public_key)
    }

    /// The key of a slot; shared, so the signing path copies no attributes.
    pub(crate) fn key(&self, slot: KeySlot) -> Option<Arc<KeyEntry>> {
        read(&self.keys).get(&slot).cloned()
    }

    /// Every key shown, in slot order.
    pub(crate) fn keys(&self) -> Vec<Arc<KeyEntry>> {
        read(&self.keys).values().cloned().collect()
    }

    /// The slot's key turned out to be another one (replaced by another
    /// tool): shows `raw` on `curve` from now on, and caches it in the
    /// store. A key removed meanwhile stays removed.
    pub(crate) fn replace_key(&self, slot: KeySlot, curve: Curve, raw: Vec<u8>) {
        {
            let mut keys = write(&self.keys);
            let Some(entry) = keys.get(&slot) else {
                return;
            };
            let mut refreshed = entry.key.clone();
            refreshed.curve = curve;
            refreshed.raw_public = raw.clone();
            keys.insert(
                slot,
                Arc::new(KeyEntry::new(refreshed, self.login_required)),
            );
        }
        if let Err(e) = self.with_store(|s| s.cache_public_key(slot, curve, &raw)) {
            tracing::warn!("refreshed public key not cached: {e}");
        }
        // Another tool changed the device: the next process reads it all again.
        self.forget_device_cache();
    }

    /// The generated key of `slot` is gone and the device holds another
    /// one (`raw` on `curve`): the slot's objects are no longer shown in
    /// this process, so their handles fail. The store keeps the label and
    /// id only if they were recorded for that new key (by the process that
    /// generated it).
    pub(crate) fn retire_key(&self, slot: KeySlot, curve: Curve, raw: Vec<u8>) {
        write(&self.keys).remove(&slot);
        if let Err(e) = self.with_store(|s| s.replace_unrecorded_key(slot, curve, &raw)) {
            tracing::warn!("replaced key not cached: {e}");
        }
        self.forget_device_cache();
    }

    /// The device changed in a way the device cache does not follow: the
    /// next process reads the device again.
    pub(crate) fn forget_device_cache(&self) {
        if let Some(cache) = &self.device_cache {
            cache.forget();
        }
    }
}

/// The unconfirmed snapshot, if the device's serial number (one device
/// call) says it is the device the snapshot was read from.
fn confirm(device: &dyn Device, unconfirmed: Option<Snapshot>) -> Result<Option<Snapshot>> {
    let Some(snapshot) = unconfirmed else {
        return Ok(None);
    };
    let serial = device.serial_number()?.trim().to_string();
    if serial == snapshot.serial {
        tracing::debug!(serial = %serial, "device cache confirmed for this boot");
        Ok(Some(snapshot))
    } else {
        tracing::info!(
            serial = %serial,
            cached = %snapshot.serial,
            "another Zymkey than the cached one: reading it"
        );
        Ok(None)
    }
}

/// What the device is and the key slots to show: the device's list where it
/// has one, else the model's factory slots.
fn read_device(device: &dyn Device, library: &Path) -> Result<Snapshot> {
    let model = device.model()?.trim().to_string();
    let serial = device.serial_number()?.trim().to_string();
    let firmware = device.firmware_version()?.trim().to_string();
    let own = device.allocated_slots(false);
    let caps = Capabilities::from_slot_list(&own);
    let mut slots: Vec<KeySlot> = match own {
        Ok(list) => list
            .slots
            .into_iter()
            .filter_map(|n| u32::try_from(n).ok())
            .map(KeySlot::device)
            .collect(),
        Err(e) => {
            tracing::debug!("no slot list ({e}); showing the factory slots");
            (0..Capabilities::UNLISTED_FACTORY_SLOTS)
                .map(KeySlot::device)
                .collect()
        }
    };
    if caps.key_store {
        match device.allocated_slots(true) {
            Ok(list) => slots.extend(
                list.slots
                    .into_iter()
                    .filter_map(|n| u32::try_from(n).ok())
                    .map(|number| KeySlot {
                        number,
                        foreign: true,
                    }),
            ),
            Err(e) => tracing::debug!("no foreign keyring list: {e}"),
        }
    }
    slots.sort_unstable();
    tracing::info!(
        model = %model,
        key_store = caps.key_store,
        key_slots = caps.key_slots,
        "device read"
    );
    Ok(Snapshot {
        // Taken after the reads: the emulator names its device once its
        // state exists.
        anchor: Anchor::current(library, device),
        model,
        serial,
        firmware,
        caps,
        slots,
    })
}
