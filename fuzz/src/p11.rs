//! The PKCS#11 call-sequence harness: a fresh emulator state (a copy of one
//! made at start-up) and object store per input, the module's function list,
//! and the checks made after every call.
//!
//! Environment: `ZKIOT_ZKLIB` names the emulator library (required);
//! `ZKIOT_FUZZ_WORK` a scratch directory (default: a new one under the
//! system temporary directory).

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::ptr::null_mut;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};
use cryptoki_sys::*;
use openssl::bn::BigNum;
use openssl::ec::EcKey;
use openssl::ecdsa::EcdsaSig;
use openssl::hash::MessageDigest;
use openssl::pkey::{Id, PKey, Public};

/// Attributes a template may hold before it is cut off.
const MAX_TEMPLATE: usize = 12;

/// What start-up prepared once per process.
struct Setup {
    functions: &'static CK_FUNCTION_LIST,
    work: PathBuf,
    template_emu: PathBuf,
    /// The store and device cache the first load of the template left.
    template_store: PathBuf,
    template_keys: DeviceKeys,
    certificate: Vec<u8>,
}

/// The device's keys as the emulator holds them: what must never be output,
/// and what a signature must verify under.
#[derive(Clone, Default)]
struct DeviceKeys {
    secrets: Vec<Vec<u8>>,
    public: Vec<EcKey<Public>>,
}

impl DeviceKeys {
    fn read(emu_dir: &Path) -> DeviceKeys {
        let mut keys = DeviceKeys::default();
        let Ok(entries) = std::fs::read_dir(emu_dir.join("keys")) else {
            return keys;
        };
        for entry in entries.flatten() {
            let Ok(pem) = std::fs::read(entry.path()) else {
                continue;
            };
            let Ok(key) = PKey::private_key_from_pem(&pem) else {
                continue;
            };
            match key.id() {
                Id::EC => {
                    let ec = key.ec_key().expect("an EC key");
                    keys.secrets
                        .push(ec.private_key().to_vec_padded(32).expect("32 bytes"));
                    let public =
                        EcKey::from_public_key(ec.group(), ec.public_key()).expect("public key");
                    keys.public.push(public);
                }
                _ => {
                    if let Ok(raw) = key.raw_private_key() {
                        keys.secrets.push(raw);
                    }
                }
            }
        }
        keys
    }
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        assert!(
            std::env::var_os("ZKIOT_ZKLIB").is_some(),
            "set ZKIOT_ZKLIB to the emulator library (libzkemu.so)"
        );
        let work = match std::env::var_os("ZKIOT_FUZZ_WORK") {
            Some(dir) => PathBuf::from(dir),
            // On tmpfs when there is one: the store and the emulator fsync.
            None => Path::new("/dev/shm")
                .canonicalize()
                .unwrap_or_else(|_| std::env::temp_dir())
                .join(format!("zkiot-fuzz.{}", std::process::id())),
        };
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work).expect("work directory");
        // Nothing the module writes by default may land outside the work directory.
        std::env::set_current_dir(&work).expect("cd work");
        std::env::set_var("HOME", &work);
        std::env::set_var("XDG_STATE_HOME", work.join("state"));
        std::env::set_var("ZKIOT_LOG", "off");
        std::env::remove_var("ZKIOT_EMU_TRACE");
        std::env::remove_var("ZKIOT_EMU_LATENCY_MS");
        std::env::set_var("ZKIOT_EMU_MODEL", "HSM6");
        std::env::set_var("ZKIOT_CONF", work.join("zkiot.toml"));
        std::fs::write(
            work.join("zkiot.toml"),
            format!("store = {:?}\n", work.join("run/store.sqlite3")),
        )
        .expect("configuration");

        let mut list: CK_FUNCTION_LIST_PTR = null_mut();
        // SAFETY: a valid out-pointer.
        let rv = unsafe { zkpkcs11::C_GetFunctionList(&mut list) };
        assert_eq!(rv, CKR_OK);
        // SAFETY: the module's function list is a static.
        let functions: &'static CK_FUNCTION_LIST = unsafe { &*list };

        // The emulator creates its state (factory keys) on first open.
        let template_emu = work.join("template-emu");
        std::env::set_var("ZKIOT_EMU_DIR", &template_emu);
        std::fs::create_dir_all(work.join("run")).expect("run directory");
        // SAFETY: plain calls with valid pointers.
        unsafe {
            assert_eq!(functions.C_Initialize.unwrap()(null_mut()), CKR_OK);
            let mut info: CK_TOKEN_INFO = std::mem::zeroed();
            assert_eq!(functions.C_GetTokenInfo.unwrap()(0, &mut info), CKR_OK);
            assert_eq!(functions.C_Finalize.unwrap()(null_mut()), CKR_OK);
        }
        // What that load wrote (store, device cache) is the warm start.
        let template_store = work.join("template-store");
        std::fs::rename(work.join("run"), &template_store).expect("template store");
        let template_keys = DeviceKeys::read(&template_emu);
        assert!(
            !template_keys.public.is_empty(),
            "the emulator made no keys"
        );
        std::env::set_var("ZKIOT_EMU_DIR", work.join("run/emu"));
        Setup {
            functions,
            work,
            template_emu,
            template_store,
            template_keys,
            certificate: certificate(),
        }
    })
}

