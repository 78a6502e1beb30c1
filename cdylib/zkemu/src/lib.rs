//! `libzkemu.so`: an emulator of Zymbit's `libzk_app_utils`, for development
//! and tests. It exports every function of `include/zk_app_utils.h` with the
//! same signatures and conventions, so a program that loads it takes the code
//! path a real Zymkey takes. Keys are plain files: it is no security boundary.
//!
//! # Environment (read at each `zkOpen`)
//! - `ZKIOT_EMU_DIR`: state directory; default
//!   `${XDG_STATE_HOME:-$HOME/.local/state}/zkiot-emu`, created (0700) on first open.
//! - `ZKIOT_EMU_MODEL`: the profile (see Models): `ZYMKEY4i` (default),
//!   `HSM6`, `ZYMKEY5`, `ZYMKEY5-PREPROD`, `ZYMKEY5-EDU` or `HSM60`.
//! - `ZKIOT_EMU_MODEL_STRING`: what a `ZYMKEY5` reports as its model
//!   (default `ZYMKEY5`); text of at most 64 bytes, no control characters.
//! - `ZKIOT_EMU_FACTORY_SLOTS`: how many factory P-256 keys a key-store
//!   profile has, in slots `0..N`: 1 to 16 (default 12).
//!
//!   These three are used when the state is created, and recorded in its
//!   `device.json`; afterwards the state wins (a differing value is ignored,
//!   with a note on stderr), and so does a profile that does not take one.
//!   A value outside the above: `zkOpen` fails with `-EINVAL` and says why
//!   on stderr.
//! - `ZKIOT_EMU_LATENCY_MS`: whole milliseconds slept in every operation that
//!   reaches the secure element, that is all but `zkOpen` and `zkClose`, which
//!   only talk to Zymbit's daemon (default 0); concurrent callers sleep side by side.
//! - `ZKIOT_EMU_TRACE`: file that gets one line `<operation> <slot>` per device
//!   operation (`sign 0`, `verify foreign3`, `info -`), appended with one
//!   `write` on a descriptor opened `O_APPEND` at `zkOpen`, from every process.
//!
//! # One state directory, one device
//! Each state directory is one emulated Zymkey, with its own serial number.
//! A physical Zymkey can only change with the power off, so a module may
//! trust what it cached of the device for as long as the machine stays up;
//! pointing `ZKIOT_EMU_DIR` elsewhere changes the device with the machine
//! up. So the emulator exports one function Zymbit's library lacks,
//! `zkemu_state_fingerprint`: the state directory and its serial number,
//! read without a device operation, which the module keys its cache to.
//!
//! # Models
//! Each profile is one Zymbit product (`model::Profile` says, per profile,
//! which facts are documented and which assumed):
//!
//! | profile | model string | factory P-256 slots | `zkGetAllocSlotsList` | key store | accelerometer |
//! |---|---|---|---|---|---|
//! | `ZYMKEY4i` | `ZYMKEY4i` (A) | 0–2 (D) | `[0,1,2]`, size 3 (A) | none: `-EOPNOTSUPP` (D) | yes (A: optional [DS-ZK4]) |
//! | `HSM6` | `HSM6` (A) | `0..N`, N 12 or 14 (D: both) | slots in use, size 512 (D) | yes (D) | yes (A: optional [DS-HSM6]) |
//! | `ZYMKEY5` | `ZKIOT_EMU_MODEL_STRING`, default `ZYMKEY5` (A; D: "will identify as a ZYMKEY5" [ZD-ZK5]) | `0..N` (A) | size 512 (D [ZD-PB-ZK5]) | yes (D) | no: `-EOPNOTSUPP` (inference [ZD-PB-ZK5]) |
//! | `ZYMKEY5-PREPROD` | `HSM6` (D [ZD-ZK5]) | as ZYMKEY5 | as ZYMKEY5 | yes | no |
//! | `ZYMKEY5-EDU` | `HSM6` (D [ZD-ZK5]) | as ZYMKEY5 | as ZYMKEY5 | yes | no |
//! | `HSM60` | `HSM60` (A) | `0..N`, 12 (D [ZD api/api_docs_intro.md]) | size 512 (D [ZD-PB-HSM60]) | yes (D) | yes (D [ZD-PB-HSM60]) |
//!
//! D: documented, A: assumed until hardware shows it. N is
//! `ZKIOT_EMU_FACTORY_SLOTS` (default 12), fixed at creation.
//!
//! - `ZYMKEY4i`: no key generation and no foreign keyring: `zkGenKeyPair`,
//!   `zkRemoveKey`, `zkStoreForeignPubKey` and every foreign-slot call fail
//!   with `-EOPNOTSUPP`.
//! - Key store (every other profile): slots 0–15 are reserved for the
//!   factory; `zkGenKeyPair` (P-256, secp256k1, Ed25519, X25519) takes the
//!   lowest free slot of 16–511 (store size 512); 128 public-key-only foreign
//!   slots (0–127, their own namespace). Ed25519/X25519 keys are key material
//!   only: ECDSA with them is `-EINVAL`; their public keys are 32 bytes.
//!
//! # Accelerometer
//! On profiles with one, the device lies still: `zkGetAccelerometerData`
//! reads 0, 0 and 1 g on X, Y, Z with no tap direction;
//! `zkSetTapSensitivity` accepts an axis 0–3 and a percentage 0–100 (else
//! `-EINVAL`) and keeps nothing; `zkWaitForTap` returns `-ETIMEDOUT` once its
//! timeout has passed, unless a tap is injected: if `$ZKIOT_EMU_DIR/tap-next`
//! exists, the next `zkWaitForTap` in any process removes it and returns 0
//! (at once, or as soon as it appears while the call waits). The ZYMKEY5
//! profiles fail all three with `-EOPNOTSUPP`.
//!
//! # Perimeter and production mode
//! Every profile has two perimeter channels, 0 and 1 (D). `perimeter.rs`
//! says which behaviour is documented and which assumed; in short:
//! - `zkSetPerimeterEventAction(ctx, channel, flags)`: channel 0 or 1,
//!   flags `ZK_PERIMETER_EVENT_ACTION_NOTIFY` (1) and `…_SELF_DESTRUCT` (2),
//!   OR-able; anything else `-EINVAL`. Actions are none on a new device.
//! - A breach latches the channel's first-breach time (epoch seconds) in
//!   `tamper.json`, whatever its action; a latched channel is disarmed
//!   until `zkClearPerimeterDetectEvents` clears every channel and rearms
//!   them (A). `zkGetPerimeterDetectInfo` hands out one `uint32_t` per
//!   channel (0: none) in a malloc'd array.
//! - `zkWaitForPerimeterEvent(ctx, timeout_ms)` returns 0 for a breach on a
//!   channel set to notify that came after the context was opened and after
//!   its previous wait returned, `-ETIMEDOUT` when the timeout passed first;
//!   0 does not wait. Every context sees each such breach once (A).
//! - Production mode is the binding locked: `zkLockBinding` (HSM6, HSM60 D;
//!   ZYMKEY5, ZYMKEY5-PREPROD A; the ZYMKEY5-EDU refuses it with
//!   `-EOPNOTSUPP`, A) or, on a ZYMKEY4i, which has no `zkLockBinding`, the
//!   file `lock-tab-cut` (its cut lock tab, D). It is recorded in
//!   `tamper.json` and never undone. `zkGetCurrentBindingInfo` tells it
//!   (every profile but the ZYMKEY4i, A; "bound" is always true).
//! - In production mode a breach on a self-destruct channel destroys every
//!   key file of both keyrings at once (D), and every key operation fails
//!   with `-EIO` from then on (A); in developer mode it is only latched (D).
//!   There, each channel's action can be set once after the lock, then
//!   `-EPERM` (A from "one time after locked").
//! - `zkSetDigitalPerimeterDetectLPPeriod`, `…LPMaxBits`, `…Delays`: HSM6
//!   and HSM60 only (D; else `-EOPNOTSUPP`), negative values or a minimum
//!   delay above the maximum `-EINVAL` (A), nothing kept.
//!
//! A test makes a breach by writing channel numbers (`1`, or `0 1`) into
//! `$ZKIOT_EMU_DIR/perimeter-next` in one write: the next device operation
//! of any process (or a waiting `zkWaitForPerimeterEvent`) applies it, with
//! the file's modification time as the breach's, and removes the file. An
//! empty file, or one naming no channel of the model, is left alone.
//!
//! # Sources
//! Zymbit-Docs/docs @6574282b (2026-07-10): [ZD-ZK5]
//! `content/hardware/modules/zymkey5/index.md`; [ZD-PB-ZK5] and
//! [ZD-PB-HSM60] `content/reference/product-briefs/{zymkey5,hsm60}/index.md`;
//! [ZD api/…] `content/api/…`; [ZD hardware/components/scm]
//! `content/hardware/components/scm/index.md`; [DS-ZK4] and [DS-HSM6] the
//! ZYMKEY4i and HSM6 datasheets under `content/reference/product-briefs/`.
//! \[HDR\] Zymbit's current `zk_app_utils.h`. \[ZKU\] the `zku` 1.0.33 Python
//! package (`zymkey/__init__.py`). \[hw\]: only a real device can settle it.
//! [ZD tutorials/…], [ZD troubleshooting/…], [ZD hardware/…] are the pages
//! `content/tutorials/…`, `content/troubleshooting/…/index.md`,
//! `content/hardware/…/index.md` of the same snapshot; the perimeter facts
//! are gathered, with their sources, in the project's research note
//! `zymkey-tamper-2026-12.md`.
//!
//! # State directory
//! ```text
//! device.json        {"profile","model","factory_slots","serial","firmware","created"};
//!                    written last at creation ("model" is the model string; states
//!                    made before profiles have no "profile" nor "factory_slots")
//! keys/slot-N.pem    device key pair of slot N (PKCS#8 PEM, 0600)
//! foreign/slot-N.pem foreign public key of slot N (SubjectPublicKeyInfo PEM, 0600)
//! counters           operation counters, see below
//! key-generation     bumped by every change of a key file
//! lock               flock'd around every change of state
//! fail-next          optional, see below
//! tap-next           optional, see Accelerometer
//! tamper.json        {"actions","first_breach","binding_locked","set_since_lock",
//!                    "destroyed"}: the perimeter and binding state; absent on a new device
//! perimeter-signals  shared numbers: breaches notified so far, keys destroyed (0/1)
//! perimeter-next     optional breach injection, see Perimeter and production mode
//! lock-tab-cut       optional: a ZYMKEY4i's lock tab is cut (production mode)
//! ```
//! Key files are replaced atomically (temporary file, fsync, rename), so
//! several processes can share one directory; keys survive across processes.
//! Each process decodes a key once and keeps it until `key-generation` says
//! that some process changed the key files. Only changes of state (creating
//! the state, key generation and removal, foreign keys, a consumed fault, the
//! perimeter state) take the lock; signing, counting and tracing take none.
//!
//! # Counters
//! `counters` is a file mapped into every process and changed with atomic
//! adds: a header line `zkemu-counters 1 open close random sign verify
//! export_pubkey slot_list gen_key remove_key store_foreign info time
//! accelerometer perimeter binding`, NUL padding to byte 256, then one 64-bit native-endian
//! count per name, in the header's order. `sign` counts both signing
//! functions, `verify` device and foreign, `export_pubkey` `zkExportPubKey`
//! and `zkGetECDSAPubKey`, `info` the model, serial and firmware strings,
//! `accelerometer` the tap and accelerometer calls, `perimeter` the seven
//! perimeter calls, `binding` `zkLockBinding` and `zkGetCurrentBindingInfo`. Names are only added at
//! the end: a file with fewer names is extended in place, its counts kept. Every call that reaches the device
//! counts, failed ones included; calls refused at the boundary (NULL pointer,
//! unknown context) do not. The file must not be truncated while a process
//! uses it (that process would get `SIGBUS`).
//!
//! # Fault injection
//! If `$ZKIOT_EMU_DIR/fail-next` holds an operation name (say `sign`), the next
//! call of that operation in any process fails with `-EIO` (after being counted
//! and traced) and the file is removed under the lock: exactly one call fails.
//!
//! # Errors (negative errno)
//! - `EINVAL`: NULL pointer, negative length, unknown or closed context, bad
//!   key type, signature not 64 bytes, malformed public key, ECDSA with an
//!   Ed25519/X25519 key, a slot number outside the keyring (`< 0` or `>=` its
//!   size), a tap sensitivity axis or percentage out of range, a perimeter
//!   channel other than 0 or 1, an undefined action flag, a negative digital
//!   perimeter setting.
//! - `ENOENT`: a slot inside the keyring's range that holds no key.
//! - `EOPNOTSUPP`: the model lacks the feature (see Models).
//! - `ETIMEDOUT`: `zkWaitForTap` saw no tap, `zkWaitForPerimeterEvent` no
//!   event, within its timeout.
//! - `EPERM`: removing a factory key; a second action for a channel since
//!   the binding was locked. `ENOSPC`: keyring full.
//! - `EIO`: the state directory cannot be used, an injected fault, or a key
//!   operation after a self-destruct.
//! - `ENOMEM`: an output buffer could not be allocated. `EFAULT`: internal error.

