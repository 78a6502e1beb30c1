//! Raw access to the module's `CK_FUNCTION_LIST`, for what the safe `cryptoki` API hides:
//! NULL pointers, invalid handles, calls in the wrong state, exact buffer lengths, and
//! `C_Initialize(NULL)` in a forked child.

use std::path::Path;
use std::ptr;

use cryptoki_sys::*;

/// Calls a function of the list: `call!(raw, C_Sign(session, data, len, out, &mut out_len))`.
///
/// The arguments are evaluated inside the `unsafe` block: they are raw pointers and lengths
/// made for the call, which is the point of this caller.
#[macro_export]
macro_rules! call {
    ($raw:expr, $function:ident($($arg:expr),* $(,)?)) => {{
        let function = $raw.f.$function.expect(concat!(stringify!($function), " in the function list"));
        // SAFETY: the arguments follow the PKCS#11 prototype; this is the module's C ABI,
        // which must answer any of them (NULL or not) without crashing.
        #[allow(unused_unsafe, clippy::macro_metavars_in_unsafe)]
        unsafe { function($($arg),*) }
    }};
}
pub use crate::call;

/// Fails with the names of both return values when `got` is not `expected`.
#[macro_export]
macro_rules! assert_rv {
    ($got:expr, $expected:expr $(, $($context:tt)+)?) => {{
        let got: cryptoki_sys::CK_RV = $got;
        let expected: cryptoki_sys::CK_RV = $expected;
        assert!(
            got == expected,
            "{}: got {}, expected {}",
            { let _context = String::from(stringify!($got)); $( let _context = format!($($context)+); )? _context },
            $crate::raw::rv_name(got),
            $crate::raw::rv_name(expected),
        );
    }};
}
pub use crate::assert_rv;

/// `CKR_BUFFER_TOO_SMALL (0x150)`-style name of a return value.
pub fn rv_name(rv: CK_RV) -> String {
    let name = match cryptoki::error::Rv::from(rv) {
        cryptoki::error::Rv::Ok => "CKR_OK".to_owned(),
        cryptoki::error::Rv::Error(err) => format!("{err:?}"),
    };
    format!("{name} ({rv:#x})")
}

pub struct Raw {
    pub f: &'static CK_FUNCTION_LIST,
}

impl Raw {
    /// The function list of a module linked into this program (the fuzz targets link it, so
    /// that its code is instrumented).
    pub fn from_list(f: &'static CK_FUNCTION_LIST) -> Raw {
        Raw { f }
    }

    /// Loads the module (or finds it already loaded: the same library, the same state) and
    /// takes its function list. The library stays loaded for the rest of the process.
    pub fn load(path: &Path) -> Raw {
        // SAFETY: loading a PKCS#11 module runs no code but its initialisers.
        let library = unsafe { Pkcs11::new(path) }
            .unwrap_or_else(|err| panic!("dlopen {}: {err}", path.display()));
        let library: &'static Pkcs11 = Box::leak(Box::new(library));
        let mut list: *mut CK_FUNCTION_LIST = ptr::null_mut();
        // SAFETY: `list` is a valid out-pointer.
        let rv = unsafe { library.C_GetFunctionList(&mut list) };
        assert_rv!(rv, CKR_OK, "C_GetFunctionList");
        assert!(!list.is_null(), "C_GetFunctionList gave a NULL list");
        // SAFETY: the module keeps its function list alive while it is loaded, which is forever.
        let f = unsafe { &*list };
        Raw { f }
    }

    pub fn initialize_null(&self) -> CK_RV {
        call!(self, C_Initialize(ptr::null_mut()))
    }

    /// `C_Initialize` as libp11 calls it: `CKF_OS_LOCKING_OK`, no mutex functions.
    pub fn initialize_os_locking(&self) -> CK_RV {
        let mut args = CK_C_INITIALIZE_ARGS {
            CreateMutex: None,
            DestroyMutex: None,
            LockMutex: None,
            UnlockMutex: None,
            flags: CKF_OS_LOCKING_OK,
            pReserved: ptr::null_mut(),
        };
        call!(self, C_Initialize(&mut args as *mut _ as *mut _))
    }

