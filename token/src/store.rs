//! The token's object store: certificates, data objects, and what the token
//! remembers about device keys (cached public keys, labels and ids given at
//! key generation). SQLite, so several processes share it safely: a
//! rollback journal, a busy timeout, and every change is one transaction.
//!
//! The rollback journal (not WAL) is deliberate: an idle connection then
//! holds no file locks and no shared memory, so a process that forks while
//! the store is open leaves its child nothing stale to trip over (the
//! child opens its own connection after `C_Initialize`). Writes are rare
//! (certificates, key generation), so WAL's concurrency buys nothing here.
//!
//! A store that cannot be read is reported with its path and left exactly
//! as it is: the token never recreates or overwrites an existing file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use crate::attribute::Object;
use crate::curve::Curve;
use crate::error::Error;
use crate::fork;
use crate::key::KeySlot;

/// Schema version kept in `PRAGMA user_version`.
const SCHEMA_VERSION: i64 = 3;
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

const SCHEMA: &str = "
CREATE TABLE objects (
    id          INTEGER PRIMARY KEY AUTOINCREMENT, -- never reused: handles stay unique
    class       INTEGER NOT NULL,
    attributes  BLOB NOT NULL                      -- see Object::to_blob
);
CREATE TABLE device_keys (
    slot        INTEGER NOT NULL,
    keyring     INTEGER NOT NULL,                  -- 0 device key store, 1 foreign keyring
    curve       TEXT,                              -- cached with public_key
    public_key  BLOB,                              -- raw, as the device gives it
    label       BLOB,                              -- given at key generation
    id          BLOB,                              -- given at key generation
    generated   INTEGER NOT NULL DEFAULT 0,        -- made by C_GenerateKeyPair (a record only)
    PRIMARY KEY (slot, keyring)
);
";

/// Added in version 2: changes of the device's key store in progress. A
/// row is written before the device is asked to make or remove a key and
/// deleted in the transaction that records the outcome, so a row left
/// behind is a change whose process died (see `crate::keygen`).
const KEY_STORE_CHANGES: &str = "
CREATE TABLE key_generations (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    curve        TEXT NOT NULL,
    label        BLOB,                             -- asked for by the caller
    key_id       BLOB,                             -- asked for by the caller
    slots_before TEXT NOT NULL                     -- key store slots in use before, as 0,1,16
);
CREATE TABLE key_removals (
    slot        INTEGER NOT NULL,
    keyring     INTEGER NOT NULL,
    public_key  BLOB NOT NULL,                     -- of the key to remove, and no other
    PRIMARY KEY (slot, keyring)
);
";

/// Added in version 3: the Zymkey the store belongs to (one row, its serial
/// number), so that a store copied with an SD image, or left behind by a
/// swapped Zymkey, is never shown as another device's (see `crate::ownership`).
const OWNER: &str = "
CREATE TABLE owner (
    serial      TEXT NOT NULL
);
";

/// What went wrong with the store; always names the file.
#[derive(Debug, thiserror::Error)]
#[error("token store {path}: {reason}")]
pub(crate) struct StoreError {
    pub(crate) path: PathBuf,
    pub(crate) reason: String,
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Error {
        Error::GeneralError(e.to_string())
    }
}

/// What the store knows about one device key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KeyRecord {
    pub(crate) curve: Option<Curve>,
    pub(crate) public_key: Option<Vec<u8>>,
    pub(crate) label: Option<String>,
    pub(crate) id: Option<Vec<u8>>,
}

/// A key generation as the store notes it before the device makes the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyGeneration {
    pub(crate) curve: Curve,
    pub(crate) label: Option<String>,
    pub(crate) id: Option<Vec<u8>>,
    /// Key store slots in use before the device was asked.
    pub(crate) slots_before: Vec<u32>,
}

pub(crate) struct Store {
    path: PathBuf,
    /// Always `Some` until the store is dropped (see `Drop`).
    conn: Option<Connection>,
}

