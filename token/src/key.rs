//! Key objects: one private and one public key object per device key slot,
//! built from the slot's cached public key. Their handles, `CKA_ID` and
//! `CKA_LABEL` derive from the slot number, so they are the same in every
//! process.

use cryptoki_sys::*;

use crate::attribute::Object;
use crate::curve::{ec_point_der, spki_der, Curve};
use crate::mechanism::Verifier;

/// Slot numbers of the foreign keyring are shown as `0x8000 | N`.
pub(crate) const FOREIGN_ID_FLAG: u32 = 0x8000;

/// Handles of key objects: `KEY_HANDLE_BASE | id << 1 | is_public`.
const KEY_HANDLE_BASE: CK_OBJECT_HANDLE = 0x1000_0000;
const KEY_HANDLE_LIMIT: CK_OBJECT_HANDLE = 0x2000_0000;

/// Which key store a slot lives in, and its number there (as the device
/// cache writes it, too).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct KeySlot {
    pub(crate) number: u32,
    pub(crate) foreign: bool,
}

impl KeySlot {
    pub fn device(number: u32) -> KeySlot {
        KeySlot {
            number,
            foreign: false,
        }
    }

    /// The number shown in `CKA_ID` and used in handles.
    pub(crate) fn id_number(self) -> u32 {
        if self.foreign {
            FOREIGN_ID_FLAG | self.number
        } else {
            self.number
        }
    }

    /// `CKA_ID`: the 2-byte big-endian slot number (foreign: `0x8000|N`).
    pub(crate) fn default_id(self) -> Vec<u8> {
        (self.id_number() as u16).to_be_bytes().to_vec()
    }

    /// The label shown when none was given at generation: for a device
    /// slot, the configuration's ([`zkconf::Config::key_label`], which the
    /// `zkiot` tool looks keys up by too); for a foreign one, `foreignN`.
    pub(crate) fn label(self, config: &zkconf::Config) -> String {
        if self.foreign {
            format!("foreign{}", self.number)
        } else {
            config.key_label(self.number)
        }
    }

    pub(crate) fn zymkey(self) -> zymkey::Slot {
        zymkey::Slot {
            number: self.number as i32,
            foreign: self.foreign,
        }
    }

    pub fn private_handle(self) -> CK_OBJECT_HANDLE {
        KEY_HANDLE_BASE | (CK_OBJECT_HANDLE::from(self.id_number()) << 1)
    }

    pub fn public_handle(self) -> CK_OBJECT_HANDLE {
        self.private_handle() | 1
    }

    /// The slot and kind (`true` = public) of a key object handle.
    pub(crate) fn from_handle(handle: CK_OBJECT_HANDLE) -> Option<(KeySlot, bool)> {
        if !(KEY_HANDLE_BASE..KEY_HANDLE_LIMIT).contains(&handle) {
            return None;
        }
        let id = u32::try_from((handle - KEY_HANDLE_BASE) >> 1).ok()?;
        let slot = if id & FOREIGN_ID_FLAG != 0 {
            KeySlot {
                number: id & !FOREIGN_ID_FLAG,
                foreign: true,
            }
        } else {
            KeySlot::device(id)
        };
        (id <= 0xFFFF).then_some((slot, handle & 1 == 1))
    }
}

/// Everything known about one device key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeviceKey {
    pub(crate) slot: KeySlot,
    pub(crate) curve: Curve,
    /// The public key as the device gives it (raw X‖Y, or 32 bytes).
    pub(crate) raw_public: Vec<u8>,
    pub(crate) label: String,
    pub(crate) id: Vec<u8>,
    /// Outside the factory slots of a key store (see `Token::is_removable`).
    pub(crate) removable: bool,
}

impl DeviceKey {
    /// The mechanisms the key can be used with.
    pub(crate) fn mechanisms(&self) -> &'static [CK_MECHANISM_TYPE] {
        if self.curve.is_ecdsa() {
            crate::mechanism::SIGN_MECHANISMS
        } else {
            &[]
        }
    }

    fn common(&self, object: &mut Object, class: CK_OBJECT_CLASS, private: bool) {
        let mechanisms: Vec<u8> = self
            .mechanisms()
            .iter()
            .flat_map(|m| m.to_ne_bytes())
            .collect();
        object
            .set_ulong(CKA_CLASS, class)
            .set_bool(CKA_TOKEN, true)
            .set_bool(CKA_PRIVATE, private)
            .set_bool(CKA_MODIFIABLE, false)
            .set_bool(CKA_COPYABLE, false)
            .set_bool(CKA_DESTROYABLE, self.removable)
            .set(CKA_LABEL, self.label.as_bytes().to_vec())
            .set_ulong(CKA_KEY_TYPE, self.curve.key_type())
            .set(CKA_ID, self.id.clone())
            .set(CKA_START_DATE, Vec::new())
            .set(CKA_END_DATE, Vec::new())
            .set_bool(CKA_DERIVE, false)
            .set_bool(CKA_LOCAL, true)
            .set_ulong(CKA_KEY_GEN_MECHANISM, CKM_EC_KEY_PAIR_GEN)
            .set(CKA_ALLOWED_MECHANISMS, mechanisms)
            .set(CKA_SUBJECT, Vec::new())
            .set(CKA_EC_PARAMS, self.curve.params().to_vec())
            .set(CKA_EC_POINT, ec_point_der(self.curve, &self.raw_public));
        if let Some(spki) = spki_der(self.curve, &self.raw_public) {
            object.set(CKA_PUBLIC_KEY_INFO, spki);
        }
    }

    /// The private key object. `login_required`: a PIN guards the token, so
    /// the key is a private object.
    pub(crate) fn private_object(&self, login_required: bool) -> Object {
        let mut o = Object::new();
        self.common(&mut o, CKO_PRIVATE_KEY, login_required);
        let sign = self.curve.is_ecdsa();
        o.set_bool(CKA_SENSITIVE, true)
            .set_bool(CKA_DECRYPT, false)
            .set_bool(CKA_SIGN, sign)
            .set_bool(CKA_SIGN_RECOVER, false)
            .set_bool(CKA_UNWRAP, false)
            .set_bool(CKA_EXTRACTABLE, false)
            .set_bool(CKA_ALWAYS_SENSITIVE, true)
            .set_bool(CKA_NEVER_EXTRACTABLE, true)
            .set_bool(CKA_WRAP_WITH_TRUSTED, false)
            .set_bool(CKA_ALWAYS_AUTHENTICATE, false)
            .set_sensitive(CKA_VALUE);
        o
    }

    pub(crate) fn public_object(&self) -> Object {
        let mut o = Object::new();
        self.common(&mut o, CKO_PUBLIC_KEY, false);
        o.set_bool(CKA_ENCRYPT, false)
            .set_bool(CKA_VERIFY, self.curve.is_ecdsa())
            .set_bool(CKA_VERIFY_RECOVER, false)
            .set_bool(CKA_WRAP, false)
            .set_bool(CKA_TRUSTED, false);
        o
    }
}

