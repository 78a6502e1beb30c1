//! Object management (PKCS#11 2.40 §5.7).

use cryptoki_sys::*;
use zktoken::{Error, Result, TemplateEntry, TemplateUse};

use crate::{export, inout, module, not_supported, out_param, output, template};

export!(C_CreateObject(
    hSession: CK_SESSION_HANDLE,
    pTemplate: CK_ATTRIBUTE_PTR,
    ulCount: CK_ULONG,
    phObject: CK_OBJECT_HANDLE_PTR,
) = unsafe create_object);

/// `C_CreateObject` (§5.7): certificates and data objects.
///
/// # Safety
/// `pTemplate` holds `ulCount` attributes (or is NULL); `phObject` is NULL
/// or valid for writing a handle.
unsafe fn create_object(
    hSession: CK_SESSION_HANDLE,
    pTemplate: CK_ATTRIBUTE_PTR,
    ulCount: CK_ULONG,
    phObject: CK_OBJECT_HANDLE_PTR,
) -> Result<()> {
    let m = module()?;
    // SAFETY: by the contract above.
    let (template, out) = unsafe {
        (
            template(pTemplate, ulCount, TemplateUse::Create)?,
            out_param(phObject)?,
        )
    };
    *out = m.create_object(hSession, &template)?;
    Ok(())
}

not_supported! {
    /// `C_CopyObject` (§5.7): device keys are not copyable.
    C_CopyObject(hSession, CK_OBJECT_HANDLE, CK_ATTRIBUTE_PTR, CK_ULONG, CK_OBJECT_HANDLE_PTR);
}

export!(C_DestroyObject(hSession: CK_SESSION_HANDLE, hObject: CK_OBJECT_HANDLE) = destroy_object);

/// `C_DestroyObject` (§5.7). For the private key of a generated device
/// slot, this removes the key from the device.
fn destroy_object(hSession: CK_SESSION_HANDLE, hObject: CK_OBJECT_HANDLE) -> Result<()> {
    module()?.destroy_object(hSession, hObject)
}

export!(C_GetObjectSize(
    hSession: CK_SESSION_HANDLE,
    hObject: CK_OBJECT_HANDLE,
    pulSize: CK_ULONG_PTR,
) = unsafe get_object_size);

/// `C_GetObjectSize` (§5.7): the size of the object's readable attributes.
///
/// # Safety
/// `pulSize` is NULL or valid for writing a `CK_ULONG`.
unsafe fn get_object_size(
    hSession: CK_SESSION_HANDLE,
    hObject: CK_OBJECT_HANDLE,
    pulSize: CK_ULONG_PTR,
) -> Result<()> {
    let m = module()?;
    // SAFETY: by the contract above.
    let out = unsafe { out_param(pulSize) }?;
    *out = m.object_size(hSession, hObject)? as CK_ULONG;
    Ok(())
}

export!(C_GetAttributeValue(
    hSession: CK_SESSION_HANDLE,
    hObject: CK_OBJECT_HANDLE,
    pTemplate: CK_ATTRIBUTE_PTR,
    ulCount: CK_ULONG,
) = unsafe get_attribute_value);

/// `C_GetAttributeValue` (§5.7): every entry of the template is answered,
/// even when the call returns an error. What the token leaves unanswered
/// keeps the caller's `ulValueLen`.
///
/// # Safety
/// `pTemplate` holds `ulCount` attributes (or is NULL), each `pValue` NULL
/// or valid for writing `ulValueLen` bytes.
unsafe fn get_attribute_value(
    hSession: CK_SESSION_HANDLE,
    hObject: CK_OBJECT_HANDLE,
    pTemplate: CK_ATTRIBUTE_PTR,
    ulCount: CK_ULONG,
) -> Result<()> {
    let m = module()?;
    // SAFETY: by the contract above.
    let attrs = unsafe { inout(pTemplate, ulCount) }?;
    let requests: Vec<(CK_ATTRIBUTE_TYPE, *mut u8, CK_ULONG)> = attrs
        .iter()
        .map(|a| (a.type_, a.pValue as *mut u8, a.ulValueLen))
        .collect();
    let mut entries = Vec::with_capacity(requests.len());
    for (kind, value, len) in requests {
        entries.push(TemplateEntry {
            kind,
            // SAFETY: by the contract above, for no more than `ulValueLen` bytes.
            buffer: unsafe { output(value, zktoken::value_buffer_len(kind, len)) }?,
            len,
        });
    }
    let result = m.get_attribute_value(hSession, hObject, &mut entries);
    // The value buffers are released before the template is written.
    let lengths: Vec<CK_ULONG> = entries.into_iter().map(|e| e.len).collect();
    for (attr, len) in attrs.iter_mut().zip(lengths) {
        attr.ulValueLen = len;
    }
    result
}

