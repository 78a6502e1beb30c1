//! The token logic over an in-memory device: PKCS#11 behaviour that does
//! not need the C ABI (length protocol, device call counts, finds, login,
//! key generation, the store across module instances).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use cryptoki_sys::*;
use openssl::ec::EcKey;
use openssl::nid::Nid;
use openssl::pkey::Private;
use testkit::ecdsa::{sign_raw, uncompressed_point};
use testkit::x509::ec_key;
use zktoken::ulong_bytes;
use zktoken::Device;
use zktoken::{Config, Error, Module, TemplateEntry};
use zymkey::{KeyType, Slot, SlotList};

/// A device in memory, with counters.
struct SoftDevice {
    model: &'static str,
    serial: String,
    /// What the library tells of its device (the emulator's state directory).
    fingerprint: Option<String>,
    /// Model, serial number and firmware reads.
    info_reads: AtomicUsize,
    slot_lists: AtomicUsize,
    keys: Mutex<BTreeMap<i32, EcKey<Private>>>,
    /// Slots holding a 32-byte (Ed25519-like) public key.
    raw_keys: Mutex<BTreeMap<i32, Vec<u8>>>,
    /// The foreign keyring: public keys only.
    foreign: Mutex<BTreeMap<i32, EcKey<Private>>>,
    signs: AtomicUsize,
    public_keys: AtomicUsize,
    fail_next_sign: AtomicBool,
    /// Time a signature takes, in milliseconds.
    sign_latency_ms: AtomicUsize,
    /// The next key generation makes its key, then its caller dies (a panic).
    die_after_generating: AtomicBool,
    /// The next key removal removes the key, then its caller dies.
    die_after_removing: AtomicBool,
}

impl SoftDevice {
    fn new(model: &'static str, factory_slots: i32) -> Arc<SoftDevice> {
        SoftDevice::named(model, factory_slots, "SOFT-0001", None)
    }

    /// Another Zymkey: its own serial number and keys.
    fn named(
        model: &'static str,
        factory_slots: i32,
        serial: &str,
        fingerprint: Option<&str>,
    ) -> Arc<SoftDevice> {
        let d = SoftDevice {
            model,
            serial: serial.into(),
            fingerprint: fingerprint.map(str::to_string),
            info_reads: AtomicUsize::new(0),
            slot_lists: AtomicUsize::new(0),
            keys: Mutex::new(BTreeMap::new()),
            raw_keys: Mutex::new(BTreeMap::new()),
            foreign: Mutex::new(BTreeMap::new()),
            signs: AtomicUsize::new(0),
            public_keys: AtomicUsize::new(0),
            fail_next_sign: AtomicBool::new(false),
            sign_latency_ms: AtomicUsize::new(0),
            die_after_generating: AtomicBool::new(false),
            die_after_removing: AtomicBool::new(false),
        };
        for slot in 0..factory_slots {
            d.keys
                .lock()
                .unwrap()
                .insert(slot, ec_key(Nid::X9_62_PRIME256V1));
        }
        Arc::new(d)
    }

    fn calls(&self) -> (usize, usize) {
        (
            self.signs.load(Ordering::SeqCst),
            self.public_keys.load(Ordering::SeqCst),
        )
    }

    fn point(&self, slot: i32) -> Vec<u8> {
        let keys = self.keys.lock().unwrap();
        raw_point(&keys[&slot])
    }
}

/// The raw X‖Y of a key, as the device gives it.
fn raw_point(key: &EcKey<Private>) -> Vec<u8> {
    uncompressed_point(key)[1..].to_vec()
}

fn device_error(function: &'static str) -> zymkey::Error {
    zymkey::Error::Device { function, errno: 5 }
}

impl Device for SoftDevice {
    fn model(&self) -> zymkey::Result<String> {
        self.info_reads.fetch_add(1, Ordering::SeqCst);
        Ok(self.model.into())
    }
    fn serial_number(&self) -> zymkey::Result<String> {
        self.info_reads.fetch_add(1, Ordering::SeqCst);
        Ok(self.serial.clone())
    }
    fn firmware_version(&self) -> zymkey::Result<String> {
        self.info_reads.fetch_add(1, Ordering::SeqCst);
        Ok("1.2.3".into())
    }
    fn random(&self, len: usize) -> zymkey::Result<Vec<u8>> {
        let mut v = vec![0u8; len];
        openssl::rand::rand_bytes(&mut v).unwrap();
        Ok(v)
    }
    fn sign_digest(&self, slot: i32, digest: &[u8; 32]) -> zymkey::Result<[u8; 64]> {
        self.signs.fetch_add(1, Ordering::SeqCst);
        let latency = self.sign_latency_ms.load(Ordering::SeqCst) as u64;
        std::thread::sleep(std::time::Duration::from_millis(latency));
        if self.fail_next_sign.swap(false, Ordering::SeqCst) {
            return Err(device_error("zkGenECDSASigFromDigest"));
        }
        let keys = self.keys.lock().unwrap();
        let key = keys
            .get(&slot)
            .ok_or(device_error("zkGenECDSASigFromDigest"))?;
        Ok(sign_raw(key, digest))
    }
    fn public_key(&self, slot: Slot) -> zymkey::Result<Vec<u8>> {
        self.public_keys.fetch_add(1, Ordering::SeqCst);
        if slot.foreign {
            return self
                .foreign
                .lock()
                .unwrap()
                .get(&slot.number)
                .map(raw_point)
                .ok_or(device_error("zkExportPubKey"));
        }
        if let Some(raw) = self.raw_keys.lock().unwrap().get(&slot.number) {
            return Ok(raw.clone());
        }
        let keys = self.keys.lock().unwrap();
        keys.get(&slot.number)
            .map(raw_point)
            .ok_or(device_error("zkExportPubKey"))
    }
    fn allocated_slots(&self, foreign: bool) -> zymkey::Result<SlotList> {
        self.slot_lists.fetch_add(1, Ordering::SeqCst);
        if foreign {
            return Ok(SlotList {
                capacity: 128,
                slots: self.foreign.lock().unwrap().keys().copied().collect(),
            });
        }
        let mut slots: Vec<i32> = self.keys.lock().unwrap().keys().copied().collect();
        slots.extend(self.raw_keys.lock().unwrap().keys().copied());
        slots.sort();
        // As the emulator's models: a ZYMKEY4i lists its three factory
        // slots; an HSM4-like device has no slot list; the rest have a key store.
        let capacity = match self.model {
            "ZYMKEY4i" => 3,
            "HSM4" => {
                return Err(zymkey::Error::Unsupported {
                    function: "zkGetAllocSlotsList",
                })
            }
            _ => 512,
        };
        Ok(SlotList { capacity, slots })
    }
    fn generate_key(&self, key_type: KeyType) -> zymkey::Result<i32> {
        let nid = match key_type {
            KeyType::NistP256 => Nid::X9_62_PRIME256V1,
            KeyType::Secp256k1 => Nid::SECP256K1,
            _ => {
                return Err(zymkey::Error::Unsupported {
                    function: "zkGenKeyPair",
                })
            }
        };
        let mut keys = self.keys.lock().unwrap();
        let slot = (16..).find(|s| !keys.contains_key(s)).unwrap();
        keys.insert(slot, ec_key(nid));
        drop(keys);
        if self.die_after_generating.swap(false, Ordering::SeqCst) {
            panic!("the process dies before the device's answer is recorded");
        }
        Ok(slot)
    }
    fn remove_key(&self, slot: Slot) -> zymkey::Result<()> {
        if slot.foreign {
            return self
                .foreign
                .lock()
                .unwrap()
                .remove(&slot.number)
                .map(|_| ())
                .ok_or(device_error("zkRemoveKey"));
        }
        self.keys
            .lock()
            .unwrap()
            .remove(&slot.number)
            .ok_or(device_error("zkRemoveKey"))?;
        if self.die_after_removing.swap(false, Ordering::SeqCst) {
            panic!("the process dies before the device's answer is recorded");
        }
        Ok(())
    }
    fn close(&self) {}
    fn fingerprint(&self) -> Option<String> {
        self.fingerprint.clone()
    }
}