    pub fn finalize(&self) -> CK_RV {
        call!(self, C_Finalize(ptr::null_mut()))
    }

    pub fn slots(&self, token_present: bool) -> Result<Vec<CK_SLOT_ID>, CK_RV> {
        let present = CK_BBOOL::from(token_present);
        let mut count: CK_ULONG = 0;
        let rv = call!(self, C_GetSlotList(present, ptr::null_mut(), &mut count));
        if rv != CKR_OK {
            return Err(rv);
        }
        let mut slots = vec![0; count as usize];
        let rv = call!(self, C_GetSlotList(present, slots.as_mut_ptr(), &mut count));
        if rv != CKR_OK {
            return Err(rv);
        }
        slots.truncate(count as usize);
        Ok(slots)
    }

    /// The one slot with a token.
    pub fn token_slot(&self) -> CK_SLOT_ID {
        let slots = self.slots(true).unwrap_or_else(|rv| {
            panic!("C_GetSlotList(TRUE): {}", rv_name(rv));
        });
        assert_eq!(slots.len(), 1, "exactly one slot with a token");
        slots[0]
    }

    pub fn open_session(
        &self,
        slot: CK_SLOT_ID,
        flags: CK_FLAGS,
    ) -> Result<CK_SESSION_HANDLE, CK_RV> {
        let mut session: CK_SESSION_HANDLE = CK_INVALID_HANDLE;
        let rv = call!(
            self,
            C_OpenSession(slot, flags, ptr::null_mut(), None, &mut session)
        );
        if rv == CKR_OK {
            Ok(session)
        } else {
            Err(rv)
        }
    }

    /// Opens a serial read-only session on the token, which must succeed.
    pub fn session(&self) -> CK_SESSION_HANDLE {
        let slot = self.token_slot();
        self.open_session(slot, CKF_SERIAL_SESSION)
            .unwrap_or_else(|rv| panic!("C_OpenSession: {}", rv_name(rv)))
    }

    pub fn find(
        &self,
        session: CK_SESSION_HANDLE,
        template: &mut [CK_ATTRIBUTE],
    ) -> Result<Vec<CK_OBJECT_HANDLE>, CK_RV> {
        let rv = call!(
            self,
            C_FindObjectsInit(session, template.as_mut_ptr(), template.len() as CK_ULONG)
        );
        if rv != CKR_OK {
            return Err(rv);
        }
        let mut found = Vec::new();
        loop {
            let mut batch = [CK_INVALID_HANDLE; 4];
            let mut count: CK_ULONG = 0;
            let rv = call!(
                self,
                C_FindObjects(
                    session,
                    batch.as_mut_ptr(),
                    batch.len() as CK_ULONG,
                    &mut count
                )
            );
            if rv != CKR_OK {
                call!(self, C_FindObjectsFinal(session));
                return Err(rv);
            }
            if count == 0 {
                break;
            }
            found.extend_from_slice(&batch[..count as usize]);
        }
        let rv = call!(self, C_FindObjectsFinal(session));
        if rv != CKR_OK {
            return Err(rv);
        }
        Ok(found)
    }

    /// The key object of `class` for device slot `slot`.
    pub fn key(
        &self,
        session: CK_SESSION_HANDLE,
        class: CK_OBJECT_CLASS,
        slot: u16,
    ) -> CK_OBJECT_HANDLE {
        let mut class = class;
        let mut id = slot.to_be_bytes();
        let mut template = [
            ulong_attribute(CKA_CLASS, &mut class),
            bytes_attribute(CKA_ID, &mut id),
        ];
        let found = self
            .find(session, &mut template)
            .unwrap_or_else(|rv| panic!("find key of slot {slot}: {}", rv_name(rv)));
        assert_eq!(
            found.len(),
            1,
            "one object of class {class} for slot {slot}"
        );
        found[0]
    }

