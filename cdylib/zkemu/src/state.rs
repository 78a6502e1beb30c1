//! The state directory: where it is, its lock, the device identity, and
//! atomic file replacement. What lives in it is owned elsewhere: key files by
//! [`crate::keystore`], counters by [`crate::counters`].
//!
//! Several processes use one directory at once. Every change of state runs
//! under an exclusive `flock` of the `lock` file, and every file is replaced
//! atomically (temporary file, fsync, rename), so readers never see half a file
//! and need no lock.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::errno::{Errno, Result};
use crate::model::{Layout, Profile};

const LOCK_FILE: &str = "lock";
const IDENTITY_FILE: &str = "device.json";

/// The directory holding one emulated device.
#[derive(Debug)]
pub struct StateDir {
    root: PathBuf,
}

/// An exclusive lock on the state directory, released when dropped.
#[must_use]
pub struct StateLock {
    file: File,
}

impl Drop for StateLock {
    fn drop(&mut self) {
        // Unlock explicitly rather than by closing: a child forked while the
        // lock was held shares this open file description, and closing our
        // descriptor alone would leave the lock held for as long as it lives.
        let _ = self.file.unlock();
    }
}

/// What a device is, fixed when its state is created (`device.json`).
///
/// States created before profiles existed hold only `model`, which then
/// names the profile (`ZYMKEY4i` or `HSM6`), with that profile's default
/// factory slot count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The profile's name (`ZKIOT_EMU_MODEL` at creation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// What `zkGetModelNumberString` reports.
    pub model: String,
    /// How many factory key slots the device has, from slot 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factory_slots: Option<i32>,
    pub serial: String,
    pub firmware: String,
    /// Seconds since the epoch when the state was created.
    pub created: u64,
}

impl Identity {
    /// The profile; a state naming none, or none this emulator knows, is `EIO`.
    pub fn profile(&self) -> Result<Profile> {
        match &self.profile {
            Some(name) => Profile::from_name(name),
            None => Profile::from_legacy_model(&self.model),
        }
        .ok_or(Errno::IO)
    }

    /// The slot layout; a factory slot count the profile cannot have is `EIO`.
    pub fn layout(&self) -> Result<Layout> {
        let profile = self.profile()?;
        let factory = self
            .factory_slots
            .unwrap_or_else(|| profile.default_factory_slots());
        profile.layout(factory).ok_or(Errno::IO)
    }
}

impl StateDir {
    pub fn new(root: PathBuf) -> StateDir {
        StateDir { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Creates (0700) the directory and the subdirectories `subdirs` where missing.
    pub fn ensure_dirs(&self, subdirs: &[&str]) -> Result<()> {
        let mut builder = DirBuilder::new();
        builder.recursive(true).mode(0o700);
        builder.create(&self.root)?;
        for dir in subdirs {
            builder.create(self.path(dir))?;
        }
        Ok(())
    }

    /// Takes the directory's exclusive lock, waiting for other processes.
    pub fn lock(&self) -> Result<StateLock> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(self.path(LOCK_FILE))?;
        file.lock()?;
        Ok(StateLock { file })
    }

    /// The device identity, if the state has been created.
    pub fn identity(&self) -> Result<Option<Identity>> {
        match fs::read(self.path(IDENTITY_FILE)) {
            Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).map_err(|_| Errno::IO)?)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Records the identity; written last when a state is created, so its
    /// presence means the factory keys are in place.
    pub fn write_identity(&self, _lock: &StateLock, identity: &Identity) -> Result<()> {
        let json = serde_json::to_vec_pretty(identity).map_err(|_| Errno::IO)?;
        write_atomic(&self.path(IDENTITY_FILE), &json)
    }
}

/// What names the emulated device of the state directory `dir`: the
/// directory's canonical path (as given while it does not exist) and the
/// serial number of its identity (empty until the state is created). Reads
/// files only: it is no device operation.
pub fn fingerprint(dir: &Path) -> Result<String> {
    let root = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let serial = StateDir::new(root.clone())
        .identity()
        .ok()
        .flatten()
        .map(|identity| identity.serial)
        .unwrap_or_default();
    Ok(format!("{}\n{serial}", root.display()))
}

/// Replaces `path` with `contents` (mode 0600) so that readers see the old file
/// or the new one, never a mix, and syncs it and its directory: what is
/// written this way (keys, identity) must survive a crash of the host.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().ok_or(Errno::IO)?;
    let name = path.file_name().ok_or(Errno::IO)?.to_string_lossy();
    let temp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        SEQUENCE.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| -> Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&temp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// Makes a rename or unlink in `dir` durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)?.sync_all()?;
    Ok(())
}

