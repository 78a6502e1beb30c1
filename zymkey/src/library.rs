//! The raw symbol table of `libzk_app_utils`, resolved once at load time.
//!
//! Core functions are required (every Zymbit library has them); the key-store,
//! perimeter and binding functions are optional and reported as unsupported
//! when absent.

use std::ffi::{c_char, c_int, c_void};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};

pub(crate) type Ctx = *mut c_void;

pub(crate) type OpenFn = unsafe extern "C" fn(*mut Ctx) -> c_int;
pub(crate) type CloseFn = unsafe extern "C" fn(Ctx) -> c_int;
pub(crate) type RandFn = unsafe extern "C" fn(Ctx, *mut *mut u8, c_int) -> c_int;
pub(crate) type SignFn =
    unsafe extern "C" fn(Ctx, *const u8, c_int, *mut *mut u8, *mut c_int) -> c_int;
pub(crate) type VerifyFn = unsafe extern "C" fn(Ctx, *const u8, c_int, *const u8, c_int) -> c_int;
pub(crate) type GetPubKeyFn = unsafe extern "C" fn(Ctx, *mut *mut u8, *mut c_int, c_int) -> c_int;
pub(crate) type ExportPubKeyFn =
    unsafe extern "C" fn(Ctx, *mut *mut u8, *mut c_int, c_int, bool) -> c_int;
pub(crate) type SlotListFn =
    unsafe extern "C" fn(Ctx, bool, *mut c_int, *mut *mut c_int, *mut c_int) -> c_int;
pub(crate) type GenKeyPairFn = unsafe extern "C" fn(Ctx, c_int) -> c_int;
pub(crate) type RemoveKeyFn = unsafe extern "C" fn(Ctx, c_int, bool) -> c_int;
pub(crate) type StoreForeignFn = unsafe extern "C" fn(Ctx, c_int, *mut u8, c_int) -> c_int;
pub(crate) type StringFn = unsafe extern "C" fn(Ctx, *mut *mut c_char) -> c_int;
pub(crate) type TimeFn = unsafe extern "C" fn(Ctx, *mut u32, bool) -> c_int;
pub(crate) type StateFingerprintFn = unsafe extern "C" fn(*mut *mut c_char) -> c_int;
pub(crate) type SetPerimeterActionFn = unsafe extern "C" fn(Ctx, c_int, u32) -> c_int;
pub(crate) type PerimeterInfoFn = unsafe extern "C" fn(Ctx, *mut *mut u32, *mut c_int) -> c_int;
pub(crate) type CtxFn = unsafe extern "C" fn(Ctx) -> c_int;
pub(crate) type WaitFn = unsafe extern "C" fn(Ctx, u32) -> c_int;
pub(crate) type IntSettingFn = unsafe extern "C" fn(Ctx, c_int) -> c_int;
pub(crate) type DelaysFn = unsafe extern "C" fn(Ctx, c_int, c_int) -> c_int;
pub(crate) type BindingInfoFn = unsafe extern "C" fn(Ctx, *mut bool, *mut bool) -> c_int;

/// The emulator's own extension (no Zymbit library has it): a string that
/// names the emulated device its next `zkOpen` reaches, read without a
/// device operation. See [`crate::Zymkey::device_fingerprint`].
pub const STATE_FINGERPRINT_SYMBOL: &str = "zkemu_state_fingerprint";

/// The functions a library may lack, in the order of
/// [`Library::optional_symbols`]; absent ones are unsupported. The key-store
/// functions came with the HSM6; the perimeter functions are in Zymbit's
/// oldest published header, but the module cannot use them on a library
/// without them; the digital perimeter and binding functions came later.
pub const OPTIONAL_SYMBOLS: &[&str] = &[
    "zkExportPubKey",
    "zkGetAllocSlotsList",
    "zkGenKeyPair",
    "zkRemoveKey",
    "zkStoreForeignPubKey",
    "zkVerifyECDSASigFromDigestWithForeignKeySlot",
    "zkSetPerimeterEventAction",
    "zkGetPerimeterDetectInfo",
    "zkClearPerimeterDetectEvents",
    "zkWaitForPerimeterEvent",
    "zkSetDigitalPerimeterDetectLPPeriod",
    "zkSetDigitalPerimeterDetectLPMaxBits",
    "zkSetDigitalPerimeterDetectDelays",
    "zkLockBinding",
    "zkGetCurrentBindingInfo",
];

