//! The perimeter-breach (tamper) circuits and production mode.
//!
//! Documented by Zymbit (sources as in the crate documentation):
//! - each model has two channels, 0 and 1 (circuit 1 is channel 0); each has
//!   action flags `ZK_PERIMETER_EVENT_ACTION_NOTIFY` (1) and `…_SELF_DESTRUCT`
//!   (2), OR-able, set by `zkSetPerimeterEventAction` \[HDR\];
//! - a breach is latched: `zkGetPerimeterDetectInfo` gives, per channel, the
//!   epoch seconds of the first breach, 0 for none, kept "while powered down
//!   with battery in place" until `zkClearPerimeterDetectEvents`, which
//!   "clears all perimeter detect event info and rearms all perimeter detect
//!   channels" \[HDR\] [ZD tutorials/perimeter-detect/scm];
//! - `zkWaitForPerimeterEvent` sees only channels set to notify the host; it
//!   returns 0 on an event and `-ETIMEDOUT` once its timeout passed \[HDR\];
//! - self-destruct destroys all key material, at once, and only in production
//!   mode ("works only after the Lock Tab has been cut"); once armed there it
//!   cannot be turned off [ZD troubleshooting/zymkey4, hsm6]; a tamper action
//!   may be set "one time after locked" [ZD hardware/sen/sen500/production-mode].
//!
//! Assumed until hardware shows it \[hw\]:
//! - detection latches whatever the channel's action, none included (Zymbit's
//!   production-mode procedure clears the events of loops that were open while
//!   their action was none or notify [ZD tutorials/production-mode]);
//! - a channel whose breach is latched is disarmed until cleared (what
//!   "rearms" says): a further breach there changes nothing, notifies no one
//!   and destroys nothing;
//! - a wait sees each breach on a notify channel that came after its context
//!   was opened (`zkOpen`) and after its previous wait returned; every
//!   context, in every process, sees it once. Breaches before `zkOpen` are
//!   only in the latched timestamps;
//! - in production mode each channel's action can be set once more after the
//!   lock, then `-EPERM` (the docs contradict each other on the order);
//! - after a self-destruct, every key operation (random numbers, signing,
//!   verifying, public keys, slot lists, key generation and removal, foreign
//!   keys) fails with `-EIO`; `zkOpen`, the information strings, the time,
//!   the perimeter and binding calls still answer;
//! - the battery is always in: latched events stay until cleared.
//!
//! A breach is injected with the file `perimeter-next` (its channel numbers,
//! its modification time the breach's): the next device operation of any
//! process, or a waiting `zkWaitForPerimeterEvent`, applies it, as the
//! module would on its own, host on or off.

use std::fs;
use std::io::ErrorKind;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::errno::{Errno, Result};
use crate::keystore::KeyStore;
use crate::model::{Keyring, Profile};
use crate::shared::SharedWords;
use crate::state::{self, StateDir, StateLock};

/// Injects a breach: whitespace-separated channel numbers (`1`, `0 1`).
pub const PERIMETER_NEXT_FILE: &str = "perimeter-next";
/// Stands for a ZYMKEY4i's cut lock tab: production mode from then on.
pub const LOCK_TAB_CUT_FILE: &str = "lock-tab-cut";
/// The device's perimeter and binding state, as [`Tamper`].
pub const TAMPER_FILE: &str = "tamper.json";
/// Shared numbers: breaches notified so far, and whether the keys are destroyed.
const SIGNALS_FILE: &str = "perimeter-signals";
const NOTICES: usize = 0;
const DESTROYED: usize = 1;

/// `ZK_PERIMETER_EVENT_ACTION_NOTIFY`.
pub const ACTION_NOTIFY: u32 = 1 << 0;
/// `ZK_PERIMETER_EVENT_ACTION_SELF_DESTRUCT`.
pub const ACTION_SELF_DESTRUCT: u32 = 1 << 1;
const ALL_ACTIONS: u32 = ACTION_NOTIFY | ACTION_SELF_DESTRUCT;

/// The most channels a profile has: the length of the arrays of [`Tamper`].
const MAX_CHANNELS: usize = 2;

/// How often a waiting `zkWaitForPerimeterEvent` looks for a breach.
const POLL: Duration = Duration::from_millis(10);