impl Drop for Store {
    fn drop(&mut self) {
        // Closing the connection is a SQLite call too.
        let _gate = fork::enter();
        self.conn.take();
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens the store at `path`, creating it (mode 0600, folder 0700) only
    /// when no file exists there.
    pub(crate) fn open(path: &Path) -> Result<Store, StoreError> {
        let _gate = fork::enter();
        let fail = |reason: String| StoreError {
            path: path.to_path_buf(),
            reason,
        };
        if !path.exists() {
            create_empty(path).map_err(|e| fail(format!("cannot create it: {e}")))?;
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags)
            .map_err(|e| fail(format!("cannot open it: {e}")))?;
        let mut store = Store {
            path: path.to_path_buf(),
            conn: Some(conn),
        };
        store.prepare().map_err(|e| {
            fail(format!(
                "{e}; the file was left untouched (move it away to start an empty store)"
            ))
        })?;
        Ok(store)
    }

    fn conn(&self) -> &Connection {
        self.conn
            .as_ref()
            .expect("the connection lives as long as the store")
    }

    fn conn_mut(&mut self) -> &mut Connection {
        self.conn
            .as_mut()
            .expect("the connection lives as long as the store")
    }

    fn prepare(&mut self) -> Result<(), String> {
        self.conn()
            .busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| e.to_string())?;
        let version: i64 = self
            .conn()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| format!("unreadable: {e}"))?;
        if version > SCHEMA_VERSION {
            return Err(format!(
                "schema version {version} is newer than this module's ({SCHEMA_VERSION})"
            ));
        }
        if version == SCHEMA_VERSION {
            // Touch every table so a damaged file fails here, not mid-operation.
            for table in [
                "objects",
                "device_keys",
                "key_generations",
                "key_removals",
                "owner",
            ] {
                self.conn()
                    .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| {
                        r.get::<_, i64>(0)
                    })
                    .map_err(|e| format!("unreadable: {e}"))?;
            }
            return Ok(());
        }
        if version == 0 {
            let tables: i64 = self
                .conn()
                .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
                .map_err(|e| format!("unreadable: {e}"))?;
            if tables != 0 {
                return Err("it is an SQLite database, but not a zkiot token store".into());
            }
        }
        // A new store, or one of an older version: version 1 lacks the key
        // store changes, versions 1 and 2 the owner.
        let tx = self
            .conn_mut()
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| e.to_string())?;
        let version: i64 = tx
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| e.to_string())?;
        // Another process may have done it meanwhile.
        let steps = match version {
            0 => [SCHEMA, KEY_STORE_CHANGES, OWNER].concat(),
            1 => [KEY_STORE_CHANGES, OWNER].concat(),
            2 => OWNER.to_string(),
            _ => String::new(),
        };
        if !steps.is_empty() {
            tx.execute_batch(&steps).map_err(|e| e.to_string())?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)
                .map_err(|e| e.to_string())?;
        }
        tx.commit().map_err(|e| e.to_string())
    }

    fn fail(&self, e: rusqlite::Error) -> StoreError {
        StoreError {
            path: self.path.clone(),
            reason: e.to_string(),
        }
    }

    /// The serial number of the Zymkey the store belongs to; `None` for a
    /// store made before owners were recorded.
    pub(crate) fn owner(&self) -> Result<Option<String>, StoreError> {
        let _gate = fork::enter();
        self.conn()
            .query_row("SELECT serial FROM owner LIMIT 1", [], |r| r.get(0))
            .optional()
            .map_err(|e| self.fail(e))
    }

    /// Records `serial` as the owner unless one is recorded already, in one
    /// statement; returns the owner recorded.
    pub(crate) fn claim(&mut self, serial: &str) -> Result<String, StoreError> {
        let _gate = fork::enter();
        self.conn()
            .execute(
                "INSERT INTO owner (serial) SELECT ?1 WHERE NOT EXISTS (SELECT 1 FROM owner)",
                [serial],
            )
            .map_err(|e| self.fail(e))?;
        self.conn()
            .query_row("SELECT serial FROM owner LIMIT 1", [], |r| r.get(0))
            .map_err(|e| self.fail(e))
    }

    /// Every device key whose public key is cached.
    pub(crate) fn cached_public_keys(&self) -> Result<Vec<(KeySlot, Vec<u8>)>, StoreError> {
        let _gate = fork::enter();
        let mut stmt = self
            .conn()
            .prepare(
                "SELECT slot, keyring, public_key FROM device_keys
                 WHERE public_key IS NOT NULL ORDER BY keyring, slot",
            )
            .map_err(|e| self.fail(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, u32>(0)?,
                    r.get::<_, bool>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                ))
            })
            .map_err(|e| self.fail(e))?;
        let mut keys = Vec::new();
        for row in rows {
            let (number, foreign, raw) = row.map_err(|e| self.fail(e))?;
            keys.push((KeySlot { number, foreign }, raw));
        }
        Ok(keys)
    }

    /// Every stored object, by row id.
    pub(crate) fn objects(&self) -> Result<Vec<(i64, Object)>, StoreError> {
        let _gate = fork::enter();
        let mut stmt = self
            .conn()
            .prepare_cached("SELECT id, attributes FROM objects ORDER BY id")
            .map_err(|e| self.fail(e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))
            .map_err(|e| self.fail(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, blob) = row.map_err(|e| self.fail(e))?;
            out.push((id, self.decode(id, &blob)?));
        }
        Ok(out)
    }

    pub(crate) fn object(&self, id: i64) -> Result<Option<Object>, StoreError> {
        let _gate = fork::enter();
        let blob: Option<Vec<u8>> = self
            .conn()
            .prepare_cached("SELECT attributes FROM objects WHERE id = ?1")
            .and_then(|mut s| s.query_row([id], |r| r.get(0)).optional())
            .map_err(|e| self.fail(e))?;
        blob.map(|b| self.decode(id, &b)).transpose()
    }

    fn decode(&self, id: i64, blob: &[u8]) -> Result<Object, StoreError> {
        Object::from_blob(blob).ok_or_else(|| StoreError {
            path: self.path.clone(),
            reason: format!("object {id} is damaged"),
        })
    }

    /// Adds an object; returns its row id.
    pub(crate) fn insert(&mut self, object: &Object) -> Result<i64, StoreError> {
        let _gate = fork::enter();
        let class = object.class().unwrap_or(0) as i64;
        self.conn()
            .execute(
                "INSERT INTO objects (class, attributes) VALUES (?1, ?2)",
                params![class, object.to_blob()],
            )
            .map_err(|e| self.fail(e))?;
        Ok(self.conn().last_insert_rowid())
    }

    /// Replaces an object's attributes; false when it no longer exists.
    pub(crate) fn update(&mut self, id: i64, object: &Object) -> Result<bool, StoreError> {
        let _gate = fork::enter();
        let n = self
            .conn()
            .execute(
                "UPDATE objects SET attributes = ?2 WHERE id = ?1",
                params![id, object.to_blob()],
            )
            .map_err(|e| self.fail(e))?;
        Ok(n == 1)
    }

    pub(crate) fn delete(&mut self, id: i64) -> Result<bool, StoreError> {
        let _gate = fork::enter();
        let n = self
            .conn()
            .execute("DELETE FROM objects WHERE id = ?1", [id])
            .map_err(|e| self.fail(e))?;
        Ok(n == 1)
    }

    pub(crate) fn key_record(&self, slot: KeySlot) -> Result<Option<KeyRecord>, StoreError> {
        let _gate = fork::enter();
        self.conn()
            .prepare_cached(
                "SELECT curve, public_key, label, id FROM device_keys
                 WHERE slot = ?1 AND keyring = ?2",
            )
            .and_then(|mut s| {
                s.query_row(params![slot.number, slot.foreign], |r| {
                    Ok(KeyRecord {
                        curve: r
                            .get::<_, Option<String>>(0)?
                            .and_then(|c| Curve::from_store_tag(&c)),
                        public_key: r.get(1)?,
                        label: r
                            .get::<_, Option<Vec<u8>>>(2)?
                            .map(|l| String::from_utf8_lossy(&l).into_owned()),
                        id: r.get(3)?,
                    })
                })
                .optional()
            })
            .map_err(|e| self.fail(e))
    }

    /// Remembers a slot's public key, so later processes need not ask the device.
    pub(crate) fn cache_public_key(
        &mut self,
        slot: KeySlot,
        curve: Curve,
        raw: &[u8],
    ) -> Result<(), StoreError> {
        self.write_public_key("curve = ?3, public_key = ?4", slot, curve, raw)
    }

    /// Caches `raw` as the slot's public key and, unless it is the key
    /// already recorded there, drops the label and id: they were given to
    /// a key that is gone. One statement, so a generation recorded by
    /// another process meanwhile is never undone.
    pub(crate) fn replace_unrecorded_key(
        &mut self,
        slot: KeySlot,
        curve: Curve,
        raw: &[u8],
    ) -> Result<(), StoreError> {
        self.write_public_key(
            "curve = ?3, public_key = ?4, label = NULL, id = NULL, generated = 0
             WHERE public_key IS NOT ?4",
            slot,
            curve,
            raw,
        )
    }

    /// Adds the slot's row with its public key, or changes the row as
    /// `update` says (`SET` clause over the curve ?3 and the key ?4).
    fn write_public_key(
        &mut self,
        update: &str,
        slot: KeySlot,
        curve: Curve,
        raw: &[u8],
    ) -> Result<(), StoreError> {
        let _gate = fork::enter();
        self.conn()
            .execute(
                &format!(
                    "INSERT INTO device_keys (slot, keyring, curve, public_key) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (slot, keyring) DO UPDATE SET {update}"
                ),
                params![slot.number, slot.foreign, curve.store_tag(), raw],
            )
            .map(|_| ())
            .map_err(|e| self.fail(e))
    }

    /// Notes a key generation about to ask the device for a key; returns
    /// its row, which [`Store::record_generated_key`] or
    /// [`Store::end_key_generation`] deletes.
    pub(crate) fn begin_key_generation(
        &mut self,
        generation: &KeyGeneration,
    ) -> Result<i64, StoreError> {
        let _gate = fork::enter();
        let before: Vec<String> = generation.slots_before.iter().map(u32::to_string).collect();
        self.conn()
            .execute(
                "INSERT INTO key_generations (curve, label, key_id, slots_before)
                 VALUES (?1, ?2, ?3, ?4)",
                params![
                    generation.curve.store_tag(),
                    generation.label.as_deref().map(str::as_bytes),
                    generation.id,
                    before.join(",")
                ],
            )
            .map_err(|e| self.fail(e))?;
        Ok(self.conn().last_insert_rowid())
    }

    /// Key generations begun and never ended: their processes died.
    pub(crate) fn unfinished_key_generations(
        &self,
    ) -> Result<Vec<(i64, KeyGeneration)>, StoreError> {
        let _gate = fork::enter();
        let mut stmt = self
            .conn()
            .prepare_cached(
                "SELECT id, curve, label, key_id, slots_before FROM key_generations ORDER BY id",
            )
            .map_err(|e| self.fail(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<Vec<u8>>>(2)?,
                    r.get::<_, Option<Vec<u8>>>(3)?,
                    r.get::<_, String>(4)?,
                ))
            })
            .map_err(|e| self.fail(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (row_id, curve, label, id, before) = row.map_err(|e| self.fail(e))?;
            let damaged = || StoreError {
                path: self.path.clone(),
                reason: format!("key generation {row_id} is damaged"),
            };
            let slots_before = before
                .split(',')
                .filter(|n| !n.is_empty())
                .map(|n| n.parse::<u32>().map_err(|_| damaged()))
                .collect::<Result<_, _>>()?;
            out.push((
                row_id,
                KeyGeneration {
                    curve: Curve::from_store_tag(&curve).ok_or_else(damaged)?,
                    label: label.map(|l| String::from_utf8_lossy(&l).into_owned()),
                    id,
                    slots_before,
                },
            ));
        }
        Ok(out)
    }

    /// Ends a key generation that left no key to record.
    pub(crate) fn end_key_generation(&mut self, row: i64) -> Result<(), StoreError> {
        let _gate = fork::enter();
        self.conn()
            .execute("DELETE FROM key_generations WHERE id = ?1", [row])
            .map(|_| ())
            .map_err(|e| self.fail(e))
    }

    /// Records a key the token generated, replacing anything known about
    /// the slot, and ends its generation `row`: one transaction, so the
    /// key is either recorded or still an unfinished generation.
    pub(crate) fn record_generated_key(
        &mut self,
        row: i64,
        slot: KeySlot,
        raw: &[u8],
        generation: &KeyGeneration,
    ) -> Result<(), StoreError> {
        self.in_transaction(|tx| {
            tx.execute(
                "INSERT OR REPLACE INTO device_keys
                     (slot, keyring, curve, public_key, label, id, generated)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 1)",
                params![
                    slot.number,
                    slot.foreign,
                    generation.curve.store_tag(),
                    raw,
                    generation.label.as_deref().map(str::as_bytes),
                    generation.id
                ],
            )?;
            tx.execute("DELETE FROM key_generations WHERE id = ?1", [row])?;
            Ok(())
        })
    }

    /// Runs `f` in one immediate transaction, committed if it succeeds.
    fn in_transaction(
        &mut self,
        f: impl FnOnce(&rusqlite::Transaction) -> rusqlite::Result<()>,
    ) -> Result<(), StoreError> {
        let _gate = fork::enter();
        let result = self
            .conn_mut()
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .and_then(|tx| {
                f(&tx)?;
                tx.commit()
            });
        result.map_err(|e| self.fail(e))
    }

    /// Notes that the key `raw` of `slot` is about to be removed from the
    /// device; [`Store::forget_key`] or [`Store::end_key_removal`] ends it.
    pub(crate) fn begin_key_removal(
        &mut self,
        slot: KeySlot,
        raw: &[u8],
    ) -> Result<(), StoreError> {
        let _gate = fork::enter();
        self.conn()
            .execute(
                "INSERT OR REPLACE INTO key_removals (slot, keyring, public_key) VALUES (?1, ?2, ?3)",
                params![slot.number, slot.foreign, raw],
            )
            .map(|_| ())
            .map_err(|e| self.fail(e))
    }

    /// Key removals begun and never ended: their processes died.
    pub(crate) fn unfinished_key_removals(&self) -> Result<Vec<(KeySlot, Vec<u8>)>, StoreError> {
        let _gate = fork::enter();
        let mut stmt = self
            .conn()
            .prepare_cached("SELECT slot, keyring, public_key FROM key_removals ORDER BY slot")
            .map_err(|e| self.fail(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    KeySlot {
                        number: r.get(0)?,
                        foreign: r.get(1)?,
                    },
                    r.get(2)?,
                ))
            })
            .map_err(|e| self.fail(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.fail(e))
    }

    /// Whether a change of the key store was begun and never ended.
    pub(crate) fn has_unfinished_changes(&self) -> Result<bool, StoreError> {
        let _gate = fork::enter();
        self.conn()
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM key_generations)
                     OR EXISTS (SELECT 1 FROM key_removals)",
            )
            .and_then(|mut s| s.query_row([], |r| r.get(0)))
            .map_err(|e| self.fail(e))
    }

    /// Ends a key removal the device refused: the key is still there.
    pub(crate) fn end_key_removal(&mut self, slot: KeySlot) -> Result<(), StoreError> {
        let _gate = fork::enter();
        self.conn()
            .execute(
                "DELETE FROM key_removals WHERE slot = ?1 AND keyring = ?2",
                params![slot.number, slot.foreign],
            )
            .map(|_| ())
            .map_err(|e| self.fail(e))
    }

    /// Forgets a key that was removed from the device, and ends its removal.
    pub(crate) fn forget_key(&mut self, slot: KeySlot) -> Result<(), StoreError> {
        self.in_transaction(|tx| {
            for table in ["device_keys", "key_removals"] {
                tx.execute(
                    &format!("DELETE FROM {table} WHERE slot = ?1 AND keyring = ?2"),
                    params![slot.number, slot.foreign],
                )?;
            }
            Ok(())
        })
    }
}