/// A device key and its two objects, built once.
#[derive(Debug, Clone)]
pub(crate) struct KeyEntry {
    pub(crate) key: DeviceKey,
    pub(crate) private: Object,
    pub(crate) public: Object,
    /// The public point ready for the check of every signature (building it
    /// costs a tenth of that check); `None` for the curves that do not sign.
    pub(crate) verifier: Option<Verifier>,
}

impl KeyEntry {
    pub(crate) fn new(key: DeviceKey, login_required: bool) -> KeyEntry {
        let verifier = Verifier::new(key.curve, &key.raw_public).ok();
        KeyEntry {
            private: key.private_object(login_required),
            public: key.public_object(),
            verifier,
            key,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribute::{ulong_bytes, Attr};
    use crate::curve::tests::p256_point;
    use crate::curve::P256_PARAMS;

    #[test]
    fn ids_labels_and_handles_derive_from_the_slot() {
        let s = KeySlot::device(0);
        assert_eq!(s.default_id(), vec![0, 0]);
        assert_eq!(s.label(&zkconf::Config::default()), "slot0");
        let renamed = zkconf::Config::parse("[labels]\n0 = \"device\"\n", "test").unwrap();
        assert_eq!(s.label(&renamed), "device");
        let s = KeySlot::device(16);
        assert_eq!(s.default_id(), vec![0, 16]);
        let f = KeySlot {
            number: 3,
            foreign: true,
        };
        assert_eq!(f.default_id(), vec![0x80, 3]);
        assert_eq!(f.label(&zkconf::Config::default()), "foreign3");
        for slot in [s, f, KeySlot::device(0), KeySlot::device(511)] {
            assert_eq!(
                KeySlot::from_handle(slot.private_handle()),
                Some((slot, false))
            );
            assert_eq!(
                KeySlot::from_handle(slot.public_handle()),
                Some((slot, true))
            );
        }
        assert_eq!(KeySlot::from_handle(0), None);
        assert_eq!(KeySlot::from_handle(0x2000_0001), None);
    }

    #[test]
    fn key_templates() {
        let key = DeviceKey {
            slot: KeySlot::device(0),
            curve: Curve::P256,
            raw_public: p256_point(),
            label: "slot0".into(),
            id: vec![0, 0],
            removable: false,
        };
        let private = key.private_object(false);
        assert_eq!(private.class(), Some(CKO_PRIVATE_KEY));
        assert_eq!(private.ulong(CKA_KEY_TYPE), Some(CKK_EC));
        assert_eq!(private.value(CKA_EC_PARAMS), Some(P256_PARAMS));
        assert_eq!(private.value(CKA_EC_POINT).unwrap().len(), 67);
        assert_eq!(private.bool(CKA_SENSITIVE), Some(true));
        assert_eq!(private.bool(CKA_EXTRACTABLE), Some(false));
        assert_eq!(private.bool(CKA_ALWAYS_AUTHENTICATE), Some(false));
        assert_eq!(private.bool(CKA_PRIVATE), Some(false));
        assert_eq!(private.attrs.get(&CKA_VALUE), Some(&Attr::Sensitive));
        assert!(private.matches(&[
            (CKA_CLASS, ulong_bytes(CKO_PRIVATE_KEY)),
            (CKA_ID, vec![0, 0])
        ]));
        assert_eq!(key.private_object(true).bool(CKA_PRIVATE), Some(true));
        let public = key.public_object();
        assert_eq!(public.class(), Some(CKO_PUBLIC_KEY));
        assert_eq!(public.value(CKA_EC_POINT), private.value(CKA_EC_POINT));
        assert_eq!(public.bool(CKA_VERIFY), Some(true));
        assert!(public.value(CKA_VALUE).is_none());
        let mechs = public.value(CKA_ALLOWED_MECHANISMS).unwrap();
        assert_eq!(
            mechs.len(),
            std::mem::size_of_val(crate::mechanism::SIGN_MECHANISMS)
        );
    }
}