/// Whether a directory entry is one of `write_atomic`'s temporary files.
pub fn is_temporary(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".tmp")
}

/// The process that wrote a temporary file (`.<name>.<pid>.<sequence>.tmp`).
fn temporary_writer(name: &str) -> Option<libc::pid_t> {
    let mut parts = name.rsplit('.');
    let (_tmp, _sequence) = (parts.next()?, parts.next()?);
    parts.next()?.parse().ok()
}

/// Removes the temporary files in `dir` left by processes that no longer
/// exist (killed between creating and renaming them).
pub fn remove_orphaned_temporaries(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let Some(pid) = temporary_writer(&name).filter(|_| is_temporary(&name)) else {
            continue;
        };
        // SAFETY: kill with signal 0 only checks whether the process exists.
        let gone = unsafe { libc::kill(pid, 0) } != 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone {
            let _ = fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn temporaries_of_dead_processes_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        // A process that has exited: a child reaped right away.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let orphan = dir.path().join(format!(".slot-16.pem.{dead}.0.tmp"));
        let live = dir
            .path()
            .join(format!(".slot-17.pem.{}.3.tmp", std::process::id()));
        let key = dir.path().join("slot-16.pem");
        for path in [&orphan, &live, &key] {
            fs::write(path, b"key").unwrap();
        }
        remove_orphaned_temporaries(dir.path());
        assert!(
            !orphan.exists(),
            "the dead writer's temporary file is removed"
        );
        assert!(live.exists(), "a live writer's temporary file stays");
        assert!(key.exists(), "key files stay");
    }

    fn identity(json: &str) -> Identity {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn identities_without_a_profile_are_zymkey4i_or_hsm6() {
        let old = identity(r#"{"model":"HSM6","serial":"EMU-1","firmware":"f","created":1}"#);
        assert_eq!(old.profile(), Ok(Profile::Hsm6));
        assert_eq!(old.layout().unwrap().factory_slots(), 0..12);
        let old = identity(r#"{"model":"ZYMKEY4i","serial":"EMU-1","firmware":"f","created":1}"#);
        assert_eq!(old.profile(), Ok(Profile::Zymkey4i));
        assert_eq!(old.layout().unwrap().factory_slots(), 0..3);
        let unknown = identity(r#"{"model":"HSM60","serial":"EMU-1","firmware":"f","created":1}"#);
        assert_eq!(unknown.profile(), Err(Errno::IO));
    }

    #[test]
    fn identities_with_a_profile() {
        let new = identity(
            r#"{"profile":"ZYMKEY5-EDU","model":"HSM6","factory_slots":14,
                "serial":"EMU-1","firmware":"f","created":1}"#,
        );
        assert_eq!(new.profile(), Ok(Profile::Zymkey5Edu));
        assert_eq!(new.layout().unwrap().factory_slots(), 0..14);
        let json = serde_json::to_string(&new).unwrap();
        assert!(
            json.starts_with(r#"{"profile":"ZYMKEY5-EDU","model":"HSM6","factory_slots":14,"#),
            "{json}"
        );
        let bad_count = Identity {
            factory_slots: Some(17),
            ..new.clone()
        };
        assert_eq!(bad_count.layout(), Err(Errno::IO));
        let bad_profile = Identity {
            profile: Some("HSM4".to_string()),
            ..new
        };
        assert_eq!(bad_profile.profile(), Err(Errno::IO));
    }

    #[test]
    fn atomic_write_replaces_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file left behind");
    }

    #[test]
    fn directories_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path().join("a/b"));
        state.ensure_dirs(&["c", "d"]).unwrap();
        for sub in ["", "c", "d"] {
            let mode = fs::metadata(state.path(sub)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{sub}");
        }
    }

    #[test]
    fn lock_is_released_although_a_forked_child_holds_a_copy() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path().to_path_buf());
        state.ensure_dirs(&[]).unwrap();
        let lock = state.lock().unwrap();
        // SAFETY: the child only sleeps and exits; it touches no Rust state.
        let child = unsafe { libc::fork() };
        assert!(child >= 0, "fork failed");
        if child == 0 {
            // SAFETY: both are async-signal-safe, so fine in a forked child.
            unsafe {
                libc::sleep(30);
                libc::_exit(0);
            }
        }
        drop(lock);
        let probe = OpenOptions::new()
            .write(true)
            .open(state.path(LOCK_FILE))
            .unwrap();
        let free = probe.try_lock().is_ok();
        // SAFETY: `child` is our own child process.
        unsafe {
            libc::kill(child, libc::SIGKILL);
            libc::waitpid(child, std::ptr::null_mut(), 0);
        }
        assert!(
            free,
            "the lock outlived its guard in the forked child's copy"
        );
    }
}
