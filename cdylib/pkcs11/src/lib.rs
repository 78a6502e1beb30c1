//! `libzkpkcs11.so`: the C ABI of the Zymkey PKCS#11 token.
//!
//! A thin layer over [`zktoken::Module`], one file per chapter of the
//! PKCS#11 specification. Each export is an [`export!`] that maps the
//! C symbol to an ordinary function of its chapter's file; the
//! export catches panics (they never unwind into C), and maps the
//! function's `Result` to exactly one `CK_RV`. The function checks that the
//! module is initialised in this process and turns raw pointers into
//! slices right before use, only through the checked helpers of this file
//! ([`input`], [`output`], [`inout`], [`out_param`], [`in_param`],
//! [`c_string_is`], [`template`], [`mechanism`], [`write_list`]): NULL where
//! a buffer is required, or a length no buffer can have, is
//! `CKR_ARGUMENTS_BAD`. What the token does not offer is one line of
//! [`not_supported!`], which checks the session or slot handle first, like
//! every other export.
//!
//! # Entry points and versions
//!
//! A PKCS#11 3.0 module with two function lists, both static:
//!
//! - `C_GetInterface` and `C_GetInterfaceList` (3.0 §5.4.5–5.4.6) offer the
//!   interface "PKCS 11" in version 3.0 ([`FUNCTION_LIST_3_0`], the default
//!   and first in the list) and in version 2.40 ([`FUNCTION_LIST`]).
//!   `C_GetInterface` answers the first interface that matches the name,
//!   the version and every requested flag (NULL name or version: any); when
//!   none does, `CKR_ARGUMENTS_BAD`, as kryoptic and p11-kit's proxy answer.
//!   Never `CKR_FUNCTION_NOT_SUPPORTED`: p11-kit and pkcs11-provider read it
//!   as "no 3.0 interfaces" and fall back to `C_GetFunctionList`, while
//!   pkcs11-provider's newer releases first ask for 3.2 and, on any other
//!   error, ask again for the default. The name is compared byte by byte up
//!   to the first difference: at most the 8 bytes of "PKCS 11" and its NUL
//!   are read. The record it answers is in writable memory, since OpenSC's
//!   pkcs11-spy writes its own function list into it; the module never reads
//!   that record back.
//! - `C_GetFunctionList` answers the 2.40 list, as before: consumers that
//!   know only it (libp11, p11-kit 0.24, python-pkcs11's base list, awscrt,
//!   which wants a list of major version 2) see the module they always saw.
//!
//! Each list's `C_GetInfo` reports the list's own version as
//! `cryptokiVersion`, as p11-kit's proxy does: a consumer of the 3.0
//! interface sees 3.0 in both places, a consumer of `C_GetFunctionList` 2.40
//! in both, so no consumer is told 3.0 while holding a list that has no 3.0
//! entries (kryoptic reports its highest version through every list; a
//! 2.40 consumer that believed it and read 3.0 entries past the end of a
//! 2.40 list would read other memory). The symbol `C_GetInfo` is the 2.40
//! list's. The 3.0 additions (`C_LoginUser`, `C_SessionCancel`, the
//! message-based functions) answer `CKR_FUNCTION_NOT_SUPPORTED` after the
//! handle check; every `C_*` function is also exported by name.
//!
//! No interface has `CKF_INTERFACE_FORK_SAFE`, so a request with that flag
//! finds none. The flag promises that after fork() each process keeps its
//! own copy of the sessions, logins and operations and goes on using them;
//! here fork() is safe but not transparent: the child's first
//! `C_Initialize` builds a fresh module and leaves the parent's untouched
//! (its device connection and store belong to the parent); until then the
//! child sees `CKR_CRYPTOKI_NOT_INITIALIZED`, and the parent's sessions are
//! not the child's. A fork never finds a lock held: `token/src/fork.rs`
//! makes it wait for SQLite and device calls in progress.

// The exports and their functions keep the PKCS#11 parameter names.
#![allow(non_snake_case)]

use std::cell::UnsafeCell;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::Mutex;

use cryptoki_sys::*;
use zktoken::{Error, Module, Result, TemplateUse};

mod general;
mod keygen;
mod object;
mod random;
mod session;
mod sign_verify;
mod slot_token;
mod unsupported;

/// Exports a PKCS#11 function: `export!(C_X(spec parameters) = x)` defines
/// the C symbol `C_X`, which runs the ordinary function `x` (same
/// parameters, returning [`Result<()>`]) through [`call`]. `= unsafe x`
/// marks a function that dereferences the caller's pointers; its contract
/// is the export's.
macro_rules! export {
    ($name:ident($($arg:ident: $ty:ty),* $(,)?) = unsafe $body:ident) => {
        #[doc = concat!("`", stringify!($name), "`: see [`", stringify!($body), "`].")]
        ///
        /// # Safety
        /// Pointer arguments are NULL or valid as the PKCS#11 specification
        /// describes for this function.
        #[no_mangle]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> CK_RV {
            // SAFETY: the body's contract is this export's, which the caller keeps.
            $crate::call(stringify!($name), move || unsafe { $body($($arg),*) })
        }
    };
    ($name:ident($($arg:ident: $ty:ty),* $(,)?) = $body:ident) => {
        #[doc = concat!("`", stringify!($name), "`: see [`", stringify!($body), "`].")]
        #[no_mangle]
        pub extern "C" fn $name($($arg: $ty),*) -> CK_RV {
            $crate::call(stringify!($name), move || $body($($arg),*))
        }
    };
}

