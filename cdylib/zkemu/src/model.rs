//! The Zymbit products the emulator can be (its profiles), and the slot
//! layout each gives a device.
//!
//! Every profile says which of its facts Zymbit documents and which the
//! emulator assumes until hardware settles them. Sources are named by the
//! keys listed under "Sources" in the crate documentation.

use std::fmt;
use std::ops::{Range, RangeInclusive};

use crate::errno::{Errno, Result};

/// Slots `0..16` are the factory's on key-store models: generated keys start at 16.
const RESERVED_SLOTS: i32 = 16;
/// Key pairs of a key-store model (`max_num_keys` of `zkGetAllocSlotsList`).
const KEY_STORE_SLOTS: i32 = 512;
/// Foreign public keys of a key-store model, in their own slot namespace.
const FOREIGN_SLOTS: i32 = 128;
/// Factory key slots of a ZYMKEY4i.
const ZYMKEY4I_FACTORY_SLOTS: i32 = 3;

/// The factory slot counts a key-store state can be created with
/// (`ZKIOT_EMU_FACTORY_SLOTS`): at least one, and no more than the reserved range.
pub const FACTORY_SLOT_COUNTS: RangeInclusive<i32> = 1..=RESERVED_SLOTS;
/// The factory slot count of a key-store state created without `ZKIOT_EMU_FACTORY_SLOTS`.
pub const DEFAULT_FACTORY_SLOTS: i32 = 12;

/// A Zymbit product, as named by `ZKIOT_EMU_MODEL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// Zymkey 4i: factory P-256 keys in slots 0, 1, 2; no key store.
    ///
    /// Documented: three factory key pairs [ZD api/api_docs_intro.md]; the
    /// key-store and foreign-key functions name HSM6, SCM (and since Dec 2025
    /// HSM60, HSM64) as their devices, never a Zymkey 4 [ZD api/c_api.md];
    /// an accelerometer is an option of the board [DS-ZK4], and the tap and
    /// accelerometer calls name no device \[HDR\].
    ///
    /// Assumed: the model string "ZYMKEY4i" (Zymbit publishes none); the slot
    /// numbers 0–2; that `zkGetAllocSlotsList` answers capacity 3 with
    /// `[0, 1, 2]` rather than failing \[hw\]; that the accelerometer is fitted.
    Zymkey4i,
    /// HSM6: the key store.
    ///
    /// Documented: 512 key pairs and 128 foreign public keys [DS-HSM6];
    /// factory P-256 key slots, 12 [ZD api/api_docs_intro.md] or 14
    /// [DS-HSM6]; generated keys from slot 16 [ZD hardware/components/scm]; key
    /// types P-256, secp256k1, Ed25519, X25519 [HDR, ZKU]; an X25519 slot
    /// cannot sign \[ZKU\]; the accelerometer is an option [DS-HSM6].
    ///
    /// Assumed: the model string "HSM6" (pre-production ZYMKEY5 "identifies as
    /// an HSM6" [ZD-ZK5], but no returned string is published); factory slots
    /// numbered from 0; that ECDSA with an Ed25519 key is refused \[hw\]; that
    /// the accelerometer is fitted.
    Hsm6,
    /// Production ZYMKEY5.
    ///
    /// Documented: "Production ZYMKEY5 will identify as a ZYMKEY5"
    /// [ZD-ZK5]; 512 key pairs, 128 foreign public keys, P-256, secp256k1,
    /// Ed25519, X25519 [ZD-PB-ZK5]; "All of the HSM6 functionality is fully
    /// applicable to the ZYMKEY5" [ZD-ZK5]; its tamper sensors are two
    /// perimeter circuits and a power monitor, no accelerometer [ZD-PB-ZK5].
    ///
    /// Assumed: the exact model string ("ZYMKEY5" unless
    /// `ZKIOT_EMU_MODEL_STRING` says otherwise) \[hw\]; the HSM6 slot layout
    /// (factory slots below 16, 12 or 14 of them, generated keys from 16)
    /// [inference from ZD-ZK5]; that the tap and accelerometer calls fail,
    /// here with `-EOPNOTSUPP` [inference from ZD-PB-ZK5, hw].
    Zymkey5,
    /// Pre-production ZYMKEY5: a ZYMKEY5 that reports "HSM6".
    ///
    /// Documented: "The ZYMKEY5 Pre-production identifies as an HSM6"
    /// [ZD-ZK5]. The rest as [`Profile::Zymkey5`], with its assumptions.
    Zymkey5Preprod,
    /// ZYMKEY5 EDU (pre-production): reports "HSM6" too.
    ///
    /// Documented: "The EDU version (pre-production) will also identify as an
    /// HSM6"; it differs only in that it cannot bind-lock into a destructive
    /// state [ZD-ZK5]: here `zkLockBinding` fails (assumed), so a breach never
    /// destroys its keys. The rest as [`Profile::Zymkey5`], with its assumptions.
    Zymkey5Edu,
    /// HSM60 (CM4/CM5 interposer).
    ///
    /// Documented: 512 key pairs, 128 foreign public keys, the ZYMKEY5's
    /// curves, an "accelerometer shock & orientation sensor" [ZD-PB-HSM60];
    /// 12 factory P-256 key slots [ZD api/api_docs_intro.md]; the key-store
    /// functions name it [ZD api/c_api.md].
    ///
    /// Assumed: the model string "HSM60" \[hw\]; the HSM6 slot numbering
    /// (factory from 0, generated keys from 16).
    Hsm60,
}