fn config(dir: &Path, extra: &str) -> Config {
    let text = format!("store = {:?}\n{extra}", dir.join("store.sqlite3"));
    Config::parse(&text, "test").unwrap()
}

fn module(device: &Arc<SoftDevice>, config: Config) -> Module {
    let device: Arc<dyn Device> = device.clone();
    Module::with_device(config, PathBuf::from("soft"), Some(device))
}

fn find(
    m: &Module,
    session: CK_SESSION_HANDLE,
    template: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)],
) -> Vec<CK_OBJECT_HANDLE> {
    m.find_objects_init(session, template).unwrap();
    let found = m.find_objects(session, 100).unwrap();
    m.find_objects_final(session).unwrap();
    found
}

fn class(c: CK_OBJECT_CLASS) -> (CK_ATTRIBUTE_TYPE, Vec<u8>) {
    (CKA_CLASS, ulong_bytes(c))
}

fn attribute(
    m: &Module,
    session: CK_SESSION_HANDLE,
    handle: CK_OBJECT_HANDLE,
    kind: CK_ATTRIBUTE_TYPE,
) -> Vec<u8> {
    let mut buf = vec![0u8; 1024];
    let mut t = [TemplateEntry {
        kind,
        buffer: Some(&mut buf),
        len: 1024,
    }];
    m.get_attribute_value(session, handle, &mut t).unwrap();
    let len = t[0].len as usize;
    buf.truncate(len);
    buf
}

fn verify(point: &[u8], digest: &[u8; 32], sig: &[u8]) -> bool {
    zktoken::testing::verify_digest(zktoken::testing::Curve::P256, point, digest, sig).is_ok()
}

const RO: CK_FLAGS = CKF_SERIAL_SESSION;
const RW: CK_FLAGS = CKF_SERIAL_SESSION | CKF_RW_SESSION;

#[test]
fn sign_length_protocol_and_one_device_signature() {
    let dir = tempfile::tempdir().unwrap();
    let dev = SoftDevice::new("ZYMKEY4i", 3);
    let m = module(&dev, config(dir.path(), ""));
    let s = m.open_session(0, RO).unwrap();
    let key = find(
        &m,
        s,
        &[class(CKO_PRIVATE_KEY), (CKA_LABEL, b"slot1".to_vec())],
    );
    assert_eq!(key.len(), 1);
    m.sign_init(s, CKM_ECDSA, false, key[0]).unwrap();
    let digest = [7u8; 32];
    let before = dev.calls().0;
    assert_eq!(m.sign(s, &digest, None).unwrap(), 64);
    let mut short = [0u8; 10];
    assert_eq!(
        m.sign(s, &digest, Some(&mut short)).unwrap_err(),
        Error::BufferTooSmall { required: 64 }
    );
    assert_eq!(
        dev.calls().0,
        before,
        "length queries never reach the device"
    );
    let mut sig = [0u8; 64];
    assert_eq!(m.sign(s, &digest, Some(&mut sig)).unwrap(), 64);
    assert_eq!(dev.calls().0, before + 1);
    assert!(verify(&dev.point(1), &digest, &sig));
    // The operation ended with the signature.
    assert_eq!(
        m.sign(s, &digest, Some(&mut sig)).unwrap_err(),
        Error::OperationNotInitialized
    );
}

#[test]
fn ecdsa_pads_and_truncates_its_input() {
    let dir = tempfile::tempdir().unwrap();
    let dev = SoftDevice::new("ZYMKEY4i", 3);
    let m = module(&dev, config(dir.path(), ""));
    let s = m.open_session(0, RO).unwrap();
    let key = zktoken::KeySlot::device(0).private_handle();
    for len in [20usize, 28, 32, 48, 64] {
        let input: Vec<u8> = (0..len as u8).map(|b| b.wrapping_mul(37) | 1).collect();
        m.sign_init(s, CKM_ECDSA, false, key).unwrap();
        let mut sig = [0u8; 64];
        m.sign(s, &input, Some(&mut sig)).unwrap();
        let digest = zktoken::testing::ecdsa_digest(&input).unwrap();
        assert!(verify(&dev.point(0), &digest, &sig), "input of {len} bytes");
        // OpenSSL's own rule for long digests agrees (leftmost bits).
        let pubkey = testkit::ecdsa::public_key(Nid::X9_62_PRIME256V1, &dev.point(0));
        assert!(
            testkit::ecdsa::verifies_under(&pubkey, &input, &sig),
            "openssl, {len} bytes"
        );
    }
}

#[test]
fn ecdsa_sha256_multi_part() {
    let dir = tempfile::tempdir().unwrap();
    let dev = SoftDevice::new("ZYMKEY4i", 3);
    let m = module(&dev, config(dir.path(), ""));
    let s = m.open_session(0, RO).unwrap();
    let key = zktoken::KeySlot::device(2).private_handle();
    m.sign_init(s, CKM_ECDSA_SHA256, false, key).unwrap();
    m.sign_update(s, b"hello ").unwrap();
    m.sign_update(s, b"world").unwrap();
    assert_eq!(m.sign_final(s, None).unwrap(), 64);
    let mut short = [0u8; 63];
    assert!(m.sign_final(s, Some(&mut short)).is_err());
    let before = dev.calls().0;
    let mut sig = [0u8; 64];
    m.sign_final(s, Some(&mut sig)).unwrap();
    assert_eq!(dev.calls().0, before + 1);
    assert!(verify(
        &dev.point(2),
        &openssl::sha::sha256(b"hello world"),
        &sig
    ));
    // Verify through the token, single- and multi-part.
    let public = zktoken::KeySlot::device(2).public_handle();
    m.verify_init(s, CKM_ECDSA_SHA256, false, public).unwrap();
    m.verify(s, b"hello world", &sig).unwrap();
    m.verify_init(s, CKM_ECDSA_SHA256, false, public).unwrap();
    m.verify_update(s, b"hello").unwrap();
    m.verify_update(s, b" world").unwrap();
    m.verify_final(s, &sig).unwrap();
    m.verify_init(s, CKM_ECDSA_SHA256, false, public).unwrap();
    assert_eq!(
        m.verify(s, b"hello world!", &sig).unwrap_err(),
        Error::SignatureInvalid
    );
    // CKM_ECDSA is single-part.
    m.sign_init(s, CKM_ECDSA, false, key).unwrap();
    assert_eq!(
        m.sign_update(s, b"x").unwrap_err().rv(),
        CKR_FUNCTION_NOT_SUPPORTED
    );
    m.sign_init(s, CKM_ECDSA, false, key).unwrap();
}

#[test]
fn sign_init_checks_key_and_mechanism() {
    let dir = tempfile::tempdir().unwrap();
    let dev = SoftDevice::new("ZYMKEY4i", 3);
    let m = module(&dev, config(dir.path(), ""));
    let s = m.open_session(0, RO).unwrap();
    let key = zktoken::KeySlot::device(0);
    assert_eq!(
        m.sign_init(s, CKM_RSA_PKCS, false, key.private_handle())
            .unwrap_err()
            .rv(),
        CKR_MECHANISM_INVALID
    );
    assert_eq!(
        m.sign_init(s, CKM_ECDSA, true, key.private_handle())
            .unwrap_err()
            .rv(),
        CKR_MECHANISM_PARAM_INVALID
    );
    assert_eq!(
        m.sign_init(s, CKM_ECDSA, false, key.public_handle())
            .unwrap_err()
            .rv(),
        CKR_KEY_FUNCTION_NOT_PERMITTED
    );
    assert_eq!(
        m.sign_init(s, CKM_ECDSA, false, 12345).unwrap_err().rv(),
        CKR_KEY_HANDLE_INVALID
    );
    assert_eq!(
        m.sign_init(
            s,
            CKM_ECDSA,
            false,
            zktoken::KeySlot::device(9).private_handle()
        )
        .unwrap_err()
        .rv(),
        CKR_KEY_HANDLE_INVALID
    );
    m.sign_init(s, CKM_ECDSA, false, key.private_handle())
        .unwrap();
    assert_eq!(
        m.sign_init(s, CKM_ECDSA, false, key.private_handle())
            .unwrap_err()
            .rv(),
        CKR_OPERATION_ACTIVE
    );
    assert_eq!(
        m.sign_init(999, CKM_ECDSA, false, key.private_handle())
            .unwrap_err()
            .rv(),
        CKR_SESSION_HANDLE_INVALID
    );
}

