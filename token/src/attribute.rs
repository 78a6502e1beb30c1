//! Objects as attribute tables, and the PKCS#11 attribute protocol over them
//! (`C_GetAttributeValue` filling, `C_FindObjects` matching), and the table
//! of attribute kinds that bounds what a caller's template may declare.

use std::collections::BTreeMap;

use cryptoki_sys::*;

use crate::error::{Error, Result};

/// One attribute value as the C caller sees it: CK_ULONG values in native
/// byte order, CK_BBOOL as one byte, byte strings as they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Attr {
    Value(Vec<u8>),
    /// The attribute exists but its value never leaves the token.
    Sensitive,
}

/// An object: its attributes, by type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Object {
    pub(crate) attrs: BTreeMap<CK_ATTRIBUTE_TYPE, Attr>,
}

impl Object {
    pub(crate) fn new() -> Object {
        Object::default()
    }

    pub(crate) fn set(&mut self, kind: CK_ATTRIBUTE_TYPE, value: Vec<u8>) -> &mut Object {
        self.attrs.insert(kind, Attr::Value(value));
        self
    }

    pub(crate) fn set_ulong(&mut self, kind: CK_ATTRIBUTE_TYPE, value: CK_ULONG) -> &mut Object {
        self.set(kind, ulong_bytes(value))
    }

    pub(crate) fn set_bool(&mut self, kind: CK_ATTRIBUTE_TYPE, value: bool) -> &mut Object {
        self.set(kind, bool_bytes(value))
    }

    pub(crate) fn set_sensitive(&mut self, kind: CK_ATTRIBUTE_TYPE) -> &mut Object {
        self.attrs.insert(kind, Attr::Sensitive);
        self
    }

    /// The readable value of an attribute.
    pub(crate) fn value(&self, kind: CK_ATTRIBUTE_TYPE) -> Option<&[u8]> {
        match self.attrs.get(&kind) {
            Some(Attr::Value(v)) => Some(v),
            _ => None,
        }
    }

    pub(crate) fn ulong(&self, kind: CK_ATTRIBUTE_TYPE) -> Option<CK_ULONG> {
        self.value(kind).and_then(|v| parse_ulong(kind, v).ok())
    }

    pub(crate) fn bool(&self, kind: CK_ATTRIBUTE_TYPE) -> Option<bool> {
        self.value(kind).and_then(|v| parse_bool(kind, v).ok())
    }

    pub(crate) fn class(&self) -> Option<CK_OBJECT_CLASS> {
        self.ulong(CKA_CLASS)
    }

    /// True when every attribute of the template is present here with the
    /// same value; sensitive attributes never match.
    pub(crate) fn matches(&self, template: &[Attribute]) -> bool {
        template
            .iter()
            .all(|(kind, want)| match self.attrs.get(kind) {
                Some(Attr::Value(have)) => have == want,
                _ => false,
            })
    }

    /// Serialises the readable attributes for the store:
    /// repeated `type (u64 BE) ‖ length (u32 BE) ‖ value`.
    pub(crate) fn to_blob(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (kind, attr) in &self.attrs {
            if let Attr::Value(v) = attr {
                // CK_ULONG is 32 bits on some targets; the blob always holds 64.
                #[allow(clippy::useless_conversion)]
                let kind64 = u64::from(*kind);
                out.extend_from_slice(&kind64.to_be_bytes());
                out.extend_from_slice(&(v.len() as u32).to_be_bytes());
                out.extend_from_slice(v);
            }
        }
        out
    }

    pub(crate) fn from_blob(mut blob: &[u8]) -> Option<Object> {
        let mut object = Object::new();
        while !blob.is_empty() {
            if blob.len() < 12 {
                return None;
            }
            let kind = u64::from_be_bytes(blob[..8].try_into().ok()?);
            let len = u32::from_be_bytes(blob[8..12].try_into().ok()?) as usize;
            let value = blob.get(12..12 + len)?;
            object.set(CK_ATTRIBUTE_TYPE::try_from(kind).ok()?, value.to_vec());
            blob = &blob[12 + len..];
        }
        Some(object)
    }
}

pub fn ulong_bytes(v: CK_ULONG) -> Vec<u8> {
    v.to_ne_bytes().to_vec()
}

