//! Certificate and data objects made by `C_CreateObject`: their defaults,
//! what is derived, and what `C_SetAttributeValue` may change afterwards
//! (which attributes each class takes is the attribute table's).

use cryptoki_sys::*;

use crate::attribute::{
    parse_bool, template_ulong, template_value, Attribute, Object, TemplateUse,
};
use crate::error::{Error, Result};

/// Builds a certificate or data object from a creation template.
pub(crate) fn build(template: &[Attribute]) -> Result<Object> {
    let class =
        template_ulong(template, CKA_CLASS)?.ok_or(Error::TemplateIncomplete("CKA_CLASS"))?;
    if !matches!(class, CKO_CERTIFICATE | CKO_DATA) {
        return Err(Error::AttributeValueInvalid(CKA_CLASS));
    }
    TemplateUse::Create.check(template)?;
    let mut object = Object::new();
    object
        .set_ulong(CKA_CLASS, class)
        .set_bool(CKA_TOKEN, false)
        .set_bool(CKA_MODIFIABLE, true)
        .set_bool(CKA_COPYABLE, true)
        .set_bool(CKA_DESTROYABLE, true)
        .set(CKA_LABEL, Vec::new());
    for (kind, value) in template {
        object.set(*kind, value.clone());
    }
    match class {
        CKO_CERTIFICATE => complete_certificate(&mut object)?,
        _ => complete_data(&mut object),
    }
    Ok(object)
}

fn complete_data(object: &mut Object) {
    for kind in [CKA_APPLICATION, CKA_OBJECT_ID, CKA_VALUE] {
        if object.value(kind).is_none() {
            object.set(kind, Vec::new());
        }
    }
    if object.value(CKA_PRIVATE).is_none() {
        object.set_bool(CKA_PRIVATE, true);
    }
}

/// Checks an X.509 certificate's DER and fills in what the spec derives from it.
fn complete_certificate(object: &mut Object) -> Result<()> {
    let cert_type = object.ulong(CKA_CERTIFICATE_TYPE).unwrap_or(CKC_X_509);
    if cert_type != CKC_X_509 {
        return Err(Error::AttributeValueInvalid(CKA_CERTIFICATE_TYPE));
    }
    object.set_ulong(CKA_CERTIFICATE_TYPE, CKC_X_509);
    let der = object
        .value(CKA_VALUE)
        .filter(|v| !v.is_empty())
        .ok_or(Error::TemplateIncomplete("CKA_VALUE (the DER certificate)"))?
        .to_vec();
    use x509_cert::der::{Decode, Encode};
    let invalid = |_| Error::AttributeValueInvalid(CKA_VALUE);
    let cert = x509_cert::Certificate::from_der(&der).map_err(invalid)?;
    // Anything after the certificate, or an encoding other than its DER, is refused,
    // so the value stored is exactly the certificate.
    if cert.to_der().map_err(invalid)? != der {
        return Err(Error::AttributeValueInvalid(CKA_VALUE));
    }
    let tbs = &cert.tbs_certificate;
    if object.value(CKA_SUBJECT).is_none() {
        object.set(CKA_SUBJECT, tbs.subject.to_der().map_err(invalid)?);
    }
    if object.value(CKA_ISSUER).is_none() {
        object.set(CKA_ISSUER, tbs.issuer.to_der().map_err(invalid)?);
    }
    if object.value(CKA_SERIAL_NUMBER).is_none() {
        object.set(
            CKA_SERIAL_NUMBER,
            tbs.serial_number.to_der().map_err(invalid)?,
        );
    }
    for (kind, default) in [
        (CKA_ID, Vec::new()),
        (CKA_START_DATE, Vec::new()),
        (CKA_END_DATE, Vec::new()),
        (CKA_URL, Vec::new()),
        (CKA_HASH_OF_SUBJECT_PUBLIC_KEY, Vec::new()),
        (CKA_HASH_OF_ISSUER_PUBLIC_KEY, Vec::new()),
        (CKA_CHECK_VALUE, Vec::new()),
    ] {
        if object.value(kind).is_none() {
            object.set(kind, default);
        }
    }
    if object.value(CKA_PUBLIC_KEY_INFO).is_none() {
        if let Ok(spki) = tbs.subject_public_key_info.to_der() {
            object.set(CKA_PUBLIC_KEY_INFO, spki);
        }
    }
    for (kind, default) in [
        (
            CKA_CERTIFICATE_CATEGORY,
            CK_CERTIFICATE_CATEGORY_UNSPECIFIED,
        ),
        (CKA_JAVA_MIDP_SECURITY_DOMAIN, 0),
        (CKA_NAME_HASH_ALGORITHM, CKM_SHA_1),
    ] {
        if object.value(kind).is_none() {
            object.set_ulong(kind, default);
        }
    }
    for kind in [CKA_PRIVATE, CKA_TRUSTED] {
        if object.value(kind).is_none() {
            object.set_bool(kind, false);
        }
    }
    Ok(())
}

/// Applies `C_SetAttributeValue` to a stored object; returns the new object.
pub(crate) fn set_attributes(object: &Object, template: &[Attribute]) -> Result<Object> {
    if object.bool(CKA_MODIFIABLE) == Some(false) {
        return Err(Error::ActionProhibited("the object is not modifiable"));
    }
    let data = object.class() == Some(CKO_DATA);
    let mut changed = object.clone();
    for (kind, value) in template {
        let writable = matches!(*kind, CKA_LABEL | CKA_ID)
            || (data && matches!(*kind, CKA_APPLICATION | CKA_VALUE | CKA_OBJECT_ID));
        if writable {
            changed.set(*kind, value.clone());
        } else if object.value(*kind) == Some(value.as_slice()) {
            // Setting an attribute to the value it has is not a change.
        } else if object.attrs.contains_key(kind) {
            return Err(Error::AttributeReadOnly(*kind));
        } else {
            return Err(Error::AttributeTypeInvalid(*kind));
        }
    }
    Ok(changed)
}