/// Where Zymbit installs its library.
pub const DEFAULT_LIBRARY_PATH: &str = "/usr/lib/libzk_app_utils.so";

/// Environment variable that overrides [`DEFAULT_LIBRARY_PATH`].
pub const LIBRARY_PATH_ENV: &str = "ZKIOT_ZKLIB";

/// The library to load: [`LIBRARY_PATH_ENV`] when set and not empty, else
/// `configured` (the `zklib` setting), else [`DEFAULT_LIBRARY_PATH`]. The
/// PKCS#11 module and `zkiot device selftest` both choose it this way.
pub fn library_path(configured: Option<&std::path::Path>) -> std::path::PathBuf {
    match std::env::var_os(LIBRARY_PATH_ENV).filter(|v| !v.is_empty()) {
        Some(path) => std::path::PathBuf::from(path),
        None => configured
            .map(std::path::Path::to_path_buf)
            .unwrap_or_else(|| std::path::PathBuf::from(DEFAULT_LIBRARY_PATH)),
    }
}

/// A loaded Zymkey library and its resolved entry points.
pub struct Library {
    path: PathBuf,
    pub(crate) open: OpenFn,
    pub(crate) close: CloseFn,
    pub(crate) rand_bytes: RandFn,
    pub(crate) sign_digest: SignFn,
    pub(crate) verify_digest: VerifyFn,
    pub(crate) get_pub_key: GetPubKeyFn,
    pub(crate) model: StringFn,
    pub(crate) firmware: StringFn,
    pub(crate) serial: StringFn,
    pub(crate) time: TimeFn,
    pub(crate) export_pub_key: Option<ExportPubKeyFn>,
    pub(crate) slot_list: Option<SlotListFn>,
    pub(crate) gen_key_pair: Option<GenKeyPairFn>,
    pub(crate) remove_key: Option<RemoveKeyFn>,
    pub(crate) store_foreign: Option<StoreForeignFn>,
    pub(crate) verify_foreign: Option<VerifyFn>,
    pub(crate) state_fingerprint: Option<StateFingerprintFn>,
    pub(crate) set_perimeter_action: Option<SetPerimeterActionFn>,
    pub(crate) perimeter_info: Option<PerimeterInfoFn>,
    pub(crate) clear_perimeter: Option<CtxFn>,
    pub(crate) wait_perimeter: Option<WaitFn>,
    pub(crate) digital_lp_period: Option<IntSettingFn>,
    pub(crate) digital_lp_max_bits: Option<IntSettingFn>,
    pub(crate) digital_delays: Option<DelaysFn>,
    pub(crate) lock_binding: Option<CtxFn>,
    pub(crate) binding_info: Option<BindingInfoFn>,
    // Keeps the code mapped for as long as the function pointers above live.
    _handle: libloading::Library,
}

impl std::fmt::Debug for Library {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Library").field("path", &self.path).finish()
    }
}

impl Library {
    /// The library at `path`, loaded on the first call in this process and
    /// kept loaded: code behind function pointers handed out earlier stays
    /// mapped, and a host that initialises a module per request does not
    /// load the library again each time. A failed load is retried next time.
    pub fn shared(path: &Path) -> Result<Arc<Library>> {
        static LOADED: Mutex<Vec<Arc<Library>>> = Mutex::new(Vec::new());
        let mut loaded = LOADED.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(library) = loaded.iter().find(|l| l.path == path) {
            return Ok(library.clone());
        }
        let library = Arc::new(Library::load(path)?);
        loaded.push(library.clone());
        Ok(library)
    }