/// Exports PKCS#11 functions the token does not offer, in one form with one
/// behaviour: `C_X(hSession, other parameter types);` (or `slotID`, or no
/// handle at all). Each checks, as every implemented export does, that the
/// module is initialised and then that the handle is valid, so a stale
/// handle gets the same code whatever function it is passed to; then it
/// answers `CKR_FUNCTION_NOT_SUPPORTED`, or the error after `=>` where the
/// specification prescribes another code. No other argument is looked at.
macro_rules! not_supported {
    () => {};
    (
        $(#[$meta:meta])* $name:ident(hSession $(, $ty:ty)* $(,)?) $(=> $error:expr)?;
        $($rest:tt)*
    ) => {
        $crate::not_supported!(@export [$(#[$meta])*] $name
            [hSession: CK_SESSION_HANDLE,] [$($ty),*]
            [$crate::module()?.check_session(hSession)?;] [$($error)?]);
        $crate::not_supported!($($rest)*);
    };
    (
        $(#[$meta:meta])* $name:ident(slotID $(, $ty:ty)* $(,)?) $(=> $error:expr)?;
        $($rest:tt)*
    ) => {
        $crate::not_supported!(@export [$(#[$meta])*] $name
            [slotID: CK_SLOT_ID,] [$($ty),*]
            [$crate::module()?.check_slot(slotID)?;] [$($error)?]);
        $crate::not_supported!($($rest)*);
    };
    (
        $(#[$meta:meta])* $name:ident($($ty:ty),* $(,)?) $(=> $error:expr)?;
        $($rest:tt)*
    ) => {
        $crate::not_supported!(@export [$(#[$meta])*] $name
            [] [$($ty),*] [$crate::module()?;] [$($error)?]);
        $crate::not_supported!($($rest)*);
    };
    (@export [$($meta:tt)*] $name:ident [$($handle:tt)*] [$($ty:ty),*] [$($check:tt)*]
        [$($error:expr)?]) => {
        $($meta)*
        #[no_mangle]
        pub extern "C" fn $name($($handle)* $(_: $ty),*) -> CK_RV {
            $crate::call(stringify!($name), move || {
                $($check)*
                Err($crate::not_supported!(@error $name $($error)?))
            })
        }
    };
    (@error $name:ident $error:expr) => { $error };
    (@error $name:ident) => { ::zktoken::Error::FunctionNotSupported(stringify!($name)) };
}

pub(crate) use {export, not_supported};

/// Serialises `C_Initialize` and `C_Finalize`.
pub(crate) static INIT_LOCK: Mutex<()> = Mutex::new(());

/// The module of this process, between `C_Initialize` and `C_Finalize`.
/// Readers take no lock (a thread that forks while others are in the middle
/// of calls leaves its child no lock held forever): a module taken out of
/// `CURRENT` is freed only once no call can still be using it (see
/// [`reclaim`]).
static CURRENT: AtomicPtr<Module> = AtomicPtr::new(std::ptr::null_mut());

/// Calls in progress in this process, counted before they read `CURRENT`.
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// Modules taken out of `CURRENT` and not freed yet (addresses of leaked
/// boxes). One inherited across fork() belongs to the parent and is never
/// freed here: dropping it would close the parent's store and device.
static RETIRED: Mutex<Vec<usize>> = Mutex::new(Vec::new());

/// The module in use by the process that initialised it; a forked child
/// sees its parent's as not initialised until it calls `C_Initialize`.
pub(crate) fn module() -> Result<&'static Module> {
    current()
        .filter(|m| m.is_active())
        .ok_or(Error::CryptokiNotInitialized)
}

/// Whatever module is installed, possibly inherited from a parent process.
pub(crate) fn current() -> Option<&'static Module> {
    let p = CURRENT.load(Ordering::Acquire);
    // SAFETY: CURRENT is NULL or a pointer from Box::leak, freed only after
    // it left CURRENT and no call was in flight (see `reclaim`): this call,
    // counted in IN_FLIGHT, keeps it alive until it returns.
    unsafe { p.as_ref() }
}

/// Makes `module` the module of this process. Call with INIT_LOCK held.
pub(crate) fn install(module: Module) {
    let previous = CURRENT.swap(Box::leak(Box::new(module)), Ordering::SeqCst);
    retire(previous);
    reclaim();
}

/// Uninstalls the current module, which stays readable until [`reclaim`]
/// frees it. Call with INIT_LOCK held.
pub(crate) fn uninstall() -> Option<&'static Module> {
    let p = CURRENT.swap(std::ptr::null_mut(), Ordering::SeqCst);
    retire(p);
    // SAFETY: as in `current`.
    unsafe { p.as_ref() }
}

fn retire(module: *mut Module) {
    if !module.is_null() {
        lock_retired().push(module as usize);
    }
}

fn lock_retired() -> std::sync::MutexGuard<'static, Vec<usize>> {
    RETIRED.lock().unwrap_or_else(|p| p.into_inner())
}

/// Frees this process's retired modules when no other call is in progress:
/// every call counts itself in `IN_FLIGHT` before it reads `CURRENT`, so with
/// only the caller (`C_Initialize` or `C_Finalize`) counted, no call holds a
/// retired module. Otherwise they wait for the next `C_Initialize` or
/// `C_Finalize`. Call with INIT_LOCK held, after the module was finalized.
pub(crate) fn reclaim() {
    if IN_FLIGHT.load(Ordering::SeqCst) != 1 {
        return;
    }
    lock_retired().retain(|&address| {
        let module = address as *mut Module;
        // SAFETY: a retired pointer came from Box::leak and is freed only here.
        let ours = unsafe { &*module }.is_finalized_here();
        if ours {
            // SAFETY: no call holds it (see above), and it is dropped once.
            drop(unsafe { Box::from_raw(module) });
        }
        !ours
    });
}

/// Runs an export's body: panics become `CKR_GENERAL_ERROR`, errors their `CK_RV`.
pub(crate) fn call(name: &'static str, body: impl FnOnce() -> Result<()>) -> CK_RV {
    /// Counts the call in `IN_FLIGHT` until it returns, even by a panic.
    struct InFlight;
    impl Drop for InFlight {
        fn drop(&mut self) {
            IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
        }
    }
    IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
    let _in_flight = InFlight;
    match std::panic::catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => CKR_OK,
        Ok(Err(e)) => {
            if e.is_serious() {
                tracing::warn!("{name}: {e}");
            } else {
                tracing::debug!("{name}: {e}");
            }
            e.rv()
        }
        Err(_) => {
            tracing::error!("{name}: internal error (panic); returning CKR_GENERAL_ERROR");
            CKR_GENERAL_ERROR
        }
    }
}

/// The number of items of a caller's array of `T`, refused when no array
/// could be that long (it must fit in `isize` bytes), as a leftover
/// `CK_UNAVAILABLE_INFORMATION` cannot.
fn array_len<T>(count: CK_ULONG) -> Result<usize> {
    usize::try_from(count)
        .ok()
        .filter(|n| {
            n.checked_mul(std::mem::size_of::<T>())
                .is_some_and(|bytes| isize::try_from(bytes).is_ok())
        })
        .ok_or(Error::ArgumentsBad("length out of range"))
}

/// Refuses a pointer that cannot point to a `T`; NULL is the caller's to judge.
fn aligned<T>(p: *const T) -> Result<()> {
    if p.is_null() || p.is_aligned() {
        Ok(())
    } else {
        Err(Error::ArgumentsBad("misaligned pointer"))
    }
}

/// A caller's input array (bytes, attributes). NULL is accepted for an
/// empty array only.
///
/// # Safety
/// `p` is NULL or valid for reading `len` items for the returned lifetime.
pub(crate) unsafe fn input<'a, T>(p: *const T, len: CK_ULONG) -> Result<&'a [T]> {
    let len = array_len::<T>(len)?;
    aligned(p)?;
    if p.is_null() {
        return if len == 0 {
            Ok(&[])
        } else {
            Err(Error::ArgumentsBad("NULL buffer"))
        };
    }
    // SAFETY: non-NULL, aligned, `len` items fit in isize; valid by the contract above.
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// A caller's array that is read and written in place (the template of
/// `C_GetAttributeValue`). NULL is accepted for an empty array only.
///
/// # Safety
/// `p` is NULL or valid for reading and writing `len` items for the
/// returned lifetime.
pub(crate) unsafe fn inout<'a, T>(p: *mut T, len: CK_ULONG) -> Result<&'a mut [T]> {
    if p.is_null() {
        // SAFETY: NULL is never dereferenced.
        unsafe { input(p, len) }?;
        return Ok(&mut []);
    }
    // SAFETY: non-NULL, so `output` answers a slice; valid by the contract above.
    Ok(unsafe { output(p, len) }?.unwrap_or_default())
}

/// A caller's output array, or `None` for a NULL pointer (a length query).
///
/// # Safety
/// `p` is NULL or valid for writing `len` items for the returned lifetime.
pub(crate) unsafe fn output<'a, T>(p: *mut T, len: CK_ULONG) -> Result<Option<&'a mut [T]>> {
    if p.is_null() {
        return Ok(None);
    }
    let len = array_len::<T>(len)?;
    aligned(p)?;
    // SAFETY: non-NULL, aligned, `len` items fit in isize; valid by the contract above.
    Ok(Some(unsafe { std::slice::from_raw_parts_mut(p, len) }))
}

/// A required out-parameter.
///
/// # Safety
/// `p` is NULL or valid for writing a `T` for the returned lifetime.
pub(crate) unsafe fn out_param<'a, T>(p: *mut T) -> Result<&'a mut T> {
    aligned(p)?;
    // SAFETY: NULL or aligned and valid, by the contract above.
    unsafe { p.as_mut() }.ok_or(Error::ArgumentsBad("NULL output pointer"))
}

/// An optional input parameter: `None` for NULL.
///
/// # Safety
/// `p` is NULL or valid for reading a `T` for the returned lifetime.
pub(crate) unsafe fn in_param<'a, T>(p: *const T) -> Result<Option<&'a T>> {
    aligned(p)?;
    // SAFETY: NULL or aligned and valid, by the contract above.
    Ok(unsafe { p.as_ref() })
}

/// Whether the caller's NUL-terminated string `p` is `expected` (whose last
/// byte is its NUL); `None` for NULL. The caller's bytes are read one at a
/// time up to the first that differs: at most `expected.len()` of them, and
/// never one past the caller's NUL, so an unterminated string is not run
/// through.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string.
pub(crate) unsafe fn c_string_is(p: *const CK_UTF8CHAR, expected: &[CK_UTF8CHAR]) -> Option<bool> {
    debug_assert_eq!(expected.last(), Some(&0), "expected ends with its NUL");
    if p.is_null() {
        return None;
    }
    for (i, &want) in expected.iter().enumerate() {
        // SAFETY: bytes 0..i were equal to `expected`'s, none of which is NUL
        // before its last, so the caller's string goes on at least to byte i.
        let got = unsafe { p.add(i).read() };
        if got != want {
            return Some(false);
        }
    }
    Some(true)
}

/// Copies a caller's attribute template (for searches, new objects and
/// changes). The token checks each declared length against what it knows of
/// the attribute before a byte of its value is read.
///
/// # Safety
/// `p` is NULL or points to `count` attributes, each `pValue` NULL or valid
/// for reading `ulValueLen` bytes.
pub(crate) unsafe fn template(
    p: *const CK_ATTRIBUTE,
    count: CK_ULONG,
    template_use: TemplateUse,
) -> Result<zktoken::Template> {
    // SAFETY: by the contract above.
    let attrs = unsafe { input(p, count) }?;
    let declared: Vec<(CK_ATTRIBUTE_TYPE, CK_ULONG)> =
        attrs.iter().map(|a| (a.type_, a.ulValueLen)).collect();
    zktoken::read_template(template_use, &declared, |index, len| {
        let value = attrs[index].pValue as *const u8;
        // SAFETY: `len` is at most the declared `ulValueLen`, by the token's
        // check, and the value is valid for that by the contract above.
        Ok(unsafe { input(value, len as CK_ULONG) }?.to_vec())
    })
}

/// The mechanism type and whether a parameter was given.
///
/// # Safety
/// `p` is NULL or points to a valid `CK_MECHANISM`.
pub(crate) unsafe fn mechanism(p: *const CK_MECHANISM) -> Result<(CK_MECHANISM_TYPE, bool)> {
    aligned(p)?;
    // SAFETY: NULL or aligned and valid, by the contract above.
    let m = unsafe { p.as_ref() }.ok_or(Error::ArgumentsBad("NULL mechanism"))?;
    Ok((
        m.mechanism,
        !m.pParameter.is_null() || m.ulParameterLen != 0,
    ))
}

/// Answers a list with the PKCS#11 two-call convention (§5.2): with `out`
/// NULL only the length is stored.
///
/// # Safety
/// `out` is NULL or valid for `*len_inout` items; `len_inout` is NULL or valid.
pub(crate) unsafe fn write_list<T: Copy>(
    items: &[T],
    out: *mut T,
    len_inout: *mut CK_ULONG,
) -> Result<()> {
    // SAFETY: by the contract above.
    let len = unsafe { out_param(len_inout) }?;
    // SAFETY: by the contract above.
    let out = unsafe { output(out, *len) }?;
    *len = items.len() as CK_ULONG;
    let Some(out) = out else {
        return Ok(());
    };
    let required = items.len();
    out.get_mut(..required)
        .ok_or(Error::BufferTooSmall { required })?
        .copy_from_slice(items);
    Ok(())
}

/// The version of the function list `C_GetFunctionList` answers, and of the
/// second interface of `C_GetInterfaceList`.
pub(crate) const VERSION_2_40: CK_VERSION = CK_VERSION {
    major: 2,
    minor: 40,
};

/// The version of the default interface of `C_GetInterface`.
pub(crate) const VERSION_3_0: CK_VERSION = CK_VERSION { major: 3, minor: 0 };

/// A function list: `function_list!(Type { version: V, C_GetInfo: f, 3.0 entries… })`
/// fills the 2.40 entries, the same in every list but `C_GetInfo`, which
/// reports the list's own version.
macro_rules! function_list {
    (
        $type:ident {
            version: $version:expr,
            C_GetInfo: $get_info:path
            $(, $name:ident: $value:expr)* $(,)?
        }
    ) => {
        $type {
            version: $version,
            C_Initialize: Some(general::C_Initialize),
            C_Finalize: Some(general::C_Finalize),
            C_GetInfo: Some($get_info),
            C_GetFunctionList: Some(C_GetFunctionList),
            C_GetSlotList: Some(slot_token::C_GetSlotList),
            C_GetSlotInfo: Some(slot_token::C_GetSlotInfo),
            C_GetTokenInfo: Some(slot_token::C_GetTokenInfo),
            C_GetMechanismList: Some(slot_token::C_GetMechanismList),
            C_GetMechanismInfo: Some(slot_token::C_GetMechanismInfo),
            C_InitToken: Some(slot_token::C_InitToken),
            C_InitPIN: Some(slot_token::C_InitPIN),
            C_SetPIN: Some(slot_token::C_SetPIN),
            C_OpenSession: Some(session::C_OpenSession),
            C_CloseSession: Some(session::C_CloseSession),
            C_CloseAllSessions: Some(session::C_CloseAllSessions),
            C_GetSessionInfo: Some(session::C_GetSessionInfo),
            C_GetOperationState: Some(session::C_GetOperationState),
            C_SetOperationState: Some(session::C_SetOperationState),
            C_Login: Some(session::C_Login),
            C_Logout: Some(session::C_Logout),
            C_CreateObject: Some(object::C_CreateObject),
            C_CopyObject: Some(object::C_CopyObject),
            C_DestroyObject: Some(object::C_DestroyObject),
            C_GetObjectSize: Some(object::C_GetObjectSize),
            C_GetAttributeValue: Some(object::C_GetAttributeValue),
            C_SetAttributeValue: Some(object::C_SetAttributeValue),
            C_FindObjectsInit: Some(object::C_FindObjectsInit),
            C_FindObjects: Some(object::C_FindObjects),
            C_FindObjectsFinal: Some(object::C_FindObjectsFinal),
            C_EncryptInit: Some(unsupported::C_EncryptInit),
            C_Encrypt: Some(unsupported::C_Encrypt),
            C_EncryptUpdate: Some(unsupported::C_EncryptUpdate),
            C_EncryptFinal: Some(unsupported::C_EncryptFinal),
            C_DecryptInit: Some(unsupported::C_DecryptInit),
            C_Decrypt: Some(unsupported::C_Decrypt),
            C_DecryptUpdate: Some(unsupported::C_DecryptUpdate),
            C_DecryptFinal: Some(unsupported::C_DecryptFinal),
            C_DigestInit: Some(unsupported::C_DigestInit),
            C_Digest: Some(unsupported::C_Digest),
            C_DigestUpdate: Some(unsupported::C_DigestUpdate),
            C_DigestKey: Some(unsupported::C_DigestKey),
            C_DigestFinal: Some(unsupported::C_DigestFinal),
            C_SignInit: Some(sign_verify::C_SignInit),
            C_Sign: Some(sign_verify::C_Sign),
            C_SignUpdate: Some(sign_verify::C_SignUpdate),
            C_SignFinal: Some(sign_verify::C_SignFinal),
            C_SignRecoverInit: Some(sign_verify::C_SignRecoverInit),
            C_SignRecover: Some(sign_verify::C_SignRecover),
            C_VerifyInit: Some(sign_verify::C_VerifyInit),
            C_Verify: Some(sign_verify::C_Verify),
            C_VerifyUpdate: Some(sign_verify::C_VerifyUpdate),
            C_VerifyFinal: Some(sign_verify::C_VerifyFinal),
            C_VerifyRecoverInit: Some(sign_verify::C_VerifyRecoverInit),
            C_VerifyRecover: Some(sign_verify::C_VerifyRecover),
            C_DigestEncryptUpdate: Some(unsupported::C_DigestEncryptUpdate),
            C_DecryptDigestUpdate: Some(unsupported::C_DecryptDigestUpdate),
            C_SignEncryptUpdate: Some(unsupported::C_SignEncryptUpdate),
            C_DecryptVerifyUpdate: Some(unsupported::C_DecryptVerifyUpdate),
            C_GenerateKey: Some(keygen::C_GenerateKey),
            C_GenerateKeyPair: Some(keygen::C_GenerateKeyPair),
            C_WrapKey: Some(keygen::C_WrapKey),
            C_UnwrapKey: Some(keygen::C_UnwrapKey),
            C_DeriveKey: Some(keygen::C_DeriveKey),
            C_SeedRandom: Some(random::C_SeedRandom),
            C_GenerateRandom: Some(random::C_GenerateRandom),
            C_GetFunctionStatus: Some(unsupported::C_GetFunctionStatus),
            C_CancelFunction: Some(unsupported::C_CancelFunction),
            C_WaitForSlotEvent: Some(unsupported::C_WaitForSlotEvent),
            $($name: $value,)*
        }
    };
}

/// The PKCS#11 2.40 function list, from `C_GetFunctionList`.
pub(crate) static FUNCTION_LIST: CK_FUNCTION_LIST = function_list!(CK_FUNCTION_LIST {
    version: VERSION_2_40,
    C_GetInfo: general::C_GetInfo,
});

/// The PKCS#11 3.0 function list: the 2.40 functions, `C_GetInfo` reporting
/// 3.0, and the functions 3.0 adds.
pub(crate) static FUNCTION_LIST_3_0: CK_FUNCTION_LIST_3_0 = function_list!(CK_FUNCTION_LIST_3_0 {
    version: VERSION_3_0,
    C_GetInfo: general::get_info_3_0,
    C_GetInterfaceList: Some(C_GetInterfaceList),
    C_GetInterface: Some(C_GetInterface),
    C_LoginUser: Some(unsupported::C_LoginUser),
    C_SessionCancel: Some(unsupported::C_SessionCancel),
    C_MessageEncryptInit: Some(unsupported::C_MessageEncryptInit),
    C_EncryptMessage: Some(unsupported::C_EncryptMessage),
    C_EncryptMessageBegin: Some(unsupported::C_EncryptMessageBegin),
    C_EncryptMessageNext: Some(unsupported::C_EncryptMessageNext),
    C_MessageEncryptFinal: Some(unsupported::C_MessageEncryptFinal),
    C_MessageDecryptInit: Some(unsupported::C_MessageDecryptInit),
    C_DecryptMessage: Some(unsupported::C_DecryptMessage),
    C_DecryptMessageBegin: Some(unsupported::C_DecryptMessageBegin),
    C_DecryptMessageNext: Some(unsupported::C_DecryptMessageNext),
    C_MessageDecryptFinal: Some(unsupported::C_MessageDecryptFinal),
    C_MessageSignInit: Some(unsupported::C_MessageSignInit),
    C_SignMessage: Some(unsupported::C_SignMessage),
    C_SignMessageBegin: Some(unsupported::C_SignMessageBegin),
    C_SignMessageNext: Some(unsupported::C_SignMessageNext),
    C_MessageSignFinal: Some(unsupported::C_MessageSignFinal),
    C_MessageVerifyInit: Some(unsupported::C_MessageVerifyInit),
    C_VerifyMessage: Some(unsupported::C_VerifyMessage),
    C_VerifyMessageBegin: Some(unsupported::C_VerifyMessageBegin),
    C_VerifyMessageNext: Some(unsupported::C_VerifyMessageNext),
    C_MessageVerifyFinal: Some(unsupported::C_MessageVerifyFinal),
});

export!(C_GetFunctionList(ppFunctionList: CK_FUNCTION_LIST_PTR_PTR) = unsafe get_function_list);

/// `C_GetFunctionList` (§5.4): the 2.40 function list, for consumers that
/// know no other entry point.
///
/// # Safety
/// `ppFunctionList` is NULL or valid for writing a pointer.
unsafe fn get_function_list(ppFunctionList: CK_FUNCTION_LIST_PTR_PTR) -> Result<()> {
    // SAFETY: by the contract above.
    let out = unsafe { out_param(ppFunctionList) }?;
    *out = &FUNCTION_LIST as *const CK_FUNCTION_LIST as CK_FUNCTION_LIST_PTR;
    Ok(())
}

/// The name of the standard interfaces (PKCS#11 3.0 §3.6), NUL-terminated.
static INTERFACE_NAME: [CK_UTF8CHAR; 8] = *b"PKCS 11\0";

/// The interfaces the module offers, the default first: "PKCS 11" 3.0 and
/// "PKCS 11" 2.40, neither fork safe (see the module doc).
macro_rules! interfaces {
    () => {
        [
            CK_INTERFACE {
                pInterfaceName: INTERFACE_NAME.as_ptr() as *mut CK_UTF8CHAR,
                pFunctionList: &FUNCTION_LIST_3_0 as *const CK_FUNCTION_LIST_3_0
                    as *mut std::ffi::c_void,
                flags: 0,
            },
            CK_INTERFACE {
                pInterfaceName: INTERFACE_NAME.as_ptr() as *mut CK_UTF8CHAR,
                pFunctionList: &FUNCTION_LIST as *const CK_FUNCTION_LIST as *mut std::ffi::c_void,
                flags: 0,
            },
        ]
    };
}

/// The interfaces, as the module reads them.
struct Interfaces([CK_INTERFACE; 2]);

// SAFETY: the pointers inside point to immutable statics (the name and the
// function lists), which nothing writes: sharing them between threads is
// sharing those statics.
unsafe impl Sync for Interfaces {}

/// What `C_GetInterfaceList` copies out and `C_GetInterface` chooses from.
static INTERFACES: Interfaces = Interfaces(interfaces!());

/// The records `C_GetInterface` hands out: the same interfaces, in writable
/// memory. Consumers may write to the record they are given (OpenSC's
/// pkcs11-spy puts its own function list in it), which would crash them in
/// read-only memory; the module never reads these records, so nothing a
/// consumer writes there changes an answer of the module.
struct HandedOut(UnsafeCell<[CK_INTERFACE; 2]>);

// SAFETY: the module never reads or writes the records; it only hands out
// pointers to them, as the specification has it hand out its function lists.
unsafe impl Sync for HandedOut {}

static HANDED_OUT: HandedOut = HandedOut(UnsafeCell::new(interfaces!()));

impl Interfaces {
    /// Each interface with its version, the first field of its function list.
    fn with_versions(&self) -> impl Iterator<Item = (&CK_INTERFACE, CK_VERSION)> {
        self.0.iter().map(|interface| {
            // SAFETY: the only `Interfaces` is INTERFACES, whose function
            // lists are statics that start with their CK_VERSION.
            let version = unsafe { *(interface.pFunctionList as *const CK_VERSION) };
            (interface, version)
        })
    }
}

export!(C_GetInterfaceList(
    pInterfacesList: CK_INTERFACE_PTR,
    pulCount: CK_ULONG_PTR,
) = unsafe get_interface_list);

/// `C_GetInterfaceList` (3.0 §5.4.5): the interfaces, with the list length
/// convention of §5.2.
///
/// # Safety
/// `pInterfacesList` is NULL or valid for `*pulCount` interfaces;
/// `pulCount` is NULL or valid.
unsafe fn get_interface_list(
    pInterfacesList: CK_INTERFACE_PTR,
    pulCount: CK_ULONG_PTR,
) -> Result<()> {
    // SAFETY: by the contract above.
    unsafe { write_list(&INTERFACES.0, pInterfacesList, pulCount) }
}

export!(C_GetInterface(
    pInterfaceName: CK_UTF8CHAR_PTR,
    pVersion: CK_VERSION_PTR,
    ppInterface: CK_INTERFACE_PTR_PTR,
    flags: CK_FLAGS,
) = unsafe get_interface);

/// `C_GetInterface` (3.0 §5.4.6): the first interface whose name is
/// `pInterfaceName` (any when NULL), whose version is `*pVersion` (any when
/// NULL) and which has every flag of `flags`. None is `CKR_ARGUMENTS_BAD`,
/// never `CKR_FUNCTION_NOT_SUPPORTED`, which p11-kit and pkcs11-provider take
/// for "no interfaces at all" and fall back to `C_GetFunctionList`.
///
/// # Safety
/// `pInterfaceName` is NULL or a NUL-terminated string; `pVersion` is NULL or
/// valid for reading a `CK_VERSION`; `ppInterface` is NULL or valid for
/// writing a pointer.
unsafe fn get_interface(
    pInterfaceName: CK_UTF8CHAR_PTR,
    pVersion: CK_VERSION_PTR,
    ppInterface: CK_INTERFACE_PTR_PTR,
    flags: CK_FLAGS,
) -> Result<()> {
    // SAFETY: by the contract above.
    let out = unsafe { out_param(ppInterface) }?;
    // SAFETY: by the contract above.
    let version = unsafe { in_param(pVersion) }?;
    // SAFETY: by the contract above.
    let name_matches = unsafe { c_string_is(pInterfaceName, &INTERFACE_NAME) };
    let index = INTERFACES
        .with_versions()
        .position(|(interface, offered)| {
            name_matches != Some(false)
                && version.map_or(true, |v| {
                    (v.major, v.minor) == (offered.major, offered.minor)
                })
                && interface.flags & flags == flags
        })
        .ok_or(Error::ArgumentsBad("no such interface"))?;
    *out = HANDED_OUT
        .0
        .get()
        .cast::<CK_INTERFACE>()
        .wrapping_add(index);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_general_error() {
        let rv = call("C_Test", || panic!("boom"));
        assert_eq!(rv, CKR_GENERAL_ERROR);
        assert_eq!(call("C_Test", || Ok(())), CKR_OK);
        assert_eq!(
            call("C_Test", || Err(Error::SignatureInvalid)),
            CKR_SIGNATURE_INVALID
        );
    }

    #[test]
    fn null_buffers() {
        // SAFETY: NULL pointers and a valid local buffer.
        unsafe {
            assert!(input(std::ptr::null::<u8>(), 0).unwrap().is_empty());
            assert_eq!(
                input(std::ptr::null::<u8>(), 3).unwrap_err().rv(),
                CKR_ARGUMENTS_BAD
            );
            assert!(output(std::ptr::null_mut::<u8>(), 64).unwrap().is_none());
            assert_eq!(
                out_param::<CK_ULONG>(std::ptr::null_mut())
                    .unwrap_err()
                    .rv(),
                CKR_ARGUMENTS_BAD
            );
            assert_eq!(
                template(std::ptr::null(), 2, TemplateUse::Find)
                    .unwrap_err()
                    .rv(),
                CKR_ARGUMENTS_BAD
            );
            assert!(template(std::ptr::null(), 0, TemplateUse::Find)
                .unwrap()
                .is_empty());
            let mut data = [1u8, 2, 3];
            assert_eq!(
                output(data.as_mut_ptr(), CK_UNAVAILABLE_INFORMATION)
                    .unwrap_err()
                    .rv(),
                CKR_ARGUMENTS_BAD
            );
            assert_eq!(input(data.as_ptr(), 3).unwrap(), &data);
        }
    }

    #[test]
    fn counts_no_array_can_have() {
        let too_many = (isize::MAX as usize / std::mem::size_of::<CK_ATTRIBUTE>() + 1) as CK_ULONG;
        assert!(array_len::<u8>(too_many).is_ok(), "that many bytes fit");
        assert!(array_len::<CK_ATTRIBUTE>(too_many - 1).is_ok());
        assert_eq!(
            array_len::<CK_ATTRIBUTE>(too_many).unwrap_err().rv(),
            CKR_ARGUMENTS_BAD
        );
        assert_eq!(
            array_len::<u8>(CK_UNAVAILABLE_INFORMATION)
                .unwrap_err()
                .rv(),
            CKR_ARGUMENTS_BAD
        );
    }

    #[test]
    fn misaligned_pointers() {
        let words = [0 as CK_ULONG; 2];
        let odd = (words.as_ptr() as *const u8).wrapping_add(1) as *mut CK_ULONG;
        // SAFETY: the pointer is refused before any use.
        unsafe {
            assert_eq!(input(odd, 1).unwrap_err().rv(), CKR_ARGUMENTS_BAD);
            assert_eq!(output(odd, 1).unwrap_err().rv(), CKR_ARGUMENTS_BAD);
            assert_eq!(out_param(odd).unwrap_err().rv(), CKR_ARGUMENTS_BAD);
        }
    }

    #[test]
    fn list_length_protocol() {
        let items: [CK_ULONG; 3] = [7, 8, 9];
        let mut len: CK_ULONG = 0;
        // SAFETY: valid local pointers with the lengths given.
        unsafe {
            write_list(&items, std::ptr::null_mut(), &mut len).unwrap();
            assert_eq!(len, 3);
            let mut short = [0 as CK_ULONG; 2];
            len = 2;
            assert_eq!(
                write_list(&items, short.as_mut_ptr(), &mut len)
                    .unwrap_err()
                    .rv(),
                CKR_BUFFER_TOO_SMALL
            );
            assert_eq!(len, 3);
            let mut out = [0 as CK_ULONG; 4];
            len = 4;
            write_list(&items, out.as_mut_ptr(), &mut len).unwrap();
            assert_eq!((len, out), (3, [7, 8, 9, 0]));
        }
    }

    #[test]
    fn function_list_has_every_entry() {
        let mut list: CK_FUNCTION_LIST_PTR = std::ptr::null_mut();
        // SAFETY: a valid out-pointer.
        assert_eq!(unsafe { C_GetFunctionList(&mut list) }, CKR_OK);
        assert!(std::ptr::eq(list, &FUNCTION_LIST));
        // Every field after `version` is a non-NULL function pointer.
        let size = std::mem::size_of::<CK_FUNCTION_LIST>();
        let entries = (size - std::mem::size_of::<CK_VERSION>().max(8)) / 8;
        assert_eq!(entries, 68);
        // SAFETY: the struct is `version` then 68 pointer-sized Options.
        let words = unsafe {
            std::slice::from_raw_parts((list as *const u8).add(8) as *const usize, entries)
        };
        assert!(words.iter().all(|w| *w != 0));
    }

    /// The function pointers of a list, after its version.
    fn entries_of<T>(list: &T) -> &[usize] {
        let entries = (std::mem::size_of::<T>() - 8) / 8;
        // SAFETY: a function list is `version` (padded to 8 bytes) then
        // pointer-sized Options; `list` is valid for its whole size.
        unsafe {
            std::slice::from_raw_parts(
                (list as *const T as *const u8).add(8) as *const usize,
                entries,
            )
        }
    }

    #[test]
    fn function_list_3_0_has_every_entry_and_the_2_40_functions() {
        let v3 = entries_of(&FUNCTION_LIST_3_0);
        assert_eq!(v3.len(), 92);
        assert!(v3.iter().all(|w| *w != 0));
        let v2 = entries_of(&FUNCTION_LIST);
        for (index, (a, b)) in v2.iter().zip(v3).enumerate() {
            // Entry 2 is C_GetInfo, which reports each list's version.
            assert_eq!(a == b, index != 2, "entry {index} of the lists");
        }
        assert_eq!(
            (FUNCTION_LIST.version.major, FUNCTION_LIST.version.minor),
            (2, 40)
        );
        assert_eq!(
            (
                FUNCTION_LIST_3_0.version.major,
                FUNCTION_LIST_3_0.version.minor
            ),
            (3, 0)
        );
    }

    #[test]
    fn interfaces_default_first() {
        let versions: Vec<_> = INTERFACES
            .with_versions()
            .map(|(_, v)| (v.major, v.minor))
            .collect();
        assert_eq!(versions, [(3, 0), (2, 40)]);
        let mut found: CK_INTERFACE_PTR = std::ptr::null_mut();
        // SAFETY: NULL name and version, a valid out-pointer.
        let rv =
            unsafe { C_GetInterface(std::ptr::null_mut(), std::ptr::null_mut(), &mut found, 0) };
        assert_eq!(rv, CKR_OK);
        assert!(std::ptr::eq(found, HANDED_OUT.0.get().cast()));
    }

    #[test]
    fn caller_strings_are_read_up_to_the_first_difference() {
        let expected = &INTERFACE_NAME;
        // SAFETY: a NUL-terminated string.
        let is = |name: &std::ffi::CStr| unsafe { c_string_is(name.as_ptr().cast(), expected) };
        assert_eq!(is(c"PKCS 11"), Some(true));
        assert_eq!(is(c"PKCS 1"), Some(false));
        assert_eq!(is(c"PKCS 11 "), Some(false));
        assert_eq!(is(c"pkcs 11"), Some(false));
        assert_eq!(is(c""), Some(false));
        // SAFETY: NULL, and unterminated arrays that differ from `expected`
        // within their own length, so nothing past them is read.
        unsafe {
            assert_eq!(c_string_is(std::ptr::null(), expected), None);
            assert_eq!(c_string_is([b'P', b'X'].as_ptr(), expected), Some(false));
            assert_eq!(c_string_is(b"PKCS 11X".as_ptr(), expected), Some(false));
        }
    }
}