#![deny(unsafe_op_in_unsafe_fn)]
#![allow(non_snake_case)] // the exported names are Zymbit's

mod accelerometer;
mod config;
mod counters;
mod crypto;
mod device;
mod edge;
mod errno;
mod fault;
mod handles;
mod keystore;
mod model;
mod operation;
mod perimeter;
mod shared;
mod state;
mod trace;

use std::ffi::{c_char, c_int, c_void};

use accelerometer::AxisData;
use device::Device;
use edge::{buffer_out, call, give, give_string, give_with_len, required, value_out, with_device};
use errno::Result;
use model::Keyring;
use perimeter::DigitalSetting;

/// `zkCTX`: an opaque device context.
pub type ZkCtx = *mut c_void;

fn keyring(foreign: bool) -> Keyring {
    if foreign {
        Keyring::Foreign
    } else {
        Keyring::Device
    }
}

/// # Safety
/// `ctx` is NULL or valid for writing one `zkCTX`.
#[no_mangle]
pub unsafe extern "C" fn zkOpen(ctx: *mut ZkCtx) -> c_int {
    // SAFETY: by the contract above.
    let ctx = unsafe { value_out_ctx(ctx) };
    call(|| {
        let ctx = required(ctx)?;
        *ctx = handles::open()? as ZkCtx;
        Ok(0)
    })
}

