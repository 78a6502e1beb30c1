//! The module state between `C_Initialize` and `C_Finalize`: the device
//! library, the token (loaded on first use), sessions and session objects.
//! Every method takes `&self`; each piece of state has its own lock, and no
//! lock is held across a device signature.
//!
//! The PKCS#11 functions are `impl Module` blocks in the files named like
//! the ABI crate's (`slot_token.rs`, `session.rs`, `object.rs`,
//! `sign_verify.rs`, `keygen.rs`, `random.rs`), which use this file and
//! are never used by it.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use cryptoki_sys::*;
use zkconf::{is_for_this_module, is_inline, Config, ConfigError};

use crate::attribute::Object;
use crate::curve::Curve;
use crate::device::{self, Device};
use crate::error::{Error, Result};
use crate::key::KeySlot;
use crate::lock::lock;
use crate::log;
use crate::mechanism::{Input, SignMechanism};
use crate::token::Token;

/// The one slot of the module.
pub(crate) const SLOT_ID: CK_SLOT_ID = 0;

/// Sessions open at once, per process.
pub(crate) const MAX_SESSIONS: usize = 1024;

/// An active `C_FindObjects` search: the matches, fixed at `C_FindObjectsInit`.
#[derive(Debug, Clone)]
pub(crate) struct Find {
    pub(crate) handles: Vec<CK_OBJECT_HANDLE>,
    pub(crate) next: usize,
}

/// An active sign operation.
#[derive(Debug, Clone)]
pub(crate) struct SignOp {
    pub(crate) slot: KeySlot,
    pub(crate) mechanism: SignMechanism,
    pub(crate) input: Input,
    /// `C_SignUpdate` was called: only `C_SignUpdate`/`C_SignFinal` may follow.
    pub(crate) multi_part: bool,
}

/// An active verify operation; the key's point is copied in so the
/// operation survives a concurrent key removal.
#[derive(Debug, Clone)]
pub(crate) struct VerifyOp {
    pub(crate) curve: Curve,
    pub(crate) raw_public: Vec<u8>,
    pub(crate) mechanism: SignMechanism,
    pub(crate) input: Input,
    pub(crate) multi_part: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub(crate) read_write: bool,
    pub(crate) find: Option<Find>,
    pub(crate) sign: Option<SignOp>,
    pub(crate) verify: Option<VerifyOp>,
}

#[derive(Debug, Default)]
pub(crate) struct Sessions {
    pub(crate) map: HashMap<CK_SESSION_HANDLE, Session>,
    last_handle: CK_SESSION_HANDLE,
    pub(crate) logged_in: bool,
}

impl Sessions {
    pub(crate) fn get(&self, handle: CK_SESSION_HANDLE) -> Result<&Session> {
        self.map.get(&handle).ok_or(Error::SessionHandleInvalid)
    }

    pub(crate) fn get_mut(&mut self, handle: CK_SESSION_HANDLE) -> Result<&mut Session> {
        self.map.get_mut(&handle).ok_or(Error::SessionHandleInvalid)
    }

    /// Opens a session: handles count up from 1 and are never reused.
    pub(crate) fn open(&mut self, read_write: bool) -> Result<CK_SESSION_HANDLE> {
        if self.map.len() >= MAX_SESSIONS {
            return Err(Error::SessionCount);
        }
        self.last_handle += 1;
        let handle = self.last_handle;
        self.map.insert(
            handle,
            Session {
                read_write,
                find: None,
                sign: None,
                verify: None,
            },
        );
        Ok(handle)
    }

    /// (all sessions, read-write sessions)
    pub(crate) fn counts(&self) -> (usize, usize) {
        (
            self.map.len(),
            self.map.values().filter(|s| s.read_write).count(),
        )
    }
}

/// Session objects: handle → (owning session, object).
pub(crate) type SessionObjects = BTreeMap<CK_OBJECT_HANDLE, (CK_SESSION_HANDLE, Object)>;

pub struct Module {
    pid: u32,
    finalized: AtomicBool,
    pub(crate) config: Config,
    library_path: PathBuf,
    device: Option<Arc<dyn Device>>,
    token: Mutex<Option<Arc<Token>>>,
    sessions: Mutex<Sessions>,
    session_objects: Mutex<SessionObjects>,
}

impl std::fmt::Debug for Module {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Module")
            .field("pid", &self.pid)
            .field("library", &self.library_path)
            .finish()
    }
}

impl Module {
    /// Sets the module up with the Zymkey library named by the configuration.
    /// A library that cannot be loaded is no error: the slot then shows no
    /// token, and the log says what was tried.
    pub fn new(config: Config) -> Module {
        let library_path = device::library_path(&config);
        let device: Option<Arc<dyn Device>> = match zymkey::Zymkey::load(&library_path) {
            Ok(z) => {
                tracing::debug!(library = %library_path.display(), "Zymkey library loaded");
                Some(Arc::new(z))
            }
            Err(e @ zymkey::Error::LibraryNotFound { .. }) => {
                // The error names the path and how to point elsewhere.
                tracing::warn!("{e}; the slot shows no token");
                None
            }
            Err(e) => {
                tracing::warn!(
                    "{e}; the slot shows no token (set ZKIOT_ZKLIB or `zklib` in the \
                     configuration file to use another library)"
                );
                None
            }
        };
        Module::with_device(config, library_path, device)
    }