pub(crate) fn bool_bytes(v: bool) -> Vec<u8> {
    vec![if v { CK_TRUE } else { CK_FALSE }]
}

pub(crate) fn parse_ulong(kind: CK_ATTRIBUTE_TYPE, v: &[u8]) -> Result<CK_ULONG> {
    <[u8; std::mem::size_of::<CK_ULONG>()]>::try_from(v)
        .map(CK_ULONG::from_ne_bytes)
        .map_err(|_| Error::AttributeValueInvalid(kind))
}

pub(crate) fn parse_bool(kind: CK_ATTRIBUTE_TYPE, v: &[u8]) -> Result<bool> {
    match v {
        [b] => Ok(*b != CK_FALSE),
        _ => Err(Error::AttributeValueInvalid(kind)),
    }
}

/// One entry of a caller's `C_GetAttributeValue` template.
#[derive(Debug)]
pub struct TemplateEntry<'a> {
    pub kind: CK_ATTRIBUTE_TYPE,
    /// The caller's buffer; `None` asks for the length only.
    pub buffer: Option<&'a mut [u8]>,
    /// What goes back into `ulValueLen`.
    pub len: CK_ULONG,
}

/// Answers every entry of a template (PKCS#11 2.40 §5.7, C_GetAttributeValue):
/// sensitive → `CK_UNAVAILABLE_INFORMATION` and `CKR_ATTRIBUTE_SENSITIVE`;
/// unknown → `CK_UNAVAILABLE_INFORMATION` and `CKR_ATTRIBUTE_TYPE_INVALID`;
/// no buffer → the length; short buffer → `CK_UNAVAILABLE_INFORMATION` and
/// `CKR_BUFFER_TOO_SMALL`; the other entries are filled all the same.
/// When several entries fail, the most telling code wins: sensitive, then
/// type invalid, then buffer too small.
pub(crate) fn fill_template(object: &Object, template: &mut [TemplateEntry<'_>]) -> Result<()> {
    let mut sensitive = false;
    let mut invalid = None;
    let mut too_small = None;
    for entry in template.iter_mut() {
        match object.attrs.get(&entry.kind) {
            None => {
                entry.len = CK_UNAVAILABLE_INFORMATION;
                invalid.get_or_insert(entry.kind);
            }
            Some(Attr::Sensitive) => {
                entry.len = CK_UNAVAILABLE_INFORMATION;
                sensitive = true;
            }
            Some(Attr::Value(v)) => match entry.buffer.as_deref_mut() {
                None => entry.len = v.len() as CK_ULONG,
                Some(buf) if buf.len() >= v.len() => {
                    buf[..v.len()].copy_from_slice(v);
                    entry.len = v.len() as CK_ULONG;
                }
                Some(_) => {
                    entry.len = CK_UNAVAILABLE_INFORMATION;
                    too_small.get_or_insert(v.len());
                }
            },
        }
    }
    if sensitive {
        Err(Error::AttributeSensitive)
    } else if let Some(kind) = invalid {
        Err(Error::AttributeTypeInvalid(kind))
    } else if let Some(required) = too_small {
        Err(Error::BufferTooSmall { required })
    } else {
        Ok(())
    }
}

/// One attribute of a caller's input template, copied: its type and value.
pub type Attribute = (CK_ATTRIBUTE_TYPE, Vec<u8>);

/// A caller's input template, copied.
pub type Template = Vec<Attribute>;

pub(crate) fn template_value(template: &[Attribute], kind: CK_ATTRIBUTE_TYPE) -> Option<&[u8]> {
    template
        .iter()
        .rev()
        .find(|(k, _)| *k == kind)
        .map(|(_, v)| v.as_slice())
}

pub(crate) fn template_ulong(
    template: &[Attribute],
    kind: CK_ATTRIBUTE_TYPE,
) -> Result<Option<CK_ULONG>> {
    template_value(template, kind)
        .map(|v| parse_ulong(kind, v))
        .transpose()
}

pub(crate) fn template_bool(
    template: &[Attribute],
    kind: CK_ATTRIBUTE_TYPE,
) -> Result<Option<bool>> {
    template_value(template, kind)
        .map(|v| parse_bool(kind, v))
        .transpose()
}

/// How an attribute's value is laid out in C, which bounds the length a
/// caller may declare for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ValueKind {
    /// A `CK_BBOOL`: exactly one byte.
    Bool,
    /// A `CK_ULONG` (classes, types, mechanisms): exactly `sizeof(CK_ULONG)`.
    Ulong,
    /// An array of `CK_ULONG` (`CKA_ALLOWED_MECHANISMS`).
    Ulongs,
    /// A `CK_DATE`, or empty (§4.4).
    Date,
    /// A byte string of at most this many bytes.
    Bytes(usize),
}

