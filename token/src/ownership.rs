//! Which Zymkey a token store belongs to. A store holds certificates and
//! data objects written for one device, and the public keys and labels of
//! that device's keys; shown beside another Zymkey's keys they would claim
//! to be its own. A store is another device's when the file was copied
//! with an SD image to another Pi, or when the Zymkey was swapped under a
//! configured `store` path (the default path names the device's serial
//! number, so there every Zymkey has its own file anyway).
//!
//! So each store records its owner, the serial number of the Zymkey it was
//! first opened for. A store found on another Zymkey is set aside, renamed
//! `<store>.<owner serial>`, and never shown; this Zymkey's own store takes
//! its place: the one set aside earlier under its serial, if any (a Zymkey
//! moved back), else a new, empty one. Nothing is deleted. A store made
//! before owners were recorded is claimed by the first Zymkey that opens it
//! if every public key it caches is that Zymkey's (one device call per
//! cached key, once), else it is set aside as `<store>.unowned-<time>`.
//!
//! Setting aside holds `<store>.owner.lock`, and every decision is taken
//! again under it, so processes that find the same store at once move it
//! once.

use std::path::{Path, PathBuf};

use crate::curve::normalize_public_key;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::lock::FileLock;
use crate::store::Store;

/// Opens the store at `path` for the Zymkey whose serial number is
/// `serial`: its own store, never another device's.
pub(crate) fn open_own_store(path: &Path, serial: &str, device: &dyn Device) -> Result<Store> {
    // Each round either returns or moves a store of another owner aside;
    // more than a few means other processes keep writing other owners.
    for _ in 0..4 {
        let mut store = Store::open(path)?;
        match store.owner()? {
            Some(owner) if owner == serial => return Ok(store),
            Some(owner) => {
                drop(store);
                set_aside(path, serial, Some(&owner))?;
            }
            None => {
                if holds_only_keys_of(&store, device) {
                    if store.claim(serial)? == serial {
                        tracing::info!(store = %path.display(), serial, "token store claimed");
                        return Ok(store);
                    }
                    // Claimed meanwhile for another Zymkey: set aside next round.
                } else {
                    drop(store);
                    set_aside(path, serial, None)?;
                }
            }
        }
    }
    Err(Error::GeneralError(format!(
        "token store {}: its owner keeps changing; is it shared by several Zymkeys?",
        path.display()
    )))
}

/// Whether every public key the store caches is the device's key of that slot.
fn holds_only_keys_of(store: &Store, device: &dyn Device) -> bool {
    let cached = match store.cached_public_keys() {
        Ok(cached) => cached,
        Err(e) => {
            tracing::warn!("{e}");
            return false;
        }
    };
    cached.into_iter().all(|(slot, raw)| {
        match device.public_key(slot.zymkey()) {
            Ok(key) => normalize_public_key(key) == raw,
            // The slot is empty on this device: the key was another's.
            Err(_) => false,
        }
    })
}

/// Moves the store at `path` aside if it still belongs to `owner` (`None`:
/// to nobody recorded), then puts the store set aside for `serial`, if
/// any, in its place.
fn set_aside(path: &Path, serial: &str, owner: Option<&str>) -> Result<()> {
    let lock_path = sibling(path, "owner.lock");
    let _lock = FileLock::exclusive(&lock_path).map_err(|e| {
        Error::GeneralError(format!(
            "token store {}: cannot lock {}: {e}",
            path.display(),
            lock_path.display()
        ))
    })?;
    if path.exists() {
        let current = Store::open(path)?.owner()?;
        if current.as_deref() == Some(serial) || current.as_deref() != owner {
            // Another process decided meanwhile: the caller looks again.
            return Ok(());
        }
        let name = match owner {
            Some(owner) => zkconf::file_safe(owner),
            None => format!("unowned-{}", unix_time()),
        };
        let aside = free_path(&sibling(path, &name));
        rename(path, &aside)?;
        tracing::warn!(
            store = %path.display(),
            kept_as = %aside.display(),
            owner = owner.unwrap_or("unrecorded"),
            serial,
            "the token store belongs to another Zymkey: set aside, never shown here"
        );
    }
    let own = sibling(path, &zkconf::file_safe(serial));
    if own.exists() {
        rename(&own, path)?;
        tracing::info!(store = %path.display(), from = %own.display(), "token store of this Zymkey restored");
    }
    Ok(())
}

/// `<path>.<suffix>`.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(suffix);
    path.with_file_name(name)
}

/// `path`, or `path.N` for the first N that names no file.
fn free_path(path: &Path) -> PathBuf {
    if !path.exists() {
        return path.to_path_buf();
    }
    (1u32..)
        .map(|n| sibling(path, &n.to_string()))
        .find(|p| !p.exists())
        .unwrap_or_else(|| path.to_path_buf())
}

fn rename(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to).map_err(|e| {
        Error::GeneralError(format!(
            "token store: cannot move {} to {}: {e}",
            from.display(),
            to.display()
        ))
    })
}

fn unix_time() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
