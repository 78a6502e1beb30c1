//! Safe binding to Zymbit's application library (`libzk_app_utils`).
//!
//! The library is loaded at run time, so one build serves a real Zymkey
//! (`/usr/lib/libzk_app_utils.so`) and the zkiot emulator (`libzkemu.so`).
//! A [`Zymkey`] holds one device context for the whole process behind a lock:
//! nothing documents a context as thread-safe, and the device signs one
//! request at a time anyway. After a failure the context is closed and the
//! next call opens a fresh one; after `fork()` the child opens its own.
//!
//! Beside the keys, the perimeter-breach circuits and the binding (production
//! mode) are in [`perimeter`]: [`PerimeterAction`], [`PerimeterEvents`],
//! [`BindingInfo`] and the `Zymkey` methods that set, read, clear and wait.

mod error;
mod library;
pub mod perimeter;

use std::ffi::{c_char, c_int, CStr};
use std::sync::{Arc, Mutex, MutexGuard};

pub use error::{Error, Result};
pub use library::{
    library_path, Library, DEFAULT_LIBRARY_PATH, LIBRARY_PATH_ENV, OPTIONAL_SYMBOLS,
    STATE_FINGERPRINT_SYMBOL,
};
pub use perimeter::{BindingInfo, PerimeterAction, PerimeterEvents};

use library::Ctx;

/// Length of the digest the device signs: it reads exactly 32 bytes.
pub const DIGEST_LEN: usize = 32;
/// Length of a raw r‖s signature.
pub const SIGNATURE_LEN: usize = 64;

/// Key types of `ZK_EC_KEY_TYPE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum KeyType {
    NistP256 = 0,
    Secp256k1 = 1,
    Ed25519 = 2,
    X25519 = 3,
}

/// A key slot: the device's own key pairs, or the public-key-only foreign keyring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Slot {
    pub number: i32,
    pub foreign: bool,
}

impl Slot {
    pub const fn device(number: i32) -> Slot {
        Slot {
            number,
            foreign: false,
        }
    }
    pub const fn foreign(number: i32) -> Slot {
        Slot {
            number,
            foreign: true,
        }
    }
}

/// The allocated slots of one key store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotList {
    /// Size of the key store.
    pub capacity: usize,
    /// Slot numbers in use, ascending.
    pub slots: Vec<i32>,
}

struct Context {
    ctx: Ctx,
    pid: u32,
}

// SAFETY: the context is an opaque handle only ever used under the mutex.
unsafe impl Send for Context {}

/// One Zymkey, reached through a loaded library.
pub struct Zymkey {
    lib: Arc<Library>,
    context: Mutex<Option<Context>>,
}

impl std::fmt::Debug for Zymkey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Zymkey")
            .field("library", &self.lib)
            .finish()
    }
}

/// A locked, open device context.
struct Session<'a> {
    lib: &'a Library,
    guard: MutexGuard<'a, Option<Context>>,
}

impl Session<'_> {
    fn ctx(&self) -> Ctx {
        self.guard
            .as_ref()
            .map(|c| c.ctx)
            .unwrap_or(std::ptr::null_mut())
    }

    /// Turns a library return code into a result; a failure drops the context
    /// so the next call starts from a fresh one.
    fn check(&mut self, function: &'static str, rc: c_int) -> Result<c_int> {
        if rc >= 0 {
            return Ok(rc);
        }
        tracing::debug!(
            function,
            rc,
            "Zymkey call failed; the context will be reopened"
        );
        if let Some(old) = self.guard.take() {
            // SAFETY: `old.ctx` came from zkOpen in this process and is closed once.
            unsafe { (self.lib.close)(old.ctx) };
        }
        Err(Error::Device {
            function,
            errno: rc.saturating_neg(),
        })
    }
}

impl Zymkey {
    /// The library at `path`, loaded once per process (see
    /// [`Library::shared`]). The device itself is opened on first use.
    pub fn load(path: &std::path::Path) -> Result<Zymkey> {
        Ok(Zymkey::with_library(Library::shared(path)?))
    }

    pub fn new(lib: Library) -> Zymkey {
        Zymkey::with_library(Arc::new(lib))
    }

