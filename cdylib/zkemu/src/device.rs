//! The emulated device: every operation of the C API, in safe Rust.
//!
//! Each operation first goes through [`Device::begin`], which appends the trace
//! line, bumps the counter, sleeps the configured latency (for operations
//! that reach the secure element) and applies an
//! injected fault, so all of these see exactly the calls that reach the device.
//! None of this takes the state lock: only changes of state do (key
//! generation and removal, foreign keys, creating the state).

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex, Once};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::{Config, MODEL_ENV};
use crate::counters::Counters;
use crate::crypto::{self, KeyType, DIGEST_LEN, SIGNATURE_LEN};
use crate::errno::{Errno, Result};
use crate::fault;
use crate::keystore::KeyStore;
use crate::model::{Keyring, Model};
use crate::operation::{Operation, Target};
use crate::state::{Identity, StateDir};
use crate::trace::Trace;

/// Firmware version string of every emulated device.
pub const FIRMWARE_VERSION: &str = concat!("zkemu-", env!("CARGO_PKG_VERSION"));

/// Largest `zkGetRandBytes` request served.
const MAX_RANDOM_LEN: usize = 1 << 24;

/// What this process keeps of one state directory, shared by all its
/// contexts: the key store with its decoded keys, and the mapped counters.
#[derive(Debug)]
struct Backing {
    keys: KeyStore,
    counters: Counters,
}

/// The backing of a state directory, made on its first open in this process.
/// Keyed by the directory's device and inode, so a directory removed and made
/// again is a new device.
fn backing(config: &Config) -> Result<Arc<Backing>> {
    /// A directory's device and inode numbers.
    type DirId = (u64, u64);
    static OPENED: Mutex<BTreeMap<DirId, Arc<Backing>>> = Mutex::new(BTreeMap::new());
    let state = StateDir::new(config.dir.clone());
    state.ensure_dirs(&[])?;
    let meta = std::fs::metadata(state.root())?;
    let id = (meta.dev(), meta.ino());
    // Entries are inserted whole: a panic elsewhere leaves the map valid.
    let mut opened = OPENED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(backing) = opened.get(&id) {
        return Ok(backing.clone());
    }
    let counters = Counters::open(&state)?;
    let backing = Arc::new(Backing {
        keys: KeyStore::open(state)?,
        counters,
    });
    opened.insert(id, backing.clone());
    Ok(backing)
}

/// One open device: the state it works on and the settings read at `zkOpen`.
#[derive(Debug)]
pub struct Device {
    backing: Arc<Backing>,
    identity: Identity,
    model: Model,
    config: Config,
    trace: Option<Trace>,
}

impl Device {
    /// `zkOpen`: reads the environment, creates the state on first use, and
    /// announces itself on stderr once per process.
    pub fn open() -> Result<Device> {
        let config = Config::from_env().map_err(|message| {
            notice(format_args!("{message}"));
            Errno::INVAL
        })?;
        Device::open_with(config)
    }

    pub fn open_with(config: Config) -> Result<Device> {
        let backing = backing(&config)?;
        let state = backing.keys.dir();
        let identity = load_or_create(&backing.keys, config.model.unwrap_or(Model::DEFAULT))?;
        let model = identity.model()?;
        if let Some(asked) = config.model.filter(|asked| *asked != model) {
            static MISMATCH: Once = Once::new();
            MISMATCH.call_once(|| {
                notice(format_args!(
                    "{MODEL_ENV}={asked} ignored: the state in {} was created as {model} \
                     (use another state directory for another model)",
                    state.root().display()
                ))
            });
        }
        static BANNER: Once = Once::new();
        BANNER.call_once(|| {
            notice(format_args!(
                "Zymkey emulator (model {model}, state {}): \
                 keys are plain files, not a security boundary",
                state.root().display()
            ))
        });
        let trace = config
            .trace
            .as_ref()
            .and_then(|path| Trace::open(path).map_err(|e| trace_unusable(path, e)).ok());
        let device = Device {
            backing,
            identity,
            model,
            config,
            trace,
        };
        device.begin(Operation::Open, Target::None)?;
        Ok(device)
    }

