//! Open contexts. A `zkCTX` is a number naming an entry of this table, not a
//! pointer, so a stale or forged context is `EINVAL` instead of a crash.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::device::Device;
use crate::errno::{Errno, Result};

static OPEN_DEVICES: Mutex<BTreeMap<usize, Arc<Device>>> = Mutex::new(BTreeMap::new());
static NEXT_HANDLE: AtomicUsize = AtomicUsize::new(1);

fn table() -> MutexGuard<'static, BTreeMap<usize, Arc<Device>>> {
    // Entries are inserted and removed whole: a panic elsewhere leaves it valid.
    OPEN_DEVICES.lock().unwrap_or_else(|p| p.into_inner())
}

/// Opens the device; returns its handle (never 0).
pub fn open() -> Result<usize> {
    let device = Arc::new(Device::open()?);
    let handle = NEXT_HANDLE.fetch_add(1, Ordering::Relaxed);
    table().insert(handle, device);
    Ok(handle)
}

/// The device of an open handle.
pub fn get(handle: usize) -> Result<Arc<Device>> {
    table().get(&handle).cloned().ok_or(Errno::INVAL)
}

/// Closes a handle; it is released even if the close operation fails.
pub fn close(handle: usize) -> Result<()> {
    let device = table().remove(&handle).ok_or(Errno::INVAL)?;
    device.close()
}