/// The longest label, id or application name an object may have.
pub(crate) const MAX_SHORT_LEN: usize = 256;
/// The longest DER name, serial number, key encoding or URL.
pub(crate) const MAX_ENCODING_LEN: usize = 4096;
/// The longest certificate (DER) or data object value: 1 MiB, room for the
/// 100 KB and 1 MB data objects of conformance suites. The bound stays: it is
/// what keeps a declared length of gigabytes from being read from a caller's
/// pointer, or from being held in memory and in the store.
pub(crate) const MAX_VALUE_LEN: usize = 1024 * 1024;
/// The most mechanisms `CKA_ALLOWED_MECHANISMS` may list.
const MAX_MECHANISMS: usize = 64;

/// Which object classes take an attribute (a set of bits).
type Classes = u8;
const CERTIFICATE: Classes = 1;
const DATA: Classes = 2;
const PUBLIC_KEY: Classes = 4;
const PRIVATE_KEY: Classes = 8;
const KEYS: Classes = PUBLIC_KEY | PRIVATE_KEY;
const STORAGE: Classes = CERTIFICATE | DATA | KEYS;

/// Every attribute an object of this token can hold, its kind, and the
/// classes that take it (PKCS#11 2.40 §4.4–4.9; current mechanisms §2.3 for
/// EC keys). `CKA_ID` is not in the specification's data object table, but
/// tools set it to tie data to a key, so data objects take it.
const ATTRIBUTES: &[(CK_ATTRIBUTE_TYPE, ValueKind, Classes)] = &[
    // Storage objects (§4.4).
    (CKA_CLASS, ValueKind::Ulong, STORAGE),
    (CKA_TOKEN, ValueKind::Bool, STORAGE),
    (CKA_PRIVATE, ValueKind::Bool, STORAGE),
    (CKA_MODIFIABLE, ValueKind::Bool, STORAGE),
    (CKA_COPYABLE, ValueKind::Bool, STORAGE),
    (CKA_DESTROYABLE, ValueKind::Bool, STORAGE),
    (CKA_LABEL, ValueKind::Bytes(MAX_SHORT_LEN), STORAGE),
    // Data objects (§4.5).
    (CKA_APPLICATION, ValueKind::Bytes(MAX_SHORT_LEN), DATA),
    (CKA_OBJECT_ID, ValueKind::Bytes(MAX_SHORT_LEN), DATA),
    (
        CKA_VALUE,
        ValueKind::Bytes(MAX_VALUE_LEN),
        DATA | CERTIFICATE | PRIVATE_KEY,
    ),
    // Certificates (§4.6).
    (CKA_CERTIFICATE_TYPE, ValueKind::Ulong, CERTIFICATE),
    (CKA_TRUSTED, ValueKind::Bool, CERTIFICATE | PUBLIC_KEY),
    (CKA_CERTIFICATE_CATEGORY, ValueKind::Ulong, CERTIFICATE),
    (
        CKA_CHECK_VALUE,
        ValueKind::Bytes(MAX_SHORT_LEN),
        CERTIFICATE,
    ),
    (CKA_START_DATE, ValueKind::Date, CERTIFICATE | KEYS),
    (CKA_END_DATE, ValueKind::Date, CERTIFICATE | KEYS),
    (
        CKA_PUBLIC_KEY_INFO,
        ValueKind::Bytes(MAX_ENCODING_LEN),
        CERTIFICATE | KEYS,
    ),
    (
        CKA_SUBJECT,
        ValueKind::Bytes(MAX_ENCODING_LEN),
        CERTIFICATE | KEYS,
    ),
    (CKA_ID, ValueKind::Bytes(MAX_SHORT_LEN), STORAGE),
    (CKA_ISSUER, ValueKind::Bytes(MAX_ENCODING_LEN), CERTIFICATE),
    (
        CKA_SERIAL_NUMBER,
        ValueKind::Bytes(MAX_ENCODING_LEN),
        CERTIFICATE,
    ),
    (CKA_URL, ValueKind::Bytes(MAX_ENCODING_LEN), CERTIFICATE),
    (
        CKA_HASH_OF_SUBJECT_PUBLIC_KEY,
        ValueKind::Bytes(MAX_SHORT_LEN),
        CERTIFICATE,
    ),
    (
        CKA_HASH_OF_ISSUER_PUBLIC_KEY,
        ValueKind::Bytes(MAX_SHORT_LEN),
        CERTIFICATE,
    ),
    (CKA_JAVA_MIDP_SECURITY_DOMAIN, ValueKind::Ulong, CERTIFICATE),
    (CKA_NAME_HASH_ALGORITHM, ValueKind::Ulong, CERTIFICATE),
    // Keys (§4.7–4.9).
    (CKA_KEY_TYPE, ValueKind::Ulong, KEYS),
    (CKA_DERIVE, ValueKind::Bool, KEYS),
    (CKA_LOCAL, ValueKind::Bool, KEYS),
    (CKA_KEY_GEN_MECHANISM, ValueKind::Ulong, KEYS),
    (CKA_ALLOWED_MECHANISMS, ValueKind::Ulongs, KEYS),
    (CKA_ENCRYPT, ValueKind::Bool, KEYS),
    (CKA_VERIFY, ValueKind::Bool, KEYS),
    (CKA_VERIFY_RECOVER, ValueKind::Bool, KEYS),
    (CKA_WRAP, ValueKind::Bool, KEYS),
    (CKA_SENSITIVE, ValueKind::Bool, KEYS),
    (CKA_DECRYPT, ValueKind::Bool, KEYS),
    (CKA_SIGN, ValueKind::Bool, KEYS),
    (CKA_SIGN_RECOVER, ValueKind::Bool, KEYS),
    (CKA_UNWRAP, ValueKind::Bool, KEYS),
    (CKA_EXTRACTABLE, ValueKind::Bool, KEYS),
    (CKA_ALWAYS_SENSITIVE, ValueKind::Bool, KEYS),
    (CKA_NEVER_EXTRACTABLE, ValueKind::Bool, KEYS),
    (CKA_WRAP_WITH_TRUSTED, ValueKind::Bool, KEYS),
    (CKA_ALWAYS_AUTHENTICATE, ValueKind::Bool, KEYS),
    (CKA_EC_PARAMS, ValueKind::Bytes(MAX_ENCODING_LEN), KEYS),
    (CKA_EC_POINT, ValueKind::Bytes(MAX_ENCODING_LEN), PUBLIC_KEY),
];

