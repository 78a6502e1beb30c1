//! The calls an input decodes to ([`Op`], with `arbitrary`), and how their
//! arguments become the C values passed to the module. The order and shape of
//! these types are the input format: changing them makes the kept corpora
//! mean other calls.

use std::ffi::CString;
use std::path::Path;
use std::ptr::null_mut;
use std::sync::atomic::{AtomicBool, Ordering};

use arbitrary::Arbitrary;
use cryptoki_sys::*;
use openssl::hash::MessageDigest;

/// Attributes a template may hold before it is cut off.
pub const MAX_TEMPLATE: usize = 12;

/// An index into what earlier calls returned, or any number.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Handle {
    Known(u8),
    Raw(u64),
    Zero,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Slot {
    Ours,
    Raw(u64),
}

impl Slot {
    pub fn id(self) -> CK_SLOT_ID {
        match self {
            Slot::Ours => 0,
            Slot::Raw(n) => n,
        }
    }
}

/// An output buffer: NULL (a length query) or exactly `n` bytes.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Out {
    Null,
    Bytes(u8),
    Exact,
}

impl Out {
    pub fn buffer(self, exact: usize) -> Option<Vec<u8>> {
        match self {
            Out::Null => None,
            Out::Bytes(n) => Some(vec![0xA5; n as usize]),
            Out::Exact => Some(vec![0xA5; exact]),
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Mech {
    Ecdsa,
    EcdsaSha1,
    EcdsaSha224,
    EcdsaSha256,
    EcdsaSha384,
    EcdsaSha512,
    EcKeyPairGen,
    Raw(u64),
}

impl Mech {
    pub fn ck(self) -> CK_MECHANISM_TYPE {
        match self {
            Mech::Ecdsa => CKM_ECDSA,
            Mech::EcdsaSha1 => CKM_ECDSA_SHA1,
            Mech::EcdsaSha224 => CKM_ECDSA_SHA224,
            Mech::EcdsaSha256 => CKM_ECDSA_SHA256,
            Mech::EcdsaSha384 => CKM_ECDSA_SHA384,
            Mech::EcdsaSha512 => CKM_ECDSA_SHA512,
            Mech::EcKeyPairGen => CKM_EC_KEY_PAIR_GEN,
            Mech::Raw(n) => n,
        }
    }

    pub fn digest(self) -> Option<Option<MessageDigest>> {
        match self {
            Mech::Ecdsa => Some(None),
            Mech::EcdsaSha1 => Some(Some(MessageDigest::sha1())),
            Mech::EcdsaSha224 => Some(Some(MessageDigest::sha224())),
            Mech::EcdsaSha256 => Some(Some(MessageDigest::sha256())),
            Mech::EcdsaSha384 => Some(Some(MessageDigest::sha384())),
            Mech::EcdsaSha512 => Some(Some(MessageDigest::sha512())),
            _ => None,
        }
    }
}

#[derive(Arbitrary, Debug, Clone)]
pub struct Mechanism {
    pub mech: Mech,
    parameter: Option<Vec<u8>>,
    pub null: bool,
}

const ATTRIBUTE_TYPES: &[CK_ATTRIBUTE_TYPE] = &[
    CKA_CLASS,
    CKA_TOKEN,
    CKA_PRIVATE,
    CKA_LABEL,
    CKA_APPLICATION,
    CKA_VALUE,
    CKA_OBJECT_ID,
    CKA_CERTIFICATE_TYPE,
    CKA_ISSUER,
    CKA_SERIAL_NUMBER,
    CKA_TRUSTED,
    CKA_CERTIFICATE_CATEGORY,
    CKA_CHECK_VALUE,
    CKA_KEY_TYPE,
    CKA_SUBJECT,
    CKA_ID,
    CKA_SENSITIVE,
    CKA_ENCRYPT,
    CKA_DECRYPT,
    CKA_WRAP,
    CKA_UNWRAP,
    CKA_SIGN,
    CKA_SIGN_RECOVER,
    CKA_VERIFY,
    CKA_VERIFY_RECOVER,
    CKA_DERIVE,
    CKA_START_DATE,
    CKA_END_DATE,
    CKA_MODULUS,
    CKA_MODULUS_BITS,
    CKA_PUBLIC_EXPONENT,
    CKA_PRIVATE_EXPONENT,
    CKA_PRIME_1,
    CKA_VALUE_LEN,
    CKA_EXTRACTABLE,
    CKA_LOCAL,
    CKA_NEVER_EXTRACTABLE,
    CKA_ALWAYS_SENSITIVE,
    CKA_KEY_GEN_MECHANISM,
    CKA_MODIFIABLE,
    CKA_COPYABLE,
    CKA_DESTROYABLE,
    CKA_EC_PARAMS,
    CKA_EC_POINT,
    CKA_ALWAYS_AUTHENTICATE,
    CKA_WRAP_WITH_TRUSTED,
    CKA_ALLOWED_MECHANISMS,
    CKA_PUBLIC_KEY_INFO,
    CKA_URL,
    CKA_HASH_OF_SUBJECT_PUBLIC_KEY,
    CKA_HASH_OF_ISSUER_PUBLIC_KEY,
    CKA_NAME_HASH_ALGORITHM,
    CKA_VENDOR_DEFINED,
];

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum AttrType {
    Known(u8),
    Raw(u64),
}

impl AttrType {
    pub fn ck(self) -> CK_ATTRIBUTE_TYPE {
        match self {
            AttrType::Known(i) => ATTRIBUTE_TYPES[i as usize % ATTRIBUTE_TYPES.len()],
            AttrType::Raw(n) => n,
        }
    }
}

#[derive(Arbitrary, Debug, Clone)]
pub enum Value {
    Bool(u8),
    Ulong(u64),
    Class(u8),
    KeyType(u8),
    EcParams(u8),
    Certificate { garbage: Vec<u8> },
    Text(String),
    Bytes(Vec<u8>),
    Empty,
}

const CLASSES: &[CK_OBJECT_CLASS] = &[
    CKO_DATA,
    CKO_CERTIFICATE,
    CKO_PUBLIC_KEY,
    CKO_PRIVATE_KEY,
    CKO_SECRET_KEY,
    CKO_HW_FEATURE,
    CKO_DOMAIN_PARAMETERS,
    CKO_MECHANISM,
];
const KEY_TYPES: &[CK_KEY_TYPE] = &[CKK_EC, CKK_RSA, CKK_EC_EDWARDS, CKK_EC_MONTGOMERY, CKK_AES];
const EC_PARAMS: &[&[u8]] = &[
    // prime256v1, secp256k1, secp384r1, Ed25519, X25519, and the printable form.
    &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07],
    &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a],
    &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22],
    &[0x06, 0x03, 0x2b, 0x65, 0x70],
    &[0x06, 0x03, 0x2b, 0x65, 0x6e],
    &[
        0x13, 0x0a, b'p', b'r', b'i', b'm', b'e', b'2', b'5', b'6', b'v', b'1',
    ],
];

