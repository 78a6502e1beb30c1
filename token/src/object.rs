//! Object management (PKCS#11 2.40 §5.7): finding objects, reading and
//! changing attributes, creating and destroying certificate and data objects.
//!
//! Handles are derived, never allocated from a shared counter, so they are
//! stable for the life of the process and the same in every process for
//! key and token objects:
//! - key objects: from the slot number (see [`KeySlot::private_handle`]);
//! - token objects: `STORE_HANDLE_BASE + row id` (row ids are never reused);
//! - session objects: `SESSION_HANDLE_BASE + n`, counted per process.

use std::sync::atomic::{AtomicU64, Ordering};

use cryptoki_sys::*;

use crate::attribute::{fill_template, Attribute, Object, TemplateEntry};
use crate::error::{Error, Result};
use crate::key::KeySlot;
use crate::module::{Find, Module};
use crate::storage_object;

const STORE_HANDLE_BASE: CK_OBJECT_HANDLE = 0x2000_0000;
const SESSION_HANDLE_BASE: CK_OBJECT_HANDLE = 0x4000_0000;
const SESSION_HANDLE_LIMIT: CK_OBJECT_HANDLE = 0x7FFF_FFFF;

static NEXT_SESSION_OBJECT: AtomicU64 = AtomicU64::new(1);

/// What a handle names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ObjectRef {
    Key { slot: KeySlot, public: bool },
    Stored(i64),
    Session(CK_OBJECT_HANDLE),
}

impl ObjectRef {
    pub(crate) fn from_handle(handle: CK_OBJECT_HANDLE) -> Result<ObjectRef> {
        if let Some((slot, public)) = KeySlot::from_handle(handle) {
            return Ok(ObjectRef::Key { slot, public });
        }
        match handle {
            h if (STORE_HANDLE_BASE + 1..SESSION_HANDLE_BASE).contains(&h) => {
                Ok(ObjectRef::Stored((h - STORE_HANDLE_BASE) as i64))
            }
            h if (SESSION_HANDLE_BASE + 1..=SESSION_HANDLE_LIMIT).contains(&h) => {
                Ok(ObjectRef::Session(h))
            }
            _ => Err(Error::ObjectHandleInvalid),
        }
    }
}

pub(crate) fn stored_handle(row: i64) -> Result<CK_OBJECT_HANDLE> {
    let h = STORE_HANDLE_BASE
        .checked_add(
            CK_OBJECT_HANDLE::try_from(row)
                .map_err(|_| Error::GeneralError("bad row id".into()))?,
        )
        .filter(|h| *h < SESSION_HANDLE_BASE)
        .ok_or_else(|| Error::GeneralError("the token store has too many objects".into()))?;
    Ok(h)
}

fn is_private(object: &Object) -> bool {
    object.bool(CKA_PRIVATE).unwrap_or(false)
}

impl Module {
    /// Every object the caller may see now, with its handle.
    fn visible_objects(&self) -> Result<Vec<(CK_OBJECT_HANDLE, Object)>> {
        let token = self.token()?;
        let private_access = self.private_access(&self.lock_sessions());
        let mut out = Vec::new();
        for entry in token.keys() {
            if !entry.key.slot.foreign {
                out.push((entry.key.slot.private_handle(), entry.private.clone()));
            }
            out.push((entry.key.slot.public_handle(), entry.public.clone()));
        }
        // The device keys do not depend on the store: a store that cannot be
        // read (logged once, naming the file) hides only its own objects, so
        // the device keeps its identity while the file waits for a person.
        match token.read_store(|s| s.objects()) {
            Ok(rows) => {
                for (row, object) in rows {
                    out.push((stored_handle(row)?, object));
                }
            }
            Err(e) => tracing::debug!("stored objects not listed: {e}"),
        }
        for (handle, (_, object)) in self.lock_session_objects().iter() {
            out.push((*handle, object.clone()));
        }
        out.retain(|(_, o)| private_access || !is_private(o));
        Ok(out)
    }