/// Attributes PKCS#11 defines for objects this token never holds (RSA, DSA,
/// Diffie-Hellman and secret keys, hardware features, OTP, …): valid
/// attributes, but not of any class here (§4.1.1: `CKR_TEMPLATE_INCONSISTENT`).
const OTHER_OBJECTS: &[CK_ATTRIBUTE_TYPE] = &[
    CKA_MODULUS,
    CKA_MODULUS_BITS,
    CKA_PUBLIC_EXPONENT,
    CKA_PRIVATE_EXPONENT,
    CKA_PRIME_1,
    CKA_PRIME_2,
    CKA_EXPONENT_1,
    CKA_EXPONENT_2,
    CKA_COEFFICIENT,
    CKA_PRIME,
    CKA_SUBPRIME,
    CKA_BASE,
    CKA_PRIME_BITS,
    CKA_SUBPRIME_BITS,
    CKA_VALUE_BITS,
    CKA_VALUE_LEN,
    CKA_WRAP_TEMPLATE,
    CKA_UNWRAP_TEMPLATE,
    CKA_DERIVE_TEMPLATE,
    CKA_OWNER,
    CKA_AC_ISSUER,
    CKA_ATTR_TYPES,
    CKA_HW_FEATURE_TYPE,
    CKA_RESET_ON_INIT,
    CKA_HAS_RESET,
    CKA_MECHANISM_TYPE,
    CKA_OTP_FORMAT,
    CKA_OTP_LENGTH,
    CKA_GOSTR3410_PARAMS,
    CKA_GOSTR3411_PARAMS,
    CKA_GOST28147_PARAMS,
];

