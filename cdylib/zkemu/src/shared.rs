//! Numbers shared by every process using a state directory, with no lock: a
//! small file mapped `MAP_SHARED` into each process, read and changed with
//! atomic instructions. A `fork()`ed child inherits the mapping and keeps
//! counting into the same file.
//!
//! Layout: a text header of [`HEADER_LEN`] bytes (its first line says what
//! the numbers are, NUL padding after it), then 64-bit native-endian
//! (little-endian on x86_64 and arm64) unsigned numbers, number `i` at byte
//! `HEADER_LEN + 8 * i`. Never truncate a mapped file: a process touching a
//! page that is gone gets `SIGBUS`.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::AtomicU64;

use crate::errno::{Errno, Result};
use crate::state::StateLock;

/// Bytes before the first number.
pub const HEADER_LEN: usize = 256;

/// `count` shared 64-bit numbers.
pub struct SharedWords {
    base: NonNull<AtomicU64>,
    count: usize,
    len: usize,
}

// SAFETY: the mapping is only accessed through `AtomicU64`, which is Sync.
unsafe impl Send for SharedWords {}
// SAFETY: as above.
unsafe impl Sync for SharedWords {}

impl std::fmt::Debug for SharedWords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedWords")
            .field("count", &self.count)
            .finish()
    }
}

impl SharedWords {
    /// Maps `path`, holding `count` numbers after `header` (one line, shorter
    /// than [`HEADER_LEN`]). A missing file is created (0600, all numbers 0)
    /// under the state lock taken by `lock`; a shorter one is extended the
    /// same way, its numbers kept and its header replaced by `header` (which
    /// must then extend the old one). A longer one is used as it is.
    pub fn open(
        path: &Path,
        header: &str,
        count: usize,
        lock: impl FnOnce() -> Result<StateLock>,
    ) -> Result<SharedWords> {
        debug_assert!(header.len() < HEADER_LEN && !header.contains('\n'));
        let len = HEADER_LEN + 8 * count;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)?;
        if file_len(&file)? < len {
            let _lock = lock()?;
            // Another process may have initialised it meanwhile. A file
            // with fewer numbers (made when there were fewer) keeps them:
            // it grows first, so no reader sees a header naming numbers
            // that are not there yet, then gets the longer header.
            if file_len(&file)? < len {
                file.set_len(len as u64)?;
                file.write_all_at(format!("{header}\n").as_bytes(), 0)?;
            }
        }
        // SAFETY: a fresh shared mapping of `len` bytes of an open file that
        // is at least that long; the kernel picks the address.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(Errno::IO);
        }
        // The mapping outlives the descriptor, which is closed on return.
        let base = NonNull::new(base.cast::<u8>()).ok_or(Errno::IO)?;
        // SAFETY: HEADER_LEN is inside the mapping and a multiple of 8, and
        // mappings are page-aligned, so the numbers are aligned for AtomicU64.
        let base = unsafe { base.add(HEADER_LEN) }.cast::<AtomicU64>();
        Ok(SharedWords { base, count, len })
    }

    /// Number `index`; panics past the end (a bug in the caller).
    pub fn get(&self, index: usize) -> &AtomicU64 {
        assert!(index < self.count, "shared number {index} out of range");
        // SAFETY: in bounds (checked above) and aligned; the mapping lives as
        // long as `self`, and other processes only touch it atomically.
        unsafe { self.base.add(index).as_ref() }
    }
}

impl Drop for SharedWords {
    fn drop(&mut self) {
        // SAFETY: the start and length of the mapping made in `open`.
        unsafe {
            libc::munmap(
                self.base.cast::<u8>().sub(HEADER_LEN).as_ptr().cast(),
                self.len,
            )
        };
    }
}

fn file_len(file: &File) -> Result<usize> {
    usize::try_from(file.metadata()?.len()).map_err(|_| Errno::IO)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::StateDir;
    use std::sync::atomic::Ordering;

    #[test]
    fn numbers_are_shared_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path().to_path_buf());
        let path = state.path("numbers");
        let one = SharedWords::open(&path, "test 1 a b", 2, || state.lock()).unwrap();
        let two = SharedWords::open(&path, "test 1 a b", 2, || state.lock()).unwrap();
        one.get(1).fetch_add(3, Ordering::Relaxed);
        two.get(1).fetch_add(4, Ordering::Relaxed);
        assert_eq!(one.get(1).load(Ordering::Relaxed), 7);
        assert_eq!(one.get(0).load(Ordering::Relaxed), 0);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), HEADER_LEN + 16);
        assert!(bytes.starts_with(b"test 1 a b\n\0"));
        assert_eq!(bytes[HEADER_LEN + 8..], 7u64.to_ne_bytes());
    }
}