    /// `zkClose`.
    pub fn close(&self) -> Result<()> {
        self.begin(Operation::Close, Target::None)
    }

    /// Everything a call does on reaching the device, before its own work.
    fn begin(&self, operation: Operation, target: Target) -> Result<()> {
        if let (Some(trace), Some(path)) = (&self.trace, &self.config.trace) {
            if let Err(e) = trace.append(operation, target) {
                trace_unusable(path, e);
            }
        }
        self.backing.counters.increment(operation);
        if !self.config.latency.is_zero() && operation.reaches_secure_element() {
            std::thread::sleep(self.config.latency);
        }
        if fault::take(self.backing.keys.dir(), operation)? {
            return Err(Errno::IO);
        }
        Ok(())
    }

    /// `zkGetRandBytes`.
    pub fn random(&self, len: i32) -> Result<Vec<u8>> {
        self.begin(Operation::Random, Target::None)?;
        let len = usize::try_from(len).map_err(|_| Errno::INVAL)?;
        if len > MAX_RANDOM_LEN {
            return Err(Errno::INVAL);
        }
        let mut bytes = vec![0u8; len];
        openssl::rand::rand_bytes(&mut bytes)?;
        Ok(bytes)
    }

    /// `zkGenECDSASigFromDigest`: raw r‖s.
    pub fn sign(&self, slot: i32, digest: &[u8; DIGEST_LEN]) -> Result<[u8; SIGNATURE_LEN]> {
        self.begin(Operation::Sign, Target::Device(slot))?;
        self.model.check_slot(Keyring::Device, slot)?;
        self.backing.keys.private_key(slot)?.sign_digest(digest)
    }

    /// `zkGenECDSASigFromDigestWithRecID`: raw r‖s and the recovery id.
    pub fn sign_with_recovery_id(
        &self,
        slot: i32,
        digest: &[u8; DIGEST_LEN],
    ) -> Result<([u8; SIGNATURE_LEN], u8)> {
        self.begin(Operation::Sign, Target::Device(slot))?;
        self.model.check_slot(Keyring::Device, slot)?;
        let pair = self.backing.keys.private_key(slot)?;
        let rs = pair.sign_digest(digest)?;
        Ok((rs, pair.recovery_id(digest, &rs)?))
    }

    /// `zkVerifyECDSASigFromDigest[WithForeignKeySlot]`: 1 valid, 0 invalid.
    pub fn verify(
        &self,
        keyring: Keyring,
        slot: i32,
        digest: &[u8; DIGEST_LEN],
        signature: &[u8],
    ) -> Result<bool> {
        self.begin(Operation::Verify, target(keyring, slot))?;
        self.model.check_slot(keyring, slot)?;
        match keyring {
            Keyring::Device => {
                let pair = self.backing.keys.private_key(slot)?;
                crypto::verify_digest(&pair.key, digest, signature)
            }
            Keyring::Foreign => {
                let key = self.backing.keys.foreign_key(slot)?;
                crypto::verify_digest(&key, digest, signature)
            }
        }
    }

    /// `zkExportPubKey`, `zkGetECDSAPubKey`: raw X‖Y, or 32 bytes for Ed25519/X25519.
    pub fn public_key(&self, keyring: Keyring, slot: i32) -> Result<Vec<u8>> {
        self.begin(Operation::ExportPubKey, target(keyring, slot))?;
        self.model.check_slot(keyring, slot)?;
        match keyring {
            Keyring::Device => {
                let pair = self.backing.keys.private_key(slot)?;
                crypto::raw_public_key(&pair.key)
            }
            Keyring::Foreign => {
                let key = self.backing.keys.foreign_key(slot)?;
                crypto::raw_public_key(&key)
            }
        }
    }

    /// `zkGetAllocSlotsList`: the keyring's size and its allocated slots.
    pub fn allocated_slots(&self, keyring: Keyring) -> Result<(i32, Vec<i32>)> {
        self.begin(Operation::SlotList, Target::None)?;
        let capacity = self.model.capacity(keyring)?;
        Ok((capacity, self.backing.keys.slots(keyring)?))
    }