    /// Loads the library at `path` and resolves its symbols.
    pub fn load(path: &Path) -> Result<Library> {
        // SAFETY: loading a shared object runs its initialisers; the Zymkey
        // library (or the emulator) is the trusted code this crate exists to call.
        let handle =
            unsafe { libloading::Library::new(path) }.map_err(|e| Error::LibraryNotFound {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        // SAFETY: for every symbol below, the field's type is the symbol's
        // signature as declared in include/zk_app_utils.h.
        unsafe {
            Ok(Library {
                path: path.to_path_buf(),
                open: required(&handle, path, "zkOpen")?,
                close: required(&handle, path, "zkClose")?,
                rand_bytes: required(&handle, path, "zkGetRandBytes")?,
                sign_digest: required(&handle, path, "zkGenECDSASigFromDigest")?,
                verify_digest: required(&handle, path, "zkVerifyECDSASigFromDigest")?,
                get_pub_key: required(&handle, path, "zkGetECDSAPubKey")?,
                model: required(&handle, path, "zkGetModelNumberString")?,
                firmware: required(&handle, path, "zkGetFirmwareVersionString")?,
                serial: required(&handle, path, "zkGetSerialNumberString")?,
                time: required(&handle, path, "zkGetTime")?,
                export_pub_key: lookup(&handle, "zkExportPubKey"),
                slot_list: lookup(&handle, "zkGetAllocSlotsList"),
                gen_key_pair: lookup(&handle, "zkGenKeyPair"),
                remove_key: lookup(&handle, "zkRemoveKey"),
                store_foreign: lookup(&handle, "zkStoreForeignPubKey"),
                verify_foreign: lookup(&handle, "zkVerifyECDSASigFromDigestWithForeignKeySlot"),
                state_fingerprint: lookup(&handle, STATE_FINGERPRINT_SYMBOL),
                set_perimeter_action: lookup(&handle, "zkSetPerimeterEventAction"),
                perimeter_info: lookup(&handle, "zkGetPerimeterDetectInfo"),
                clear_perimeter: lookup(&handle, "zkClearPerimeterDetectEvents"),
                wait_perimeter: lookup(&handle, "zkWaitForPerimeterEvent"),
                digital_lp_period: lookup(&handle, "zkSetDigitalPerimeterDetectLPPeriod"),
                digital_lp_max_bits: lookup(&handle, "zkSetDigitalPerimeterDetectLPMaxBits"),
                digital_delays: lookup(&handle, "zkSetDigitalPerimeterDetectDelays"),
                lock_binding: lookup(&handle, "zkLockBinding"),
                binding_info: lookup(&handle, "zkGetCurrentBindingInfo"),
                _handle: handle,
            })
        }
    }

    /// The path this library was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Each of [`OPTIONAL_SYMBOLS`] and whether this library has it.
    pub fn optional_symbols(&self) -> Vec<(&'static str, bool)> {
        let present: [bool; OPTIONAL_SYMBOLS.len()] = [
            self.export_pub_key.is_some(),
            self.slot_list.is_some(),
            self.gen_key_pair.is_some(),
            self.remove_key.is_some(),
            self.store_foreign.is_some(),
            self.verify_foreign.is_some(),
            self.set_perimeter_action.is_some(),
            self.perimeter_info.is_some(),
            self.clear_perimeter.is_some(),
            self.wait_perimeter.is_some(),
            self.digital_lp_period.is_some(),
            self.digital_lp_max_bits.is_some(),
            self.digital_delays.is_some(),
            self.lock_binding.is_some(),
            self.binding_info.is_some(),
        ];
        OPTIONAL_SYMBOLS.iter().copied().zip(present).collect()
    }
}

/// A function of the library, `None` when the symbol is absent or NULL.
///
/// # Safety
/// `F` is a function pointer type with the symbol's signature.
unsafe fn lookup<F: Copy>(handle: &libloading::Library, symbol: &str) -> Option<F> {
    let name = format!("{symbol}\0");
    // SAFETY: by the contract above; as an `Option` of a function pointer, a
    // NULL symbol reads as `None`.
    unsafe { handle.get::<Option<F>>(name.as_bytes()) }
        .ok()
        .and_then(|f| *f)
}

/// A function every Zymbit library has.
///
/// # Safety
/// As for [`lookup`].
unsafe fn required<F: Copy>(
    handle: &libloading::Library,
    path: &Path,
    symbol: &'static str,
) -> Result<F> {
    // SAFETY: by the contract above.
    unsafe { lookup(handle, symbol) }.ok_or_else(|| Error::MissingSymbol {
        path: path.to_path_buf(),
        symbol,
    })
}