/// What `tamper.json` holds; a missing file is the state of a new device.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tamper {
    /// Each channel's `ZK_PERIMETER_EVENT_ACTION_*` flags; none at first.
    pub actions: [u32; MAX_CHANNELS],
    /// Each channel's first breach since the last clear, epoch seconds; 0 for none.
    pub first_breach: [u32; MAX_CHANNELS],
    /// Production mode: the binding is locked (`zkLockBinding`, or a
    /// ZYMKEY4i's lock tab cut). Never undone.
    #[serde(default)]
    pub binding_locked: bool,
    /// The channels whose action was set since the binding was locked.
    #[serde(default)]
    pub set_since_lock: [bool; MAX_CHANNELS],
    /// When a self-destruct destroyed the keys, epoch seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destroyed: Option<u32>,
}

/// One setting of the digital ("enhanced") perimeter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigitalSetting {
    /// `zkSetDigitalPerimeterDetectLPPeriod`: microseconds.
    LowPowerPeriod(i32),
    /// `zkSetDigitalPerimeterDetectLPMaxBits`.
    LowPowerMaxBits(i32),
    /// `zkSetDigitalPerimeterDetectDelays`: nanoseconds.
    Delays { min_ns: i32, max_ns: i32 },
}

/// Checks a digital perimeter setting: `EOPNOTSUPP` on a model without the
/// digital perimeter, `EINVAL` for a negative value or a minimum delay above
/// the maximum (assumed: Zymbit documents no range). Nothing is kept: the
/// emulated loops are never breached but by injection.
pub fn check_digital_setting(profile: Profile, setting: DigitalSetting) -> Result<()> {
    if !profile.has_digital_perimeter() {
        return Err(Errno::OPNOTSUPP);
    }
    let valid = match setting {
        DigitalSetting::LowPowerPeriod(n) | DigitalSetting::LowPowerMaxBits(n) => n >= 0,
        DigitalSetting::Delays { min_ns, max_ns } => 0 <= min_ns && min_ns <= max_ns,
    };
    if valid {
        Ok(())
    } else {
        Err(Errno::INVAL)
    }
}

/// What a process keeps of the perimeter of one state directory: the
/// numbers shared with every other process using it.
#[derive(Debug)]
pub struct Perimeter {
    signals: SharedWords,
}

impl Perimeter {
    /// The perimeter of the state of `keys`. Finishes a self-destruct that
    /// was recorded but whose process died before every key file was gone.
    pub fn open(keys: &KeyStore) -> Result<Perimeter> {
        let state = keys.dir();
        let signals = SharedWords::open(
            &state.path(SIGNALS_FILE),
            "zkemu-perimeter-signals 1 notices destroyed",
            2,
            || state.lock(),
        )?;
        let perimeter = Perimeter { signals };
        if read(state)?.destroyed.is_some() {
            let intact = !keys.slots(Keyring::Device)?.is_empty()
                || !keys.slots(Keyring::Foreign)?.is_empty();
            if intact {
                keys.destroy_all(&state.lock()?)?;
            }
            perimeter.signals.get(DESTROYED).store(1, Ordering::Release);
        }
        Ok(perimeter)
    }

    /// How many breaches were notified to the host so far (they only grow).
    pub fn notices(&self) -> u64 {
        self.signals.get(NOTICES).load(Ordering::Acquire)
    }

    /// Whether a self-destruct destroyed the keys.
    pub fn destroyed(&self) -> bool {
        self.signals.get(DESTROYED).load(Ordering::Acquire) != 0
    }