export!(C_SetAttributeValue(
    hSession: CK_SESSION_HANDLE,
    hObject: CK_OBJECT_HANDLE,
    pTemplate: CK_ATTRIBUTE_PTR,
    ulCount: CK_ULONG,
) = unsafe set_attribute_value);

/// `C_SetAttributeValue` (§5.7): label and id of certificates and data objects.
///
/// # Safety
/// `pTemplate` holds `ulCount` attributes (or is NULL).
unsafe fn set_attribute_value(
    hSession: CK_SESSION_HANDLE,
    hObject: CK_OBJECT_HANDLE,
    pTemplate: CK_ATTRIBUTE_PTR,
    ulCount: CK_ULONG,
) -> Result<()> {
    let m = module()?;
    // SAFETY: by the contract above.
    let template = unsafe { template(pTemplate, ulCount, TemplateUse::Set) }?;
    m.set_attribute_value(hSession, hObject, &template)
}

export!(C_FindObjectsInit(
    hSession: CK_SESSION_HANDLE,
    pTemplate: CK_ATTRIBUTE_PTR,
    ulCount: CK_ULONG,
) = unsafe find_objects_init);

/// `C_FindObjectsInit` (§5.7): matches every attribute of the template by value.
///
/// # Safety
/// `pTemplate` holds `ulCount` attributes (or is NULL).
unsafe fn find_objects_init(
    hSession: CK_SESSION_HANDLE,
    pTemplate: CK_ATTRIBUTE_PTR,
    ulCount: CK_ULONG,
) -> Result<()> {
    let m = module()?;
    // SAFETY: by the contract above.
    let template = unsafe { template(pTemplate, ulCount, TemplateUse::Find) }?;
    m.find_objects_init(hSession, &template)
}

export!(C_FindObjects(
    hSession: CK_SESSION_HANDLE,
    phObject: CK_OBJECT_HANDLE_PTR,
    ulMaxObjectCount: CK_ULONG,
    pulObjectCount: CK_ULONG_PTR,
) = unsafe find_objects);

/// `C_FindObjects` (§5.7).
///
/// # Safety
/// `phObject` is NULL or valid for writing `ulMaxObjectCount` handles;
/// `pulObjectCount` is NULL or valid for writing a `CK_ULONG`.
unsafe fn find_objects(
    hSession: CK_SESSION_HANDLE,
    phObject: CK_OBJECT_HANDLE_PTR,
    ulMaxObjectCount: CK_ULONG,
    pulObjectCount: CK_ULONG_PTR,
) -> Result<()> {
    let m = module()?;
    // SAFETY: by the contract above.
    let (count, handles) = unsafe {
        (
            out_param(pulObjectCount)?,
            output(phObject, ulMaxObjectCount)?,
        )
    };
    let handles = handles.ok_or(Error::ArgumentsBad("NULL object array"))?;
    let found = m.find_objects(hSession, handles.len())?;
    handles[..found.len()].copy_from_slice(&found);
    *count = found.len() as CK_ULONG;
    Ok(())
}

export!(C_FindObjectsFinal(hSession: CK_SESSION_HANDLE) = find_objects_final);

/// `C_FindObjectsFinal` (§5.7).
fn find_objects_final(hSession: CK_SESSION_HANDLE) -> Result<()> {
    module()?.find_objects_final(hSession)
}