#[test]
fn device_error_ends_the_operation_and_the_next_call_works() {
    let dir = tempfile::tempdir().unwrap();
    let dev = SoftDevice::new("ZYMKEY4i", 3);
    let m = module(&dev, config(dir.path(), ""));
    let s = m.open_session(0, RO).unwrap();
    let key = zktoken::KeySlot::device(0).private_handle();
    dev.fail_next_sign.store(true, Ordering::SeqCst);
    m.sign_init(s, CKM_ECDSA, false, key).unwrap();
    let mut sig = [0u8; 64];
    assert_eq!(
        m.sign(s, &[1; 32], Some(&mut sig)).unwrap_err().rv(),
        CKR_DEVICE_ERROR
    );
    m.sign_init(s, CKM_ECDSA, false, key).unwrap();
    m.sign(s, &[1; 32], Some(&mut sig)).unwrap();
    assert!(verify(&dev.point(0), &[1; 32], &sig));
}

#[test]
fn a_stale_cached_public_key_is_refreshed_by_the_first_signature() {
    let dir = tempfile::tempdir().unwrap();
    let dev = SoftDevice::new("HSM6", 12);
    module(&dev, config(dir.path(), ""))
        .open_session(0, RO)
        .unwrap();
    // Another tool replaces the key of slot 3 behind the token's back.
    dev.keys
        .lock()
        .unwrap()
        .insert(3, ec_key(Nid::X9_62_PRIME256V1));
    let m = module(&dev, config(dir.path(), ""));
    let s = m.open_session(0, RO).unwrap();
    let slot = zktoken::KeySlot::device(3);
    let cached = attribute(&m, s, slot.public_handle(), CKA_EC_POINT);
    assert_ne!(
        &cached[3..],
        dev.point(3).as_slice(),
        "the store still has the old key"
    );
    m.sign_init(s, CKM_ECDSA, false, slot.private_handle())
        .unwrap();
    let mut sig = [0u8; 64];
    m.sign(s, &[5; 32], Some(&mut sig)).unwrap();
    assert!(verify(&dev.point(3), &[5; 32], &sig));
    let fresh = attribute(&m, s, slot.public_handle(), CKA_EC_POINT);
    assert_eq!(&fresh[3..], dev.point(3).as_slice());
    // And the store now holds the new key for later processes.
    let later = module(&dev, config(dir.path(), ""));
    let s2 = later.open_session(0, RO).unwrap();
    assert_eq!(
        attribute(&later, s2, slot.public_handle(), CKA_EC_POINT),
        fresh
    );
}

#[test]
fn finds_and_attribute_reads_never_call_the_device() {
    let dir = tempfile::tempdir().unwrap();
    let dev = SoftDevice::new("ZYMKEY4i", 3);
    let m = module(&dev, config(dir.path(), "[labels]\n1 = \"backup\"\n"));
    let s = m.open_session(0, RO).unwrap();
    let loaded = dev.calls();
    assert_eq!(loaded.1, 3, "each public key read once");
    assert_eq!(find(&m, s, &[]).len(), 6);
    assert_eq!(find(&m, s, &[class(CKO_PRIVATE_KEY)]).len(), 3);
    assert_eq!(find(&m, s, &[(CKA_ID, vec![0, 1])]).len(), 2);
    assert_eq!(find(&m, s, &[(CKA_LABEL, b"backup".to_vec())]).len(), 2);
    assert_eq!(find(&m, s, &[(CKA_LABEL, b"slot1".to_vec())]).len(), 0);
    assert_eq!(
        find(
            &m,
            s,
            &[
                class(CKO_PUBLIC_KEY),
                (CKA_ID, vec![0, 2]),
                (CKA_LABEL, b"slot2".to_vec())
            ]
        )
        .len(),
        1
    );
    assert_eq!(
        find(
            &m,
            s,
            &[(CKA_KEY_TYPE, ulong_bytes(CKK_EC)), (CKA_SIGN, vec![1])]
        )
        .len(),
        3
    );
    assert_eq!(find(&m, s, &[class(CKO_CERTIFICATE)]).len(), 0);
    // Attributes read while a search is active on the same session.
    m.find_objects_init(s, &[class(CKO_PRIVATE_KEY)]).unwrap();
    let mut seen = Vec::new();
    loop {
        let batch = m.find_objects(s, 1).unwrap();
        let Some(&h) = batch.first() else { break };
        seen.push(attribute(&m, s, h, CKA_LABEL));
        assert_eq!(attribute(&m, s, h, CKA_EC_POINT).len(), 67);
    }
    m.find_objects_final(s).unwrap();
    assert_eq!(
        seen,
        vec![b"slot0".to_vec(), b"backup".to_vec(), b"slot2".to_vec()]
    );
    assert_eq!(dev.calls(), loaded);
    // Handles are stable.
    assert_eq!(
        find(&m, s, &[class(CKO_PRIVATE_KEY)]),
        find(&m, s, &[class(CKO_PRIVATE_KEY)])
    );
}

#[test]
fn public_keys_are_cached_for_later_processes() {
    let dir = tempfile::tempdir().unwrap();
    let dev = SoftDevice::new("ZYMKEY4i", 3);
    let first = module(&dev, config(dir.path(), ""));
    first.open_session(0, RO).unwrap();
    assert_eq!(dev.calls().1, 3);
    let second = module(&dev, config(dir.path(), ""));
    let s = second.open_session(0, RO).unwrap();
    assert_eq!(
        dev.calls().1,
        3,
        "the second module reads the store, not the device"
    );
    let point = attribute(
        &second,
        s,
        zktoken::KeySlot::device(0).public_handle(),
        CKA_EC_POINT,
    );
    assert_eq!(&point[3..], dev.point(0).as_slice());
}

#[test]
fn pin_guards_private_objects() {
    let dir = tempfile::tempdir().unwrap();
    let dev = SoftDevice::new("ZYMKEY4i", 3);
    let m = module(&dev, config(dir.path(), "pin = \"4321\"\n"));
    let info = m.token_info(0).unwrap();
    assert_ne!(info.flags & CKF_LOGIN_REQUIRED, 0);
    let s = m.open_session(0, RO).unwrap();
    assert_eq!(find(&m, s, &[class(CKO_PRIVATE_KEY)]).len(), 0);
    assert_eq!(find(&m, s, &[class(CKO_PUBLIC_KEY)]).len(), 3);
    let key = zktoken::KeySlot::device(0).private_handle();
    assert_eq!(
        m.sign_init(s, CKM_ECDSA, false, key).unwrap_err().rv(),
        CKR_USER_NOT_LOGGED_IN
    );
    assert_eq!(
        m.login(s, CKU_USER, Some(b"1234")).unwrap_err().rv(),
        CKR_PIN_INCORRECT
    );
    m.login(s, CKU_USER, Some(b"4321")).unwrap();
    assert_eq!(
        m.login(s, CKU_USER, Some(b"4321")).unwrap_err().rv(),
        CKR_USER_ALREADY_LOGGED_IN
    );
    assert_eq!(m.session_info(s).unwrap().state, CKS_RO_USER_FUNCTIONS);
    assert_eq!(find(&m, s, &[class(CKO_PRIVATE_KEY)]).len(), 3);
    m.sign_init(s, CKM_ECDSA, false, key).unwrap();
    m.logout(s).unwrap();
    let rw = m.open_session(0, RW).unwrap();
    // Before login a private key does not exist, for C_DestroyObject too.
    assert_eq!(
        m.destroy_object(rw, key).unwrap_err().rv(),
        CKR_OBJECT_HANDLE_INVALID
    );
    m.close_session(rw).unwrap();
    assert_eq!(m.logout(s).unwrap_err().rv(), CKR_USER_NOT_LOGGED_IN);
}