    /// The object behind a handle, if the caller may see it.
    pub(crate) fn object(&self, handle: CK_OBJECT_HANDLE) -> Result<Object> {
        let token = self.token()?;
        let object = match ObjectRef::from_handle(handle)? {
            ObjectRef::Key { slot, public } => {
                let entry = token.key(slot).ok_or(Error::ObjectHandleInvalid)?;
                match (public, slot.foreign) {
                    (true, _) => entry.public.clone(),
                    (false, false) => entry.private.clone(),
                    (false, true) => return Err(Error::ObjectHandleInvalid),
                }
            }
            ObjectRef::Stored(row) => token
                .read_store(|s| s.object(row))?
                .ok_or(Error::ObjectHandleInvalid)?,
            ObjectRef::Session(h) => self
                .lock_session_objects()
                .get(&h)
                .map(|(_, o)| o.clone())
                .ok_or(Error::ObjectHandleInvalid)?,
        };
        if is_private(&object) && !self.private_access(&self.lock_sessions()) {
            return Err(Error::ObjectHandleInvalid);
        }
        Ok(object)
    }

    pub fn find_objects_init(
        &self,
        session: CK_SESSION_HANDLE,
        template: &[Attribute],
    ) -> Result<()> {
        {
            let sessions = self.lock_sessions();
            if sessions.get(session)?.find.is_some() {
                return Err(Error::OperationActive);
            }
        }
        let handles: Vec<CK_OBJECT_HANDLE> = self
            .visible_objects()?
            .into_iter()
            .filter(|(_, o)| o.matches(template))
            .map(|(h, _)| h)
            .collect();
        tracing::debug!(matches = handles.len(), "C_FindObjectsInit");
        let mut sessions = self.lock_sessions();
        let s = sessions.get_mut(session)?;
        if s.find.is_some() {
            return Err(Error::OperationActive);
        }
        s.find = Some(Find { handles, next: 0 });
        Ok(())
    }

    pub fn find_objects(
        &self,
        session: CK_SESSION_HANDLE,
        max: usize,
    ) -> Result<Vec<CK_OBJECT_HANDLE>> {
        let mut sessions = self.lock_sessions();
        let find = sessions
            .get_mut(session)?
            .find
            .as_mut()
            .ok_or(Error::OperationNotInitialized)?;
        let end = find.handles.len().min(find.next.saturating_add(max));
        let out = find.handles[find.next..end].to_vec();
        find.next = end;
        Ok(out)
    }

    pub fn find_objects_final(&self, session: CK_SESSION_HANDLE) -> Result<()> {
        let mut sessions = self.lock_sessions();
        let s = sessions.get_mut(session)?;
        s.find.take().ok_or(Error::OperationNotInitialized)?;
        Ok(())
    }

