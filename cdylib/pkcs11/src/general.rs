//! General-purpose functions (PKCS#11 2.40 and 3.0 §5.4); `C_GetFunctionList`,
//! `C_GetInterfaceList` and `C_GetInterface` are in the crate root, beside the
//! function lists they answer.

use std::ffi::CStr;
use std::sync::Once;

use cryptoki_sys::*;
use zktoken::{Error, Module};

use crate::{
    export, install, module, out_param, reclaim, uninstall, INIT_LOCK, VERSION_2_40, VERSION_3_0,
};

/// What `C_Initialize`'s arguments ask for: the configuration text or path
/// passed in `pReserved`, if any.
///
/// # Safety
/// `args` is NULL or points to a valid `CK_C_INITIALIZE_ARGS` whose
/// `pReserved` is NULL or a NUL-terminated string.
unsafe fn init_args(args: *const CK_C_INITIALIZE_ARGS) -> zktoken::Result<Option<String>> {
    // SAFETY: by the contract above.
    let Some(args) = (unsafe { args.as_ref() }) else {
        return Ok(None);
    };
    let callbacks = [
        args.CreateMutex.is_some(),
        args.DestroyMutex.is_some(),
        args.LockMutex.is_some(),
        args.UnlockMutex.is_some(),
    ];
    let given = callbacks.iter().filter(|c| **c).count();
    if given != 0 && given != callbacks.len() {
        return Err(Error::ArgumentsBad(
            "mutex callbacks must be all given or none",
        ));
    }
    // The module locks with the OS's primitives: callbacks are only
    // acceptable when the application also allows those.
    if given != 0 && args.flags & CKF_OS_LOCKING_OK == 0 {
        return Err(Error::CantLock);
    }
    if args.pReserved.is_null() {
        return Ok(None);
    }
    // SAFETY: by the contract above.
    let text = unsafe { CStr::from_ptr(args.pReserved as *const std::ffi::c_char) };
    Ok(Some(text.to_string_lossy().into_owned()))
}

extern "C" fn before_fork() {
    // Unwinding out of a fork handler would abort; the gate does not panic.
    let _ = std::panic::catch_unwind(zktoken::fork::prepare);
}

extern "C" fn after_fork_in_parent() {
    let _ = std::panic::catch_unwind(zktoken::fork::parent);
}

extern "C" fn after_fork_in_child() {
    let _ = std::panic::catch_unwind(zktoken::fork::child);
}

/// Makes fork() wait until no thread is inside SQLite (see `zktoken::fork`).
fn register_fork_handlers() {
    static REGISTERED: Once = Once::new();
    REGISTERED.call_once(|| {
        // SAFETY: the handlers are functions of this library; glibc drops a
        // library's fork handlers when the library is unloaded.
        let rc = unsafe {
            libc::pthread_atfork(
                Some(before_fork),
                Some(after_fork_in_parent),
                Some(after_fork_in_child),
            )
        };
        if rc != 0 {
            tracing::warn!(
                rc,
                "pthread_atfork failed; forking while the store is in use is unsafe"
            );
        }
    });
}

export!(C_Initialize(pInitArgs: CK_VOID_PTR) = unsafe initialize);

/// `C_Initialize` (§5.4). `pReserved` may carry the configuration: TOML
/// text (when it holds `=` or a newline) or the path of a TOML file. In a
/// forked child the parent's module is left alone and a new one is built.
///
/// # Safety
/// `pInitArgs` is NULL or points to a valid `CK_C_INITIALIZE_ARGS`.
unsafe fn initialize(pInitArgs: CK_VOID_PTR) -> zktoken::Result<()> {
    // SAFETY: by the contract above.
    let init_arg = unsafe { init_args(pInitArgs as *const CK_C_INITIALIZE_ARGS) }?;
    let _init = INIT_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    // A module inherited across fork() is replaced, never finalized:
    // its device connection and store belong to the parent.
    if module().is_ok() {
        return Err(Error::CryptokiAlreadyInitialized);
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid_is_root = unsafe { libc::geteuid() } == 0;
    let module = Module::initialize(init_arg.as_deref(), euid_is_root)?;
    register_fork_handlers();
    install(module);
    Ok(())
}

export!(C_Finalize(pReserved: CK_VOID_PTR) = finalize);

/// `C_Finalize` (§5.4). The module is emptied, then freed once no call
/// uses it (see `CURRENT`).
fn finalize(pReserved: CK_VOID_PTR) -> zktoken::Result<()> {
    if !pReserved.is_null() {
        return Err(Error::ArgumentsBad("pReserved must be NULL"));
    }
    let _init = INIT_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let m = module()?;
    uninstall();
    m.finalize();
    reclaim();
    Ok(())
}

export!(C_GetInfo(pInfo: CK_INFO_PTR) = unsafe get_info);

/// `C_GetInfo` (§5.4) of the 2.40 function list, the one exported by name:
/// `cryptokiVersion` 2.40, the version of the list the caller holds.
///
/// # Safety
/// `pInfo` is NULL or valid for writing a `CK_INFO`.
unsafe fn get_info(pInfo: CK_INFO_PTR) -> zktoken::Result<()> {
    // SAFETY: by the contract above.
    unsafe { info(pInfo, VERSION_2_40) }
}

/// `C_GetInfo` of the 3.0 function list: `cryptokiVersion` 3.0. Not
/// exported by name (the symbol `C_GetInfo` is the 2.40 list's).
///
/// # Safety
/// `pInfo` is NULL or valid for writing a `CK_INFO`.
pub(crate) unsafe extern "C" fn get_info_3_0(pInfo: CK_INFO_PTR) -> CK_RV {
    // SAFETY: the contract of `info` is this function's, which the caller keeps.
    crate::call("C_GetInfo", move || unsafe { info(pInfo, VERSION_3_0) })
}

/// Writes the module's information, reporting `version` as its Cryptoki
/// version.
///
/// # Safety
/// `pInfo` is NULL or valid for writing a `CK_INFO`.
unsafe fn info(pInfo: CK_INFO_PTR, version: CK_VERSION) -> zktoken::Result<()> {
    let m = module()?;
    // SAFETY: by the contract above.
    *unsafe { out_param(pInfo) }? = m.info(version);
    Ok(())
}