/// A PIN longer than ulMaxPinLen is refused on its length alone, before any
/// comparison: even the configured PIN, when that is longer.
#[test]
fn pins_longer_than_the_maximum_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let dev = SoftDevice::new("ZYMKEY4i", 3);
    let max = module(&dev, config(dir.path(), "pin = \"1\"\n"))
        .token_info(0)
        .unwrap()
        .ulMaxPinLen as usize;
    let long = "x".repeat(max + 1);
    let m = module(&dev, config(dir.path(), &format!("pin = \"{long}\"\n")));
    let s = m.open_session(0, RO).unwrap();
    assert_eq!(
        m.login(s, CKU_USER, Some(long.as_bytes()))
            .unwrap_err()
            .rv(),
        CKR_PIN_INCORRECT
    );
}

#[test]
fn no_pin_means_any_login_works() {
    let dir = tempfile::tempdir().unwrap();
    let dev = SoftDevice::new("ZYMKEY4i", 3);
    let m = module(&dev, config(dir.path(), ""));
    assert_eq!(m.token_info(0).unwrap().flags & CKF_LOGIN_REQUIRED, 0);
    let s = m.open_session(0, RO).unwrap();
    assert_eq!(m.session_info(s).unwrap().state, CKS_RO_PUBLIC_SESSION);
    m.login(s, CKU_USER, Some(b"whatever")).unwrap();
    assert_eq!(
        m.login(s, CKU_USER, None).unwrap_err().rv(),
        CKR_USER_ALREADY_LOGGED_IN
    );
    let rw = m.open_session(0, RW).unwrap();
    assert_eq!(m.session_info(rw).unwrap().state, CKS_RW_USER_FUNCTIONS);
    m.close_all_sessions(0).unwrap();
    let s = m.open_session(0, RO).unwrap();
    assert_eq!(
        m.session_info(s).unwrap().state,
        CKS_RO_PUBLIC_SESSION,
        "logged out with the last session"
    );
    assert_eq!(
        m.open_session(0, CKF_RW_SESSION).unwrap_err().rv(),
        CKR_SESSION_PARALLEL_NOT_SUPPORTED
    );
    assert_eq!(m.open_session(1, RO).unwrap_err().rv(), CKR_SLOT_ID_INVALID);
}

fn certificate_der() -> Vec<u8> {
    testkit::x509::Cert::new("device-01")
        .build(&testkit::x509::p256())
        .to_der()
        .unwrap()
}

#[test]
fn certificates_persist_and_session_objects_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let dev = SoftDevice::new("ZYMKEY4i", 3);
    let der = certificate_der();
    let template = vec![
        class(CKO_CERTIFICATE),
        (CKA_CERTIFICATE_TYPE, ulong_bytes(CKC_X_509)),
        (CKA_TOKEN, vec![1]),
        (CKA_ID, vec![0, 0]),
        (CKA_LABEL, b"slot0".to_vec()),
        (CKA_VALUE, der.clone()),
    ];
    let handle = {
        let m = module(&dev, config(dir.path(), ""));
        let ro = m.open_session(0, RO).unwrap();
        assert_eq!(
            m.create_object(ro, &template).unwrap_err().rv(),
            CKR_SESSION_READ_ONLY
        );
        let rw = m.open_session(0, RW).unwrap();
        let h = m.create_object(rw, &template).unwrap();
        let mut session_template = template.clone();
        session_template[2] = (CKA_TOKEN, vec![0]);
        let temp = m.create_object(ro, &session_template).unwrap();
        assert_eq!(find(&m, ro, &[class(CKO_CERTIFICATE)]).len(), 2);
        m.close_session(ro).unwrap();
        assert_eq!(find(&m, rw, &[class(CKO_CERTIFICATE)]), vec![h]);
        assert!(m.object_size(rw, temp).is_err());
        m.set_attribute_value(rw, h, &[(CKA_LABEL, b"device".to_vec())])
            .unwrap();
        assert_eq!(
            m.set_attribute_value(rw, h, &[(CKA_VALUE, vec![1])])
                .unwrap_err()
                .rv(),
            CKR_ATTRIBUTE_READ_ONLY
        );
        h
    };
    let m = module(&dev, config(dir.path(), ""));
    let s = m.open_session(0, RO).unwrap();
    let found = find(&m, s, &[class(CKO_CERTIFICATE), (CKA_ID, vec![0, 0])]);
    assert_eq!(found, vec![handle], "same handle in a new module instance");
    assert_eq!(attribute(&m, s, handle, CKA_VALUE), der);
    assert_eq!(attribute(&m, s, handle, CKA_LABEL), b"device");
    assert_eq!(
        m.destroy_object(s, handle).unwrap_err().rv(),
        CKR_SESSION_READ_ONLY
    );
    let rw = m.open_session(0, RW).unwrap();
    m.destroy_object(rw, handle).unwrap();
    assert!(find(&m, rw, &[class(CKO_CERTIFICATE)]).is_empty());
    assert_eq!(
        m.destroy_object(rw, handle).unwrap_err().rv(),
        CKR_OBJECT_HANDLE_INVALID
    );
}

#[test]
fn corrupt_store_is_an_error_and_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.sqlite3");
    let garbage = b"not a database ".repeat(300);
    std::fs::write(&path, &garbage).unwrap();
    let dev = SoftDevice::new("ZYMKEY4i", 3);
    let m = module(&dev, config(dir.path(), ""));
    let s = m.open_session(0, RW).unwrap();
    // Writing is refused with an error naming the file.
    let err = m
        .create_object(
            s,
            &[
                class(CKO_DATA),
                (CKA_TOKEN, vec![1]),
                (CKA_VALUE, b"x".to_vec()),
            ],
        )
        .unwrap_err();
    assert_eq!(err.rv(), CKR_GENERAL_ERROR);
    assert!(err.to_string().contains(path.to_str().unwrap()), "{err}");
    // The device keys are still listed: only the store's own objects are missing.
    assert_eq!(find(&m, s, &[class(CKO_PRIVATE_KEY)]).len(), 3);
    assert!(find(&m, s, &[class(CKO_DATA)]).is_empty());
    // Signing does not need the store.
    m.sign_init(
        s,
        CKM_ECDSA,
        false,
        zktoken::KeySlot::device(0).private_handle(),
    )
    .unwrap();
    let mut sig = [0u8; 64];
    m.sign(s, &[3; 32], Some(&mut sig)).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), garbage);
}