fn attribute(kind: CK_ATTRIBUTE_TYPE) -> Option<(ValueKind, Classes)> {
    ATTRIBUTES
        .iter()
        .find(|(k, _, _)| *k == kind)
        .map(|&(_, value, classes)| (value, classes))
}

fn classes_of(class: CK_OBJECT_CLASS) -> Option<Classes> {
    match class {
        CKO_CERTIFICATE => Some(CERTIFICATE),
        CKO_DATA => Some(DATA),
        CKO_PUBLIC_KEY => Some(PUBLIC_KEY),
        CKO_PRIVATE_KEY => Some(PRIVATE_KEY),
        _ => None,
    }
}

impl ValueKind {
    fn accepts(self, len: usize) -> bool {
        let ulong = std::mem::size_of::<CK_ULONG>();
        match self {
            ValueKind::Bool => len == std::mem::size_of::<CK_BBOOL>(),
            ValueKind::Ulong => len == ulong,
            ValueKind::Ulongs => len.is_multiple_of(ulong) && len <= MAX_MECHANISMS * ulong,
            ValueKind::Date => len == 0 || len == std::mem::size_of::<CK_DATE>(),
            ValueKind::Bytes(max) => len <= max,
        }
    }

    fn max_len(self) -> usize {
        let ulong = std::mem::size_of::<CK_ULONG>();
        match self {
            ValueKind::Bool => std::mem::size_of::<CK_BBOOL>(),
            ValueKind::Ulong => ulong,
            ValueKind::Ulongs => MAX_MECHANISMS * ulong,
            ValueKind::Date => std::mem::size_of::<CK_DATE>(),
            ValueKind::Bytes(max) => max,
        }
    }
}

/// What a caller's template is for, which decides the attributes it may
/// carry (PKCS#11 2.40 §4.1.1, §5.7, §5.14).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TemplateUse {
    /// `C_FindObjectsInit`: any attribute; one no object here holds matches
    /// nothing, so its value is not read.
    Find,
    /// `C_CreateObject`, for an object of the template's `CKA_CLASS` (when
    /// it is one this token makes).
    Create,
    /// `C_SetAttributeValue`.
    Set,
    /// `C_GenerateKeyPair`, either template (tools put usages in both).
    GenerateKeyPair,
}

impl TemplateUse {
    /// How many bytes of an attribute's value the token reads, checked
    /// before a byte is read: the attribute must suit the use (and the
    /// class, when known) and its declared length its kind.
    fn value_len(
        self,
        class: Option<CK_OBJECT_CLASS>,
        kind: CK_ATTRIBUTE_TYPE,
        declared: usize,
    ) -> Result<usize> {
        let Some((value, classes)) = attribute(kind) else {
            return match self {
                TemplateUse::Find => Ok(0),
                _ if OTHER_OBJECTS.contains(&kind) => Err(Error::TemplateInconsistent(
                    "an attribute of a kind of object this token does not hold",
                )),
                _ => Err(Error::AttributeTypeInvalid(kind)),
            };
        };
        let takes = match self {
            TemplateUse::GenerateKeyPair => classes & KEYS != 0,
            TemplateUse::Create => class.and_then(classes_of).is_none_or(|c| classes & c != 0),
            TemplateUse::Find | TemplateUse::Set => true,
        };
        if !takes {
            return Err(Error::TemplateInconsistent(
                "an attribute the object's class does not take",
            ));
        }
        if !value.accepts(declared) {
            return Err(Error::AttributeValueInvalid(kind));
        }
        Ok(declared)
    }

    /// Checks a template whose values are already read (by the token's own
    /// callers), as [`read_template`] does before reading.
    pub fn check(self, template: &[Attribute]) -> Result<()> {
        let class = template_ulong(template, CKA_CLASS)?;
        for (kind, value) in template {
            self.value_len(class, *kind, value.len())?;
        }
        Ok(())
    }
}