/// Creates an empty file readable by its owner only, and its folder (0700).
fn create_empty(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        // Another process created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cryptoki_sys::*;

    fn cert(label: &str) -> Object {
        let mut o = Object::new();
        o.set_ulong(CKA_CLASS, CKO_CERTIFICATE)
            .set(CKA_LABEL, label.as_bytes().to_vec())
            .set(CKA_VALUE, vec![0x30, 0x00]);
        o
    }

    #[test]
    fn objects_persist_across_connections() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/token.sqlite3");
        let mut s = Store::open(&path).unwrap();
        let a = s.insert(&cert("a")).unwrap();
        let b = s.insert(&cert("b")).unwrap();
        assert_ne!(a, b);
        drop(s);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let mut s = Store::open(&path).unwrap();
        let all = s.objects().unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].1, cert("a"));
        assert!(s.delete(a).unwrap());
        assert!(!s.delete(a).unwrap());
        // Row ids are never reused, so handles of deleted objects stay dead.
        let c = s.insert(&cert("c")).unwrap();
        assert!(c > b);
        assert!(s.update(c, &cert("c2")).unwrap());
        assert_eq!(s.object(c).unwrap(), Some(cert("c2")));
        assert_eq!(s.object(a).unwrap(), None);
    }

    #[test]
    fn two_connections_see_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.sqlite3");
        let mut one = Store::open(&path).unwrap();
        let two = Store::open(&path).unwrap();
        let id = one.insert(&cert("shared")).unwrap();
        assert_eq!(two.object(id).unwrap(), Some(cert("shared")));
    }

    #[test]
    fn concurrent_writers_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("busy.sqlite3");
        Store::open(&path).unwrap();
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let path = path.clone();
                std::thread::spawn(move || {
                    // One connection each, as separate processes would have.
                    let mut s = Store::open(&path).unwrap();
                    for i in 0..25 {
                        s.insert(&cert(&format!("{w}-{i}"))).unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        assert_eq!(Store::open(&path).unwrap().objects().unwrap().len(), 100);
    }

    #[test]
    fn corrupt_store_is_reported_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.sqlite3");
        let garbage = b"this is not a database, but it is somebody's file".repeat(100);
        std::fs::write(&path, &garbage).unwrap();
        let err = Store::open(&path).unwrap_err();
        assert!(err.to_string().contains(path.to_str().unwrap()), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), garbage);
        let e: Error = err.into();
        assert_eq!(e.rv(), CKR_GENERAL_ERROR);
    }

    #[test]
    fn foreign_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("other.sqlite3");
        let c = Connection::open(&path).unwrap();
        c.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .unwrap();
        drop(c);
        let before = std::fs::read(&path).unwrap();
        let err = Store::open(&path).unwrap_err();
        assert!(err.to_string().contains("not a zkiot token store"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.sqlite3");
        let c = Connection::open(&path).unwrap();
        c.pragma_update(None, "user_version", 99).unwrap();
        drop(c);
        assert!(Store::open(&path)
            .unwrap_err()
            .to_string()
            .contains("newer"));
    }

    #[test]
    fn a_version_1_store_gains_the_key_generations_and_keeps_its_objects() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.sqlite3");
        let c = Connection::open(&path).unwrap();
        c.execute_batch(SCHEMA).unwrap();
        c.pragma_update(None, "user_version", 1).unwrap();
        c.execute(
            "INSERT INTO objects (class, attributes) VALUES (1, ?1)",
            [cert("old").to_blob()],
        )
        .unwrap();
        drop(c);
        let mut s = Store::open(&path).unwrap();
        assert_eq!(s.objects().unwrap()[0].1, cert("old"));
        assert_eq!(s.unfinished_key_generations().unwrap(), []);
        let generation = KeyGeneration {
            curve: Curve::P256,
            label: None,
            id: None,
            slots_before: vec![],
        };
        let row = s.begin_key_generation(&generation).unwrap();
        drop(s);
        let s = Store::open(&path).unwrap();
        assert_eq!(s.unfinished_key_generations().unwrap(), [(row, generation)]);
        let version: i64 = s
            .conn()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
    }

    #[test]
    fn a_version_2_store_gains_an_owner_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v2.sqlite3");
        let c = Connection::open(&path).unwrap();
        c.execute_batch(&[SCHEMA, KEY_STORE_CHANGES].concat())
            .unwrap();
        c.pragma_update(None, "user_version", 2).unwrap();
        c.execute(
            "INSERT INTO device_keys (slot, keyring, curve, public_key) VALUES (1, 0, 'p256', x'0102')",
            [],
        )
        .unwrap();
        drop(c);
        let mut s = Store::open(&path).unwrap();
        assert_eq!(s.owner().unwrap(), None);
        assert_eq!(
            s.cached_public_keys().unwrap(),
            [(KeySlot::device(1), vec![1, 2])]
        );
        assert_eq!(s.claim("ZK-A").unwrap(), "ZK-A");
        assert_eq!(s.claim("ZK-B").unwrap(), "ZK-A", "the first claim stays");
        drop(s);
        assert_eq!(
            Store::open(&path).unwrap().owner().unwrap().as_deref(),
            Some("ZK-A")
        );
    }

    #[test]
    fn damaged_object_rows_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.sqlite3");
        let s = Store::open(&path).unwrap();
        s.conn()
            .execute(
                "INSERT INTO objects (class, attributes) VALUES (1, x'0102')",
                [],
            )
            .unwrap();
        assert!(s.objects().unwrap_err().to_string().contains("damaged"));
    }

    #[test]
    fn key_records() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("k.sqlite3")).unwrap();
        let slot = KeySlot::device(16);
        assert_eq!(s.key_record(slot).unwrap(), None);
        s.cache_public_key(slot, Curve::P256, &[1; 64]).unwrap();
        let r = s.key_record(slot).unwrap().unwrap();
        assert_eq!(r.curve, Some(Curve::P256));
        assert_eq!(r.public_key.as_deref(), Some(&[1u8; 64][..]));
        let generation = KeyGeneration {
            curve: Curve::Secp256k1,
            label: Some("mine".into()),
            id: Some(vec![9]),
            slots_before: vec![0, 1, 2],
        };
        let row = s.begin_key_generation(&generation).unwrap();
        assert_eq!(
            s.unfinished_key_generations().unwrap(),
            [(row, generation.clone())]
        );
        s.record_generated_key(row, slot, &[2; 64], &generation)
            .unwrap();
        assert_eq!(s.unfinished_key_generations().unwrap(), []);
        let r = s.key_record(slot).unwrap().unwrap();
        assert_eq!(r.label.as_deref(), Some("mine"));
        assert_eq!(r.id.as_deref(), Some(&[9u8][..]));
        // Caching again keeps the label given at generation.
        s.cache_public_key(slot, Curve::Secp256k1, &[2; 64])
            .unwrap();
        assert_eq!(
            s.key_record(slot).unwrap().unwrap().label.as_deref(),
            Some("mine")
        );
        let foreign = KeySlot {
            number: 16,
            foreign: true,
        };
        assert_eq!(s.key_record(foreign).unwrap(), None);
        // The recorded key itself keeps its label; another key drops it.
        s.replace_unrecorded_key(slot, Curve::Secp256k1, &[2; 64])
            .unwrap();
        assert_eq!(
            s.key_record(slot).unwrap().unwrap().label.as_deref(),
            Some("mine")
        );
        s.replace_unrecorded_key(slot, Curve::P256, &[3; 64])
            .unwrap();
        let r = s.key_record(slot).unwrap().unwrap();
        assert_eq!((r.label, r.id), (None, None));
        assert_eq!(r.public_key.as_deref(), Some(&[3u8; 64][..]));
        s.begin_key_removal(slot, &[3; 64]).unwrap();
        assert_eq!(s.unfinished_key_removals().unwrap(), [(slot, vec![3; 64])]);
        assert!(s.has_unfinished_changes().unwrap());
        s.forget_key(slot).unwrap();
        assert_eq!(s.key_record(slot).unwrap(), None);
        assert_eq!(s.unfinished_key_removals().unwrap(), []);
        s.begin_key_removal(foreign, &[4; 64]).unwrap();
        s.end_key_removal(foreign).unwrap();
        assert_eq!(s.unfinished_key_removals().unwrap(), []);
        assert!(!s.has_unfinished_changes().unwrap());
    }
}