#[test]
fn key_generation_and_removal_on_a_key_store_model() {
    let dir = tempfile::tempdir().unwrap();
    let dev = SoftDevice::new("HSM6", 12);
    let m = module(&dev, config(dir.path(), ""));
    assert!(m.mechanism_list(0).unwrap().contains(&CKM_EC_KEY_PAIR_GEN));
    let ro = m.open_session(0, RO).unwrap();
    let rw = m.open_session(0, RW).unwrap();
    let private_template = vec![(CKA_LABEL, b"mine".to_vec()), (CKA_ID, vec![0xAB])];
    assert_eq!(
        m.generate_key_pair(ro, CKM_EC_KEY_PAIR_GEN, false, &[], &private_template)
            .unwrap_err()
            .rv(),
        CKR_SESSION_READ_ONLY
    );
    assert_eq!(
        m.generate_key_pair(
            rw,
            CKM_EC_KEY_PAIR_GEN,
            false,
            &[(CKA_EC_PARAMS, vec![6, 3, 1, 2, 3])],
            &[]
        )
        .unwrap_err()
        .rv(),
        CKR_ATTRIBUTE_VALUE_INVALID
    );
    let k1 = zktoken::testing::SECP256K1_PARAMS.to_vec();
    let (public, private) = m
        .generate_key_pair(
            rw,
            CKM_EC_KEY_PAIR_GEN,
            false,
            &[(CKA_EC_PARAMS, k1.clone())],
            &private_template,
        )
        .unwrap();
    assert_eq!(
        find(&m, ro, &[(CKA_LABEL, b"mine".to_vec())]),
        vec![private, public]
    );
    assert_eq!(attribute(&m, ro, public, CKA_EC_PARAMS), k1);
    assert_eq!(attribute(&m, ro, private, CKA_ID), vec![0xAB]);
    // A later module instance keeps the label and id.
    let again = module(&dev, config(dir.path(), ""));
    let s2 = again.open_session(0, RO).unwrap();
    assert_eq!(find(&again, s2, &[(CKA_ID, vec![0xAB])]).len(), 2);
    // Factory keys stay; the generated one goes.
    let factory = zktoken::KeySlot::device(0).private_handle();
    assert_eq!(
        m.destroy_object(rw, factory).unwrap_err().rv(),
        CKR_ACTION_PROHIBITED
    );
    assert_eq!(
        m.destroy_object(rw, public).unwrap_err().rv(),
        CKR_ACTION_PROHIBITED
    );
    m.destroy_object(rw, private).unwrap();
    assert!(find(&m, ro, &[(CKA_LABEL, b"mine".to_vec())]).is_empty());
    // The public key went with it; destroying it too is fine, once.
    m.destroy_object(rw, public).unwrap();
    assert_eq!(
        m.destroy_object(rw, public).unwrap_err().rv(),
        CKR_OBJECT_HANDLE_INVALID
    );
    assert_eq!(
        m.destroy_object(rw, private).unwrap_err().rv(),
        CKR_OBJECT_HANDLE_INVALID
    );
    assert!(!dev.keys.lock().unwrap().contains_key(&16));
}

#[test]
fn a_handle_to_a_key_replaced_by_another_process_fails() {
    let dir = tempfile::tempdir().unwrap();
    let dev = SoftDevice::new("HSM6", 12);
    let label = |l: &[u8]| vec![(CKA_LABEL, l.to_vec()), (CKA_ID, l.to_vec())];
    let first = module(&dev, config(dir.path(), ""));
    let s1 = first.open_session(0, RW).unwrap();
    let (_, chosen) = first
        .generate_key_pair(s1, CKM_EC_KEY_PAIR_GEN, false, &[], &label(b"chosen"))
        .unwrap();
    let mut sig = [0u8; 64];
    first.sign_init(s1, CKM_ECDSA, false, chosen).unwrap();
    first.sign(s1, &[1; 32], Some(&mut sig)).unwrap();
    let chosen_point = dev.point(16);
    assert!(verify(&chosen_point, &[1; 32], &sig));
    // A second process destroys that key and generates another in its slot.
    let second = module(&dev, config(dir.path(), ""));
    let s2 = second.open_session(0, RW).unwrap();
    second.destroy_object(s2, chosen).unwrap();
    let (_, other) = second
        .generate_key_pair(s2, CKM_EC_KEY_PAIR_GEN, false, &[], &label(b"other"))
        .unwrap();
    assert_eq!(other, chosen, "same slot, same handle number");
    assert_ne!(dev.point(16), chosen_point);
    // The first process's handle is stale: it never signs with the other key.
    first.sign_init(s1, CKM_ECDSA, false, chosen).unwrap();
    let mut sig = [0u8; 64];
    assert_eq!(
        first.sign(s1, &[2; 32], Some(&mut sig)).unwrap_err().rv(),
        CKR_KEY_HANDLE_INVALID
    );
    assert_eq!(sig, [0u8; 64], "no signature by the other key is returned");
    assert_eq!(
        first
            .sign_init(s1, CKM_ECDSA, false, chosen)
            .unwrap_err()
            .rv(),
        CKR_KEY_HANDLE_INVALID
    );
    assert!(find(&first, s1, &[(CKA_LABEL, b"chosen".to_vec())]).is_empty());
    // What the second process recorded for its key stays.
    let later = module(&dev, config(dir.path(), ""));
    let s3 = later.open_session(0, RO).unwrap();
    assert_eq!(find(&later, s3, &[(CKA_ID, b"other".to_vec())]).len(), 2);
    let point = attribute(
        &later,
        s3,
        zktoken::KeySlot::device(16).public_handle(),
        CKA_EC_POINT,
    );
    assert_eq!(&point[3..], dev.point(16).as_slice());
}

/// Generates a key labelled and identified `label`; the device makes it,
/// and the calling "process" dies before it hears the slot.
fn generation_killed_after_the_device_answered(dev: &Arc<SoftDevice>, dir: &Path, label: &[u8]) {
    let m = module(dev, config(dir, ""));
    let rw = m.open_session(0, RW).unwrap();
    dev.die_after_generating.store(true, Ordering::SeqCst);
    let template = vec![(CKA_LABEL, label.to_vec()), (CKA_ID, label.to_vec())];
    let died = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        m.generate_key_pair(rw, CKM_EC_KEY_PAIR_GEN, false, &[], &template)
    }));
    assert!(died.is_err());
    std::mem::forget(m); // a dead process finalizes nothing
}

#[test]
fn a_key_whose_generation_died_gets_its_label_and_id_in_the_next_process() {
    let dir = tempfile::tempdir().unwrap();
    let dev = SoftDevice::new("HSM6", 12);
    generation_killed_after_the_device_answered(&dev, dir.path(), b"asked");
    assert!(
        dev.keys.lock().unwrap().contains_key(&16),
        "the device made it"
    );
    let next = module(&dev, config(dir.path(), ""));
    let s = next.open_session(0, RO).unwrap();
    let found = find(&next, s, &[(CKA_ID, b"asked".to_vec())]);
    assert_eq!(found.len(), 2, "both objects of slot 16, labelled as asked");
    let private = zktoken::KeySlot::device(16).private_handle();
    assert_eq!(attribute(&next, s, private, CKA_LABEL), b"asked");
    // Recorded for good: a later process sees it through the cache and store.
    let later = module(&dev, config(dir.path(), ""));
    let s = later.open_session(0, RW).unwrap();
    assert_eq!(find(&later, s, &[(CKA_LABEL, b"asked".to_vec())]).len(), 2);
    let (_, next_key) = later
        .generate_key_pair(s, CKM_EC_KEY_PAIR_GEN, false, &[], &[])
        .unwrap();
    assert_eq!(next_key, zktoken::KeySlot::device(17).private_handle());
}

#[test]
fn the_next_generation_finishes_one_that_died() {
    let dir = tempfile::tempdir().unwrap();
    let dev = SoftDevice::new("HSM6", 12);
    // The surviving process loaded the token before the other one died.
    let survivor = module(&dev, config(dir.path(), ""));
    let rw = survivor.open_session(0, RW).unwrap();
    generation_killed_after_the_device_answered(&dev, dir.path(), b"asked");
    let template = vec![(CKA_LABEL, b"mine".to_vec())];
    let (_, mine) = survivor
        .generate_key_pair(rw, CKM_EC_KEY_PAIR_GEN, false, &[], &template)
        .unwrap();
    assert_eq!(mine, zktoken::KeySlot::device(17).private_handle());
    assert_eq!(find(&survivor, rw, &[(CKA_ID, b"asked".to_vec())]).len(), 2);
    let later = module(&dev, config(dir.path(), ""));
    let s = later.open_session(0, RO).unwrap();
    assert_eq!(find(&later, s, &[(CKA_ID, b"asked".to_vec())]).len(), 2);
    assert_eq!(find(&later, s, &[(CKA_LABEL, b"mine".to_vec())]).len(), 2);
}

