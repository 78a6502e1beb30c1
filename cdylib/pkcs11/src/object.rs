//! Object management (PKCS#11 2.40 §5.7).

use cryptoki_sys::*;
use zktoken::{Error, TemplateEntry};

use crate::{cryptoki_fn, module, out_param, output, template};

cryptoki_fn! {
    /// `C_CreateObject`: certificates and data objects.
    fn C_CreateObject(hSession: CK_SESSION_HANDLE, pTemplate: CK_ATTRIBUTE_PTR, ulCount: CK_ULONG, phObject: CK_OBJECT_HANDLE_PTR) {
        let m = module()?;
        // SAFETY: pTemplate holds ulCount attributes per the contract.
        let template = unsafe { template(pTemplate, ulCount) }?;
        // SAFETY: a valid out-pointer per the contract.
        let out = unsafe { out_param(phObject) }?;
        *out = m.create_object(hSession, &template)?;
        Ok(())
    }
}

cryptoki_fn! {
    /// `C_CopyObject`: not offered (device keys are not copyable).
    fn C_CopyObject(hSession: CK_SESSION_HANDLE, _hObject: CK_OBJECT_HANDLE, _pTemplate: CK_ATTRIBUTE_PTR, _ulCount: CK_ULONG, _phNewObject: CK_OBJECT_HANDLE_PTR) {
        module()?.session_info(hSession)?;
        Err(Error::FunctionNotSupported("C_CopyObject"))
    }
}

cryptoki_fn! {
    /// `C_DestroyObject`. For the private key of a generated device slot,
    /// this removes the key from the device.
    fn C_DestroyObject(hSession: CK_SESSION_HANDLE, hObject: CK_OBJECT_HANDLE) {
        module()?.destroy_object(hSession, hObject)
    }
}

cryptoki_fn! {
    /// `C_GetObjectSize`: the size of the object's readable attributes.
    fn C_GetObjectSize(hSession: CK_SESSION_HANDLE, hObject: CK_OBJECT_HANDLE, pulSize: CK_ULONG_PTR) {
        let m = module()?;
        // SAFETY: a valid out-pointer per the contract.
        let out = unsafe { out_param(pulSize) }?;
        *out = m.object_size(hSession, hObject)? as CK_ULONG;
        Ok(())
    }
}

cryptoki_fn! {
    /// `C_GetAttributeValue`: every entry of the template is answered,
    /// even when the call returns an error.
    fn C_GetAttributeValue(hSession: CK_SESSION_HANDLE, hObject: CK_OBJECT_HANDLE, pTemplate: CK_ATTRIBUTE_PTR, ulCount: CK_ULONG) {
        let m = module()?;
        let count = usize::try_from(ulCount).map_err(|_| Error::ArgumentsBad("count too large"))?;
        if count == 0 {
            return m.get_attribute_value(hSession, hObject, &mut []);
        }
        if pTemplate.is_null() {
            return Err(Error::ArgumentsBad("NULL template"));
        }
        // SAFETY: pTemplate holds ulCount attributes per the contract.
        let attrs = unsafe { std::slice::from_raw_parts_mut(pTemplate, count) };
        let requests: Vec<(CK_ATTRIBUTE_TYPE, *mut u8, CK_ULONG)> = attrs
            .iter()
            .map(|a| (a.type_, a.pValue as *mut u8, a.ulValueLen))
            .collect();
        let mut entries = Vec::with_capacity(count);
        for (kind, value, len) in requests {
            entries.push(TemplateEntry {
                kind,
                // SAFETY: each pValue is NULL or holds ulValueLen bytes, per the contract.
                buffer: unsafe { output(value, len) }?,
                len,
            });
        }
        let result = m.get_attribute_value(hSession, hObject, &mut entries);
        let answered = matches!(
            result,
            Ok(()) | Err(Error::AttributeSensitive | Error::AttributeTypeInvalid(_) | Error::BufferTooSmall { .. })
        );
        if answered {
            let lengths: Vec<CK_ULONG> = entries.into_iter().map(|e| e.len).collect();
            for (attr, len) in attrs.iter_mut().zip(lengths) {
                attr.ulValueLen = len;
            }
        }
        result
    }
}

cryptoki_fn! {
    /// `C_SetAttributeValue`: label and id of certificates and data objects.
    fn C_SetAttributeValue(hSession: CK_SESSION_HANDLE, hObject: CK_OBJECT_HANDLE, pTemplate: CK_ATTRIBUTE_PTR, ulCount: CK_ULONG) {
        let m = module()?;
        // SAFETY: pTemplate holds ulCount attributes per the contract.
        let template = unsafe { template(pTemplate, ulCount) }?;
        m.set_attribute_value(hSession, hObject, &template)
    }
}

cryptoki_fn! {
    /// `C_FindObjectsInit`: matches any attribute of the template by value.
    fn C_FindObjectsInit(hSession: CK_SESSION_HANDLE, pTemplate: CK_ATTRIBUTE_PTR, ulCount: CK_ULONG) {
        let m = module()?;
        // SAFETY: pTemplate holds ulCount attributes per the contract.
        let template = unsafe { template(pTemplate, ulCount) }?;
        m.find_objects_init(hSession, &template)
    }
}

cryptoki_fn! {
    /// `C_FindObjects`.
    fn C_FindObjects(hSession: CK_SESSION_HANDLE, phObject: CK_OBJECT_HANDLE_PTR, ulMaxObjectCount: CK_ULONG, pulObjectCount: CK_ULONG_PTR) {
        let m = module()?;
        // SAFETY: a valid out-pointer per the contract.
        let count = unsafe { out_param(pulObjectCount) }?;
        if phObject.is_null() {
            return Err(Error::ArgumentsBad("NULL object array"));
        }
        let max = usize::try_from(ulMaxObjectCount).unwrap_or(usize::MAX);
        let found = m.find_objects(hSession, max)?;
        // SAFETY: phObject holds ulMaxObjectCount handles, and found.len() <= that.
        unsafe { std::slice::from_raw_parts_mut(phObject, found.len()) }.copy_from_slice(&found);
        *count = found.len() as CK_ULONG;
        Ok(())
    }
}

cryptoki_fn! {
    /// `C_FindObjectsFinal`.
    fn C_FindObjectsFinal(hSession: CK_SESSION_HANDLE) {
        module()?.find_objects_final(hSession)
    }
}