/// # Safety
/// None: `ctx` is looked up, never dereferenced.
#[no_mangle]
pub unsafe extern "C" fn zkClose(ctx: ZkCtx) -> c_int {
    call(|| handles::close(ctx as usize).map(|()| 0))
}

/// # Safety
/// `rdata` is NULL or valid for writing one pointer.
#[no_mangle]
pub unsafe extern "C" fn zkGetRandBytes(ctx: ZkCtx, rdata: *mut *mut u8, rdata_sz: c_int) -> c_int {
    // SAFETY: by the contract above.
    let rdata = unsafe { buffer_out(rdata) };
    with_device(ctx, |device| {
        let rdata = required(rdata)?;
        give(rdata, &device.random(rdata_sz)?)?;
        Ok(0)
    })
}

/// # Safety
/// `digest` is NULL or 32 readable bytes; `sig` and `sig_sz` are NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn zkGenECDSASigFromDigest(
    ctx: ZkCtx,
    digest: *const u8,
    slot: c_int,
    sig: *mut *mut u8,
    sig_sz: *mut c_int,
) -> c_int {
    // SAFETY: by the contract above.
    let (digest, sig, sig_sz) =
        unsafe { (edge::digest(digest), buffer_out(sig), value_out(sig_sz)) };
    with_device(ctx, |device| {
        let (digest, sig, sig_sz) = (required(digest)?, required(sig)?, required(sig_sz)?);
        give_with_len(sig, sig_sz, &device.sign(slot, digest)?)?;
        Ok(0)
    })
}