#[test]
fn keys_of_other_tools_are_never_taken_for_a_dead_generation() {
    let dir = tempfile::tempdir().unwrap();
    let dev = SoftDevice::new("HSM6", 12);
    generation_killed_after_the_device_answered(&dev, dir.path(), b"asked");
    // Another tool makes a key before any process of this module runs.
    dev.keys
        .lock()
        .unwrap()
        .insert(17, ec_key(Nid::X9_62_PRIME256V1));
    let next = module(&dev, config(dir.path(), ""));
    let s = next.open_session(0, RO).unwrap();
    assert!(find(&next, s, &[(CKA_ID, b"asked".to_vec())]).is_empty());
    assert_eq!(dev.keys.lock().unwrap().len(), 14, "nothing was removed");
    // The generation's note is gone: the next process does not look again.
    let (_, public_key_reads) = dev.calls();
    let later = module(&dev, config(dir.path(), ""));
    let s = later.open_session(0, RO).unwrap();
    assert!(find(&later, s, &[(CKA_ID, b"asked".to_vec())]).is_empty());
    assert_eq!(dev.calls().1, public_key_reads);
}

#[test]
fn a_generation_in_progress_elsewhere_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let dev = SoftDevice::new("HSM6", 12);
    generation_killed_after_the_device_answered(&dev, dir.path(), b"asked");
    // Another process holds the key generation lock (as while it generates).
    let lock = std::fs::File::open(dir.path().join("store.sqlite3.keystore.lock")).unwrap();
    lock.lock().unwrap();
    let next = module(&dev, config(dir.path(), ""));
    let s = next.open_session(0, RO).unwrap();
    assert!(find(&next, s, &[(CKA_ID, b"asked".to_vec())]).is_empty());
    drop(lock);
    let later = module(&dev, config(dir.path(), ""));
    let s = later.open_session(0, RO).unwrap();
    assert_eq!(find(&later, s, &[(CKA_ID, b"asked".to_vec())]).len(), 2);
}

/// Generates a key labelled `label` in slot 16 and destroys it; the device
/// removes it, and the calling "process" dies before it hears so.
fn removal_killed_after_the_device_answered(dev: &Arc<SoftDevice>, dir: &Path, label: &[u8]) {
    let m = module(dev, config(dir, ""));
    let rw = m.open_session(0, RW).unwrap();
    let template = vec![(CKA_LABEL, label.to_vec())];
    let (_, private) = m
        .generate_key_pair(rw, CKM_EC_KEY_PAIR_GEN, false, &[], &template)
        .unwrap();
    assert_eq!(private, zktoken::KeySlot::device(16).private_handle());
    dev.die_after_removing.store(true, Ordering::SeqCst);
    let died = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        m.destroy_object(rw, private)
    }));
    assert!(died.is_err());
    std::mem::forget(m);
}

#[test]
fn a_key_whose_removal_died_is_not_shown_by_the_next_process() {
    let dir = tempfile::tempdir().unwrap();
    let dev = SoftDevice::new("HSM6", 12);
    removal_killed_after_the_device_answered(&dev, dir.path(), b"doomed");
    assert!(
        !dev.keys.lock().unwrap().contains_key(&16),
        "the device removed it"
    );
    let next = module(&dev, config(dir.path(), ""));
    let s = next.open_session(0, RW).unwrap();
    assert!(find(&next, s, &[(CKA_LABEL, b"doomed".to_vec())]).is_empty());
    assert_eq!(find(&next, s, &[class(CKO_PRIVATE_KEY)]).len(), 12);
    // The slot is free again, for the next generation.
    let (_, private) = next
        .generate_key_pair(s, CKM_EC_KEY_PAIR_GEN, false, &[], &[])
        .unwrap();
    assert_eq!(private, zktoken::KeySlot::device(16).private_handle());
}

#[test]
fn a_dead_removal_spares_another_key_in_its_slot() {
    let dir = tempfile::tempdir().unwrap();
    let dev = SoftDevice::new("HSM6", 12);
    removal_killed_after_the_device_answered(&dev, dir.path(), b"doomed");
    // Another tool makes a key in the freed slot before this module runs again.
    dev.keys
        .lock()
        .unwrap()
        .insert(16, ec_key(Nid::X9_62_PRIME256V1));
    let next = module(&dev, config(dir.path(), ""));
    let s = next.open_session(0, RO).unwrap();
    assert!(dev.keys.lock().unwrap().contains_key(&16), "not removed");
    assert!(find(&next, s, &[(CKA_LABEL, b"doomed".to_vec())]).is_empty());
}

#[test]
fn key_generation_is_refused_without_a_key_store() {
    let dir = tempfile::tempdir().unwrap();
    let dev = SoftDevice::new("ZYMKEY4i", 3);
    let m = module(&dev, config(dir.path(), ""));
    assert!(!m.mechanism_list(0).unwrap().contains(&CKM_EC_KEY_PAIR_GEN));
    let rw = m.open_session(0, RW).unwrap();
    assert_eq!(
        m.generate_key_pair(rw, CKM_EC_KEY_PAIR_GEN, false, &[], &[])
            .unwrap_err()
            .rv(),
        CKR_MECHANISM_INVALID
    );
    assert_eq!(
        m.destroy_object(rw, zktoken::KeySlot::device(0).private_handle())
            .unwrap_err()
            .rv(),
        CKR_ACTION_PROHIBITED
    );
}

#[test]
fn edwards_keys_are_hidden_unless_configured() {
    let dir = tempfile::tempdir().unwrap();
    let dev = SoftDevice::new("HSM6", 12);
    dev.raw_keys.lock().unwrap().insert(17, vec![9u8; 32]);
    let m = module(&dev, config(dir.path(), ""));
    let s = m.open_session(0, RO).unwrap();
    assert!(find(&m, s, &[(CKA_ID, vec![0, 17])]).is_empty());
    assert!(find(&m, s, &[(CKA_KEY_TYPE, ulong_bytes(CKK_EC_EDWARDS))]).is_empty());
    // 32 bytes are an Ed25519 or an X25519 key: only a recorded curve tells.
    let dir2 = tempfile::tempdir().unwrap();
    let m = module(&dev, config(dir2.path(), "expose_non_ecdsa_keys = true\n"));
    let s = m.open_session(0, RO).unwrap();
    assert!(find(&m, s, &[(CKA_ID, vec![0, 17])]).is_empty());
    drop(m);
    let store = rusqlite::Connection::open(dir2.path().join("store.sqlite3")).unwrap();
    store
        .execute(
            "INSERT INTO device_keys (slot, keyring, curve, public_key, generated)
             VALUES (17, 0, 'ed25519', ?1, 1)",
            [vec![9u8; 32]],
        )
        .unwrap();
    drop(store);
    let m = module(&dev, config(dir2.path(), "expose_non_ecdsa_keys = true\n"));
    let s = m.open_session(0, RO).unwrap();
    let found = find(&m, s, &[(CKA_ID, vec![0, 17])]);
    assert_eq!(found.len(), 2);
    assert_eq!(
        attribute(&m, s, found[0], CKA_KEY_TYPE),
        ulong_bytes(CKK_EC_EDWARDS)
    );
}

#[test]
fn no_device_means_no_token() {
    let dir = tempfile::tempdir().unwrap();
    let m = Module::with_device(config(dir.path(), ""), PathBuf::from("/missing.so"), None);
    assert_eq!(m.slot_list(true), Vec::<CK_SLOT_ID>::new());
    assert_eq!(m.slot_list(false), vec![0]);
    assert_eq!(m.slot_info(0).unwrap().flags & CKF_TOKEN_PRESENT, 0);
    assert_eq!(m.token_info(0).unwrap_err().rv(), CKR_TOKEN_NOT_PRESENT);
    assert_eq!(
        m.open_session(0, RO).unwrap_err().rv(),
        CKR_TOKEN_NOT_PRESENT
    );
}