    pub fn private_key(&self, session: CK_SESSION_HANDLE, slot: u16) -> CK_OBJECT_HANDLE {
        self.key(session, CKO_PRIVATE_KEY, slot)
    }

    /// Reads one attribute: length query, then value.
    pub fn attribute(
        &self,
        session: CK_SESSION_HANDLE,
        object: CK_OBJECT_HANDLE,
        kind: CK_ATTRIBUTE_TYPE,
    ) -> Result<Vec<u8>, CK_RV> {
        let mut template = [CK_ATTRIBUTE {
            type_: kind,
            pValue: ptr::null_mut(),
            ulValueLen: 0,
        }];
        let rv = call!(
            self,
            C_GetAttributeValue(session, object, template.as_mut_ptr(), 1)
        );
        if rv != CKR_OK {
            return Err(rv);
        }
        let mut value = vec![0u8; template[0].ulValueLen as usize];
        template[0].pValue = value.as_mut_ptr().cast();
        let rv = call!(
            self,
            C_GetAttributeValue(session, object, template.as_mut_ptr(), 1)
        );
        if rv != CKR_OK {
            return Err(rv);
        }
        value.truncate(template[0].ulValueLen as usize);
        Ok(value)
    }

    pub fn sign_init(
        &self,
        session: CK_SESSION_HANDLE,
        mechanism: CK_MECHANISM_TYPE,
        key: CK_OBJECT_HANDLE,
    ) -> CK_RV {
        let mut mechanism = CK_MECHANISM {
            mechanism,
            pParameter: ptr::null_mut(),
            ulParameterLen: 0,
        };
        call!(self, C_SignInit(session, &mut mechanism, key))
    }

    /// `C_Sign`; `out = None` is the length query (NULL buffer).
    pub fn sign(
        &self,
        session: CK_SESSION_HANDLE,
        data: &[u8],
        out: Option<&mut [u8]>,
        out_len: &mut CK_ULONG,
    ) -> CK_RV {
        let out = out.map_or(ptr::null_mut(), |out| out.as_mut_ptr());
        call!(
            self,
            C_Sign(
                session,
                data.as_ptr() as *mut _,
                data.len() as CK_ULONG,
                out,
                out_len
            )
        )
    }

    /// Signs `data` with `mechanism` in one `C_Sign` into a 64-byte buffer, as libp11 does.
    pub fn sign_once(
        &self,
        session: CK_SESSION_HANDLE,
        mechanism: CK_MECHANISM_TYPE,
        key: CK_OBJECT_HANDLE,
        data: &[u8],
    ) -> Result<Vec<u8>, CK_RV> {
        let rv = self.sign_init(session, mechanism, key);
        if rv != CKR_OK {
            return Err(rv);
        }
        let mut signature = vec![0u8; 64];
        let mut len = signature.len() as CK_ULONG;
        let rv = self.sign(session, data, Some(&mut signature), &mut len);
        if rv != CKR_OK {
            return Err(rv);
        }
        signature.truncate(len as usize);
        Ok(signature)
    }
}

pub fn ulong_attribute(kind: CK_ATTRIBUTE_TYPE, value: &mut CK_ULONG) -> CK_ATTRIBUTE {
    CK_ATTRIBUTE {
        type_: kind,
        pValue: (value as *mut CK_ULONG).cast(),
        ulValueLen: std::mem::size_of::<CK_ULONG>() as CK_ULONG,
    }
}

pub fn bytes_attribute(kind: CK_ATTRIBUTE_TYPE, value: &mut [u8]) -> CK_ATTRIBUTE {
    CK_ATTRIBUTE {
        type_: kind,
        pValue: value.as_mut_ptr().cast(),
        ulValueLen: value.len() as CK_ULONG,
    }
}