/// # Safety
/// As `zkGenECDSASigFromDigest`; `recovery_id` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn zkGenECDSASigFromDigestWithRecID(
    ctx: ZkCtx,
    digest: *const u8,
    slot: c_int,
    sig: *mut *mut u8,
    sig_sz: *mut c_int,
    recovery_id: *mut u8,
) -> c_int {
    // SAFETY: by the contract above.
    let (digest, sig, sig_sz, recovery_id) = unsafe {
        (
            edge::digest(digest),
            buffer_out(sig),
            value_out(sig_sz),
            value_out(recovery_id),
        )
    };
    with_device(ctx, |device| {
        let (digest, sig, sig_sz) = (required(digest)?, required(sig)?, required(sig_sz)?);
        let recovery_id = required(recovery_id)?;
        let (rs, id) = device.sign_with_recovery_id(slot, digest)?;
        give_with_len(sig, sig_sz, &rs)?;
        *recovery_id = id;
        Ok(0)
    })
}

/// # Safety
/// `digest` is NULL or 32 readable bytes; `sig` is NULL or `sig_sz` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn zkVerifyECDSASigFromDigest(
    ctx: ZkCtx,
    digest: *const u8,
    pubkey_slot: c_int,
    sig: *const u8,
    sig_sz: c_int,
) -> c_int {
    // SAFETY: by the contract above.
    unsafe { verify(ctx, digest, pubkey_slot, sig, sig_sz, Keyring::Device) }
}

