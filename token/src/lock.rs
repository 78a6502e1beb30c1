//! Taking the token's locks. A lock poisoned by a panic (which the ABI
//! crate turns into `CKR_GENERAL_ERROR`) is taken all the same: the module
//! keeps answering instead of failing every later call.

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

/// An exclusive `flock` of a file, shared with other processes and with
/// other threads of this one (each lock opens its own file description);
/// released when dropped, or when its process dies.
#[must_use]
pub(crate) struct FileLock {
    file: std::fs::File,
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // Unlocked explicitly: a forked child may share the open file description.
        let _ = self.file.unlock();
    }
}

impl FileLock {
    /// Takes the lock of `path` (created 0600, its folder 0700), waiting as
    /// long as another holder keeps it.
    pub(crate) fn exclusive(path: &std::path::Path) -> std::io::Result<FileLock> {
        let file = open_lock_file(path)?;
        file.lock()?;
        Ok(FileLock { file })
    }

    /// Takes the lock if nobody holds it, else `None`.
    pub(crate) fn try_exclusive(path: &std::path::Path) -> std::io::Result<Option<FileLock>> {
        let file = open_lock_file(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(FileLock { file })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }

    /// Takes the lock, waiting at most `limit` for its holder; `None` when
    /// the holder kept it all that time (a stopped process must not hang
    /// its host's call forever).
    pub(crate) fn exclusive_within(
        path: &std::path::Path,
        limit: std::time::Duration,
    ) -> std::io::Result<Option<FileLock>> {
        let start = std::time::Instant::now();
        let mut pause = std::time::Duration::from_millis(2);
        loop {
            if let Some(lock) = FileLock::try_exclusive(path)? {
                return Ok(Some(lock));
            }
            if start.elapsed() >= limit {
                return Ok(None);
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(std::time::Duration::from_millis(50));
        }
    }
}

fn open_lock_file(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn file_locks_exclude_each_other_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/x.lock");
        let held = FileLock::exclusive(&path).unwrap();
        assert!(FileLock::try_exclusive(&path).unwrap().is_none());
        assert!(FileLock::exclusive_within(&path, Duration::from_millis(30))
            .unwrap()
            .is_none());
        drop(held);
        assert!(FileLock::try_exclusive(&path).unwrap().is_some());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