#[test]
fn token_info_comes_from_the_device() {
    let dir = tempfile::tempdir().unwrap();
    let dev = SoftDevice::new("ZYMKEY4i", 3);
    let m = module(&dev, config(dir.path(), "token_label = \"edge\"\n"));
    let info = m.token_info(0).unwrap();
    assert_eq!(&info.label[..6], b"edge  ");
    assert_eq!(&info.manufacturerID[..7], b"Zymbit ");
    assert_eq!(&info.model[..9], b"ZYMKEY4i ");
    assert_eq!(&info.serialNumber, b"SOFT-0001       ");
    assert_eq!(
        info.flags & (CKF_TOKEN_INITIALIZED | CKF_RNG),
        CKF_TOKEN_INITIALIZED | CKF_RNG
    );
    assert_eq!(
        (info.firmwareVersion.major, info.firmwareVersion.minor),
        (1, 2)
    );
    let s = m.open_session(0, RO).unwrap();
    let mut random = [0u8; 48];
    m.generate_random(s, &mut random).unwrap();
    assert_ne!(random, [0u8; 48]);
}

#[test]
fn threads_share_the_module() {
    let dir = tempfile::tempdir().unwrap();
    let dev = SoftDevice::new("ZYMKEY4i", 3);
    let m = Arc::new(module(&dev, config(dir.path(), "")));
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let m = m.clone();
            let point = dev.point(i % 3);
            std::thread::spawn(move || {
                let s = m.open_session(0, RO).unwrap();
                for n in 0..20u8 {
                    let key = zktoken::KeySlot::device((i % 3) as u32).private_handle();
                    m.sign_init(s, CKM_ECDSA, false, key).unwrap();
                    let mut sig = [0u8; 64];
                    m.sign(s, &[n; 32], Some(&mut sig)).unwrap();
                    assert!(verify(&point, &[n; 32], &sig));
                }
                m.close_session(s).unwrap();
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(dev.calls().0, 80);
}

#[test]
fn foreign_public_keys_verify_and_can_be_removed() {
    let dir = tempfile::tempdir().unwrap();
    let dev = SoftDevice::new("HSM6", 12);
    let peer = ec_key(Nid::X9_62_PRIME256V1);
    dev.foreign.lock().unwrap().insert(
        3,
        EcKey::from_private_components(peer.group(), peer.private_key(), peer.public_key())
            .unwrap(),
    );
    let m = module(&dev, config(dir.path(), ""));
    let s = m.open_session(0, RW).unwrap();
    let found = find(&m, s, &[(CKA_ID, vec![0x80, 3])]);
    assert_eq!(found.len(), 1, "public key only");
    let handle = found[0];
    assert_eq!(attribute(&m, s, handle, CKA_LABEL), b"foreign3");
    assert_eq!(
        attribute(&m, s, handle, CKA_CLASS),
        ulong_bytes(CKO_PUBLIC_KEY)
    );
    let digest = openssl::sha::sha256(b"peer message");
    let raw = sign_raw(&peer, &digest);
    m.verify_init(s, CKM_ECDSA, false, handle).unwrap();
    m.verify(s, &digest, &raw).unwrap();
    assert_eq!(
        m.sign_init(s, CKM_ECDSA, false, handle).unwrap_err().rv(),
        CKR_KEY_FUNCTION_NOT_PERMITTED
    );
    m.destroy_object(s, handle).unwrap();
    assert!(dev.foreign.lock().unwrap().is_empty());
    assert!(find(&m, s, &[(CKA_ID, vec![0x80, 3])]).is_empty());
}

#[test]
fn an_uncreatable_store_leaves_keys_usable() {
    let dir = tempfile::tempdir().unwrap();
    // A store path below a regular file can never be created.
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, b"x").unwrap();
    let text = format!("store = {:?}\n", blocker.join("store.sqlite3"));
    let dev = SoftDevice::new("ZYMKEY4i", 3);
    let m = module(&dev, Config::parse(&text, "test").unwrap());
    let rw = m.open_session(0, RW).unwrap();
    assert_eq!(find(&m, rw, &[class(CKO_PRIVATE_KEY)]).len(), 3);
    let err = m
        .create_object(rw, &[class(CKO_DATA), (CKA_TOKEN, vec![1])])
        .unwrap_err();
    assert_eq!(err.rv(), CKR_GENERAL_ERROR);
    assert!(err.to_string().contains("store.sqlite3"), "{err}");
    // Session objects need no store.
    m.create_object(rw, &[class(CKO_DATA)]).unwrap();
}

#[test]
fn a_slow_signature_blocks_no_other_session() {
    let dir = tempfile::tempdir().unwrap();
    let dev = SoftDevice::new("ZYMKEY4i", 3);
    dev.sign_latency_ms.store(600, Ordering::SeqCst);
    let m = Arc::new(module(&dev, config(dir.path(), "")));
    let signer = {
        let m = m.clone();
        std::thread::spawn(move || {
            let s = m.open_session(0, RO).unwrap();
            let key = zktoken::KeySlot::device(0).private_handle();
            m.sign_init(s, CKM_ECDSA, false, key).unwrap();
            let mut sig = [0u8; 64];
            m.sign(s, &[1; 32], Some(&mut sig)).unwrap();
        })
    };
    while dev.calls().0 == 0 {
        std::thread::yield_now();
    }
    // The device is busy signing; everything else goes on meanwhile.
    let started = std::time::Instant::now();
    let s = m.open_session(0, RO).unwrap();
    assert_eq!(find(&m, s, &[class(CKO_PRIVATE_KEY)]).len(), 3);
    attribute(
        &m,
        s,
        zktoken::KeySlot::device(1).public_handle(),
        CKA_EC_POINT,
    );
    m.session_info(s).unwrap();
    m.token_info(0).unwrap();
    let took = started.elapsed();
    signer.join().unwrap();
    assert!(
        took < std::time::Duration::from_millis(300),
        "took {took:?}"
    );
}

/// Every device call a device has answered: (info and slot lists, public keys, signatures).
fn device_calls(dev: &SoftDevice) -> (usize, usize, usize) {
    (
        dev.info_reads.load(Ordering::SeqCst) + dev.slot_lists.load(Ordering::SeqCst),
        dev.public_keys.load(Ordering::SeqCst),
        dev.signs.load(Ordering::SeqCst),
    )
}

/// The device cache as the machine's next boot finds it: written in
/// another boot (a power cycle, or an SD image made on another Pi).
fn as_if_rebooted(dir: &Path) {
    let path = dir.join("store.sqlite3.device.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let boot = text
        .lines()
        .find(|l| l.starts_with("boot_id"))
        .expect("the cache names its boot");
    std::fs::write(&path, text.replace(boot, "boot_id = \"another-boot\"")).unwrap();
}

fn serial(m: &Module) -> String {
    String::from_utf8(m.token_info(0).unwrap().serialNumber.to_vec())
        .unwrap()
        .trim_end()
        .to_string()
}

/// Signs with slot 0 and checks the signature against the public key the
/// token shows for it.
fn sign_verifies_against_the_shown_key(m: &Module) -> bool {
    let s = m.open_session(0, RO).unwrap();
    let slot = zktoken::KeySlot::device(0);
    let point = attribute(m, s, slot.public_handle(), CKA_EC_POINT);
    let digest = [7u8; 32];
    m.sign_init(s, CKM_ECDSA, false, slot.private_handle())
        .unwrap();
    let mut sig = [0u8; 64];
    assert_eq!(m.sign(s, &digest, Some(&mut sig)).unwrap(), 64);
    m.close_session(s).unwrap();
    verify(&point[3..], &digest, &sig)
}

#[test]
fn the_cache_is_trusted_in_its_boot_and_confirmed_by_one_serial_read_in_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let dev = SoftDevice::new("HSM6", 12);
    module(&dev, config(dir.path(), ""))
        .open_session(0, RO)
        .unwrap();
    assert_eq!(
        device_calls(&dev),
        (5, 12, 0),
        "model, serial, firmware, 2 slot lists"
    );
    module(&dev, config(dir.path(), ""))
        .open_session(0, RO)
        .unwrap();
    assert_eq!(device_calls(&dev), (5, 12, 0), "same boot: no device call");
    as_if_rebooted(dir.path());
    let m = module(&dev, config(dir.path(), ""));
    m.open_session(0, RO).unwrap();
    assert_eq!(
        device_calls(&dev),
        (6, 12, 0),
        "another boot: the serial number only"
    );
    assert_eq!(serial(&m), "SOFT-0001");
    module(&dev, config(dir.path(), ""))
        .open_session(0, RO)
        .unwrap();
    assert_eq!(device_calls(&dev), (6, 12, 0), "confirmed for this boot");
}

#[test]
fn a_swapped_zymkey_shows_its_own_serial_keys_and_objects() {
    let dir = tempfile::tempdir().unwrap();
    let first = SoftDevice::named("ZYMKEY4i", 3, "ZK-FIRST", None);
    let der = certificate_der();
    {
        let m = module(&first, config(dir.path(), ""));
        let rw = m.open_session(0, RW).unwrap();
        m.create_object(
            rw,
            &[
                class(CKO_CERTIFICATE),
                (CKA_CERTIFICATE_TYPE, ulong_bytes(CKC_X_509)),
                (CKA_TOKEN, vec![1]),
                (CKA_ID, vec![0, 0]),
                (CKA_LABEL, b"slot0".to_vec()),
                (CKA_VALUE, der.clone()),
            ],
        )
        .unwrap();
    }
    // The power goes off, another Zymkey goes in; the store path is configured.
    as_if_rebooted(dir.path());
    let second = SoftDevice::named("ZYMKEY4i", 3, "ZK-SECOND", None);
    let m = module(&second, config(dir.path(), ""));
    assert_eq!(serial(&m), "ZK-SECOND");
    assert!(sign_verifies_against_the_shown_key(&m));
    let s = m.open_session(0, RO).unwrap();
    assert!(
        find(&m, s, &[class(CKO_CERTIFICATE)]).is_empty(),
        "the first Zymkey's certificate is not shown"
    );
    let point = attribute(
        &m,
        s,
        zktoken::KeySlot::device(1).public_handle(),
        CKA_EC_POINT,
    );
    assert_eq!(&point[3..], second.point(1).as_slice(), "slot 1 is its own");
    assert!(dir.path().join("store.sqlite3.ZK-FIRST").exists());
    drop(m);
    // The first Zymkey comes back: its store, certificate included, with it.
    as_if_rebooted(dir.path());
    let m = module(&first, config(dir.path(), ""));
    assert_eq!(serial(&m), "ZK-FIRST");
    assert!(sign_verifies_against_the_shown_key(&m));
    let s = m.open_session(0, RO).unwrap();
    let found = find(&m, s, &[class(CKO_CERTIFICATE)]);
    assert_eq!(found.len(), 1);
    assert_eq!(attribute(&m, s, found[0], CKA_VALUE), der);
    assert!(dir.path().join("store.sqlite3.ZK-SECOND").exists());
    assert!(!dir.path().join("store.sqlite3.ZK-FIRST").exists());
}

#[test]
fn another_emulated_device_in_the_same_boot_is_read_again() {
    let dir = tempfile::tempdir().unwrap();
    let first = SoftDevice::named("ZYMKEY4i", 3, "EMU-1", Some("/state/a\nEMU-1"));
    let m = module(&first, config(dir.path(), ""));
    assert_eq!(serial(&m), "EMU-1");
    drop(m);
    let second = SoftDevice::named("ZYMKEY4i", 3, "EMU-2", Some("/state/b\nEMU-2"));
    let m = module(&second, config(dir.path(), ""));
    assert_eq!(serial(&m), "EMU-2");
    assert!(sign_verifies_against_the_shown_key(&m));
    assert_eq!(
        device_calls(&second).0,
        4,
        "read whole: model, serial, firmware, slots"
    );
}

#[test]
fn a_store_without_an_owner_is_claimed_only_by_the_zymkey_whose_keys_it_caches() {
    let dir = tempfile::tempdir().unwrap();
    let golden = SoftDevice::named("ZYMKEY4i", 3, "ZK-GOLDEN", None);
    module(&golden, config(dir.path(), ""))
        .open_session(0, RO)
        .unwrap();
    // As a store written before owners were recorded.
    let store = dir.path().join("store.sqlite3");
    let c = rusqlite::Connection::open(&store).unwrap();
    c.execute_batch("DROP TABLE owner; PRAGMA user_version = 2;")
        .unwrap();
    drop(c);
    as_if_rebooted(dir.path());
    let clone = SoftDevice::named("ZYMKEY4i", 3, "ZK-CLONE", None);
    let m = module(&clone, config(dir.path(), ""));
    assert!(sign_verifies_against_the_shown_key(&m));
    let set_aside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("store.sqlite3.unowned-"))
        .collect();
    assert_eq!(set_aside.len(), 1, "{set_aside:?}");
    drop(m);
    // The golden Zymkey's own store, unowned, is claimed by it.
    std::fs::rename(dir.path().join(&set_aside[0]), &store).unwrap();
    as_if_rebooted(dir.path());
    let before = device_calls(&golden).1;
    let m = module(&golden, config(dir.path(), ""));
    assert!(sign_verifies_against_the_shown_key(&m));
    assert_eq!(
        device_calls(&golden).1 - before,
        3,
        "each cached key compared once"
    );
    assert!(std::fs::read_dir(dir.path()).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .contains("unowned")));
}

