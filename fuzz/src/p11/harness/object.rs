//! Objects: creation, copies, destruction, attributes and searches (PKCS#11
//! 2.40 §5.7).

use std::ptr::null_mut;

use cryptoki_sys::*;
use testkit::call;

use super::Harness;
use crate::p11::op::{template, Attr, AttrType, Handle, Out, MAX_TEMPLATE};
use crate::p11::oracle::check_rv;

impl Harness {
    pub(super) fn create_object(&mut self, session: Handle, attrs: &[Attr]) {
        let (_values, mut t) = template(attrs, &self.setup.certificate);
        let mut handle: CK_OBJECT_HANDLE = 0;
        let rv = check_rv(
            "C_CreateObject",
            call!(
                self.raw(),
                C_CreateObject(
                    self.session(session),
                    t.as_mut_ptr(),
                    t.len() as CK_ULONG,
                    &mut handle,
                )
            ),
        );
        if rv == CKR_OK {
            self.objects.push(handle);
        }
    }

    pub(super) fn copy_object(&mut self, session: Handle, object: Handle) {
        let mut handle: CK_OBJECT_HANDLE = 0;
        check_rv(
            "C_CopyObject",
            call!(
                self.raw(),
                C_CopyObject(
                    self.session(session),
                    self.object(object),
                    null_mut(),
                    0,
                    &mut handle,
                )
            ),
        );
    }

    pub(super) fn destroy_object(&mut self, session: Handle, object: Handle) {
        check_rv(
            "C_DestroyObject",
            call!(
                self.raw(),
                C_DestroyObject(self.session(session), self.object(object))
            ),
        );
    }

    pub(super) fn get_object_size(&mut self, session: Handle, object: Handle) {
        let mut size: CK_ULONG = 0;
        check_rv(
            "C_GetObjectSize",
            call!(
                self.raw(),
                C_GetObjectSize(self.session(session), self.object(object), &mut size)
            ),
        );
    }

    pub(super) fn get_attribute_value(
        &mut self,
        s: CK_SESSION_HANDLE,
        o: CK_OBJECT_HANDLE,
        requests: &[(AttrType, Out)],
    ) {
        let requests = &requests[..requests.len().min(MAX_TEMPLATE)];
        let mut buffers: Vec<Option<Vec<u8>>> =
            requests.iter().map(|(_, out)| out.buffer(65)).collect();
        let mut template: Vec<CK_ATTRIBUTE> = requests
            .iter()
            .zip(buffers.iter_mut())
            .map(|((kind, _), buf)| CK_ATTRIBUTE {
                type_: kind.ck(),
                pValue: buf
                    .as_mut()
                    .map_or(null_mut(), |b| b.as_mut_ptr() as *mut _),
                ulValueLen: buf.as_ref().map_or(0, |b| b.len()) as CK_ULONG,
            })
            .collect();
        let rv = check_rv(
            "C_GetAttributeValue",
            call!(
                self.raw(),
                C_GetAttributeValue(s, o, template.as_mut_ptr(), template.len() as CK_ULONG)
            ),
        );
        let answered = [
            CKR_OK,
            CKR_ATTRIBUTE_SENSITIVE,
            CKR_ATTRIBUTE_TYPE_INVALID,
            CKR_BUFFER_TOO_SMALL,
        ];
        if !answered.contains(&rv) {
            return;
        }
        for (attr, buf) in template.iter().zip(&buffers) {
            if let Some(buf) = buf {
                if attr.ulValueLen != CK_UNAVAILABLE_INFORMATION {
                    assert!(
                        attr.ulValueLen as usize <= buf.len(),
                        "C_GetAttributeValue: attribute {:#x} length {} beyond its {}-byte buffer",
                        attr.type_,
                        attr.ulValueLen,
                        buf.len()
                    );
                }
                self.check_output("C_GetAttributeValue", buf);
            }
        }
    }

    pub(super) fn set_attribute_value(&mut self, session: Handle, object: Handle, attrs: &[Attr]) {
        let (_values, mut t) = template(attrs, &self.setup.certificate);
        check_rv(
            "C_SetAttributeValue",
            call!(
                self.raw(),
                C_SetAttributeValue(
                    self.session(session),
                    self.object(object),
                    t.as_mut_ptr(),
                    t.len() as CK_ULONG,
                )
            ),
        );
    }

    pub(super) fn find_objects_init(&mut self, session: Handle, attrs: &[Attr]) {
        let (_values, mut t) = template(attrs, &self.setup.certificate);
        check_rv(
            "C_FindObjectsInit",
            call!(
                self.raw(),
                C_FindObjectsInit(self.session(session), t.as_mut_ptr(), t.len() as CK_ULONG)
            ),
        );
    }

    pub(super) fn find_objects(&mut self, session: Handle, max: u8) {
        let mut found = vec![0 as CK_OBJECT_HANDLE; max as usize];
        let mut count: CK_ULONG = CK_ULONG::MAX;
        // A non-NULL pointer even for a count of 0, which must not be written to.
        let mut none = [0 as CK_OBJECT_HANDLE];
        let p = if found.is_empty() {
            none.as_mut_ptr()
        } else {
            found.as_mut_ptr()
        };
        let rv = check_rv(
            "C_FindObjects",
            call!(
                self.raw(),
                C_FindObjects(self.session(session), p, max as CK_ULONG, &mut count)
            ),
        );
        if rv == CKR_OK {
            assert!(
                count <= max as CK_ULONG,
                "C_FindObjects: more objects than asked for"
            );
            for h in &found[..count as usize] {
                if !self.objects.contains(h) {
                    self.objects.push(*h);
                }
            }
        }
    }

    pub(super) fn find_objects_final(&mut self, h: Handle) {
        check_rv(
            "C_FindObjectsFinal",
            call!(self.raw(), C_FindObjectsFinal(self.session(h))),
        );
    }
}