    pub fn get_attribute_value(
        &self,
        session: CK_SESSION_HANDLE,
        handle: CK_OBJECT_HANDLE,
        template: &mut [TemplateEntry<'_>],
    ) -> Result<()> {
        self.check_session(session)?;
        let object = self.object(handle)?;
        fill_template(&object, template)
    }

    pub fn object_size(
        &self,
        session: CK_SESSION_HANDLE,
        handle: CK_OBJECT_HANDLE,
    ) -> Result<usize> {
        self.check_session(session)?;
        Ok(self.object(handle)?.to_blob().len())
    }

    fn require_read_write(&self, session: CK_SESSION_HANDLE) -> Result<()> {
        if self.lock_sessions().get(session)?.read_write {
            Ok(())
        } else {
            Err(Error::SessionReadOnly)
        }
    }

    pub fn create_object(
        &self,
        session: CK_SESSION_HANDLE,
        template: &[Attribute],
    ) -> Result<CK_OBJECT_HANDLE> {
        let token = self.token()?;
        self.check_session(session)?;
        let object = storage_object::build(template)?;
        if is_private(&object) && !self.private_access(&self.lock_sessions()) {
            return Err(Error::UserNotLoggedIn);
        }
        if storage_object::is_token_object(template)? {
            self.require_read_write(session)?;
            let row = token.with_store(|s| s.insert(&object))?;
            tracing::info!(
                row,
                class = object.class().unwrap_or(0),
                "token object created"
            );
            stored_handle(row)
        } else {
            let handle = SESSION_HANDLE_BASE
                + NEXT_SESSION_OBJECT.fetch_add(1, Ordering::Relaxed) as CK_OBJECT_HANDLE;
            if handle > SESSION_HANDLE_LIMIT {
                return Err(Error::GeneralError(
                    "session object handles exhausted".into(),
                ));
            }
            self.lock_session_objects()
                .insert(handle, (session, object));
            Ok(handle)
        }
    }

    pub fn set_attribute_value(
        &self,
        session: CK_SESSION_HANDLE,
        handle: CK_OBJECT_HANDLE,
        template: &[Attribute],
    ) -> Result<()> {
        let token = self.token()?;
        self.check_session(session)?;
        let object = self.object(handle)?;
        match ObjectRef::from_handle(handle)? {
            ObjectRef::Key { .. } => Err(Error::ActionProhibited(
                "device key objects are not modifiable",
            )),
            ObjectRef::Stored(row) => {
                self.require_read_write(session)?;
                let changed = storage_object::set_attributes(&object, template)?;
                if !token.with_store(|s| s.update(row, &changed))? {
                    return Err(Error::ObjectHandleInvalid);
                }
                Ok(())
            }
            ObjectRef::Session(h) => {
                let changed = storage_object::set_attributes(&object, template)?;
                let mut objects = self.lock_session_objects();
                let slot = objects.get_mut(&h).ok_or(Error::ObjectHandleInvalid)?;
                slot.1 = changed;
                Ok(())
            }
        }
    }

    pub fn destroy_object(
        &self,
        session: CK_SESSION_HANDLE,
        handle: CK_OBJECT_HANDLE,
    ) -> Result<()> {
        let token = self.token()?;
        self.check_session(session)?;
        if let ObjectRef::Key { slot, public } = ObjectRef::from_handle(handle)? {
            // A private key is invisible before login, as in every other call.
            if !public && !self.private_access(&self.lock_sessions()) {
                return Err(Error::ObjectHandleInvalid);
            }
            // Checked by destroy_key: a public key whose private key was
            // just removed no longer resolves, yet destroying it succeeds.
            self.require_read_write(session)?;
            return self.destroy_key(&token, slot, public);
        }
        let object = self.object(handle)?;
        match ObjectRef::from_handle(handle)? {
            ObjectRef::Key { .. } => Err(Error::ObjectHandleInvalid),
            ObjectRef::Stored(row) => {
                self.require_read_write(session)?;
                if object.bool(CKA_DESTROYABLE) == Some(false) {
                    return Err(Error::ActionProhibited("the object is not destroyable"));
                }
                if !token.with_store(|s| s.delete(row))? {
                    return Err(Error::ObjectHandleInvalid);
                }
                tracing::info!(row, "token object destroyed");
                Ok(())
            }
            ObjectRef::Session(h) => {
                if object.bool(CKA_DESTROYABLE) == Some(false) {
                    return Err(Error::ActionProhibited("the object is not destroyable"));
                }
                self.lock_session_objects()
                    .remove(&h)
                    .ok_or(Error::ObjectHandleInvalid)?;
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_name_one_kind_of_object() {
        let key = KeySlot::device(2);
        assert_eq!(
            ObjectRef::from_handle(key.private_handle()).unwrap(),
            ObjectRef::Key {
                slot: key,
                public: false
            }
        );
        assert_eq!(
            ObjectRef::from_handle(stored_handle(7).unwrap()).unwrap(),
            ObjectRef::Stored(7)
        );
        assert_eq!(
            ObjectRef::from_handle(SESSION_HANDLE_BASE + 3).unwrap(),
            ObjectRef::Session(SESSION_HANDLE_BASE + 3)
        );
        assert!(ObjectRef::from_handle(0).is_err());
        assert!(ObjectRef::from_handle(STORE_HANDLE_BASE).is_err());
        assert!(ObjectRef::from_handle(12345).is_err());
    }
}