impl Value {
    pub fn bytes(&self, certificate: &[u8]) -> Vec<u8> {
        match self {
            Value::Bool(b) => vec![*b],
            Value::Ulong(n) => n.to_ne_bytes().to_vec(),
            Value::Class(i) => CLASSES[*i as usize % CLASSES.len()].to_ne_bytes().to_vec(),
            Value::KeyType(i) => KEY_TYPES[*i as usize % KEY_TYPES.len()]
                .to_ne_bytes()
                .to_vec(),
            Value::EcParams(i) => EC_PARAMS[*i as usize % EC_PARAMS.len()].to_vec(),
            Value::Certificate { garbage } => [certificate, garbage].concat(),
            Value::Text(s) => s.as_bytes().to_vec(),
            Value::Bytes(b) => b.clone(),
            Value::Empty => Vec::new(),
        }
    }
}

#[derive(Arbitrary, Debug, Clone)]
pub struct Attr {
    kind: AttrType,
    value: Value,
}

/// A template's C attributes, with the values they point into (keep both
/// alive for the call); at most [`MAX_TEMPLATE`] of them.
pub fn template(attrs: &[Attr], certificate: &[u8]) -> (Vec<Vec<u8>>, Vec<CK_ATTRIBUTE>) {
    let attrs = &attrs[..attrs.len().min(MAX_TEMPLATE)];
    let values: Vec<Vec<u8>> = attrs.iter().map(|a| a.value.bytes(certificate)).collect();
    let template = attrs
        .iter()
        .zip(&values)
        .map(|(a, v)| CK_ATTRIBUTE {
            type_: a.kind.ck(),
            pValue: if v.is_empty() {
                null_mut()
            } else {
                v.as_ptr() as *mut _
            },
            ulValueLen: v.len() as CK_ULONG,
        })
        .collect();
    (values, template)
}