/// Reads a caller's template through `read(index, len)`, which copies `len`
/// bytes of the value of the `index`th attribute of `declared` (type,
/// `ulValueLen`). Each declared length is checked against the attribute's
/// kind before its value is read, the class first when creating an object,
/// so a wrong length never makes the caller's pointer read past its buffer.
pub fn read_template(
    template_use: TemplateUse,
    declared: &[(CK_ATTRIBUTE_TYPE, CK_ULONG)],
    mut read: impl FnMut(usize, usize) -> Result<Vec<u8>>,
) -> Result<Template> {
    let declared_len = |len: CK_ULONG| usize::try_from(len).unwrap_or(usize::MAX);
    let mut class = None;
    if template_use == TemplateUse::Create {
        // The last CKA_CLASS wins, as in `template_value`.
        if let Some(i) = declared.iter().rposition(|(kind, _)| *kind == CKA_CLASS) {
            let len = template_use.value_len(None, CKA_CLASS, declared_len(declared[i].1))?;
            class = Some(parse_ulong(CKA_CLASS, &read(i, len)?)?);
        }
    }
    declared
        .iter()
        .enumerate()
        .map(|(i, &(kind, len))| {
            let len = template_use.value_len(class, kind, declared_len(len))?;
            Ok((kind, read(i, len)?))
        })
        .collect()
}