/// # Safety
/// As `zkVerifyECDSASigFromDigest`.
#[no_mangle]
pub unsafe extern "C" fn zkVerifyECDSASigFromDigestWithForeignKeySlot(
    ctx: ZkCtx,
    digest: *const u8,
    pubkey_slot: c_int,
    sig: *const u8,
    sig_sz: c_int,
) -> c_int {
    // SAFETY: by the contract above.
    unsafe { verify(ctx, digest, pubkey_slot, sig, sig_sz, Keyring::Foreign) }
}

/// # Safety
/// As `zkVerifyECDSASigFromDigest`.
unsafe fn verify(
    ctx: ZkCtx,
    digest: *const u8,
    slot: c_int,
    sig: *const u8,
    sig_sz: c_int,
    keyring: Keyring,
) -> c_int {
    // SAFETY: by the caller's contract.
    let (digest, sig) = unsafe { (edge::digest(digest), edge::bytes(sig, sig_sz)) };
    with_device(ctx, |device| {
        let (digest, sig) = (required(digest)?, required(sig)?);
        Ok(c_int::from(device.verify(keyring, slot, digest, sig)?))
    })
}

/// # Safety
/// `pk` and `pk_sz` are NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn zkGetECDSAPubKey(
    ctx: ZkCtx,
    pk: *mut *mut u8,
    pk_sz: *mut c_int,
    slot: c_int,
) -> c_int {
    // SAFETY: by the contract above.
    unsafe { zkExportPubKey(ctx, pk, pk_sz, slot, false) }
}

/// # Safety
/// `pk` and `pk_sz` are NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn zkExportPubKey(
    ctx: ZkCtx,
    pk: *mut *mut u8,
    pk_sz: *mut c_int,
    pubkey_slot: c_int,
    slot_is_foreign: bool,
) -> c_int {
    // SAFETY: by the contract above.
    let (pk, pk_sz) = unsafe { (buffer_out(pk), value_out(pk_sz)) };
    with_device(ctx, |device| {
        let (pk, pk_sz) = (required(pk)?, required(pk_sz)?);
        let key = device.public_key(keyring(slot_is_foreign), pubkey_slot)?;
        give_with_len(pk, pk_sz, &key)?;
        Ok(0)
    })
}

/// # Safety
/// `max_num_keys`, `alloc_key_list` and `alloc_key_list_sz` are NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn zkGetAllocSlotsList(
    ctx: ZkCtx,
    is_foreign: bool,
    max_num_keys: *mut c_int,
    alloc_key_list: *mut *mut c_int,
    alloc_key_list_sz: *mut c_int,
) -> c_int {
    // SAFETY: by the contract above.
    let (max_num_keys, list, list_sz) = unsafe {
        (
            value_out(max_num_keys),
            buffer_out(alloc_key_list),
            value_out(alloc_key_list_sz),
        )
    };
    with_device(ctx, |device| {
        let (max_num_keys, list, list_sz) =
            (required(max_num_keys)?, required(list)?, required(list_sz)?);
        let (capacity, slots) = device.allocated_slots(keyring(is_foreign))?;
        give(list, &slots)?;
        *list_sz = c_int::try_from(slots.len()).map_err(|_| errno::Errno::IO)?;
        *max_num_keys = capacity;
        Ok(0)
    })
}

/// # Safety
/// None: plain values.
#[no_mangle]
pub unsafe extern "C" fn zkGenKeyPair(ctx: ZkCtx, key_type: c_int) -> c_int {
    with_device(ctx, |device| device.generate_key(key_type))
}

/// # Safety
/// None: plain values.
#[no_mangle]
pub unsafe extern "C" fn zkRemoveKey(ctx: ZkCtx, slot: c_int, slot_is_foreign: bool) -> c_int {
    with_device(ctx, |device| {
        device
            .remove_key(keyring(slot_is_foreign), slot)
            .map(|()| 0)
    })
}