/// The configuration text passed in `C_Initialize`'s `pReserved`: always
/// with this run's store, so nothing is written outside the work directory.
#[derive(Arbitrary, Debug, Clone)]
pub struct InlineConfig {
    pin: Option<String>,
    token_label: Option<String>,
    label0: Option<String>,
    expose_non_ecdsa_keys: bool,
}

#[derive(Arbitrary, Debug, Clone)]
pub enum InitArgs {
    Null,
    Args {
        flags: u8,
        mutexes: bool,
        config: Option<InlineConfig>,
    },
}

#[derive(Arbitrary, Debug, Clone)]
pub enum Op {
    Initialize(InitArgs),
    Finalize,
    GetInfo,
    GetSlotList {
        present: bool,
        out: Out,
    },
    GetSlotInfo(Slot),
    GetTokenInfo(Slot),
    GetMechanismList {
        slot: Slot,
        out: Out,
    },
    GetMechanismInfo {
        slot: Slot,
        mech: Mech,
    },
    InitToken {
        slot: Slot,
        pin: Vec<u8>,
    },
    InitPin {
        session: Handle,
        pin: Vec<u8>,
    },
    SetPin {
        session: Handle,
        old: Vec<u8>,
        new: Vec<u8>,
    },
    OpenSession {
        slot: Slot,
        flags: u8,
    },
    CloseSession(Handle),
    CloseAllSessions(Slot),
    GetSessionInfo(Handle),
    Login {
        session: Handle,
        user: u8,
        pin: Option<Vec<u8>>,
    },
    Logout(Handle),
    CreateObject {
        session: Handle,
        template: Vec<Attr>,
    },
    CopyObject {
        session: Handle,
        object: Handle,
    },
    DestroyObject {
        session: Handle,
        object: Handle,
    },
    GetObjectSize {
        session: Handle,
        object: Handle,
    },
    GetAttributeValue {
        session: Handle,
        object: Handle,
        requests: Vec<(AttrType, Out)>,
    },
    SetAttributeValue {
        session: Handle,
        object: Handle,
        template: Vec<Attr>,
    },
    FindObjectsInit {
        session: Handle,
        template: Vec<Attr>,
    },
    FindObjects {
        session: Handle,
        max: u8,
    },
    FindObjectsFinal(Handle),
    GenerateKeyPair {
        session: Handle,
        mechanism: Mechanism,
        public: Vec<Attr>,
        private: Vec<Attr>,
    },
    SignInit {
        session: Handle,
        mechanism: Mechanism,
        key: Handle,
    },
    Sign {
        session: Handle,
        data: Vec<u8>,
        out: Out,
    },
    SignUpdate {
        session: Handle,
        data: Vec<u8>,
    },
    SignFinal {
        session: Handle,
        out: Out,
    },
    VerifyInit {
        session: Handle,
        mechanism: Mechanism,
        key: Handle,
    },
    Verify {
        session: Handle,
        data: Vec<u8>,
        signature: Signature,
    },
    VerifyUpdate {
        session: Handle,
        data: Vec<u8>,
    },
    VerifyFinal {
        session: Handle,
        signature: Signature,
    },
    GenerateRandom {
        session: Handle,
        len: u16,
    },
    SeedRandom {
        session: Handle,
        seed: Vec<u8>,
    },
    Unsupported {
        which: u8,
        session: Handle,
    },
}

/// A signature given to a verification: the last one the token made, or bytes.
#[derive(Arbitrary, Debug, Clone)]
pub enum Signature {
    Last { flip: Option<u8> },
    Bytes(Vec<u8>),
}


