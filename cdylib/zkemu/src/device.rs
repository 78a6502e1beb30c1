//! The emulated device: every operation of the C API, in safe Rust.
//!
//! Each operation first goes through [`Device::begin`], which appends the trace
//! line, bumps the counter, sleeps the configured latency and applies an
//! injected fault, so all of these see exactly the calls that reach the device.

use std::io::Write;
use std::sync::Once;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::{Config, MODEL_ENV};
use crate::counters;
use crate::crypto::{self, KeyType, Signature, DIGEST_LEN};
use crate::errno::{Errno, Result};
use crate::fault;
use crate::model::{Keyring, Model};
use crate::operation::{Operation, Target};
use crate::state::{Identity, StateDir};
use crate::trace;

/// Firmware version string of every emulated device.
pub const FIRMWARE_VERSION: &str = concat!("zkemu-", env!("CARGO_PKG_VERSION"));

/// Largest `zkGetRandBytes` request served.
const MAX_RANDOM_LEN: usize = 1 << 24;

/// One open device: the state directory and the settings read at `zkOpen`.
#[derive(Debug)]
pub struct Device {
    state: StateDir,
    identity: Identity,
    model: Model,
    config: Config,
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
        let state = StateDir::new(config.dir.clone());
        let identity = load_or_create(&state, config.model.unwrap_or(Model::DEFAULT))?;
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
        let device = Device {
            state,
            identity,
            model,
            config,
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
        if let Some(path) = &self.config.trace {
            if let Err(e) = trace::append(path, operation, target) {
                static WARNED: Once = Once::new();
                WARNED.call_once(|| {
                    notice(format_args!(
                        "cannot append to trace file {}: {e:?}",
                        path.display()
                    ))
                });
            }
        }
        counters::increment(&self.state, operation)?;
        if !self.config.latency.is_zero() {
            std::thread::sleep(self.config.latency);
        }
        if fault::take(&self.state, operation)? {
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

    /// `zkGenECDSASigFromDigest[WithRecID]`.
    pub fn sign(&self, slot: i32, digest: &[u8; DIGEST_LEN]) -> Result<Signature> {
        self.begin(Operation::Sign, Target::Device(slot))?;
        self.model.check_slot(Keyring::Device, slot)?;
        let key = self.state.private_key(slot)?;
        crypto::sign_digest(&key, digest)
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
                let key = self.state.private_key(slot)?;
                crypto::verify_digest(&key, digest, signature)
            }
            Keyring::Foreign => {
                let key = self.state.foreign_key(slot)?;
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
                let key = self.state.private_key(slot)?;
                crypto::raw_public_key(&key)
            }
            Keyring::Foreign => {
                let key = self.state.foreign_key(slot)?;
                crypto::raw_public_key(&key)
            }
        }
    }

    /// `zkGetAllocSlotsList`: the keyring's size and its allocated slots.
    pub fn allocated_slots(&self, keyring: Keyring) -> Result<(i32, Vec<i32>)> {
        self.begin(Operation::SlotList, Target::None)?;
        let capacity = self.model.capacity(keyring)?;
        Ok((capacity, self.state.slots(keyring)?))
    }

    /// `zkGenKeyPair`: the new slot.
    pub fn generate_key(&self, key_type: i32) -> Result<i32> {
        self.begin(Operation::GenKey, Target::None)?;
        let range = self.model.allocatable_slots(Keyring::Device)?;
        let key = crypto::generate(KeyType::from_c(key_type)?)?;
        self.state.add_private_key(range, &key)
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
        self.state.remove_key(keyring, slot)
    }

    /// `zkStoreForeignPubKey`: the new foreign slot.
    pub fn store_foreign_key(&self, key_type: i32, raw: &[u8]) -> Result<i32> {
        self.begin(Operation::StoreForeign, Target::None)?;
        let range = self.model.allocatable_slots(Keyring::Foreign)?;
        let key = crypto::public_key_from_raw(KeyType::from_c(key_type)?, raw)?;
        self.state.add_foreign_key(range, &key)
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

/// One line on stderr. Unlike `eprintln!`, a failed write is ignored, not a panic.
fn notice(message: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr(), "zkemu: {message}");
}

fn target(keyring: Keyring, slot: i32) -> Target {
    Target::slot(slot, keyring == Keyring::Foreign)
}

/// The device identity, creating the state (factory keys, then `device.json`)
/// if this is its first use.
fn load_or_create(state: &StateDir, model: Model) -> Result<Identity> {
    if let Some(identity) = state.identity()? {
        return Ok(identity);
    }
    state.ensure_dirs()?;
    let lock = state.lock()?;
    // Another process may have created it while this one waited for the lock.
    if let Some(identity) = state.identity()? {
        return Ok(identity);
    }
    for slot in model.factory_slots() {
        state.put_private_key(&lock, slot, &crypto::generate(KeyType::NistP256)?)?;
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