impl Profile {
    pub const DEFAULT: Profile = Profile::Zymkey4i;

    /// Every profile, in the order messages list them.
    pub const ALL: [Profile; 6] = [
        Profile::Zymkey4i,
        Profile::Hsm6,
        Profile::Zymkey5,
        Profile::Zymkey5Preprod,
        Profile::Zymkey5Edu,
        Profile::Hsm60,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Profile::Zymkey4i => "ZYMKEY4i",
            Profile::Hsm6 => "HSM6",
            Profile::Zymkey5 => "ZYMKEY5",
            Profile::Zymkey5Preprod => "ZYMKEY5-PREPROD",
            Profile::Zymkey5Edu => "ZYMKEY5-EDU",
            Profile::Hsm60 => "HSM60",
        }
    }

    /// The profile named exactly `name`.
    pub fn from_name(name: &str) -> Option<Profile> {
        Profile::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The profile of a state created before there were profiles, whose
    /// `device.json` holds only the model string: `ZYMKEY4i` or `HSM6`.
    pub fn from_legacy_model(model: &str) -> Option<Profile> {
        Profile::from_name(model).filter(|p| matches!(p, Profile::Zymkey4i | Profile::Hsm6))
    }

    /// Every profile name, for messages: "A, B, … or F".
    pub fn names() -> String {
        let names: Vec<&str> = Profile::ALL.iter().map(|p| p.name()).collect();
        let (last, rest) = names.split_last().expect("profiles");
        format!("{} or {last}", rest.join(", "))
    }

    /// What `zkGetModelNumberString` reports, unless the profile takes its
    /// string from `ZKIOT_EMU_MODEL_STRING` (see [`Profile::takes_model_string`]).
    pub fn default_model_string(self) -> &'static str {
        match self {
            Profile::Zymkey4i => "ZYMKEY4i",
            Profile::Hsm6 | Profile::Zymkey5Preprod | Profile::Zymkey5Edu => "HSM6",
            Profile::Zymkey5 => "ZYMKEY5",
            Profile::Hsm60 => "HSM60",
        }
    }

    /// Whether `ZKIOT_EMU_MODEL_STRING` sets the model string: only for the
    /// production ZYMKEY5, whose string is not published.
    pub fn takes_model_string(self) -> bool {
        self == Profile::Zymkey5
    }

    /// Whether the device has a key store (key generation, foreign keys).
    pub fn has_key_store(self) -> bool {
        self != Profile::Zymkey4i
    }

    /// Whether the tap and accelerometer calls work.
    pub fn has_accelerometer(self) -> bool {
        !matches!(
            self,
            Profile::Zymkey5 | Profile::Zymkey5Preprod | Profile::Zymkey5Edu
        )
    }

    /// The perimeter-breach circuits (channels) of the model: two on every
    /// profile. Documented: "2 perimeter loops" on the ZYMKEY4i [DS-ZK4] and
    /// the HSM6 [DS-HSM6], "2 x perimeter breach detection circuits" on the
    /// ZYMKEY5 [ZD-PB-ZK5], PERIM_0 to PERIM_2 (one transmitter, two
    /// receivers) on the HSM60 [ZD hardware/modules/hsm60]; the channel of
    /// `zkSetPerimeterEventAction` is "0 or 1" \[HDR\].
    pub fn perimeter_channels(self) -> usize {
        2
    }

    /// Whether the digital ("enhanced") perimeter settings work
    /// (`zkSetDigitalPerimeterDetectLPPeriod`, `…LPMaxBits`, `…Delays`).
    /// Documented: "Supported Devices: HSM60, HSM64, HSM6, Secure Compute
    /// Module" [ZD api/c_api.md]; the ZYMKEY4i has two "standard" loops
    /// [DS-ZK4]. Assumed: the ZYMKEY5 has none (it is in no list of supported
    /// devices, and its brief names no enhanced perimeter [ZD-PB-ZK5]).
    pub fn has_digital_perimeter(self) -> bool {
        matches!(self, Profile::Hsm6 | Profile::Hsm60)
    }

    /// Whether `zkLockBinding` puts the device in production mode. Documented:
    /// HSM6 and HSM60 lock by `zkLockBinding`, "only valid for HSM series";
    /// a ZYMKEY4i by cutting its lock tab [ZD tutorials/production-mode].
    /// Assumed: the ZYMKEY5's "software API command" is `zkLockBinding`
    /// (production and pre-production alike); the EDU, which "cannot
    /// bind-lock into a destructive state" [ZD-ZK5], refuses it.
    pub fn can_lock_binding(self) -> bool {
        !matches!(self, Profile::Zymkey4i | Profile::Zymkey5Edu)
    }

    /// Whether `zkGetCurrentBindingInfo` answers. Assumed: every model but
    /// the ZYMKEY4i (the binding calls are labelled "model >= HSM6" \[ZKU\]).
    pub fn reports_binding(self) -> bool {
        self != Profile::Zymkey4i
    }

    /// Whether production mode comes from cutting the lock tab, which the
    /// emulator stands for with the file `lock-tab-cut` (documented: the
    /// ZYMKEY4i's self-destruct "works only after the Lock Tab has been cut"
    /// [ZD troubleshooting/zymkey4]).
    pub fn has_lock_tab(self) -> bool {
        self == Profile::Zymkey4i
    }

    /// The factory slot count of a state created without `ZKIOT_EMU_FACTORY_SLOTS`.
    pub fn default_factory_slots(self) -> i32 {
        if self.has_key_store() {
            DEFAULT_FACTORY_SLOTS
        } else {
            ZYMKEY4I_FACTORY_SLOTS
        }
    }

    /// Whether `ZKIOT_EMU_FACTORY_SLOTS` applies: a ZYMKEY4i always has three.
    pub fn takes_factory_slots(self) -> bool {
        self.has_key_store()
    }

    /// The slot layout of a device of this profile with `factory_slots`
    /// factory keys; `None` if the profile cannot have that many.
    pub fn layout(self, factory_slots: i32) -> Option<Layout> {
        let possible = if self.has_key_store() {
            FACTORY_SLOT_COUNTS.contains(&factory_slots)
        } else {
            factory_slots == ZYMKEY4I_FACTORY_SLOTS
        };
        possible.then_some(Layout {
            key_store: self.has_key_store(),
            factory: factory_slots,
        })
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a slot number lives: the device's own key pairs, or the foreign keyring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keyring {
    Device,
    Foreign,
}