/// Every entry of a PKCS#11 2.40 function list, by name, in order.
pub fn entries(f: &CK_FUNCTION_LIST) -> Vec<(&'static str, bool)> {
    macro_rules! present {
        ($($name:ident),* $(,)?) => { vec![$((stringify!($name), f.$name.is_some())),*] };
    }
    present!(
        C_Initialize,
        C_Finalize,
        C_GetInfo,
        C_GetFunctionList,
        C_GetSlotList,
        C_GetSlotInfo,
        C_GetTokenInfo,
        C_GetMechanismList,
        C_GetMechanismInfo,
        C_InitToken,
        C_InitPIN,
        C_SetPIN,
        C_OpenSession,
        C_CloseSession,
        C_CloseAllSessions,
        C_GetSessionInfo,
        C_GetOperationState,
        C_SetOperationState,
        C_Login,
        C_Logout,
        C_CreateObject,
        C_CopyObject,
        C_DestroyObject,
        C_GetObjectSize,
        C_GetAttributeValue,
        C_SetAttributeValue,
        C_FindObjectsInit,
        C_FindObjects,
        C_FindObjectsFinal,
        C_EncryptInit,
        C_Encrypt,
        C_EncryptUpdate,
        C_EncryptFinal,
        C_DecryptInit,
        C_Decrypt,
        C_DecryptUpdate,
        C_DecryptFinal,
        C_DigestInit,
        C_Digest,
        C_DigestUpdate,
        C_DigestKey,
        C_DigestFinal,
        C_SignInit,
        C_Sign,
        C_SignUpdate,
        C_SignFinal,
        C_SignRecoverInit,
        C_SignRecover,
        C_VerifyInit,
        C_Verify,
        C_VerifyUpdate,
        C_VerifyFinal,
        C_VerifyRecoverInit,
        C_VerifyRecover,
        C_DigestEncryptUpdate,
        C_DecryptDigestUpdate,
        C_SignEncryptUpdate,
        C_DecryptVerifyUpdate,
        C_GenerateKey,
        C_GenerateKeyPair,
        C_WrapKey,
        C_UnwrapKey,
        C_DeriveKey,
        C_SeedRandom,
        C_GenerateRandom,
        C_GetFunctionStatus,
        C_CancelFunction,
        C_WaitForSlotEvent,
    )
}

/// The handles a sweep passes.
#[derive(Clone, Copy, Debug)]
pub struct Handles {
    pub slot: CK_SLOT_ID,
    pub session: CK_SESSION_HANDLE,
    pub object: CK_OBJECT_HANDLE,
}

/// How a sweep fills the pointer arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pointers {
    /// Every pointer argument is NULL (lengths non-zero where a length goes with it). Functions
    /// that take no pointer at all are left out, since with valid handles they would act.
    Null,
    /// Every pointer argument points to well-formed, large enough storage: a call can only fail
    /// on its handles or on the module's state.
    Valid,
}