    /// Applies an injected breach, if `perimeter-next` holds one, and
    /// removes the file. An empty file (being written) or one holding
    /// anything but channel numbers of the model is left alone.
    pub fn take_injected_breach(&self, keys: &KeyStore, profile: Profile) -> Result<()> {
        let state = keys.dir();
        let path = state.path(PERIMETER_NEXT_FILE);
        // Checked without the lock first: the common case is no file at all.
        if !path.exists() {
            return Ok(());
        }
        let lock = state.lock()?;
        let (text, time) = match fs::read_to_string(&path).and_then(|text| {
            let modified = fs::metadata(&path)?.modified()?;
            Ok((text, modified))
        }) {
            Ok(read) => read,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let Some(channels) = parse_channels(&text, profile.perimeter_channels()) else {
            return Ok(());
        };
        self.breach(&lock, keys, profile, &channels, epoch_seconds(time))?;
        // Removed last: a process that dies before has recorded the breach,
        // and the next one finds the channel latched and changes nothing.
        fs::remove_file(&path)?;
        state::sync_dir(state.root())
    }

    /// A breach of `channels` at `time`: latched on each armed channel,
    /// notified if one of them notifies, the keys destroyed if one of them
    /// self-destructs in production mode.
    fn breach(
        &self,
        lock: &StateLock,
        keys: &KeyStore,
        profile: Profile,
        channels: &[usize],
        time: u32,
    ) -> Result<()> {
        let state = keys.dir();
        let mut tamper = read(state)?;
        note_lock_tab(state, profile, &mut tamper);
        let (mut notify, mut destroy) = (false, false);
        for &channel in channels {
            if tamper.first_breach[channel] != 0 {
                continue; // disarmed until cleared
            }
            // 0 means "no breach": a breach is never recorded at 0.
            tamper.first_breach[channel] = time.max(1);
            let action = tamper.actions[channel];
            notify |= action & ACTION_NOTIFY != 0;
            destroy |= action & ACTION_SELF_DESTRUCT != 0 && tamper.binding_locked;
        }
        if destroy && tamper.destroyed.is_none() {
            tamper.destroyed = Some(time.max(1));
        }
        write(lock, state, &tamper)?;
        if destroy {
            self.signals.get(DESTROYED).store(1, Ordering::Release);
            keys.destroy_all(lock)?;
        }
        if notify {
            self.signals.get(NOTICES).fetch_add(1, Ordering::AcqRel);
        }
        Ok(())
    }

    /// `zkWaitForPerimeterEvent`: 0 for a breach notified since `seen` (the
    /// notices this context has seen, updated), `ETIMEDOUT` once `timeout`
    /// has passed without one (a zero timeout looks once and does not wait).
    pub fn wait(
        &self,
        keys: &KeyStore,
        profile: Profile,
        seen: &AtomicU64,
        timeout: Duration,
    ) -> Result<()> {
        let start = Instant::now();
        loop {
            self.take_injected_breach(keys, profile)?;
            let notices = self.notices();
            if seen.fetch_max(notices, Ordering::AcqRel) < notices {
                return Ok(());
            }
            let waited = start.elapsed();
            if waited >= timeout {
                return Err(Errno::TIMEDOUT);
            }
            std::thread::sleep(POLL.min(timeout - waited));
        }
    }
}

/// The channel numbers `perimeter-next` names: at least one, each below
/// `channels`; `None` for anything else.
fn parse_channels(text: &str, channels: usize) -> Option<Vec<usize>> {
    let parsed: Option<Vec<usize>> = text
        .split_whitespace()
        .map(|word| word.parse::<usize>().ok().filter(|n| *n < channels))
        .collect();
    parsed.filter(|list| !list.is_empty())
}

/// A channel number of the model: `EINVAL` outside `0..channels`.
fn channel_index(channel: i32, profile: Profile) -> Result<usize> {
    usize::try_from(channel)
        .ok()
        .filter(|n| *n < profile.perimeter_channels().min(MAX_CHANNELS))
        .ok_or(Errno::INVAL)
}

/// `zkSetPerimeterEventAction`. In production mode each channel takes one
/// setting after the lock; a second is `EPERM`.
pub fn set_action(state: &StateDir, profile: Profile, channel: i32, flags: u32) -> Result<()> {
    let channel = channel_index(channel, profile)?;
    if flags & !ALL_ACTIONS != 0 {
        return Err(Errno::INVAL);
    }
    let lock = state.lock()?;
    let mut tamper = read(state)?;
    note_lock_tab(state, profile, &mut tamper);
    if tamper.binding_locked {
        if tamper.set_since_lock[channel] {
            return Err(Errno::PERM);
        }
        tamper.set_since_lock[channel] = true;
    }
    tamper.actions[channel] = flags;
    write(&lock, state, &tamper)
}

/// `zkGetPerimeterDetectInfo`: each channel's first breach, 0 for none.
pub fn first_breaches(state: &StateDir, profile: Profile) -> Result<Vec<u32>> {
    let tamper = read(state)?;
    let channels = profile.perimeter_channels().min(MAX_CHANNELS);
    Ok(tamper.first_breach[..channels].to_vec())
}

/// `zkClearPerimeterDetectEvents`: forgets every latched breach and rearms
/// every channel.
pub fn clear(state: &StateDir) -> Result<()> {
    let lock = state.lock()?;
    let mut tamper = read(state)?;
    if tamper.first_breach != [0; MAX_CHANNELS] {
        tamper.first_breach = [0; MAX_CHANNELS];
        write(&lock, state, &tamper)?;
    }
    Ok(())
}

/// `zkLockBinding`: production mode, for good. Again on a locked device: 0.
pub fn lock_binding(state: &StateDir, profile: Profile) -> Result<()> {
    if !profile.can_lock_binding() {
        return Err(Errno::OPNOTSUPP);
    }
    let lock = state.lock()?;
    let mut tamper = read(state)?;
    if !tamper.binding_locked {
        tamper.binding_locked = true;
        tamper.set_since_lock = [false; MAX_CHANNELS];
        write(&lock, state, &tamper)?;
    }
    Ok(())
}

/// `zkGetCurrentBindingInfo`: whether the binding is locked, and whether the
/// device is bound to its host (always: the emulator models no host binding).
pub fn binding_info(state: &StateDir, profile: Profile) -> Result<(bool, bool)> {
    if !profile.reports_binding() {
        return Err(Errno::OPNOTSUPP);
    }
    Ok((read(state)?.binding_locked, true))
}

/// A ZYMKEY4i whose lock tab is cut (`lock-tab-cut` exists) is in production
/// mode from then on, whether or not the file stays.
fn note_lock_tab(state: &StateDir, profile: Profile, tamper: &mut Tamper) {
    if profile.has_lock_tab() && !tamper.binding_locked && state.path(LOCK_TAB_CUT_FILE).exists() {
        tamper.binding_locked = true;
        tamper.set_since_lock = [false; MAX_CHANNELS];
    }
}

/// The perimeter state; a missing file is a new device's, an unreadable one `EIO`.
pub fn read(state: &StateDir) -> Result<Tamper> {
    match fs::read(state.path(TAMPER_FILE)) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|_| Errno::IO),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(Tamper::default()),
        Err(e) => Err(e.into()),
    }
}