/// The slots of one device, fixed when its state is created: with a key
/// store, factory slots `0..N` (N of 1–16), reserved `0..16`, generated keys
/// in `16..512`, foreign keys in `0..128`; without (ZYMKEY4i), factory slots
/// `0..3` and nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    key_store: bool,
    factory: i32,
}

impl Layout {
    /// Slots that hold a P-256 key from the factory.
    pub fn factory_slots(self) -> Range<i32> {
        0..self.factory
    }

    /// Number of factory slots.
    pub fn factory_count(self) -> i32 {
        self.factory
    }

    /// Slots reserved for the factory: never handed out by key generation.
    fn reserved_slots(self) -> Range<i32> {
        if self.key_store {
            0..RESERVED_SLOTS
        } else {
            self.factory_slots()
        }
    }

    /// Number of slots of a keyring (`max_num_keys` of `zkGetAllocSlotsList`);
    /// valid slot numbers are `0..capacity`.
    pub fn capacity(self, keyring: Keyring) -> Result<i32> {
        match (self.key_store, keyring) {
            (false, Keyring::Device) => Ok(self.factory),
            (false, Keyring::Foreign) => Err(Errno::OPNOTSUPP),
            (true, Keyring::Device) => Ok(KEY_STORE_SLOTS),
            (true, Keyring::Foreign) => Ok(FOREIGN_SLOTS),
        }
    }