/// Calls every function of the list except `C_Initialize` and `C_Finalize` once, with the
/// given handles and pointers, and returns each return value by function name.
pub fn sweep(raw: &Raw, handles: Handles, pointers: Pointers) -> Vec<(&'static str, CK_RV)> {
    let null = pointers == Pointers::Null;
    let Handles {
        slot,
        session,
        object,
    } = handles;

    // Storage behind the valid pointers.
    let mut buffer = vec![0u8; 4096];
    let mut buffer_len: CK_ULONG = 4096;
    let mut info = CK_INFO::default();
    let mut slot_info = CK_SLOT_INFO::default();
    let mut token_info = CK_TOKEN_INFO::default();
    let mut mechanism_info = CK_MECHANISM_INFO::default();
    let mut session_info = CK_SESSION_INFO::default();
    let mut list: *mut CK_FUNCTION_LIST = ptr::null_mut();
    let mut slot_list = [0 as CK_SLOT_ID; 16];
    let mut slot_count: CK_ULONG = 16;
    let mut mechanisms = [0 as CK_MECHANISM_TYPE; 64];
    let mut mechanism_count: CK_ULONG = 64;
    let mut handle_out: CK_OBJECT_HANDLE = CK_INVALID_HANDLE;
    let mut handle_out2: CK_OBJECT_HANDLE = CK_INVALID_HANDLE;
    let mut handle_list = [CK_INVALID_HANDLE; 8];
    let mut count_out: CK_ULONG = 0;
    let mut session_out: CK_SESSION_HANDLE = CK_INVALID_HANDLE;
    let mut slot_out: CK_SLOT_ID = 0;
    let mut pin = *b"00000000";
    let mut label = [b' '; 32];
    let mut data = [0x5Au8; 32];
    let mut signature = [0u8; 64];
    let mut class: CK_OBJECT_CLASS = CKO_DATA;
    let mut template = [ulong_attribute(CKA_CLASS, &mut class)];
    let mut template2 = template;
    let mut mechanism = CK_MECHANISM {
        mechanism: CKM_ECDSA,
        pParameter: ptr::null_mut(),
        ulParameterLen: 0,
    };

    macro_rules! p {
        ($valid:expr) => {
            if null {
                ptr::null_mut()
            } else {
                $valid
            }
        };
    }
    let buf = buffer.as_mut_ptr();
    let buf_len: *mut CK_ULONG = &mut buffer_len;
    let dat = data.as_mut_ptr();
    let sig = signature.as_mut_ptr();
    let pin_ptr = pin.as_mut_ptr();
    let mech: *mut CK_MECHANISM = &mut mechanism;
    let tpl = template.as_mut_ptr();
    let tpl2 = template2.as_mut_ptr();

    let mut results: Vec<(&'static str, CK_RV)> = Vec::new();
    macro_rules! record {
        ($name:ident($($arg:expr),* $(,)?)) => {
            results.push((stringify!($name), call!(raw, $name($($arg),*))));
        };
    }
    let pointerless = !null;

    record!(C_GetInfo(p!(&mut info)));
    record!(C_GetFunctionList(p!(&mut list)));
    record!(C_GetSlotList(
        CK_FALSE,
        p!(slot_list.as_mut_ptr()),
        p!(&mut slot_count)
    ));
    record!(C_GetSlotInfo(slot, p!(&mut slot_info)));
    record!(C_GetTokenInfo(slot, p!(&mut token_info)));
    record!(C_GetMechanismList(
        slot,
        p!(mechanisms.as_mut_ptr()),
        p!(&mut mechanism_count)
    ));
    record!(C_GetMechanismInfo(slot, CKM_ECDSA, p!(&mut mechanism_info)));
    record!(C_InitToken(slot, p!(pin_ptr), 8, p!(label.as_mut_ptr())));
    record!(C_InitPIN(session, p!(pin_ptr), 8));
    record!(C_SetPIN(session, p!(pin_ptr), 8, p!(pin_ptr), 8));
    record!(C_OpenSession(
        slot,
        CKF_SERIAL_SESSION,
        ptr::null_mut(),
        None,
        p!(&mut session_out)
    ));
    if pointerless {
        record!(C_CloseSession(session));
        record!(C_CloseAllSessions(slot));
    }
    record!(C_GetSessionInfo(session, p!(&mut session_info)));
    record!(C_GetOperationState(session, p!(buf), p!(buf_len)));
    record!(C_SetOperationState(session, p!(buf), 16, 0, 0));
    record!(C_Login(session, CKU_USER, p!(pin_ptr), 8));
    if pointerless {
        record!(C_Logout(session));
    }
    record!(C_CreateObject(session, p!(tpl), 1, p!(&mut handle_out)));
    record!(C_CopyObject(
        session,
        object,
        p!(tpl2),
        1,
        p!(&mut handle_out2)
    ));
    if pointerless {
        record!(C_DestroyObject(session, object));
    }
    record!(C_GetObjectSize(session, object, p!(&mut count_out)));
    record!(C_GetAttributeValue(session, object, p!(tpl), 1));
    record!(C_SetAttributeValue(session, object, p!(tpl2), 1));
    record!(C_FindObjectsInit(session, p!(tpl), 1));
    record!(C_FindObjects(
        session,
        p!(handle_list.as_mut_ptr()),
        8,
        p!(&mut count_out)
    ));
    if pointerless {
        record!(C_FindObjectsFinal(session));
    }
    record!(C_EncryptInit(session, p!(mech), object));
    record!(C_Encrypt(session, p!(dat), 32, p!(buf), p!(buf_len)));
    record!(C_EncryptUpdate(session, p!(dat), 32, p!(buf), p!(buf_len)));
    record!(C_EncryptFinal(session, p!(buf), p!(buf_len)));
    record!(C_DecryptInit(session, p!(mech), object));
    record!(C_Decrypt(session, p!(dat), 32, p!(buf), p!(buf_len)));
    record!(C_DecryptUpdate(session, p!(dat), 32, p!(buf), p!(buf_len)));
    record!(C_DecryptFinal(session, p!(buf), p!(buf_len)));
    record!(C_DigestInit(session, p!(mech)));
    record!(C_Digest(session, p!(dat), 32, p!(buf), p!(buf_len)));
    record!(C_DigestUpdate(session, p!(dat), 32));
    if pointerless {
        record!(C_DigestKey(session, object));
    }
    record!(C_DigestFinal(session, p!(buf), p!(buf_len)));
    record!(C_SignInit(session, p!(mech), object));
    record!(C_Sign(session, p!(dat), 32, p!(sig), p!(buf_len)));
    record!(C_SignUpdate(session, p!(dat), 32));
    record!(C_SignFinal(session, p!(sig), p!(buf_len)));
    record!(C_SignRecoverInit(session, p!(mech), object));
    record!(C_SignRecover(session, p!(dat), 32, p!(buf), p!(buf_len)));
    record!(C_VerifyInit(session, p!(mech), object));
    record!(C_Verify(session, p!(dat), 32, p!(sig), 64));
    record!(C_VerifyUpdate(session, p!(dat), 32));
    record!(C_VerifyFinal(session, p!(sig), 64));
    record!(C_VerifyRecoverInit(session, p!(mech), object));
    record!(C_VerifyRecover(session, p!(sig), 64, p!(buf), p!(buf_len)));
    record!(C_DigestEncryptUpdate(
        session,
        p!(dat),
        32,
        p!(buf),
        p!(buf_len)
    ));
    record!(C_DecryptDigestUpdate(
        session,
        p!(dat),
        32,
        p!(buf),
        p!(buf_len)
    ));
    record!(C_SignEncryptUpdate(
        session,
        p!(dat),
        32,
        p!(buf),
        p!(buf_len)
    ));
    record!(C_DecryptVerifyUpdate(
        session,
        p!(dat),
        32,
        p!(buf),
        p!(buf_len)
    ));
    record!(C_GenerateKey(
        session,
        p!(mech),
        p!(tpl),
        1,
        p!(&mut handle_out)
    ));
    record!(C_GenerateKeyPair(
        session,
        p!(mech),
        p!(tpl),
        1,
        p!(tpl2),
        1,
        p!(&mut handle_out),
        p!(&mut handle_out2)
    ));
    record!(C_WrapKey(
        session,
        p!(mech),
        object,
        object,
        p!(buf),
        p!(buf_len)
    ));
    record!(C_UnwrapKey(
        session,
        p!(mech),
        object,
        p!(dat),
        32,
        p!(tpl),
        1,
        p!(&mut handle_out)
    ));
    record!(C_DeriveKey(
        session,
        p!(mech),
        object,
        p!(tpl),
        1,
        p!(&mut handle_out)
    ));
    record!(C_SeedRandom(session, p!(dat), 32));
    record!(C_GenerateRandom(session, p!(buf), 32));
    if pointerless {
        record!(C_GetFunctionStatus(session));
        record!(C_CancelFunction(session));
    }
    record!(C_WaitForSlotEvent(
        CKF_DONT_BLOCK,
        p!(&mut slot_out),
        ptr::null_mut()
    ));
    // 68 functions less C_Initialize and C_Finalize; less the 8 without pointers for NULLs.
    assert_eq!(
        results.len(),
        if null { 58 } else { 66 },
        "the sweep called every function"
    );
    results
}