/// The part of a caller's `ulValueLen`-byte buffer that a value of `kind`
/// can fill, so no buffer is taken for longer than any value it may get.
pub fn value_buffer_len(kind: CK_ATTRIBUTE_TYPE, declared: CK_ULONG) -> CK_ULONG {
    let max = attribute(kind).map_or(0, |(value, _)| value.max_len());
    declared.min(CK_ULONG::try_from(max).unwrap_or(CK_ULONG::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Object {
        let mut o = Object::new();
        o.set_ulong(CKA_CLASS, CKO_PRIVATE_KEY)
            .set(CKA_ID, vec![0, 0])
            .set(CKA_LABEL, b"slot0".to_vec())
            .set_bool(CKA_SIGN, true)
            .set_sensitive(CKA_VALUE);
        o
    }

    #[test]
    fn fills_valid_entries_and_reports_the_rest() {
        let o = key();
        let mut class = [0u8; 8];
        let mut id = [0u8; 1];
        let mut unknown = [0u8; 8];
        let mut value = [0u8; 32];
        let mut t = vec![
            TemplateEntry {
                kind: CKA_CLASS,
                buffer: Some(&mut class),
                len: 8,
            },
            TemplateEntry {
                kind: CKA_LABEL,
                buffer: None,
                len: 0,
            },
            TemplateEntry {
                kind: CKA_ID,
                buffer: Some(&mut id),
                len: 1,
            },
            TemplateEntry {
                kind: CKA_MODULUS,
                buffer: Some(&mut unknown),
                len: 8,
            },
            TemplateEntry {
                kind: CKA_VALUE,
                buffer: Some(&mut value),
                len: 32,
            },
        ];
        let rv = fill_template(&o, &mut t).unwrap_err();
        assert_eq!(rv.rv(), CKR_ATTRIBUTE_SENSITIVE);
        assert_eq!(t[0].len, 8);
        assert_eq!(t[1].len, 5);
        assert_eq!(t[2].len, CK_UNAVAILABLE_INFORMATION);
        assert_eq!(t[3].len, CK_UNAVAILABLE_INFORMATION);
        assert_eq!(t[4].len, CK_UNAVAILABLE_INFORMATION);
        drop(t);
        assert_eq!(CK_ULONG::from_ne_bytes(class), CKO_PRIVATE_KEY);
    }

    #[test]
    fn unknown_beats_short_buffer() {
        let o = key();
        let mut id = [0u8; 1];
        let mut t = vec![
            TemplateEntry {
                kind: CKA_ID,
                buffer: Some(&mut id),
                len: 1,
            },
            TemplateEntry {
                kind: CKA_MODULUS,
                buffer: None,
                len: 0,
            },
        ];
        assert_eq!(
            fill_template(&o, &mut t).unwrap_err().rv(),
            CKR_ATTRIBUTE_TYPE_INVALID
        );
        let mut id = [0u8; 1];
        let mut t = vec![TemplateEntry {
            kind: CKA_ID,
            buffer: Some(&mut id),
            len: 1,
        }];
        assert_eq!(
            fill_template(&o, &mut t).unwrap_err(),
            Error::BufferTooSmall { required: 2 }
        );
    }

    #[test]
    fn all_valid_is_ok() {
        let o = key();
        let mut label = [0u8; 64];
        let mut t = vec![TemplateEntry {
            kind: CKA_LABEL,
            buffer: Some(&mut label),
            len: 64,
        }];
        fill_template(&o, &mut t).unwrap();
        assert_eq!(t[0].len, 5);
        drop(t);
        assert_eq!(&label[..5], b"slot0");
    }

    #[test]
    fn matching_compares_values_and_never_sensitive_ones() {
        let o = key();
        assert!(o.matches(&[]));
        assert!(o.matches(&[(CKA_CLASS, ulong_bytes(CKO_PRIVATE_KEY))]));
        assert!(o.matches(&[
            (CKA_CLASS, ulong_bytes(CKO_PRIVATE_KEY)),
            (CKA_ID, vec![0, 0]),
            (CKA_LABEL, b"slot0".to_vec()),
        ]));
        assert!(!o.matches(&[(CKA_ID, vec![0, 1])]));
        assert!(!o.matches(&[(CKA_LABEL, b"slot".to_vec())]));
        assert!(!o.matches(&[(CKA_CLASS, ulong_bytes(CKO_PUBLIC_KEY))]));
        assert!(!o.matches(&[(CKA_MODULUS, vec![1])]));
        assert!(!o.matches(&[(CKA_VALUE, vec![])]));
    }

    #[test]
    fn blob_round_trip_and_garbage() {
        let mut o = key();
        o.attrs.remove(&CKA_VALUE);
        let back = Object::from_blob(&o.to_blob()).unwrap();
        assert_eq!(back, o);
        assert!(Object::from_blob(&[0, 1, 2]).is_none());
        let mut blob = o.to_blob();
        blob.truncate(blob.len() - 1);
        assert!(Object::from_blob(&blob).is_none());
    }

    #[test]
    fn parses_ulong_and_bool_strictly() {
        assert_eq!(parse_ulong(CKA_CLASS, &ulong_bytes(3)).unwrap(), 3);
        assert!(parse_ulong(CKA_CLASS, &[1, 2]).is_err());
        assert!(parse_bool(CKA_TOKEN, &[1]).unwrap());
        assert!(!parse_bool(CKA_TOKEN, &[0]).unwrap());
        assert!(parse_bool(CKA_TOKEN, &[]).is_err());
    }

    #[test]
    fn declared_lengths_are_checked_by_kind_and_class() {
        let ulong = std::mem::size_of::<CK_ULONG>();
        let create = |class, kind, len| TemplateUse::Create.value_len(Some(class), kind, len);
        assert_eq!(create(CKO_DATA, CKA_TOKEN, 1).unwrap(), 1);
        assert_eq!(
            create(CKO_DATA, CKA_TOKEN, 8).unwrap_err().rv(),
            CKR_ATTRIBUTE_VALUE_INVALID
        );
        assert_eq!(create(CKO_DATA, CKA_CLASS, ulong).unwrap(), ulong);
        assert_eq!(
            create(CKO_DATA, CKA_CLASS, 4).unwrap_err().rv(),
            CKR_ATTRIBUTE_VALUE_INVALID
        );
        assert_eq!(
            create(CKO_DATA, CKA_VALUE, MAX_VALUE_LEN).unwrap(),
            MAX_VALUE_LEN
        );
        assert_eq!(
            create(CKO_DATA, CKA_VALUE, MAX_VALUE_LEN + 1)
                .unwrap_err()
                .rv(),
            CKR_ATTRIBUTE_VALUE_INVALID
        );
        assert_eq!(create(CKO_CERTIFICATE, CKA_START_DATE, 0).unwrap(), 0);
        assert_eq!(
            create(CKO_CERTIFICATE, CKA_START_DATE, 7).unwrap_err().rv(),
            CKR_ATTRIBUTE_VALUE_INVALID
        );
        // The class decides before the length is looked at.
        assert_eq!(
            create(CKO_DATA, CKA_ENCRYPT, usize::MAX).unwrap_err().rv(),
            CKR_TEMPLATE_INCONSISTENT
        );
        assert_eq!(
            create(CKO_CERTIFICATE, CKA_MODULUS, usize::MAX)
                .unwrap_err()
                .rv(),
            CKR_TEMPLATE_INCONSISTENT
        );
        assert_eq!(
            create(CKO_DATA, CKA_VENDOR_DEFINED, 1).unwrap_err().rv(),
            CKR_ATTRIBUTE_TYPE_INVALID
        );
        // A search reads nothing of an attribute no object here holds.
        assert_eq!(
            TemplateUse::Find
                .value_len(None, CKA_MODULUS, usize::MAX)
                .unwrap(),
            0
        );
        assert_eq!(
            TemplateUse::Find
                .value_len(None, CKA_LABEL, usize::MAX)
                .unwrap_err()
                .rv(),
            CKR_ATTRIBUTE_VALUE_INVALID
        );
        assert_eq!(
            TemplateUse::GenerateKeyPair
                .value_len(None, CKA_CERTIFICATE_TYPE, ulong)
                .unwrap_err()
                .rv(),
            CKR_TEMPLATE_INCONSISTENT
        );
        assert_eq!(value_buffer_len(CKA_SIGN, 0xFFFF_FFFF), 1);
        assert_eq!(value_buffer_len(CKA_LABEL, 5), 5);
        assert_eq!(value_buffer_len(CKA_VENDOR_DEFINED, 64), 0);
    }

    #[test]
    fn a_value_may_have_1_mib_and_no_byte_more() {
        const MIB: usize = 1024 * 1024;
        assert_eq!(MAX_VALUE_LEN, MIB);
        for class in [CKO_DATA, CKO_CERTIFICATE] {
            for template_use in [TemplateUse::Create, TemplateUse::Set] {
                assert_eq!(
                    template_use.value_len(Some(class), CKA_VALUE, MIB).unwrap(),
                    MIB
                );
                assert_eq!(
                    template_use
                        .value_len(Some(class), CKA_VALUE, MIB + 1)
                        .unwrap_err()
                        .rv(),
                    CKR_ATTRIBUTE_VALUE_INVALID
                );
            }
        }
        // A whole template of that size is read, one byte more is not.
        let class = ulong_bytes(CKO_DATA);
        let value = vec![0x5a; MIB];
        let declared = [
            (CKA_CLASS, class.len() as CK_ULONG),
            (CKA_VALUE, MIB as CK_ULONG),
        ];
        let values = [class.clone(), value.clone()];
        let template = read_template(TemplateUse::Create, &declared, |i, len| {
            Ok(values[i][..len].to_vec())
        })
        .unwrap();
        assert_eq!(template, [(CKA_CLASS, class), (CKA_VALUE, value)]);
        let declared = [(CKA_CLASS, declared[0].1), (CKA_VALUE, MIB as CK_ULONG + 1)];
        let err = read_template(TemplateUse::Create, &declared, |i, len| {
            assert_eq!(i, 0, "the value over the bound is never read");
            Ok(values[i][..len].to_vec())
        })
        .unwrap_err();
        assert_eq!(err.rv(), CKR_ATTRIBUTE_VALUE_INVALID);
        // A caller's buffer for the value is taken for 1 MiB at most.
        assert_eq!(value_buffer_len(CKA_VALUE, CK_ULONG::MAX), MIB as CK_ULONG);
        // The store's encoding keeps a value of that size.
        let mut object = Object::new();
        object
            .set_ulong(CKA_CLASS, CKO_DATA)
            .set(CKA_VALUE, vec![0xa5; MIB]);
        assert_eq!(Object::from_blob(&object.to_blob()), Some(object));
    }

    #[test]
    fn templates_are_read_class_first_and_only_as_far_as_checked() {
        let class = ulong_bytes(CKO_DATA);
        let values = [b"note".to_vec(), class.clone()];
        let declared = [(CKA_LABEL, 4), (CKA_CLASS, class.len() as CK_ULONG)];
        let mut reads = Vec::new();
        let template = read_template(TemplateUse::Create, &declared, |i, len| {
            reads.push(i);
            Ok(values[i][..len].to_vec())
        })
        .unwrap();
        assert_eq!(reads, [1, 0, 1], "the class first");
        assert_eq!(
            template,
            [(CKA_LABEL, b"note".to_vec()), (CKA_CLASS, class)]
        );
        let declared = [(CKA_CLASS, 8), (CKA_SIGN, 0xFFFF_FFFF)];
        let err = read_template(TemplateUse::Create, &declared, |i, len| {
            assert_eq!(i, 0, "the overlong CKA_SIGN is never read");
            Ok(ulong_bytes(CKO_DATA)[..len].to_vec())
        })
        .unwrap_err();
        assert_eq!(err.rv(), CKR_TEMPLATE_INCONSISTENT);
    }
}
