//! Files written the careful way: atomically (temporary file, fsync, rename), with the mode set
//! before any byte is written, and never over an existing file unless asked.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{bail, Context, Result};

/// Mode of files holding private keys or credentials.
pub const SECRET_MODE: u32 = 0o600;
/// Mode of public files (certificates, CSRs, configuration).
pub const PUBLIC_MODE: u32 = 0o644;

/// Creates `dir` and its parents; a folder created here gets `mode`.
pub fn ensure_dir(dir: &Path, mode: u32) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .with_context(|| format!("cannot create folder {}", dir.display()))
}

/// Writes `contents` to `path` atomically with `mode`: a reader sees the old file or the whole
/// new one, never a part. The parent folder is created if missing.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    write_atomic_owned(path, contents, mode, None)
}

/// Like [`write_atomic`], the file belonging to the group `gid` (when given) before it appears
/// under its name, so that a file readable by one group is never readable by another.
pub fn write_atomic_owned(path: &Path, contents: &[u8], mode: u32, gid: Option<u32>) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    ensure_dir(dir, 0o755)?;
    let file_name = path
        .file_name()
        .with_context(|| format!("{} is not a file path", path.display()))?;
    // Unique per process and per call, so concurrent writers never share a temporary file.
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        file_name.to_string_lossy(),
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| -> Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        if gid.is_some() {
            std::os::unix::fs::fchown(&file, None, gid)
                .with_context(|| format!("cannot give {} to group {gid:?}", tmp.display()))?;
        }
        // The umask may have narrowed the mode; set it exactly.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
            .with_context(|| format!("cannot move {} to {}", tmp.display(), path.display()))?;
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.with_context(|| format!("cannot write {}", path.display()))
}

/// Like [`write_atomic`], but refuses to replace an existing file unless `force` is set.
pub fn write_new(path: &Path, contents: &[u8], mode: u32, force: bool) -> Result<()> {
    if path.exists() && !force {
        bail!(
            "{} already exists; not overwriting it (use --force to replace it)",
            path.display()
        );
    }
    write_atomic(path, contents, mode)
}

/// Reads a file, naming it in the error.
pub fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_atomically_with_the_mode_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/secret.pem");
        write_new(&path, b"one", SECRET_MODE, false).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"one");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(write_new(&path, b"two", SECRET_MODE, false).is_err());
        assert_eq!(fs::read(&path).unwrap(), b"one");
        write_new(&path, b"two", SECRET_MODE, true).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let leftovers: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "{leftovers:?}");
    }
}