/// Whether a creation template asks for a token (persistent) object.
pub(crate) fn is_token_object(template: &[Attribute]) -> Result<bool> {
    Ok(template_value(template, CKA_TOKEN)
        .map(|v| parse_bool(CKA_TOKEN, v))
        .transpose()?
        .unwrap_or(false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribute::ulong_bytes;

    fn test_cert() -> Vec<u8> {
        testkit::x509::Cert::new("device-01")
            .serial(0x80_01)
            .build(&testkit::x509::p256())
            .to_der()
            .unwrap()
    }

    #[test]
    fn certificate_attributes_are_derived_from_the_der() {
        let der = test_cert();
        let o = build(&[
            (CKA_CLASS, ulong_bytes(CKO_CERTIFICATE)),
            (CKA_CERTIFICATE_TYPE, ulong_bytes(CKC_X_509)),
            (CKA_TOKEN, vec![1]),
            (CKA_ID, vec![0, 0]),
            (CKA_LABEL, b"device".to_vec()),
            (CKA_VALUE, der.clone()),
        ])
        .unwrap();
        let cert = openssl::x509::X509::from_der(&der).unwrap();
        assert_eq!(
            o.value(CKA_SUBJECT).unwrap(),
            cert.subject_name().to_der().unwrap().as_slice()
        );
        assert_eq!(
            o.value(CKA_ISSUER).unwrap(),
            cert.issuer_name().to_der().unwrap().as_slice()
        );
        assert_eq!(
            o.value(CKA_SERIAL_NUMBER).unwrap(),
            &[0x02, 0x03, 0x00, 0x80, 0x01]
        );
        assert_eq!(o.bool(CKA_TOKEN), Some(true));
        assert_eq!(o.bool(CKA_PRIVATE), Some(false));
        assert_eq!(o.ulong(CKA_CERTIFICATE_TYPE), Some(CKC_X_509));
        assert!(o.value(CKA_PUBLIC_KEY_INFO).is_some());
    }

    #[test]
    fn certificate_templates_are_checked() {
        let class = (CKA_CLASS, ulong_bytes(CKO_CERTIFICATE));
        assert_eq!(
            build(std::slice::from_ref(&class)).unwrap_err().rv(),
            CKR_TEMPLATE_INCOMPLETE
        );
        assert_eq!(
            build(&[class.clone(), (CKA_VALUE, vec![1, 2, 3])]).unwrap_err(),
            Error::AttributeValueInvalid(CKA_VALUE)
        );
        let followed_by_garbage = [test_cert(), vec![0xde, 0xad]].concat();
        assert_eq!(
            build(&[class.clone(), (CKA_VALUE, followed_by_garbage)]).unwrap_err(),
            Error::AttributeValueInvalid(CKA_VALUE),
            "a certificate followed by other bytes"
        );
        assert_eq!(
            build(&[class.clone(), (CKA_MODULUS, vec![1])])
                .unwrap_err()
                .rv(),
            CKR_TEMPLATE_INCONSISTENT,
            "an attribute of RSA keys"
        );
        assert_eq!(
            build(&[class.clone(), (CKA_TOKEN, vec![1, 1])]).unwrap_err(),
            Error::AttributeValueInvalid(CKA_TOKEN)
        );
        assert_eq!(
            build(&[(CKA_LABEL, vec![])]).unwrap_err().rv(),
            CKR_TEMPLATE_INCOMPLETE
        );
        assert_eq!(
            build(&[(CKA_CLASS, ulong_bytes(CKO_PRIVATE_KEY))]).unwrap_err(),
            Error::AttributeValueInvalid(CKA_CLASS)
        );
    }

    #[test]
    fn data_objects_get_defaults() {
        let o = build(&[
            (CKA_CLASS, ulong_bytes(CKO_DATA)),
            (CKA_LABEL, b"cfg".to_vec()),
            (CKA_VALUE, b"hello".to_vec()),
        ])
        .unwrap();
        assert_eq!(o.value(CKA_APPLICATION), Some(&[][..]));
        assert_eq!(o.bool(CKA_TOKEN), Some(false));
        assert_eq!(o.bool(CKA_PRIVATE), Some(true));
        assert_eq!(o.value(CKA_VALUE), Some(&b"hello"[..]));
    }

    #[test]
    fn set_attribute_rules() {
        let o = build(&[
            (CKA_CLASS, ulong_bytes(CKO_DATA)),
            (CKA_VALUE, b"v".to_vec()),
        ])
        .unwrap();
        let changed =
            set_attributes(&o, &[(CKA_LABEL, b"new".to_vec()), (CKA_ID, vec![1])]).unwrap();
        assert_eq!(changed.value(CKA_LABEL), Some(&b"new"[..]));
        assert_eq!(changed.value(CKA_ID), Some(&[1u8][..]));
        assert_eq!(
            set_attributes(&o, &[(CKA_CLASS, ulong_bytes(CKO_CERTIFICATE))]).unwrap_err(),
            Error::AttributeReadOnly(CKA_CLASS)
        );
        set_attributes(&o, &[(CKA_CLASS, ulong_bytes(CKO_DATA))]).unwrap();
        let mut fixed = o.clone();
        fixed.set_bool(CKA_MODIFIABLE, false);
        assert_eq!(
            set_attributes(&fixed, &[(CKA_LABEL, vec![])])
                .unwrap_err()
                .rv(),
            CKR_ACTION_PROHIBITED
        );
    }
}