/// # Safety
/// `pk` is NULL or `pk_sz` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn zkStoreForeignPubKey(
    ctx: ZkCtx,
    pk_type: c_int,
    pk: *mut u8,
    pk_sz: c_int,
) -> c_int {
    // SAFETY: by the contract above; the key is only read.
    let pk = unsafe { edge::bytes(pk, pk_sz) };
    with_device(ctx, |device| {
        device.store_foreign_key(pk_type, required(pk)?)
    })
}

/// Answers one of the device-information strings into a caller's `char **`.
fn info_string(
    ctx: ZkCtx,
    out: Option<&mut *mut c_char>,
    read: fn(&Device) -> Result<String>,
) -> c_int {
    with_device(ctx, |device| {
        give_string(required(out)?, &read(device)?)?;
        Ok(0)
    })
}

/// # Safety
/// `model_str` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn zkGetModelNumberString(ctx: ZkCtx, model_str: *mut *mut c_char) -> c_int {
    // SAFETY: by the contract above.
    let out = unsafe { buffer_out(model_str) };
    info_string(ctx, out, Device::model_string)
}

/// # Safety
/// `fw_ver_str` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn zkGetFirmwareVersionString(
    ctx: ZkCtx,
    fw_ver_str: *mut *mut c_char,
) -> c_int {
    // SAFETY: by the contract above.
    let out = unsafe { buffer_out(fw_ver_str) };
    info_string(ctx, out, Device::firmware_version)
}

/// # Safety
/// `serial_num_str` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn zkGetSerialNumberString(
    ctx: ZkCtx,
    serial_num_str: *mut *mut c_char,
) -> c_int {
    // SAFETY: by the contract above.
    let out = unsafe { buffer_out(serial_num_str) };
    info_string(ctx, out, Device::serial_number)
}

/// # Safety
/// `epoch_time_sec` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn zkGetTime(
    ctx: ZkCtx,
    epoch_time_sec: *mut u32,
    _precise_time: bool,
) -> c_int {
    // SAFETY: by the contract above.
    let out = unsafe { value_out(epoch_time_sec) };
    with_device(ctx, |device| {
        *required(out)? = device.time()?;
        Ok(0)
    })
}

/// # Safety
/// None: plain values.
#[no_mangle]
pub unsafe extern "C" fn zkSetTapSensitivity(ctx: ZkCtx, axis: c_int, pct: f32) -> c_int {
    with_device(ctx, |device| {
        device.set_tap_sensitivity(axis, pct).map(|()| 0)
    })
}

/// # Safety
/// None: plain values.
#[no_mangle]
pub unsafe extern "C" fn zkWaitForTap(ctx: ZkCtx, timeout_ms: u32) -> c_int {
    with_device(ctx, |device| device.wait_for_tap(timeout_ms).map(|()| 0))
}

/// # Safety
/// `x`, `y` and `z` are each NULL or valid for writing one
/// `zkAccelAxisDataType`, and no two are the same.
#[no_mangle]
pub unsafe extern "C" fn zkGetAccelerometerData(
    ctx: ZkCtx,
    x: *mut AxisData,
    y: *mut AxisData,
    z: *mut AxisData,
) -> c_int {
    // SAFETY: by the contract above.
    let (x, y, z) = unsafe { (value_out(x), value_out(y), value_out(z)) };
    with_device(ctx, |device| {
        let (x, y, z) = (required(x)?, required(y)?, required(z)?);
        [*x, *y, *z] = device.accelerometer_data()?;
        Ok(0)
    })
}

/// # Safety
/// None: plain values.
#[no_mangle]
pub unsafe extern "C" fn zkSetPerimeterEventAction(
    ctx: ZkCtx,
    channel: c_int,
    action_flags: u32,
) -> c_int {
    with_device(ctx, |device| {
        device
            .set_perimeter_event_action(channel, action_flags)
            .map(|()| 0)
    })
}

/// # Safety
/// `timestamps_sec` and `num_timestamps` are NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn zkGetPerimeterDetectInfo(
    ctx: ZkCtx,
    timestamps_sec: *mut *mut u32,
    num_timestamps: *mut c_int,
) -> c_int {
    // SAFETY: by the contract above.
    let (list, count) = unsafe { (buffer_out(timestamps_sec), value_out(num_timestamps)) };
    with_device(ctx, |device| {
        let (list, count) = (required(list)?, required(count)?);
        let first_breaches = device.perimeter_detect_info()?;
        give(list, &first_breaches)?;
        *count = c_int::try_from(first_breaches.len()).map_err(|_| errno::Errno::IO)?;
        Ok(0)
    })
}