/// The C mechanism of `m`, with the parameter bytes it points into (keep both
/// alive for the call).
pub fn mechanism_struct(m: &Mechanism) -> (Vec<u8>, CK_MECHANISM) {
    let param = m.parameter.clone().unwrap_or_default();
    let mech = CK_MECHANISM {
        mechanism: m.mech.ck(),
        pParameter: if m.parameter.is_some() {
            param.as_ptr() as *mut _
        } else {
            null_mut()
        },
        ulParameterLen: param.len() as CK_ULONG,
    };
    (param, mech)
}

/// The configuration text an input gives, always with this run's `store`.
pub fn inline_config(c: &InlineConfig, store: &Path) -> CString {
    let mut table = toml::Table::new();
    table.insert("store".into(), store.display().to_string().into());
    if let Some(pin) = &c.pin {
        table.insert("pin".into(), pin.clone().into());
    }
    if let Some(label) = &c.token_label {
        table.insert("token_label".into(), label.clone().into());
    }
    if let Some(label) = &c.label0 {
        let mut labels = toml::Table::new();
        labels.insert("0".into(), label.clone().into());
        table.insert("labels".into(), labels.into());
    }
    table.insert(
        "expose_non_ecdsa_keys".into(),
        c.expose_non_ecdsa_keys.into(),
    );
    let text = toml::to_string(&table).expect("TOML");
    CString::new(text.replace('\0', "")).expect("no NUL")
}

/// `C_Initialize`'s arguments: the flags the input gives (those PKCS#11
/// defines), the application's mutex functions or none, and the configuration
/// text in `pReserved` (which must outlive the call).
pub fn initialize_args(flags: u8, mutexes: bool, text: Option<&CString>) -> CK_C_INITIALIZE_ARGS {
    let mut a = CK_C_INITIALIZE_ARGS {
        CreateMutex: None,
        DestroyMutex: None,
        LockMutex: None,
        UnlockMutex: None,
        flags: flags as CK_FLAGS & (CKF_OS_LOCKING_OK | CKF_LIBRARY_CANT_CREATE_OS_THREADS),
        pReserved: text.map_or(null_mut(), |t| t.as_ptr() as *mut _),
    };
    if mutexes {
        a.CreateMutex = Some(create_mutex);
        a.DestroyMutex = Some(destroy_mutex);
        a.LockMutex = Some(lock_mutex);
        a.UnlockMutex = Some(unlock_mutex);
    }
    a
}

// Application-supplied locking (CK_C_INITIALIZE_ARGS): a spin lock per mutex.

unsafe extern "C" fn create_mutex(out: *mut *mut std::ffi::c_void) -> CK_RV {
    if out.is_null() {
        return CKR_ARGUMENTS_BAD;
    }
    // SAFETY: a valid out-pointer (checked above).
    unsafe { *out = Box::into_raw(Box::new(AtomicBool::new(false))) as *mut _ };
    CKR_OK
}

unsafe extern "C" fn destroy_mutex(m: *mut std::ffi::c_void) -> CK_RV {
    if m.is_null() {
        return CKR_MUTEX_BAD;
    }
    // SAFETY: made by create_mutex.
    drop(unsafe { Box::from_raw(m as *mut AtomicBool) });
    CKR_OK
}

unsafe extern "C" fn lock_mutex(m: *mut std::ffi::c_void) -> CK_RV {
    // SAFETY: made by create_mutex.
    let Some(lock) = (unsafe { (m as *const AtomicBool).as_ref() }) else {
        return CKR_MUTEX_BAD;
    };
    while lock.swap(true, Ordering::Acquire) {
        std::hint::spin_loop();
    }
    CKR_OK
}

unsafe extern "C" fn unlock_mutex(m: *mut std::ffi::c_void) -> CK_RV {
    // SAFETY: made by create_mutex.
    let Some(lock) = (unsafe { (m as *const AtomicBool).as_ref() }) else {
        return CKR_MUTEX_BAD;
    };
    if !lock.swap(false, Ordering::Release) {
        return CKR_MUTEX_NOT_LOCKED;
    }
    CKR_OK
}