    /// `C_Initialize`: the configuration from `init_arg` (`pReserved`), else
    /// the usual places (see [`Config::discover`]); the log set up from it;
    /// the module over the library it names. `euid_is_root`: the process
    /// runs as root, so the default store is system-wide.
    ///
    /// Configuration that cannot be read fails closed: a file that is
    /// missing or bad, and text meant for this module that does not parse
    /// (a typo must not drop a `pin`). Text of another host (NSS passes its
    /// own parameters in `pReserved`) is left to it.
    pub fn initialize(init_arg: Option<&str>, euid_is_root: bool) -> Result<Module> {
        let mut config = match Config::discover(init_arg) {
            Ok(c) => c,
            Err(e @ ConfigError::Parse { .. })
                if init_arg.is_some_and(|a| is_inline(a) && !is_for_this_module(a)) =>
            {
                let fallback = Config::discover(None);
                log::init(fallback.as_ref().unwrap_or(&Config::default()));
                tracing::warn!("pReserved ignored: {e}");
                fallback.map_err(|e| {
                    tracing::error!("{e}");
                    Error::GeneralError(e.to_string())
                })?
            }
            Err(e) => {
                log::init(&Config::default());
                tracing::error!("{e}");
                return Err(match init_arg {
                    Some(a) if is_inline(a) => {
                        Error::ArgumentsBad("pReserved holds configuration that does not parse")
                    }
                    Some(_) => Error::ArgumentsBad(
                        "pReserved names a configuration file that cannot be read",
                    ),
                    None => Error::GeneralError(e.to_string()),
                });
            }
        };
        config.system_wide = euid_is_root;
        log::init(&config);
        if let Some(source) = &config.source {
            tracing::debug!("configuration from {source}");
        }
        Ok(Module::new(config))
    }

    /// Sets the module up over a given device (tests use an in-memory one).
    pub fn with_device(
        config: Config,
        library_path: PathBuf,
        device: Option<Arc<dyn Device>>,
    ) -> Module {
        Module {
            pid: std::process::id(),
            finalized: AtomicBool::new(false),
            config,
            library_path,
            device,
            token: Mutex::new(None),
            sessions: Mutex::new(Sessions::default()),
            session_objects: Mutex::new(BTreeMap::new()),
        }
    }

    /// Finalized in the process that made it: nothing of it is in use, and
    /// it may be dropped (one inherited across fork() belongs to the parent).
    pub fn is_finalized_here(&self) -> bool {
        self.finalized.load(Ordering::Acquire) && self.pid == std::process::id()
    }

    /// True between `Module::new` and `finalize`, in the process that made it.
    pub fn is_active(&self) -> bool {
        !self.finalized.load(Ordering::Acquire) && self.pid == std::process::id()
    }

    /// `C_Finalize`: ends every session, closes the store and the device
    /// connection. The Zymkey library itself stays loaded for the rest of
    /// the process (see `zymkey::Library::shared`): hosts finalize from
    /// their exit handlers, and code still referenced then must not be
    /// unmapped.
    pub fn finalize(&self) {
        self.finalized.store(true, Ordering::Release);
        {
            let mut sessions = self.lock_sessions();
            sessions.map.clear();
            sessions.logged_in = false;
        }
        self.lock_session_objects().clear();
        lock(&self.token).take();
        if let Some(d) = &self.device {
            d.close();
        }
    }

    /// The token, loading it from the device on first use. A failed load
    /// is retried by the next call.
    pub(crate) fn token(&self) -> Result<Arc<Token>> {
        if self.finalized.load(Ordering::Acquire) {
            return Err(Error::CryptokiNotInitialized);
        }
        let device = self.device.as_ref().ok_or(Error::TokenNotPresent)?;
        let mut guard = lock(&self.token);
        if let Some(t) = guard.as_ref() {
            return Ok(t.clone());
        }
        let token = Arc::new(Token::load(device.clone(), &self.config).map_err(|e| {
            tracing::error!("cannot read the Zymkey: {e}");
            e
        })?);
        *guard = Some(token.clone());
        Ok(token)
    }

    pub(crate) fn lock_sessions(&self) -> MutexGuard<'_, Sessions> {
        lock(&self.sessions)
    }

    pub(crate) fn lock_session_objects(&self) -> MutexGuard<'_, SessionObjects> {
        lock(&self.session_objects)
    }

    /// Fails with `CKR_SLOT_ID_INVALID` unless `slot` is the token's slot.
    pub fn check_slot(&self, slot: CK_SLOT_ID) -> Result<()> {
        if slot == SLOT_ID {
            Ok(())
        } else {
            Err(Error::SlotIdInvalid)
        }
    }

    /// Fails with `CKR_SESSION_HANDLE_INVALID` unless `session` is open.
    pub fn check_session(&self, session: CK_SESSION_HANDLE) -> Result<()> {
        self.lock_sessions().get(session).map(|_| ())
    }

    /// Whether private objects are accessible now.
    pub(crate) fn private_access(&self, sessions: &Sessions) -> bool {
        !self.config.login_required() || sessions.logged_in
    }
}
