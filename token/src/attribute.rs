//! Objects as attribute tables, and the PKCS#11 attribute protocol over them
//! (`C_GetAttributeValue` filling, `C_FindObjects` matching).

use std::collections::BTreeMap;

use cryptoki_sys::*;

use crate::error::{Error, Result};

/// One attribute value as the C caller sees it: CK_ULONG values in native
/// byte order, CK_BBOOL as one byte, byte strings as they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attr {
    Value(Vec<u8>),
    /// The attribute exists but its value never leaves the token.
    Sensitive,
}

/// An object: its attributes, by type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Object {
    pub attrs: BTreeMap<CK_ATTRIBUTE_TYPE, Attr>,
}

impl Object {
    pub fn new() -> Object {
        Object::default()
    }

    pub fn set(&mut self, kind: CK_ATTRIBUTE_TYPE, value: Vec<u8>) -> &mut Object {
        self.attrs.insert(kind, Attr::Value(value));
        self
    }

    pub fn set_ulong(&mut self, kind: CK_ATTRIBUTE_TYPE, value: CK_ULONG) -> &mut Object {
        self.set(kind, ulong_bytes(value))
    }

    pub fn set_bool(&mut self, kind: CK_ATTRIBUTE_TYPE, value: bool) -> &mut Object {
        self.set(kind, bool_bytes(value))
    }

    pub fn set_sensitive(&mut self, kind: CK_ATTRIBUTE_TYPE) -> &mut Object {
        self.attrs.insert(kind, Attr::Sensitive);
        self
    }

    /// The readable value of an attribute.
    pub fn value(&self, kind: CK_ATTRIBUTE_TYPE) -> Option<&[u8]> {
        match self.attrs.get(&kind) {
            Some(Attr::Value(v)) => Some(v),
            _ => None,
        }
    }

    pub fn ulong(&self, kind: CK_ATTRIBUTE_TYPE) -> Option<CK_ULONG> {
        self.value(kind).and_then(|v| parse_ulong(kind, v).ok())
    }

    pub fn bool(&self, kind: CK_ATTRIBUTE_TYPE) -> Option<bool> {
        self.value(kind).and_then(|v| parse_bool(kind, v).ok())
    }

    pub fn class(&self) -> Option<CK_OBJECT_CLASS> {
        self.ulong(CKA_CLASS)
    }

    /// True when every attribute of the template is present here with the
    /// same value; sensitive attributes never match.
    pub fn matches(&self, template: &[Attribute]) -> bool {
        template
            .iter()
            .all(|(kind, want)| match self.attrs.get(kind) {
                Some(Attr::Value(have)) => have == want,
                _ => false,
            })
    }

    /// Serialises the readable attributes for the store:
    /// repeated `type (u64 BE) ‖ length (u32 BE) ‖ value`.
    pub fn to_blob(&self) -> Vec<u8> {
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

    pub fn from_blob(mut blob: &[u8]) -> Option<Object> {
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

pub fn bool_bytes(v: bool) -> Vec<u8> {
    vec![if v { CK_TRUE } else { CK_FALSE }]
}

pub fn parse_ulong(kind: CK_ATTRIBUTE_TYPE, v: &[u8]) -> Result<CK_ULONG> {
    <[u8; std::mem::size_of::<CK_ULONG>()]>::try_from(v)
        .map(CK_ULONG::from_ne_bytes)
        .map_err(|_| Error::AttributeValueInvalid(kind))
}

pub fn parse_bool(kind: CK_ATTRIBUTE_TYPE, v: &[u8]) -> Result<bool> {
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
pub fn fill_template(object: &Object, template: &mut [TemplateEntry<'_>]) -> Result<()> {
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

pub fn template_value(template: &[Attribute], kind: CK_ATTRIBUTE_TYPE) -> Option<&[u8]> {
    template
        .iter()
        .rev()
        .find(|(k, _)| *k == kind)
        .map(|(_, v)| v.as_slice())
}

pub fn template_ulong(template: &[Attribute], kind: CK_ATTRIBUTE_TYPE) -> Result<Option<CK_ULONG>> {
    template_value(template, kind)
        .map(|v| parse_ulong(kind, v))
        .transpose()
}

pub fn template_bool(template: &[Attribute], kind: CK_ATTRIBUTE_TYPE) -> Result<Option<bool>> {
    template_value(template, kind)
        .map(|v| parse_bool(kind, v))
        .transpose()
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
}
