//! The emulated device: every operation of the C API, in safe Rust.
//!
//! Each operation first goes through [`Device::begin`], which appends the trace
//! line, bumps the counter, sleeps the configured latency (for operations
//! that reach the secure element) and applies an
//! injected fault, so all of these see exactly the calls that reach the device.
//! It also applies an injected perimeter breach first, as the module would
//! have on its own, whatever the host was doing.
//! None of this takes the state lock: only changes of state do (key
//! generation and removal, foreign keys, the perimeter state, creating the
//! state).

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::accelerometer::{self, AxisData};
use crate::config::{Config, FACTORY_SLOTS_ENV, MODEL_ENV, MODEL_STRING_ENV};
use crate::counters::Counters;
use crate::crypto::{self, KeyType, DIGEST_LEN, SIGNATURE_LEN};
use crate::errno::{Errno, Result};
use crate::fault;
use crate::keystore::KeyStore;
use crate::model::{Keyring, Layout, Profile};
use crate::operation::{Operation, Target};
use crate::perimeter::{self, DigitalSetting, Perimeter};
use crate::state::{Identity, StateDir};
use crate::trace::Trace;

/// Firmware version string of every emulated device.
pub const FIRMWARE_VERSION: &str = concat!("zkemu-", env!("CARGO_PKG_VERSION"));

/// Largest `zkGetRandBytes` request served.
const MAX_RANDOM_LEN: usize = 1 << 24;

/// What this process keeps of one state directory, shared by all its
/// contexts: the key store with its decoded keys, the mapped counters and
/// the perimeter's shared numbers.
#[derive(Debug)]
struct Backing {
    keys: KeyStore,
    counters: Counters,
    perimeter: Perimeter,
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
    let keys = KeyStore::open(state)?;
    let perimeter = Perimeter::open(&keys)?;
    let backing = Arc::new(Backing {
        keys,
        counters,
        perimeter,
    });
    opened.insert(id, backing.clone());
    Ok(backing)
}