/// # Safety
/// None: plain values.
#[no_mangle]
pub unsafe extern "C" fn zkClearPerimeterDetectEvents(ctx: ZkCtx) -> c_int {
    with_device(ctx, |device| device.clear_perimeter_events().map(|()| 0))
}

/// # Safety
/// None: plain values.
#[no_mangle]
pub unsafe extern "C" fn zkWaitForPerimeterEvent(ctx: ZkCtx, timeout_ms: u32) -> c_int {
    with_device(ctx, |device| {
        device.wait_for_perimeter_event(timeout_ms).map(|()| 0)
    })
}

/// # Safety
/// None: plain values.
#[no_mangle]
pub unsafe extern "C" fn zkSetDigitalPerimeterDetectLPPeriod(
    ctx: ZkCtx,
    lp_period: c_int,
) -> c_int {
    with_device(ctx, |device| {
        device
            .set_digital_perimeter(DigitalSetting::LowPowerPeriod(lp_period))
            .map(|()| 0)
    })
}

/// # Safety
/// None: plain values.
#[no_mangle]
pub unsafe extern "C" fn zkSetDigitalPerimeterDetectLPMaxBits(
    ctx: ZkCtx,
    max_num_bits: c_int,
) -> c_int {
    with_device(ctx, |device| {
        device
            .set_digital_perimeter(DigitalSetting::LowPowerMaxBits(max_num_bits))
            .map(|()| 0)
    })
}

/// # Safety
/// None: plain values.
#[no_mangle]
pub unsafe extern "C" fn zkSetDigitalPerimeterDetectDelays(
    ctx: ZkCtx,
    min_delay_ns: c_int,
    max_delay_ns: c_int,
) -> c_int {
    with_device(ctx, |device| {
        device
            .set_digital_perimeter(DigitalSetting::Delays {
                min_ns: min_delay_ns,
                max_ns: max_delay_ns,
            })
            .map(|()| 0)
    })
}

/// # Safety
/// None: plain values.
#[no_mangle]
pub unsafe extern "C" fn zkLockBinding(ctx: ZkCtx) -> c_int {
    with_device(ctx, |device| device.lock_binding().map(|()| 0))
}

/// # Safety
/// `binding_is_locked` and `is_bound` are each NULL or valid for writing
/// one `bool`, and not the same.
#[no_mangle]
pub unsafe extern "C" fn zkGetCurrentBindingInfo(
    ctx: ZkCtx,
    binding_is_locked: *mut bool,
    is_bound: *mut bool,
) -> c_int {
    // SAFETY: by the contract above.
    let (locked_out, bound_out) = unsafe { (value_out(binding_is_locked), value_out(is_bound)) };
    with_device(ctx, |device| {
        let (locked_out, bound_out) = (required(locked_out)?, required(bound_out)?);
        (*locked_out, *bound_out) = device.binding_info()?;
        Ok(0)
    })
}

/// The emulator's own extension (not in Zymbit's library): names the
/// emulated device the next `zkOpen` reaches, as
/// `<state directory>\n<serial number>` (the serial empty until the state
/// is created), with no device operation: nothing is counted, traced,
/// delayed or created. A module keys its cache of the device to it, so a new
/// state directory is a new device to it, as a new Zymkey is after a power
/// cycle.
///
/// # Safety
/// `fingerprint` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn zkemu_state_fingerprint(fingerprint: *mut *mut c_char) -> c_int {
    // SAFETY: by the contract above.
    let out = unsafe { buffer_out(fingerprint) };
    call(|| {
        let out = required(out)?;
        let config = config::Config::from_env().map_err(|_| errno::Errno::INVAL)?;
        give_string(out, &state::fingerprint(&config.dir)?)?;
        Ok(0)
    })
}

/// `zkOpen`'s output, cleared at once.
///
/// # Safety
/// `p` is NULL or valid for writing one `zkCTX`.
unsafe fn value_out_ctx<'a>(p: *mut ZkCtx) -> Option<&'a mut ZkCtx> {
    // SAFETY: by the caller's contract.
    unsafe { buffer_out(p.cast::<*mut c_void>()) }
}