    /// `zkGenKeyPair`: the new slot.
    pub fn generate_key(&self, key_type: i32) -> Result<i32> {
        self.begin(Operation::GenKey, Target::None)?;
        let range = self.model.allocatable_slots(Keyring::Device)?;
        let key = crypto::generate(KeyType::from_c(key_type)?)?;
        self.backing.keys.add_private_key(range, &key)
    }

    /// `zkRemoveKey`. Factory keys are `EPERM`.
    pub fn remove_key(&self, keyring: Keyring, slot: i32) -> Result<()> {
        self.begin(Operation::RemoveKey, target(keyring, slot))?;
        if !self.model.can_generate_keys() {
            return Err(Errno::OPNOTSUPP);
        }
        self.model.check_slot(keyring, slot)?;
        if keyring == Keyring::Device && self.model.is_factory_slot(slot) {
            return Err(Errno::PERM);
        }
        self.backing.keys.remove_key(keyring, slot)
    }

    /// `zkStoreForeignPubKey`: the new foreign slot.
    pub fn store_foreign_key(&self, key_type: i32, raw: &[u8]) -> Result<i32> {
        self.begin(Operation::StoreForeign, Target::None)?;
        let range = self.model.allocatable_slots(Keyring::Foreign)?;
        let key = crypto::public_key_from_raw(KeyType::from_c(key_type)?, raw)?;
        self.backing.keys.add_foreign_key(range, &key)
    }

    /// `zkGetModelNumberString`.
    pub fn model_string(&self) -> Result<String> {
        self.begin(Operation::Info, Target::None)?;
        Ok(self.model.name().to_string())
    }

    /// `zkGetSerialNumberString`.
    pub fn serial_number(&self) -> Result<String> {
        self.begin(Operation::Info, Target::None)?;
        Ok(self.identity.serial.clone())
    }

    /// `zkGetFirmwareVersionString`.
    pub fn firmware_version(&self) -> Result<String> {
        self.begin(Operation::Info, Target::None)?;
        Ok(self.identity.firmware.clone())
    }

    /// `zkGetTime`: the host clock.
    pub fn time(&self) -> Result<u32> {
        self.begin(Operation::Time, Target::None)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|_| Errno::IO)?;
        Ok(u32::try_from(now.as_secs()).unwrap_or(u32::MAX))
    }
}

/// Says once per process that the trace file cannot be written.
fn trace_unusable(path: &std::path::Path, error: Errno) {
    static WARNED: Once = Once::new();
    WARNED.call_once(|| {
        notice(format_args!(
            "cannot append to trace file {}: {error:?}",
            path.display()
        ))
    });
}

/// One line on stderr. Unlike `eprintln!`, a failed write is ignored, not a panic.
fn notice(message: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr(), "zkemu: {message}");
}

fn target(keyring: Keyring, slot: i32) -> Target {
    Target::slot(slot, keyring == Keyring::Foreign)
}

/// The device identity, creating the state (factory keys, then `device.json`)
/// if this is its first use.
fn load_or_create(keys: &KeyStore, model: Model) -> Result<Identity> {
    let state = keys.dir();
    if let Some(identity) = state.identity()? {
        return Ok(identity);
    }
    let lock = state.lock()?;
    // Another process may have created it while this one waited for the lock.
    if let Some(identity) = state.identity()? {
        return Ok(identity);
    }
    for slot in model.factory_slots() {
        keys.put_private_key(&lock, slot, &crypto::generate(KeyType::NistP256)?)?;
    }
    let identity = Identity {
        model: model.name().to_string(),
        serial: new_serial_number()?,
        firmware: FIRMWARE_VERSION.to_string(),
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    };
    state.write_identity(&lock, &identity)?;
    Ok(identity)
}

/// `EMU-` and 12 random hex digits: 16 characters, so it fits a PKCS#11
/// token's serial number field whole.
fn new_serial_number() -> Result<String> {
    let mut bytes = [0u8; 6];
    openssl::rand::rand_bytes(&mut bytes)?;
    let hex: String = bytes.iter().map(|b| format!("{b:02X}")).collect();
    Ok(format!("EMU-{hex}"))
}