/// One open device: the state it works on and the settings read at `zkOpen`.
#[derive(Debug)]
pub struct Device {
    backing: Arc<Backing>,
    identity: Identity,
    profile: Profile,
    layout: Layout,
    config: Config,
    trace: Option<Trace>,
    /// The perimeter notices this context has seen: its waits return for
    /// breaches notified after it.
    perimeter_seen: AtomicU64,
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
        let identity = load_or_create(&backing.keys, &Creation::from_config(&config)?)?;
        let profile = identity.profile()?;
        let layout = identity.layout()?;
        notice_ignored_settings(&config, state, &identity, profile, layout);
        static BANNER: Once = Once::new();
        BANNER.call_once(|| {
            notice(format_args!(
                "Zymkey emulator ({profile} reporting {:?}, {} factory slots, state {}): \
                 keys are plain files, not a security boundary",
                identity.model,
                layout.factory_count(),
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
            profile,
            layout,
            config,
            trace,
            perimeter_seen: AtomicU64::new(0),
        };
        device.begin(Operation::Open, Target::None)?;
        // Breaches before the open are only in the latched timestamps.
        device
            .perimeter_seen
            .store(device.backing.perimeter.notices(), Ordering::Release);
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
        self.backing
            .perimeter
            .take_injected_breach(&self.backing.keys, self.profile)?;
        if fault::take(self.backing.keys.dir(), operation)? {
            return Err(Errno::IO);
        }
        Ok(())
    }

    /// Fails with `EIO` once a self-destruct destroyed the keys: what every
    /// key operation (random numbers included) answers from then on.
    fn keys_intact(&self) -> Result<()> {
        if self.backing.perimeter.destroyed() {
            Err(Errno::IO)
        } else {
            Ok(())
        }
    }

    /// `zkGetRandBytes`.
    pub fn random(&self, len: i32) -> Result<Vec<u8>> {
        self.begin(Operation::Random, Target::None)?;
        self.keys_intact()?;
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
        self.keys_intact()?;
        self.layout.check_slot(Keyring::Device, slot)?;
        self.backing.keys.private_key(slot)?.sign_digest(digest)
    }

    /// `zkGenECDSASigFromDigestWithRecID`: raw r‖s and the recovery id.
    pub fn sign_with_recovery_id(
        &self,
        slot: i32,
        digest: &[u8; DIGEST_LEN],
    ) -> Result<([u8; SIGNATURE_LEN], u8)> {
        self.begin(Operation::Sign, Target::Device(slot))?;
        self.keys_intact()?;
        self.layout.check_slot(Keyring::Device, slot)?;
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
        self.keys_intact()?;
        self.layout.check_slot(keyring, slot)?;
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
        self.keys_intact()?;
        self.layout.check_slot(keyring, slot)?;
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
        self.keys_intact()?;
        let capacity = self.layout.capacity(keyring)?;
        Ok((capacity, self.backing.keys.slots(keyring)?))
    }

    /// `zkGenKeyPair`: the new slot.
    pub fn generate_key(&self, key_type: i32) -> Result<i32> {
        self.begin(Operation::GenKey, Target::None)?;
        self.keys_intact()?;
        let range = self.layout.allocatable_slots(Keyring::Device)?;
        let key = crypto::generate(KeyType::from_c(key_type)?)?;
        self.backing.keys.add_private_key(range, &key)
    }

    /// `zkRemoveKey`. Factory keys are `EPERM`.
    pub fn remove_key(&self, keyring: Keyring, slot: i32) -> Result<()> {
        self.begin(Operation::RemoveKey, target(keyring, slot))?;
        self.keys_intact()?;
        if !self.layout.can_generate_keys() {
            return Err(Errno::OPNOTSUPP);
        }
        self.layout.check_slot(keyring, slot)?;
        if keyring == Keyring::Device && self.layout.is_factory_slot(slot) {
            return Err(Errno::PERM);
        }
        self.backing.keys.remove_key(keyring, slot)
    }

    /// `zkStoreForeignPubKey`: the new foreign slot.
    pub fn store_foreign_key(&self, key_type: i32, raw: &[u8]) -> Result<i32> {
        self.begin(Operation::StoreForeign, Target::None)?;
        self.keys_intact()?;
        let range = self.layout.allocatable_slots(Keyring::Foreign)?;
        let key = crypto::public_key_from_raw(KeyType::from_c(key_type)?, raw)?;
        self.backing.keys.add_foreign_key(range, &key)
    }

    /// `zkGetModelNumberString`: the string fixed when the state was created.
    pub fn model_string(&self) -> Result<String> {
        self.begin(Operation::Info, Target::None)?;
        Ok(self.identity.model.clone())
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

    /// The accelerometer, or `EOPNOTSUPP` on a profile without one.
    fn accelerometer(&self) -> Result<()> {
        if self.profile.has_accelerometer() {
            Ok(())
        } else {
            Err(Errno::OPNOTSUPP)
        }
    }

    /// `zkSetTapSensitivity`: checked, accepted, not kept.
    pub fn set_tap_sensitivity(&self, axis: i32, percent: f32) -> Result<()> {
        self.begin(Operation::Accelerometer, Target::None)?;
        self.accelerometer()?;
        accelerometer::check_sensitivity(axis, percent)
    }

    /// `zkWaitForTap`: an injected tap, or `ETIMEDOUT` after `timeout_ms`.
    pub fn wait_for_tap(&self, timeout_ms: u32) -> Result<()> {
        self.begin(Operation::Accelerometer, Target::None)?;
        self.accelerometer()?;
        accelerometer::wait_for_tap(
            self.backing.keys.dir(),
            Duration::from_millis(timeout_ms.into()),
        )
    }

    /// `zkGetAccelerometerData`: X, Y, Z of a device at rest.
    pub fn accelerometer_data(&self) -> Result<[AxisData; 3]> {
        self.begin(Operation::Accelerometer, Target::None)?;
        self.accelerometer()?;
        Ok(accelerometer::AT_REST)
    }

    fn state(&self) -> &StateDir {
        self.backing.keys.dir()
    }

    /// `zkSetPerimeterEventAction`.
    pub fn set_perimeter_event_action(&self, channel: i32, flags: u32) -> Result<()> {
        self.begin(Operation::Perimeter, Target::None)?;
        perimeter::set_action(self.state(), self.profile, channel, flags)
    }

    /// `zkGetPerimeterDetectInfo`: each channel's first breach, 0 for none.
    pub fn perimeter_detect_info(&self) -> Result<Vec<u32>> {
        self.begin(Operation::Perimeter, Target::None)?;
        perimeter::first_breaches(self.state(), self.profile)
    }

    /// `zkClearPerimeterDetectEvents`.
    pub fn clear_perimeter_events(&self) -> Result<()> {
        self.begin(Operation::Perimeter, Target::None)?;
        perimeter::clear(self.state())
    }

    /// `zkWaitForPerimeterEvent`.
    pub fn wait_for_perimeter_event(&self, timeout_ms: u32) -> Result<()> {
        self.begin(Operation::Perimeter, Target::None)?;
        self.backing.perimeter.wait(
            &self.backing.keys,
            self.profile,
            &self.perimeter_seen,
            Duration::from_millis(timeout_ms.into()),
        )
    }

    /// `zkSetDigitalPerimeterDetectLPPeriod`, `…LPMaxBits`, `…Delays`:
    /// checked, accepted, not kept.
    pub fn set_digital_perimeter(&self, setting: DigitalSetting) -> Result<()> {
        self.begin(Operation::Perimeter, Target::None)?;
        perimeter::check_digital_setting(self.profile, setting)
    }

    /// `zkLockBinding`: production mode, for good.
    pub fn lock_binding(&self) -> Result<()> {
        self.begin(Operation::Binding, Target::None)?;
        perimeter::lock_binding(self.state(), self.profile)
    }

    /// `zkGetCurrentBindingInfo`: whether the binding is locked, and whether
    /// the device is bound to its host.
    pub fn binding_info(&self) -> Result<(bool, bool)> {
        self.begin(Operation::Binding, Target::None)?;
        perimeter::binding_info(self.state(), self.profile)
    }
}

/// Says once per process, for each setting that only counts when a state is
/// created, that it was ignored: the state exists already and differs, or
/// the profile does not take it.
fn notice_ignored_settings(
    config: &Config,
    state: &StateDir,
    identity: &Identity,
    profile: Profile,
    layout: Layout,
) {
    static PROFILE: Once = Once::new();
    static MODEL_STRING: Once = Once::new();
    static FACTORY_SLOTS: Once = Once::new();
    let dir = state.root().display();
    if let Some(asked) = config.profile.filter(|asked| *asked != profile) {
        PROFILE.call_once(|| {
            notice(format_args!(
                "{MODEL_ENV}={asked} ignored: the state in {dir} was created as {profile} \
                 (use another state directory for another model)"
            ))
        });
    }
    if let Some(asked) = config
        .model_string
        .as_ref()
        .filter(|s| **s != identity.model)
    {
        MODEL_STRING.call_once(|| {
            notice(format_args!(
                "{MODEL_STRING_ENV}={asked:?} ignored: the state in {dir} was created \
                 as {profile}, reporting {:?} (the variable only sets the string of a \
                 ZYMKEY5 state, when it is created)",
                identity.model
            ))
        });
    }
    let factory = layout.factory_count();
    if let Some(asked) = config.factory_slots.filter(|n| *n != factory) {
        FACTORY_SLOTS.call_once(|| {
            notice(format_args!(
                "{FACTORY_SLOTS_ENV}={asked} ignored: the state in {dir} was created \
                 as {profile}, with {factory} factory slots (the variable only sets the \
                 count of a key-store state, when it is created; a ZYMKEY4i has 3)"
            ))
        });
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

/// What a state created by this open is: the profile, model string and
/// factory slot count asked for, or their defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Creation {
    profile: Profile,
    model_string: String,
    layout: Layout,
}

impl Creation {
    fn from_config(config: &Config) -> Result<Creation> {
        let profile = config.profile.unwrap_or(Profile::DEFAULT);
        let model_string = match &config.model_string {
            Some(asked) if profile.takes_model_string() => asked.clone(),
            _ => profile.default_model_string().to_string(),
        };
        let factory = config
            .factory_slots
            .filter(|_| profile.takes_factory_slots())
            .unwrap_or_else(|| profile.default_factory_slots());
        // The configuration only holds counts every key-store profile can have.
        let layout = profile.layout(factory).ok_or(Errno::INVAL)?;
        Ok(Creation {
            profile,
            model_string,
            layout,
        })
    }
}

/// The device identity, creating the state (factory keys, then `device.json`)
/// if this is its first use.
fn load_or_create(keys: &KeyStore, creation: &Creation) -> Result<Identity> {
    let state = keys.dir();
    if let Some(identity) = state.identity()? {
        return Ok(identity);
    }
    let lock = state.lock()?;
    // Another process may have created it while this one waited for the lock.
    if let Some(identity) = state.identity()? {
        return Ok(identity);
    }
    for slot in creation.layout.factory_slots() {
        keys.put_private_key(&lock, slot, &crypto::generate(KeyType::NistP256)?)?;
    }
    let identity = Identity {
        profile: Some(creation.profile.name().to_string()),
        model: creation.model_string.clone(),
        factory_slots: Some(creation.layout.factory_count()),
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