fn write(_lock: &StateLock, state: &StateDir, tamper: &Tamper) -> Result<()> {
    let json = serde_json::to_vec_pretty(tamper).map_err(|_| Errno::IO)?;
    state::write_atomic(&state.path(TAMPER_FILE), &json)
}

/// Seconds since the epoch, as the device's clock counts them (32 bits).
fn epoch_seconds(time: SystemTime) -> u32 {
    time.duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| u32::try_from(d.as_secs()).ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{self, KeyType};

    /// A device of `profile` with factory keys in slots 0 and 1 and a foreign key.
    struct Rig {
        _dir: tempfile::TempDir,
        keys: KeyStore,
        perimeter: Perimeter,
        profile: Profile,
    }

    impl Rig {
        fn new(profile: Profile) -> Rig {
            let dir = tempfile::tempdir().unwrap();
            let keys = KeyStore::open(StateDir::new(dir.path().to_path_buf())).unwrap();
            let key = crypto::generate(KeyType::NistP256).unwrap();
            {
                let lock = keys.dir().lock().unwrap();
                keys.put_private_key(&lock, 0, &key).unwrap();
                keys.put_private_key(&lock, 1, &key).unwrap();
            }
            let public =
                openssl::pkey::PKey::public_key_from_pem(&key.public_key_to_pem().unwrap())
                    .unwrap();
            keys.add_foreign_key(0..1, &public).unwrap();
            let perimeter = Perimeter::open(&keys).unwrap();
            Rig {
                _dir: dir,
                keys,
                perimeter,
                profile,
            }
        }

        fn state(&self) -> &StateDir {
            self.keys.dir()
        }

        /// Writes `perimeter-next` dated `time` and lets the device see it.
        fn breach(&self, channels: &str, time: u32) {
            let path = self.state().path(PERIMETER_NEXT_FILE);
            fs::write(&path, channels).unwrap();
            let when = UNIX_EPOCH + Duration::from_secs(time.into());
            fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(when)
                .unwrap();
            self.perimeter
                .take_injected_breach(&self.keys, self.profile)
                .unwrap();
        }

        fn first_breaches(&self) -> Vec<u32> {
            first_breaches(self.state(), self.profile).unwrap()
        }

        fn key_count(&self) -> usize {
            self.keys.slots(Keyring::Device).unwrap().len()
                + self.keys.slots(Keyring::Foreign).unwrap().len()
        }

        fn wait(&self, seen: &AtomicU64, ms: u64) -> Result<()> {
            self.perimeter
                .wait(&self.keys, self.profile, seen, Duration::from_millis(ms))
        }
    }

    #[test]
    fn a_new_device_has_no_events_and_no_actions() {
        let rig = Rig::new(Profile::Hsm6);
        assert_eq!(rig.first_breaches(), [0, 0]);
        assert_eq!(read(rig.state()).unwrap(), Tamper::default());
        assert!(!rig.perimeter.destroyed());
        assert_eq!(rig.perimeter.notices(), 0);
    }

    #[test]
    fn the_first_breach_of_each_channel_is_latched_until_cleared() {
        let rig = Rig::new(Profile::Zymkey4i);
        rig.breach("1", 1_700_000_100);
        assert_eq!(rig.first_breaches(), [0, 1_700_000_100]);
        assert!(!rig.state().path(PERIMETER_NEXT_FILE).exists());
        // A later breach of the same channel keeps the first time.
        rig.breach("1", 1_700_000_200);
        assert_eq!(rig.first_breaches(), [0, 1_700_000_100]);
        rig.breach("0 1", 1_700_000_300);
        assert_eq!(rig.first_breaches(), [1_700_000_300, 1_700_000_100]);
        // Latched in the state directory: another process sees them.
        let other = Perimeter::open(&rig.keys).unwrap();
        assert_eq!(other.notices(), 0, "no channel notifies");
        assert_eq!(rig.first_breaches(), [1_700_000_300, 1_700_000_100]);

        clear(rig.state()).unwrap();
        assert_eq!(rig.first_breaches(), [0, 0]);
        // Cleared is rearmed: the next breach is latched again.
        rig.breach("1", 1_700_000_400);
        assert_eq!(rig.first_breaches(), [0, 1_700_000_400]);
        assert_eq!(rig.key_count(), 3, "no action, no destruction");
    }

    #[test]
    fn an_injection_that_names_no_channel_is_left_alone() {
        let rig = Rig::new(Profile::Hsm6);
        let path = rig.state().path(PERIMETER_NEXT_FILE);
        for text in ["", " \n", "2", "0 2", "-1", "one"] {
            fs::write(&path, text).unwrap();
            rig.perimeter
                .take_injected_breach(&rig.keys, rig.profile)
                .unwrap();
            assert!(path.exists(), "{text:?}");
        }
        assert_eq!(rig.first_breaches(), [0, 0]);
        fs::write(&path, " 0\n").unwrap();
        rig.perimeter
            .take_injected_breach(&rig.keys, rig.profile)
            .unwrap();
        assert!(!path.exists());
        assert_ne!(rig.first_breaches()[0], 0);
    }

    #[test]
    fn actions_are_flags_of_channel_0_or_1() {
        let rig = Rig::new(Profile::Hsm60);
        for flags in [0, ACTION_NOTIFY, ACTION_SELF_DESTRUCT, ALL_ACTIONS] {
            set_action(rig.state(), rig.profile, 1, flags).unwrap();
            assert_eq!(read(rig.state()).unwrap().actions, [0, flags]);
        }
        assert_eq!(
            set_action(rig.state(), rig.profile, 2, 1),
            Err(Errno::INVAL)
        );
        assert_eq!(
            set_action(rig.state(), rig.profile, -1, 1),
            Err(Errno::INVAL)
        );
        assert_eq!(
            set_action(rig.state(), rig.profile, 0, 4),
            Err(Errno::INVAL)
        );
        assert_eq!(read(rig.state()).unwrap().actions, [0, ALL_ACTIONS]);
    }

    #[test]
    fn a_wait_sees_breaches_on_notify_channels_only() {
        let rig = Rig::new(Profile::Hsm6);
        let seen = AtomicU64::new(rig.perimeter.notices());
        assert_eq!(rig.wait(&seen, 0), Err(Errno::TIMEDOUT));
        let start = Instant::now();
        assert_eq!(rig.wait(&seen, 60), Err(Errno::TIMEDOUT));
        assert!(start.elapsed() >= Duration::from_millis(60));

        // Channel 0 has no action: latched, not seen.
        rig.breach("0", 1_700_000_000);
        assert_eq!(rig.wait(&seen, 0), Err(Errno::TIMEDOUT));

        set_action(rig.state(), rig.profile, 1, ACTION_NOTIFY).unwrap();
        rig.breach("1", 1_700_000_001);
        assert_eq!(rig.wait(&seen, 0), Ok(()));
        // Each breach is seen once per context...
        assert_eq!(rig.wait(&seen, 0), Err(Errno::TIMEDOUT));
        // ...and by every context opened before it.
        let other = AtomicU64::new(0);
        assert_eq!(rig.wait(&other, 0), Ok(()));
        // A latched channel is disarmed: a second breach notifies no one.
        rig.breach("1", 1_700_000_002);
        assert_eq!(rig.wait(&seen, 0), Err(Errno::TIMEDOUT));
        clear(rig.state()).unwrap();
        rig.breach("1", 1_700_000_003);
        assert_eq!(rig.wait(&seen, 0), Ok(()));
    }

    #[test]
    fn a_breach_during_a_wait_ends_it() {
        let rig = Rig::new(Profile::Zymkey5);
        set_action(rig.state(), rig.profile, 0, ACTION_NOTIFY).unwrap();
        let seen = AtomicU64::new(rig.perimeter.notices());
        let path = rig.state().path(PERIMETER_NEXT_FILE);
        let breaker = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            fs::write(path, "0").unwrap();
        });
        let start = Instant::now();
        assert_eq!(rig.wait(&seen, 30_000), Ok(()));
        assert!(start.elapsed() < Duration::from_secs(10));
        breaker.join().unwrap();
        assert_ne!(rig.first_breaches()[0], 0);
    }

    #[test]
    fn self_destruct_destroys_the_keys_only_in_production_mode() {
        // Developer mode: latched and notified, keys kept.
        let rig = Rig::new(Profile::Hsm6);
        set_action(rig.state(), rig.profile, 0, ALL_ACTIONS).unwrap();
        rig.breach("0", 1_700_000_000);
        assert_eq!(rig.key_count(), 3);
        assert!(!rig.perimeter.destroyed());
        assert_eq!(rig.perimeter.notices(), 1);

        // Production mode: the keys are gone, the breach still latched and notified.
        let rig = Rig::new(Profile::Hsm6);
        lock_binding(rig.state(), rig.profile).unwrap();
        set_action(rig.state(), rig.profile, 0, ALL_ACTIONS).unwrap();
        rig.breach("0", 1_700_000_000);
        assert_eq!(rig.key_count(), 0);
        assert!(rig.perimeter.destroyed());
        assert_eq!(rig.perimeter.notices(), 1);
        assert_eq!(rig.first_breaches(), [1_700_000_000, 0]);
        assert_eq!(read(rig.state()).unwrap().destroyed, Some(1_700_000_000));
        // Another process learns it from the state.
        assert!(Perimeter::open(&rig.keys).unwrap().destroyed());

        // A notify-only channel in production mode destroys nothing.
        let rig = Rig::new(Profile::Hsm60);
        lock_binding(rig.state(), rig.profile).unwrap();
        set_action(rig.state(), rig.profile, 1, ACTION_NOTIFY).unwrap();
        rig.breach("1", 1_700_000_000);
        assert_eq!(rig.key_count(), 3);
        assert!(!rig.perimeter.destroyed());
    }

    #[test]
    fn a_zymkey4i_is_in_production_mode_once_its_lock_tab_is_cut() {
        let rig = Rig::new(Profile::Zymkey4i);
        assert_eq!(
            lock_binding(rig.state(), rig.profile),
            Err(Errno::OPNOTSUPP)
        );
        assert_eq!(
            binding_info(rig.state(), rig.profile),
            Err(Errno::OPNOTSUPP)
        );
        fs::write(rig.state().path(LOCK_TAB_CUT_FILE), "").unwrap();
        set_action(rig.state(), rig.profile, 1, ACTION_SELF_DESTRUCT).unwrap();
        assert!(read(rig.state()).unwrap().binding_locked);
        // A cut tab stays cut, whatever becomes of the file.
        fs::remove_file(rig.state().path(LOCK_TAB_CUT_FILE)).unwrap();
        rig.breach("1", 1_700_000_000);
        assert_eq!(rig.key_count(), 0);
    }

    #[test]
    fn after_the_lock_each_channel_takes_one_setting() {
        let rig = Rig::new(Profile::Zymkey5Preprod);
        set_action(rig.state(), rig.profile, 0, ACTION_NOTIFY).unwrap();
        set_action(rig.state(), rig.profile, 0, 0).unwrap();
        assert_eq!(binding_info(rig.state(), rig.profile), Ok((false, true)));
        lock_binding(rig.state(), rig.profile).unwrap();
        lock_binding(rig.state(), rig.profile).unwrap();
        assert_eq!(binding_info(rig.state(), rig.profile), Ok((true, true)));
        set_action(rig.state(), rig.profile, 0, ALL_ACTIONS).unwrap();
        assert_eq!(
            set_action(rig.state(), rig.profile, 0, 0),
            Err(Errno::PERM),
            "self-destruct, once armed after the lock, stays"
        );
        set_action(rig.state(), rig.profile, 1, ACTION_NOTIFY).unwrap();
        assert_eq!(
            set_action(rig.state(), rig.profile, 1, ACTION_NOTIFY),
            Err(Errno::PERM)
        );
        assert_eq!(
            read(rig.state()).unwrap().actions,
            [ALL_ACTIONS, ACTION_NOTIFY]
        );
        // Clearing is allowed in production mode.
        rig.breach("1", 1_700_000_000);
        clear(rig.state()).unwrap();
        assert_eq!(rig.first_breaches(), [0, 0]);
    }

    #[test]
    fn the_edu_cannot_be_locked() {
        let rig = Rig::new(Profile::Zymkey5Edu);
        assert_eq!(
            lock_binding(rig.state(), rig.profile),
            Err(Errno::OPNOTSUPP)
        );
        assert_eq!(binding_info(rig.state(), rig.profile), Ok((false, true)));
        set_action(rig.state(), rig.profile, 0, ALL_ACTIONS).unwrap();
        rig.breach("0", 1_700_000_000);
        assert_eq!(rig.key_count(), 3);
    }

    #[test]
    fn a_self_destruct_cut_short_is_finished_by_the_next_open() {
        let rig = Rig::new(Profile::Hsm6);
        let lock = rig.state().lock().unwrap();
        let tamper = Tamper {
            destroyed: Some(1_700_000_000),
            ..Tamper::default()
        };
        write(&lock, rig.state(), &tamper).unwrap();
        drop(lock);
        assert!(Perimeter::open(&rig.keys).unwrap().destroyed());
        assert_eq!(rig.key_count(), 0);
    }

    #[test]
    fn digital_settings_on_hsm6_and_hsm60_only() {
        use DigitalSetting::*;
        for profile in [Profile::Hsm6, Profile::Hsm60] {
            for setting in [
                LowPowerPeriod(0),
                LowPowerPeriod(1_000_000),
                LowPowerMaxBits(8),
                Delays {
                    min_ns: 10,
                    max_ns: 10,
                },
            ] {
                assert_eq!(check_digital_setting(profile, setting), Ok(()));
            }
            for setting in [
                LowPowerPeriod(-1),
                LowPowerMaxBits(-1),
                Delays {
                    min_ns: 20,
                    max_ns: 10,
                },
                Delays {
                    min_ns: -1,
                    max_ns: 10,
                },
            ] {
                assert_eq!(check_digital_setting(profile, setting), Err(Errno::INVAL));
            }
        }
        for profile in [Profile::Zymkey4i, Profile::Zymkey5, Profile::Zymkey5Edu] {
            assert_eq!(
                check_digital_setting(profile, LowPowerMaxBits(8)),
                Err(Errno::OPNOTSUPP)
            );
        }
    }

    #[test]
    fn a_tamper_file_without_the_later_fields_reads() {
        let old: Tamper =
            serde_json::from_str(r#"{"actions":[1,0],"first_breach":[0,5]}"#).unwrap();
        assert_eq!(old.actions, [1, 0]);
        assert!(!old.binding_locked && old.destroyed.is_none());
    }
}