    fn with_library(lib: Arc<Library>) -> Zymkey {
        Zymkey {
            lib,
            context: Mutex::new(None),
        }
    }

    /// The loaded library (its path and which optional functions it has).
    pub fn library(&self) -> &Library {
        &self.lib
    }

    fn session(&self) -> Result<Session<'_>> {
        // A poisoned lock only means another thread panicked mid-call; the
        // context is still a valid handle (or None).
        let mut guard = self.context.lock().unwrap_or_else(|p| p.into_inner());
        let pid = std::process::id();
        if let Some(c) = guard.as_ref() {
            if c.pid != pid {
                // Inherited across fork(): the connection belongs to the parent.
                // Forget it without closing, and open our own.
                *guard = None;
            }
        }
        if guard.is_none() {
            let mut ctx: Ctx = std::ptr::null_mut();
            // SAFETY: zkOpen writes one handle into `ctx`.
            let rc = unsafe { (self.lib.open)(&mut ctx) };
            if rc < 0 {
                return Err(Error::Device {
                    function: "zkOpen",
                    errno: rc.saturating_neg(),
                });
            }
            *guard = Some(Context { ctx, pid });
        }
        Ok(Session {
            lib: &self.lib,
            guard,
        })
    }

    /// Closes the device context (the next call reopens it).
    pub fn close(&self) {
        let mut guard = self.context.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = guard.take() {
            if c.pid == std::process::id() {
                // SAFETY: opened by this process, closed once.
                unsafe { (self.lib.close)(c.ctx) };
            }
        }
    }

    /// `len` random bytes from the device's generator.
    pub fn random(&self, len: usize) -> Result<Vec<u8>> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let want = c_int::try_from(len).map_err(|_| Error::InvalidArgument {
            function: "zkGetRandBytes",
            detail: format!("{len} bytes is too many"),
        })?;
        let mut s = self.session()?;
        let mut out: *mut u8 = std::ptr::null_mut();
        // SAFETY: the library allocates `want` bytes into `out`.
        let rc = unsafe { (self.lib.rand_bytes)(s.ctx(), &mut out, want) };
        // SAFETY: `out` is NULL or the library's buffer of `want` bytes, now ours.
        let buf = unsafe { take_bytes(out, len) };
        s.check("zkGetRandBytes", rc)?;
        buf.ok_or_else(|| bad("zkGetRandBytes", "no buffer"))
    }

    /// Signs a 32-byte digest with a device key slot; returns raw r‖s.
    pub fn sign_digest(&self, slot: i32, digest: &[u8; DIGEST_LEN]) -> Result<[u8; SIGNATURE_LEN]> {
        let mut s = self.session()?;
        let mut sig: *mut u8 = std::ptr::null_mut();
        let mut sig_len: c_int = 0;
        // SAFETY: `digest` is 32 readable bytes, the length the device reads.
        let rc = unsafe {
            (self.lib.sign_digest)(s.ctx(), digest.as_ptr(), slot, &mut sig, &mut sig_len)
        };
        // SAFETY: `sig` is NULL or the library's buffer of `sig_len` bytes, now ours.
        let bytes = unsafe { take_bytes(sig, usize::try_from(sig_len).unwrap_or(0)) };
        s.check("zkGenECDSASigFromDigest", rc)?;
        let bytes = bytes.ok_or_else(|| bad("zkGenECDSASigFromDigest", "no signature"))?;
        <[u8; SIGNATURE_LEN]>::try_from(bytes.as_slice()).map_err(|_| {
            bad(
                "zkGenECDSASigFromDigest",
                &format!(
                    "signature of {} bytes, expected {SIGNATURE_LEN}",
                    bytes.len()
                ),
            )
        })
    }

    /// Verifies a raw r‖s signature over a 32-byte digest with a slot's public key.
    pub fn verify_digest(&self, slot: Slot, digest: &[u8; DIGEST_LEN], sig: &[u8]) -> Result<bool> {
        let (function, f) = if slot.foreign {
            (
                "zkVerifyECDSASigFromDigestWithForeignKeySlot",
                self.lib.verify_foreign.ok_or(Error::Unsupported {
                    function: "zkVerifyECDSASigFromDigestWithForeignKeySlot",
                })?,
            )
        } else {
            ("zkVerifyECDSASigFromDigest", self.lib.verify_digest)
        };
        let sig_len = c_int::try_from(sig.len()).map_err(|_| Error::InvalidArgument {
            function,
            detail: "signature too long".into(),
        })?;
        let mut s = self.session()?;
        // SAFETY: both buffers are readable for the lengths given.
        let rc = unsafe { f(s.ctx(), digest.as_ptr(), slot.number, sig.as_ptr(), sig_len) };
        Ok(s.check(function, rc)? == 1)
    }

    /// The raw public key of a slot (X‖Y, 64 bytes for the ECDSA curves).
    /// Uses `zkExportPubKey` where the library has it, else the older
    /// `zkGetECDSAPubKey` (device slots only).
    pub fn public_key(&self, slot: Slot) -> Result<Vec<u8>> {
        let mut s = self.session()?;
        let mut pk: *mut u8 = std::ptr::null_mut();
        let mut pk_len: c_int = 0;
        let (function, rc) = match self.lib.export_pub_key {
            // SAFETY: the library allocates the key into `pk`, its length into `pk_len`.
            Some(f) => ("zkExportPubKey", unsafe {
                f(s.ctx(), &mut pk, &mut pk_len, slot.number, slot.foreign)
            }),
            None if slot.foreign => {
                return Err(Error::Unsupported {
                    function: "zkExportPubKey",
                })
            }
            // SAFETY: as for zkExportPubKey.
            None => ("zkGetECDSAPubKey", unsafe {
                (self.lib.get_pub_key)(s.ctx(), &mut pk, &mut pk_len, slot.number)
            }),
        };
        // SAFETY: `pk` is NULL or the library's buffer of `pk_len` bytes, now ours.
        let bytes = unsafe { take_bytes(pk, usize::try_from(pk_len).unwrap_or(0)) };
        s.check(function, rc)?;
        match bytes {
            Some(b) if !b.is_empty() => Ok(b),
            _ => Err(bad(function, "empty public key")),
        }
    }

    /// The allocated slots of the device key store or of the foreign keyring.
    pub fn allocated_slots(&self, foreign: bool) -> Result<SlotList> {
        let f = self.lib.slot_list.ok_or(Error::Unsupported {
            function: "zkGetAllocSlotsList",
        })?;
        let mut s = self.session()?;
        let mut capacity: c_int = 0;
        let mut list: *mut c_int = std::ptr::null_mut();
        let mut count: c_int = 0;
        // SAFETY: the library allocates `count` ints into `list`.
        let rc = unsafe { f(s.ctx(), foreign, &mut capacity, &mut list, &mut count) };
        let count = usize::try_from(count).unwrap_or(0);
        let slots = if list.is_null() {
            Vec::new()
        } else {
            // SAFETY: `list` holds `count` ints from malloc; copied, then freed once.
            let v = unsafe { std::slice::from_raw_parts(list, count) }.to_vec();
            // SAFETY: as above; nothing reads `list` after this.
            unsafe { libc::free(list.cast()) };
            v
        };
        s.check("zkGetAllocSlotsList", rc)?;
        let mut slots = slots;
        slots.sort_unstable();
        Ok(SlotList {
            capacity: usize::try_from(capacity).unwrap_or(0),
            slots,
        })
    }

    /// Generates a key pair on the device; returns its new slot.
    pub fn generate_key(&self, key_type: KeyType) -> Result<i32> {
        let f = self.lib.gen_key_pair.ok_or(Error::Unsupported {
            function: "zkGenKeyPair",
        })?;
        let mut s = self.session()?;
        // SAFETY: plain integer arguments.
        let rc = unsafe { f(s.ctx(), key_type as c_int) };
        s.check("zkGenKeyPair", rc)
    }

    /// Removes a key from the device key store or the foreign keyring.
    pub fn remove_key(&self, slot: Slot) -> Result<()> {
        let f = self.lib.remove_key.ok_or(Error::Unsupported {
            function: "zkRemoveKey",
        })?;
        let mut s = self.session()?;
        // SAFETY: plain integer arguments.
        let rc = unsafe { f(s.ctx(), slot.number, slot.foreign) };
        s.check("zkRemoveKey", rc).map(|_| ())
    }

    /// Stores a raw public key in the foreign keyring; returns its slot.
    pub fn store_foreign_public_key(&self, key_type: KeyType, key: &[u8]) -> Result<i32> {
        let f = self.lib.store_foreign.ok_or(Error::Unsupported {
            function: "zkStoreForeignPubKey",
        })?;
        let len = c_int::try_from(key.len()).map_err(|_| Error::InvalidArgument {
            function: "zkStoreForeignPubKey",
            detail: "key too long".into(),
        })?;
        let mut copy = key.to_vec();
        let mut s = self.session()?;
        // SAFETY: the library reads `len` bytes (its parameter is not const).
        let rc = unsafe { f(s.ctx(), key_type as c_int, copy.as_mut_ptr(), len) };
        s.check("zkStoreForeignPubKey", rc)
    }

    /// What the library tells, without a device operation, of which device
    /// it reaches: only the emulator tells anything (its state directory and
    /// the serial number created there); Zymbit's library does not, and a
    /// physical Zymkey changes only across a power cycle. `None` when the
    /// library has no such function or it fails.
    pub fn device_fingerprint(&self) -> Option<String> {
        let f = self.lib.state_fingerprint?;
        let mut p: *mut c_char = std::ptr::null_mut();
        // SAFETY: the function allocates a NUL-terminated string into `p`.
        let rc = unsafe { f(&mut p) };
        if p.is_null() {
            return None;
        }
        // SAFETY: NUL-terminated per the contract; copied, then freed once.
        let text = unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned();
        // SAFETY: as above; nothing reads `p` after this.
        unsafe { libc::free(p.cast()) };
        (rc >= 0).then_some(text)
    }

    /// The model string, such as `ZYMKEY4i` or `HSM6`.
    pub fn model(&self) -> Result<String> {
        self.string("zkGetModelNumberString", self.lib.model)
    }

    pub fn firmware_version(&self) -> Result<String> {
        self.string("zkGetFirmwareVersionString", self.lib.firmware)
    }

    pub fn serial_number(&self) -> Result<String> {
        self.string("zkGetSerialNumberString", self.lib.serial)
    }

    /// The device clock, in seconds since the epoch.
    pub fn time(&self, precise: bool) -> Result<u32> {
        let mut s = self.session()?;
        let mut t: u32 = 0;
        // SAFETY: writes one u32.
        let rc = unsafe { (self.lib.time)(s.ctx(), &mut t, precise) };
        s.check("zkGetTime", rc)?;
        Ok(t)
    }

    fn string(&self, function: &'static str, f: library::StringFn) -> Result<String> {
        let mut s = self.session()?;
        let mut p: *mut c_char = std::ptr::null_mut();
        // SAFETY: the library allocates a NUL-terminated string into `p`.
        let rc = unsafe { f(s.ctx(), &mut p) };
        let text = if p.is_null() {
            None
        } else {
            // SAFETY: NUL-terminated per the API; copied, then freed once.
            let t = unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned();
            // SAFETY: as above; nothing reads `p` after this.
            unsafe { libc::free(p.cast()) };
            Some(t)
        };
        s.check(function, rc)?;
        text.ok_or_else(|| bad(function, "no string"))
    }
}

impl Drop for Zymkey {
    fn drop(&mut self) {
        self.close();
    }
}

fn bad(function: &'static str, detail: &str) -> Error {
    Error::BadOutput {
        function,
        detail: detail.to_string(),
    }
}

/// Copies and frees a library-allocated byte buffer.
///
/// # Safety
/// `p` is null or a malloc'd buffer of at least `len` bytes that nobody else frees.
unsafe fn take_bytes(p: *mut u8, len: usize) -> Option<Vec<u8>> {
    if p.is_null() {
        return None;
    }
    // SAFETY: `len` readable bytes, by the contract above.
    let v = unsafe { std::slice::from_raw_parts(p, len) }.to_vec();
    // SAFETY: malloc'd and freed only here, by the contract above.
    unsafe { libc::free(p.cast()) };
    Some(v)
}