    /// The slots new keys of a keyring are allocated from, lowest free first.
    pub fn allocatable_slots(self, keyring: Keyring) -> Result<Range<i32>> {
        match keyring {
            Keyring::Device if !self.can_generate_keys() => Err(Errno::OPNOTSUPP),
            Keyring::Device => Ok(self.reserved_slots().end..self.capacity(keyring)?),
            Keyring::Foreign => Ok(0..self.capacity(keyring)?),
        }
    }

    pub fn can_generate_keys(self) -> bool {
        self.key_store
    }

    pub fn is_factory_slot(self, slot: i32) -> bool {
        self.factory_slots().contains(&slot)
    }

    /// Checks that `slot` is a slot number of the keyring: out of range is
    /// `EINVAL` (an empty slot inside the range is the caller's `ENOENT`).
    pub fn check_slot(self, keyring: Keyring, slot: i32) -> Result<()> {
        if (0..self.capacity(keyring)?).contains(&slot) {
            Ok(())
        } else {
            Err(Errno::INVAL)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(profile: Profile, factory: i32) -> Layout {
        profile.layout(factory).unwrap()
    }

    #[test]
    fn names_are_exact() {
        for profile in Profile::ALL {
            assert_eq!(Profile::from_name(profile.name()), Some(profile));
        }
        assert_eq!(Profile::from_name("ZYMKEY4i"), Some(Profile::Zymkey4i));
        assert_eq!(
            Profile::from_name("ZYMKEY5-PREPROD"),
            Some(Profile::Zymkey5Preprod)
        );
        assert_eq!(Profile::from_name("zymkey4i"), None);
        assert_eq!(Profile::from_name("HSM4"), None);
        assert_eq!(Profile::from_name("ZYMKEY5 "), None);
        assert_eq!(
            Profile::names(),
            "ZYMKEY4i, HSM6, ZYMKEY5, ZYMKEY5-PREPROD, ZYMKEY5-EDU or HSM60"
        );
    }

    #[test]
    fn legacy_states_are_zymkey4i_or_hsm6() {
        assert_eq!(
            Profile::from_legacy_model("ZYMKEY4i"),
            Some(Profile::Zymkey4i)
        );
        assert_eq!(Profile::from_legacy_model("HSM6"), Some(Profile::Hsm6));
        for name in ["ZYMKEY5", "HSM60", "ZYMKEY5-EDU", "SCM"] {
            assert_eq!(Profile::from_legacy_model(name), None, "{name}");
        }
    }

    #[test]
    fn model_strings() {
        let strings: Vec<(&str, &str)> = Profile::ALL
            .iter()
            .map(|p| (p.name(), p.default_model_string()))
            .collect();
        assert_eq!(
            strings,
            [
                ("ZYMKEY4i", "ZYMKEY4i"),
                ("HSM6", "HSM6"),
                ("ZYMKEY5", "ZYMKEY5"),
                ("ZYMKEY5-PREPROD", "HSM6"),
                ("ZYMKEY5-EDU", "HSM6"),
                ("HSM60", "HSM60"),
            ]
        );
        let configurable: Vec<Profile> = Profile::ALL
            .into_iter()
            .filter(|p| p.takes_model_string())
            .collect();
        assert_eq!(configurable, [Profile::Zymkey5]);
    }

    #[test]
    fn capabilities() {
        for profile in Profile::ALL {
            let zymkey5 = profile.name().starts_with("ZYMKEY5");
            assert_eq!(profile.has_accelerometer(), !zymkey5, "{profile}");
            assert_eq!(
                profile.has_key_store(),
                profile != Profile::Zymkey4i,
                "{profile}"
            );
        }
    }

    #[test]
    fn perimeter_and_binding() {
        let names = |f: fn(Profile) -> bool| -> Vec<&str> {
            Profile::ALL
                .into_iter()
                .filter(|p| f(*p))
                .map(Profile::name)
                .collect()
        };
        assert!(Profile::ALL.iter().all(|p| p.perimeter_channels() == 2));
        assert_eq!(names(Profile::has_digital_perimeter), ["HSM6", "HSM60"]);
        assert_eq!(
            names(Profile::can_lock_binding),
            ["HSM6", "ZYMKEY5", "ZYMKEY5-PREPROD", "HSM60"]
        );
        assert_eq!(
            names(Profile::reports_binding),
            ["HSM6", "ZYMKEY5", "ZYMKEY5-PREPROD", "ZYMKEY5-EDU", "HSM60"]
        );
        assert_eq!(names(Profile::has_lock_tab), ["ZYMKEY4i"]);
    }

    #[test]
    fn factory_slot_counts() {
        assert_eq!(Profile::Zymkey4i.default_factory_slots(), 3);
        assert!(Profile::Zymkey4i.layout(3).is_some());
        assert!(Profile::Zymkey4i.layout(12).is_none());
        for profile in Profile::ALL.into_iter().filter(|p| p.has_key_store()) {
            assert_eq!(profile.default_factory_slots(), 12, "{profile}");
            for count in [1, 12, 14, 16] {
                let layout = layout(profile, count);
                assert_eq!(layout.factory_slots(), 0..count);
                assert!(layout.is_factory_slot(count - 1) && !layout.is_factory_slot(count));
            }
            for count in [0, -1, 17, 512] {
                assert!(profile.layout(count).is_none(), "{profile} {count}");
            }
        }
    }

    #[test]
    fn slot_ranges() {
        for factory in [12, 14] {
            let hsm = layout(Profile::Hsm60, factory);
            assert_eq!(hsm.allocatable_slots(Keyring::Device), Ok(16..512));
            assert_eq!(hsm.allocatable_slots(Keyring::Foreign), Ok(0..128));
            assert_eq!(hsm.capacity(Keyring::Device), Ok(512));
        }
        let hsm6 = layout(Profile::Hsm6, 12);
        let zymkey4i = layout(Profile::Zymkey4i, 3);
        assert_eq!(zymkey4i.capacity(Keyring::Device), Ok(3));
        assert_eq!(
            zymkey4i.allocatable_slots(Keyring::Device),
            Err(Errno::OPNOTSUPP)
        );
        assert_eq!(
            zymkey4i.allocatable_slots(Keyring::Foreign),
            Err(Errno::OPNOTSUPP)
        );
        assert_eq!(zymkey4i.check_slot(Keyring::Device, 2), Ok(()));
        assert_eq!(zymkey4i.check_slot(Keyring::Device, 3), Err(Errno::INVAL));
        assert_eq!(hsm6.check_slot(Keyring::Device, -1), Err(Errno::INVAL));
        assert_eq!(hsm6.check_slot(Keyring::Device, 511), Ok(()));
        assert_eq!(hsm6.check_slot(Keyring::Device, 512), Err(Errno::INVAL));
        assert_eq!(hsm6.check_slot(Keyring::Foreign, 127), Ok(()));
        assert_eq!(hsm6.check_slot(Keyring::Foreign, 128), Err(Errno::INVAL));
        assert!(hsm6.is_factory_slot(11) && !hsm6.is_factory_slot(12));
        let sixteen = layout(Profile::Zymkey5, 16);
        assert_eq!(sixteen.allocatable_slots(Keyring::Device), Ok(16..512));
    }
}