/// A self-signed P-256 certificate (DER) to store on the token.
fn certificate() -> Vec<u8> {
    use openssl::asn1::Asn1Time;
    use openssl::ec::EcGroup;
    use openssl::nid::Nid;
    use openssl::x509::{X509Name, X509};
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
    let mut name = X509Name::builder().unwrap();
    name.append_entry_by_text("CN", "fuzz").unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(1).unwrap())
        .unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    b.build().to_der().unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir").flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else if !entry.file_name().to_string_lossy().ends_with("lock") {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

// ------------------------------------------------------------------ inputs

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
    fn id(self) -> CK_SLOT_ID {
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
    fn buffer(self, exact: usize) -> Option<Vec<u8>> {
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
    fn ck(self) -> CK_MECHANISM_TYPE {
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

    fn digest(self) -> Option<Option<MessageDigest>> {
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
    mech: Mech,
    parameter: Option<Vec<u8>>,
    null: bool,
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
    fn ck(self) -> CK_ATTRIBUTE_TYPE {
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
    fn bytes(&self, certificate: &[u8]) -> Vec<u8> {
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

// ------------------------------------------------------------------ the harness

/// A signing operation as the harness expects the module to hold it.
struct Signing {
    mech: Mech,
    data: Vec<u8>,
}

pub struct Harness {
    setup: &'static Setup,
    keys: DeviceKeys,
    sessions: Vec<CK_SESSION_HANDLE>,
    objects: Vec<CK_OBJECT_HANDLE>,
    signing: std::collections::HashMap<CK_SESSION_HANDLE, Signing>,
    last_signature: Vec<u8>,
}

fn check_rv(call: &str, rv: CK_RV) -> CK_RV {
    assert_ne!(rv, CKR_GENERAL_ERROR, "{call} returned CKR_GENERAL_ERROR");
    rv
}

fn as_bytes<T>(value: &T) -> &[u8] {
    // SAFETY: any initialised value can be read as bytes.
    unsafe { std::slice::from_raw_parts(value as *const T as *const u8, std::mem::size_of::<T>()) }
}

impl Harness {
    /// A fresh emulator state and store, and an initialised module.
    pub fn start(u: &mut Unstructured) -> Harness {
        let setup = setup();
        let run = setup.work.join("run");
        let _ = std::fs::remove_dir_all(&run);
        // A warm start is what most processes see (the public keys in the
        // store, the device in its cache), and is much faster; a cold one
        // reads the device.
        if bool::arbitrary(u).unwrap_or(false) {
            copy_dir(&setup.template_store, &run);
        }
        copy_dir(&setup.template_emu, &run.join("emu"));
        let mut harness = Harness {
            setup,
            keys: setup.template_keys.clone(),
            sessions: Vec::new(),
            objects: Vec::new(),
            signing: Default::default(),
            last_signature: Vec::new(),
        };
        let init = InitArgs::arbitrary(u).unwrap_or(InitArgs::Null);
        harness.run(Op::Initialize(init));
        harness
    }

    pub fn finish(&mut self) {
        self.run(Op::Finalize);
    }

    fn f(&self) -> &'static CK_FUNCTION_LIST {
        self.setup.functions
    }

    fn session(&self, h: Handle) -> CK_SESSION_HANDLE {
        match h {
            Handle::Known(i) if !self.sessions.is_empty() => {
                self.sessions[i as usize % self.sessions.len()]
            }
            Handle::Known(i) => i as CK_SESSION_HANDLE,
            Handle::Raw(n) => n,
            Handle::Zero => 0,
        }
    }

    fn object(&self, h: Handle) -> CK_OBJECT_HANDLE {
        match h {
            Handle::Known(i) if !self.objects.is_empty() => {
                self.objects[i as usize % self.objects.len()]
            }
            Handle::Known(i) => i as CK_OBJECT_HANDLE,
            Handle::Raw(n) => n,
            Handle::Zero => 0,
        }
    }

    /// Fails if `output` holds a device private key.
    fn check_output(&self, call: &str, output: &[u8]) {
        for secret in &self.keys.secrets {
            assert!(
                !output.windows(secret.len()).any(|w| w == secret.as_slice()),
                "{call} output a device private key"
            );
        }
    }

    /// Fails unless `signature` (r‖s) verifies over `data` under a device key.
    fn check_signature(&self, mech: Mech, data: &[u8], signature: &[u8]) {
        assert_eq!(signature.len(), 64, "signature length");
        let digest = match mech.digest().expect("a signing mechanism") {
            None => data.to_vec(),
            Some(md) => openssl::hash::hash(md, data).expect("hash").to_vec(),
        };
        let r = BigNum::from_slice(&signature[..32]).unwrap();
        let s = BigNum::from_slice(&signature[32..]).unwrap();
        let sig = EcdsaSig::from_private_components(r, s).unwrap();
        assert!(
            self.keys
                .public
                .iter()
                .any(|key| sig.verify(&digest, key).unwrap_or(false)),
            "a signature ({mech:?}, {} input bytes) verifies under no device key",
            data.len()
        );
    }

    fn template(&self, attrs: &[Attr]) -> (Vec<Vec<u8>>, Vec<CK_ATTRIBUTE>) {
        let attrs = &attrs[..attrs.len().min(MAX_TEMPLATE)];
        let values: Vec<Vec<u8>> = attrs
            .iter()
            .map(|a| a.value.bytes(&self.setup.certificate))
            .collect();
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

    fn signature_bytes(&self, s: &Signature) -> Vec<u8> {
        match s {
            Signature::Last { flip } => {
                let mut sig = self.last_signature.clone();
                if let (Some(i), false) = (flip, sig.is_empty()) {
                    let n = *i as usize % sig.len();
                    sig[n] ^= 1;
                }
                sig
            }
            Signature::Bytes(b) => b.clone(),
        }
    }

    /// Runs one call and checks its result.
    pub fn run(&mut self, op: Op) {
        let f = self.f();
        // SAFETY: every pointer passed below is NULL or points to a live
        // buffer of the length passed with it.
        unsafe {
            match op {
                Op::Initialize(args) => self.initialize(args),
                Op::Finalize => {
                    let rv = check_rv("C_Finalize", f.C_Finalize.unwrap()(null_mut()));
                    if rv == CKR_OK {
                        self.sessions.clear();
                        self.objects.clear();
                        self.signing.clear();
                    }
                }
                Op::GetInfo => {
                    let mut info: CK_INFO = std::mem::zeroed();
                    check_rv("C_GetInfo", f.C_GetInfo.unwrap()(&mut info));
                    self.check_output("C_GetInfo", as_bytes(&info));
                }
                Op::GetSlotList { present, out } => {
                    let mut buf: Option<Vec<CK_SLOT_ID>> = out.buffer(1).map(|b| vec![0; b.len()]);
                    let mut len = buf.as_ref().map_or(0, |b| b.len()) as CK_ULONG;
                    let p = buf.as_mut().map_or(null_mut(), |b| b.as_mut_ptr());
                    let rv = check_rv(
                        "C_GetSlotList",
                        f.C_GetSlotList.unwrap()(present as CK_BBOOL, p, &mut len),
                    );
                    if rv == CKR_OK {
                        if let Some(b) = &buf {
                            assert!(
                                len as usize <= b.len(),
                                "C_GetSlotList: length beyond buffer"
                            );
                        }
                    }
                }
                Op::GetSlotInfo(slot) => {
                    let mut info: CK_SLOT_INFO = std::mem::zeroed();
                    check_rv(
                        "C_GetSlotInfo",
                        f.C_GetSlotInfo.unwrap()(slot.id(), &mut info),
                    );
                    self.check_output("C_GetSlotInfo", as_bytes(&info));
                }
                Op::GetTokenInfo(slot) => {
                    let mut info: CK_TOKEN_INFO = std::mem::zeroed();
                    check_rv(
                        "C_GetTokenInfo",
                        f.C_GetTokenInfo.unwrap()(slot.id(), &mut info),
                    );
                    self.check_output("C_GetTokenInfo", as_bytes(&info));
                }
                Op::GetMechanismList { slot, out } => {
                    let mut buf: Option<Vec<CK_MECHANISM_TYPE>> =
                        out.buffer(8).map(|b| vec![0; b.len()]);
                    let mut len = buf.as_ref().map_or(0, |b| b.len()) as CK_ULONG;
                    let p = buf.as_mut().map_or(null_mut(), |b| b.as_mut_ptr());
                    let rv = check_rv(
                        "C_GetMechanismList",
                        f.C_GetMechanismList.unwrap()(slot.id(), p, &mut len),
                    );
                    if rv == CKR_OK {
                        if let Some(b) = &buf {
                            assert!(
                                len as usize <= b.len(),
                                "C_GetMechanismList: length beyond buffer"
                            );
                        }
                    }
                }
                Op::GetMechanismInfo { slot, mech } => {
                    let mut info: CK_MECHANISM_INFO = std::mem::zeroed();
                    check_rv(
                        "C_GetMechanismInfo",
                        f.C_GetMechanismInfo.unwrap()(slot.id(), mech.ck(), &mut info),
                    );
                }
                Op::InitToken { slot, pin } => {
                    let mut label = [b' '; 32];
                    check_rv(
                        "C_InitToken",
                        f.C_InitToken.unwrap()(
                            slot.id(),
                            pin.as_ptr() as *mut _,
                            pin.len() as CK_ULONG,
                            label.as_mut_ptr(),
                        ),
                    );
                }
                Op::InitPin { session, pin } => {
                    check_rv(
                        "C_InitPIN",
                        f.C_InitPIN.unwrap()(
                            self.session(session),
                            pin.as_ptr() as *mut _,
                            pin.len() as CK_ULONG,
                        ),
                    );
                }
                Op::SetPin { session, old, new } => {
                    check_rv(
                        "C_SetPIN",
                        f.C_SetPIN.unwrap()(
                            self.session(session),
                            old.as_ptr() as *mut _,
                            old.len() as CK_ULONG,
                            new.as_ptr() as *mut _,
                            new.len() as CK_ULONG,
                        ),
                    );
                }
                Op::OpenSession { slot, flags } => {
                    let mut handle: CK_SESSION_HANDLE = 0;
                    let flags = (flags as CK_FLAGS & 0x7)
                        | if flags & 0x80 != 0 {
                            0
                        } else {
                            CKF_SERIAL_SESSION
                        };
                    let rv = check_rv(
                        "C_OpenSession",
                        f.C_OpenSession.unwrap()(slot.id(), flags, null_mut(), None, &mut handle),
                    );
                    if rv == CKR_OK {
                        self.sessions.push(handle);
                    }
                }
                Op::CloseSession(h) => {
                    let s = self.session(h);
                    if check_rv("C_CloseSession", f.C_CloseSession.unwrap()(s)) == CKR_OK {
                        self.signing.remove(&s);
                    }
                }
                Op::CloseAllSessions(slot) => {
                    if check_rv(
                        "C_CloseAllSessions",
                        f.C_CloseAllSessions.unwrap()(slot.id()),
                    ) == CKR_OK
                    {
                        self.signing.clear();
                    }
                }
                Op::GetSessionInfo(h) => {
                    let mut info: CK_SESSION_INFO = std::mem::zeroed();
                    check_rv(
                        "C_GetSessionInfo",
                        f.C_GetSessionInfo.unwrap()(self.session(h), &mut info),
                    );
                }
                Op::Login { session, user, pin } => {
                    let user = match user % 4 {
                        0 => CKU_SO,
                        1 | 2 => CKU_USER,
                        _ => CKU_CONTEXT_SPECIFIC,
                    };
                    let (p, len) = match &pin {
                        None => (null_mut(), 0),
                        Some(pin) => (pin.as_ptr() as *mut u8, pin.len() as CK_ULONG),
                    };
                    check_rv(
                        "C_Login",
                        f.C_Login.unwrap()(self.session(session), user, p, len),
                    );
                }
                Op::Logout(h) => {
                    check_rv("C_Logout", f.C_Logout.unwrap()(self.session(h)));
                }
                Op::CreateObject { session, template } => {
                    let (_values, mut t) = self.template(&template);
                    let mut handle: CK_OBJECT_HANDLE = 0;
                    let rv = check_rv(
                        "C_CreateObject",
                        f.C_CreateObject.unwrap()(
                            self.session(session),
                            t.as_mut_ptr(),
                            t.len() as CK_ULONG,
                            &mut handle,
                        ),
                    );
                    if rv == CKR_OK {
                        self.objects.push(handle);
                    }
                }
                Op::CopyObject { session, object } => {
                    let mut handle: CK_OBJECT_HANDLE = 0;
                    check_rv(
                        "C_CopyObject",
                        f.C_CopyObject.unwrap()(
                            self.session(session),
                            self.object(object),
                            null_mut(),
                            0,
                            &mut handle,
                        ),
                    );
                }
                Op::DestroyObject { session, object } => {
                    check_rv(
                        "C_DestroyObject",
                        f.C_DestroyObject.unwrap()(self.session(session), self.object(object)),
                    );
                }
                Op::GetObjectSize { session, object } => {
                    let mut size: CK_ULONG = 0;
                    check_rv(
                        "C_GetObjectSize",
                        f.C_GetObjectSize.unwrap()(
                            self.session(session),
                            self.object(object),
                            &mut size,
                        ),
                    );
                }
                Op::GetAttributeValue {
                    session,
                    object,
                    requests,
                } => {
                    self.get_attribute_value(self.session(session), self.object(object), &requests)
                }
                Op::SetAttributeValue {
                    session,
                    object,
                    template,
                } => {
                    let (_values, mut t) = self.template(&template);
                    check_rv(
                        "C_SetAttributeValue",
                        f.C_SetAttributeValue.unwrap()(
                            self.session(session),
                            self.object(object),
                            t.as_mut_ptr(),
                            t.len() as CK_ULONG,
                        ),
                    );
                }
                Op::FindObjectsInit { session, template } => {
                    let (_values, mut t) = self.template(&template);
                    check_rv(
                        "C_FindObjectsInit",
                        f.C_FindObjectsInit.unwrap()(
                            self.session(session),
                            t.as_mut_ptr(),
                            t.len() as CK_ULONG,
                        ),
                    );
                }
                Op::FindObjects { session, max } => {
                    let mut found = vec![0 as CK_OBJECT_HANDLE; max as usize];
                    let mut count: CK_ULONG = CK_ULONG::MAX;
                    let p = if found.is_empty() {
                        [0].as_mut_ptr()
                    } else {
                        found.as_mut_ptr()
                    };
                    let rv = check_rv(
                        "C_FindObjects",
                        f.C_FindObjects.unwrap()(
                            self.session(session),
                            p,
                            max as CK_ULONG,
                            &mut count,
                        ),
                    );
                    if rv == CKR_OK {
                        assert!(
                            count <= max as CK_ULONG,
                            "C_FindObjects: more objects than asked for"
                        );
                        for h in &found[..count as usize] {
                            if !self.objects.contains(h) {
                                self.objects.push(*h);
                            }
                        }
                    }
                }
                Op::FindObjectsFinal(h) => {
                    check_rv(
                        "C_FindObjectsFinal",
                        f.C_FindObjectsFinal.unwrap()(self.session(h)),
                    );
                }
                Op::GenerateKeyPair {
                    session,
                    mechanism,
                    public,
                    private,
                } => {
                    let (_pv, mut pt) = self.template(&public);
                    let (_sv, mut st) = self.template(&private);
                    let (_param, mut m) = mechanism_struct(&mechanism);
                    let mp = if mechanism.null {
                        null_mut()
                    } else {
                        &mut m as *mut _
                    };
                    let (mut hp, mut hs) = (0, 0);
                    let rv = check_rv(
                        "C_GenerateKeyPair",
                        f.C_GenerateKeyPair.unwrap()(
                            self.session(session),
                            mp,
                            pt.as_mut_ptr(),
                            pt.len() as CK_ULONG,
                            st.as_mut_ptr(),
                            st.len() as CK_ULONG,
                            &mut hp,
                            &mut hs,
                        ),
                    );
                    if rv == CKR_OK {
                        self.objects.push(hp);
                        self.objects.push(hs);
                        self.keys = DeviceKeys::read(&self.setup.work.join("run/emu"));
                    }
                }
                Op::SignInit {
                    session,
                    mechanism,
                    key,
                } => {
                    let s = self.session(session);
                    let (_param, mut m) = mechanism_struct(&mechanism);
                    let mp = if mechanism.null {
                        null_mut()
                    } else {
                        &mut m as *mut _
                    };
                    let rv = check_rv("C_SignInit", f.C_SignInit.unwrap()(s, mp, self.object(key)));
                    if rv == CKR_OK {
                        self.signing.insert(
                            s,
                            Signing {
                                mech: mechanism.mech,
                                data: Vec::new(),
                            },
                        );
                    }
                }
                Op::Sign { session, data, out } => {
                    let s = self.session(session);
                    let mut buf = out.buffer(64);
                    let mut len = buf.as_ref().map_or(0, |b| b.len()) as CK_ULONG;
                    let p = buf.as_mut().map_or(null_mut(), |b| b.as_mut_ptr());
                    let rv = check_rv(
                        "C_Sign",
                        f.C_Sign.unwrap()(
                            s,
                            data.as_ptr() as *mut _,
                            data.len() as CK_ULONG,
                            p,
                            &mut len,
                        ),
                    );
                    self.signed("C_Sign", s, rv, buf, len, Some(&data));
                }
                Op::SignUpdate { session, data } => {
                    let s = self.session(session);
                    let rv = check_rv(
                        "C_SignUpdate",
                        f.C_SignUpdate.unwrap()(s, data.as_ptr() as *mut _, data.len() as CK_ULONG),
                    );
                    match (rv, self.signing.get_mut(&s)) {
                        (CKR_OK, Some(op)) => op.data.extend_from_slice(&data),
                        _ => {
                            self.signing.remove(&s);
                        }
                    }
                }
                Op::SignFinal { session, out } => {
                    let s = self.session(session);
                    let mut buf = out.buffer(64);
                    let mut len = buf.as_ref().map_or(0, |b| b.len()) as CK_ULONG;
                    let p = buf.as_mut().map_or(null_mut(), |b| b.as_mut_ptr());
                    let rv = check_rv("C_SignFinal", f.C_SignFinal.unwrap()(s, p, &mut len));
                    self.signed("C_SignFinal", s, rv, buf, len, None);
                }
                Op::VerifyInit {
                    session,
                    mechanism,
                    key,
                } => {
                    let (_param, mut m) = mechanism_struct(&mechanism);
                    let mp = if mechanism.null {
                        null_mut()
                    } else {
                        &mut m as *mut _
                    };
                    check_rv(
                        "C_VerifyInit",
                        f.C_VerifyInit.unwrap()(self.session(session), mp, self.object(key)),
                    );
                }
                Op::Verify {
                    session,
                    data,
                    signature,
                } => {
                    let sig = self.signature_bytes(&signature);
                    check_rv(
                        "C_Verify",
                        f.C_Verify.unwrap()(
                            self.session(session),
                            data.as_ptr() as *mut _,
                            data.len() as CK_ULONG,
                            sig.as_ptr() as *mut _,
                            sig.len() as CK_ULONG,
                        ),
                    );
                }
                Op::VerifyUpdate { session, data } => {
                    check_rv(
                        "C_VerifyUpdate",
                        f.C_VerifyUpdate.unwrap()(
                            self.session(session),
                            data.as_ptr() as *mut _,
                            data.len() as CK_ULONG,
                        ),
                    );
                }
                Op::VerifyFinal { session, signature } => {
                    let sig = self.signature_bytes(&signature);
                    check_rv(
                        "C_VerifyFinal",
                        f.C_VerifyFinal.unwrap()(
                            self.session(session),
                            sig.as_ptr() as *mut _,
                            sig.len() as CK_ULONG,
                        ),
                    );
                }
                Op::GenerateRandom { session, len } => {
                    let mut buf = vec![0u8; len as usize % 4096];
                    check_rv(
                        "C_GenerateRandom",
                        f.C_GenerateRandom.unwrap()(
                            self.session(session),
                            buf.as_mut_ptr(),
                            buf.len() as CK_ULONG,
                        ),
                    );
                    self.check_output("C_GenerateRandom", &buf);
                }
                Op::SeedRandom { session, seed } => {
                    check_rv(
                        "C_SeedRandom",
                        f.C_SeedRandom.unwrap()(
                            self.session(session),
                            seed.as_ptr() as *mut _,
                            seed.len() as CK_ULONG,
                        ),
                    );
                }
                Op::Unsupported { which, session } => {
                    self.unsupported(which, self.session(session))
                }
            }
        }
    }

    /// After `C_Sign`/`C_SignFinal`: a produced signature verifies; the
    /// harness's view of the operation follows what PKCS#11 says ends it.
    fn signed(
        &mut self,
        call: &str,
        s: CK_SESSION_HANDLE,
        rv: CK_RV,
        buf: Option<Vec<u8>>,
        len: CK_ULONG,
        data: Option<&[u8]>,
    ) {
        match (rv, buf) {
            (CKR_OK, Some(buf)) => {
                assert!(len as usize <= buf.len(), "{call}: length beyond buffer");
                let sig = &buf[..len as usize];
                self.check_output(call, sig);
                if let Some(op) = self.signing.remove(&s) {
                    let signed = data.map_or(op.data.as_slice(), |d| d);
                    self.check_signature(op.mech, signed, sig);
                }
                self.last_signature = sig.to_vec();
            }
            (CKR_OK, None) | (CKR_BUFFER_TOO_SMALL, _) => {}
            _ => {
                self.signing.remove(&s);
            }
        }
    }

    unsafe fn initialize(&mut self, args: InitArgs) {
        let f = self.f();
        let rv = match args {
            InitArgs::Null => unsafe { f.C_Initialize.unwrap()(null_mut()) },
            InitArgs::Args {
                flags,
                mutexes,
                config,
            } => {
                let text =
                    config.map(|c| inline_config(&c, &self.setup.work.join("run/store.sqlite3")));
                let mut a: CK_C_INITIALIZE_ARGS = unsafe { std::mem::zeroed() };
                a.flags =
                    flags as CK_FLAGS & (CKF_OS_LOCKING_OK | CKF_LIBRARY_CANT_CREATE_OS_THREADS);
                if mutexes {
                    a.CreateMutex = Some(create_mutex);
                    a.DestroyMutex = Some(destroy_mutex);
                    a.LockMutex = Some(lock_mutex);
                    a.UnlockMutex = Some(unlock_mutex);
                }
                a.pReserved = text.as_ref().map_or(null_mut(), |t| t.as_ptr() as *mut _);
                unsafe { f.C_Initialize.unwrap()(&mut a as *mut _ as *mut _) }
            }
        };
        check_rv("C_Initialize", rv);
    }

    unsafe fn get_attribute_value(
        &mut self,
        s: CK_SESSION_HANDLE,
        o: CK_OBJECT_HANDLE,
        requests: &[(AttrType, Out)],
    ) {
        let requests = &requests[..requests.len().min(MAX_TEMPLATE)];
        let mut buffers: Vec<Option<Vec<u8>>> =
            requests.iter().map(|(_, out)| out.buffer(65)).collect();
        let mut template: Vec<CK_ATTRIBUTE> = requests
            .iter()
            .zip(buffers.iter_mut())
            .map(|((kind, _), buf)| CK_ATTRIBUTE {
                type_: kind.ck(),
                pValue: buf
                    .as_mut()
                    .map_or(null_mut(), |b| b.as_mut_ptr() as *mut _),
                ulValueLen: buf.as_ref().map_or(0, |b| b.len()) as CK_ULONG,
            })
            .collect();
        let rv = check_rv("C_GetAttributeValue", unsafe {
            self.f().C_GetAttributeValue.unwrap()(
                s,
                o,
                template.as_mut_ptr(),
                template.len() as CK_ULONG,
            )
        });
        let answered = [
            CKR_OK,
            CKR_ATTRIBUTE_SENSITIVE,
            CKR_ATTRIBUTE_TYPE_INVALID,
            CKR_BUFFER_TOO_SMALL,
        ];
        if !answered.contains(&rv) {
            return;
        }
        for (attr, buf) in template.iter().zip(&buffers) {
            if let Some(buf) = buf {
                if attr.ulValueLen != CK_UNAVAILABLE_INFORMATION {
                    assert!(
                        attr.ulValueLen as usize <= buf.len(),
                        "C_GetAttributeValue: attribute {:#x} length {} beyond its {}-byte buffer",
                        attr.type_,
                        attr.ulValueLen,
                        buf.len()
                    );
                }
                self.check_output("C_GetAttributeValue", buf);
            }
        }
    }

    unsafe fn unsupported(&mut self, which: u8, s: CK_SESSION_HANDLE) {
        let f = self.f();
        let mut len: CK_ULONG = 16;
        let mut buf = [0u8; 16];
        let (p, l) = (buf.as_mut_ptr(), &mut len as *mut CK_ULONG);
        let (name, rv) = unsafe {
            match which % 16 {
                0 => ("C_EncryptInit", f.C_EncryptInit.unwrap()(s, null_mut(), 0)),
                1 => ("C_Encrypt", f.C_Encrypt.unwrap()(s, p, 16, p, l)),
                2 => ("C_DecryptInit", f.C_DecryptInit.unwrap()(s, null_mut(), 0)),
                3 => ("C_Decrypt", f.C_Decrypt.unwrap()(s, p, 16, p, l)),
                4 => ("C_DigestInit", f.C_DigestInit.unwrap()(s, null_mut())),
                5 => ("C_Digest", f.C_Digest.unwrap()(s, p, 16, p, l)),
                6 => (
                    "C_GetOperationState",
                    f.C_GetOperationState.unwrap()(s, p, l),
                ),
                7 => (
                    "C_SetOperationState",
                    f.C_SetOperationState.unwrap()(s, p, 16, 0, 0),
                ),
                8 => (
                    "C_SignRecoverInit",
                    f.C_SignRecoverInit.unwrap()(s, null_mut(), 0),
                ),
                9 => (
                    "C_VerifyRecover",
                    f.C_VerifyRecover.unwrap()(s, p, 16, p, l),
                ),
                10 => (
                    "C_GenerateKey",
                    f.C_GenerateKey.unwrap()(s, null_mut(), null_mut(), 0, null_mut()),
                ),
                11 => ("C_WrapKey", f.C_WrapKey.unwrap()(s, null_mut(), 0, 0, p, l)),
                12 => (
                    "C_DeriveKey",
                    f.C_DeriveKey.unwrap()(s, null_mut(), 0, null_mut(), 0, null_mut()),
                ),
                13 => ("C_GetFunctionStatus", f.C_GetFunctionStatus.unwrap()(s)),
                14 => ("C_CancelFunction", f.C_CancelFunction.unwrap()(s)),
                _ => (
                    "C_WaitForSlotEvent",
                    f.C_WaitForSlotEvent.unwrap()(CKF_DONT_BLOCK, null_mut(), null_mut()),
                ),
            }
        };
        check_rv(name, rv);
        self.check_output(name, &buf);
    }
}

fn mechanism_struct(m: &Mechanism) -> (Vec<u8>, CK_MECHANISM) {
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

fn inline_config(c: &InlineConfig, store: &Path) -> CString {
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
