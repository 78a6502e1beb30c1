//! Failures as the C API reports them: a positive errno, returned negated.

use std::fmt;

/// A failure of a device operation, as the errno the C API returns negated.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Errno {
    /// Bad argument, unknown context, or a slot outside the model's slot range.
    pub const INVAL: Errno = Errno(libc::EINVAL);
    /// A slot inside the model's range that holds no key.
    pub const NOENT: Errno = Errno(libc::ENOENT);
    /// The model has no such feature (key generation and foreign keyring on a
    /// ZYMKEY4i, the accelerometer on a ZYMKEY5).
    pub const OPNOTSUPP: Errno = Errno(libc::EOPNOTSUPP);
    /// The key store or the foreign keyring is full.
    pub const NOSPC: Errno = Errno(libc::ENOSPC);
    /// Factory keys cannot be removed; a channel's action was already set
    /// once since the binding was locked.
    pub const PERM: Errno = Errno(libc::EPERM);
    /// `zkWaitForTap` saw no tap, or `zkWaitForPerimeterEvent` no event,
    /// within its timeout.
    pub const TIMEDOUT: Errno = Errno(libc::ETIMEDOUT);
    /// The state directory could not be read or written, an injected fault,
    /// or a key operation on a device whose keys a self-destruct destroyed.
    pub const IO: Errno = Errno(libc::EIO);
    /// An output buffer could not be allocated.
    pub const NOMEM: Errno = Errno(libc::ENOMEM);
    /// An internal error (a panic caught at the C boundary).
    pub const FAULT: Errno = Errno(libc::EFAULT);

    /// The C return value: the negated errno.
    pub fn to_return_code(self) -> i32 {
        -self.0
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Errno({}: {})",
            self.0,
            std::io::Error::from_raw_os_error(self.0)
        )
    }
}

impl From<std::io::Error> for Errno {
    fn from(_: std::io::Error) -> Errno {
        Errno::IO
    }
}

impl From<openssl::error::ErrorStack> for Errno {
    fn from(_: openssl::error::ErrorStack) -> Errno {
        Errno::IO
    }
}

pub type Result<T> = std::result::Result<T, Errno>;