#[test]
fn a_key_store_is_found_by_asking_the_device_not_by_its_model_name() {
    // A production ZYMKEY5's model string is not published: whatever it is,
    // the slot list tells that it has a key store.
    for model in ["ZYMKEY5", "HSM60", "SOMETHING-NEW"] {
        let dir = tempfile::tempdir().unwrap();
        let dev = SoftDevice::named(model, 14, "ZK5-1", None);
        let m = module(&dev, config(dir.path(), ""));
        let s = m.open_session(0, RW).unwrap();
        assert_eq!(
            find(&m, s, &[class(CKO_PRIVATE_KEY)]).len(),
            14,
            "{model}: the factory slots the device lists"
        );
        assert!(
            m.mechanism_list(0).unwrap().contains(&CKM_EC_KEY_PAIR_GEN),
            "{model}"
        );
        let (_, private) = m
            .generate_key_pair(
                s,
                CKM_EC_KEY_PAIR_GEN,
                false,
                &[],
                &[(CKA_LABEL, b"made".to_vec())],
            )
            .unwrap();
        assert_eq!(private, zktoken::KeySlot::device(16).private_handle());
        let info = m.token_info(0).unwrap();
        assert!(
            info.model.starts_with(model.as_bytes()),
            "the model string is shown as the device gives it"
        );
    }
    // No slot list at all: the three documented factory slots, no key store.
    let dir = tempfile::tempdir().unwrap();
    let dev = SoftDevice::named("HSM4", 3, "ZK4-1", None);
    let m = module(&dev, config(dir.path(), ""));
    let s = m.open_session(0, RW).unwrap();
    assert_eq!(find(&m, s, &[class(CKO_PRIVATE_KEY)]).len(), 3);
    assert!(!m.mechanism_list(0).unwrap().contains(&CKM_EC_KEY_PAIR_GEN));
}
