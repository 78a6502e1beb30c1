//! The C boundary: raw pointers become safe references here, outputs are
//! malloc'd here, and no panic gets past [`call`].

use std::ffi::{c_char, c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::crypto::DIGEST_LEN;
use crate::device::Device;
use crate::errno::{Errno, Result};
use crate::handles;

/// Runs one exported function: its result, or the negated errno; a panic is `-EFAULT`.
pub fn call(f: impl FnOnce() -> Result<c_int>) -> c_int {
    let code = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(value)) => value,
        Ok(Err(errno)) => errno.to_return_code(),
        Err(_) => Errno::FAULT.to_return_code(),
    };
    // OpenSSL keeps one error queue per thread, shared with the host program, and
    // some calls that succeed still leave entries in it (a PEM decoder that tried
    // other formats first). A host that checks the queue after its own OpenSSL
    // call (pkcs11-tool building an EVP_PKEY) would take ours for its own error.
    drop(openssl::error::ErrorStack::get());
    code
}

/// Runs `f` on the device of an open context; an unknown context is `-EINVAL`.
pub fn with_device(ctx: *mut c_void, f: impl FnOnce(&Device) -> Result<c_int>) -> c_int {
    call(|| f(&*handles::get(ctx as usize)?))
}

/// A pointer argument that must not be NULL.
pub fn required<T>(argument: Option<T>) -> Result<T> {
    argument.ok_or(Errno::INVAL)
}

/// The 32-byte digest at `p`, if not NULL.
///
/// # Safety
/// `p` is NULL or points to 32 readable bytes (the API reads exactly 32).
pub unsafe fn digest<'a>(p: *const u8) -> Option<&'a [u8; DIGEST_LEN]> {
    // SAFETY: by the caller's contract; [u8; 32] has alignment 1.
    unsafe { p.cast::<[u8; DIGEST_LEN]>().as_ref() }
}

/// `len` bytes at `p`; `None` if `p` is NULL or `len` is negative.
///
/// # Safety
/// `p` is NULL or points to `len` readable bytes.
pub unsafe fn bytes<'a>(p: *const u8, len: c_int) -> Option<&'a [u8]> {
    let len = usize::try_from(len).ok()?;
    if p.is_null() {
        return None;
    }
    // SAFETY: by the caller's contract.
    Some(unsafe { std::slice::from_raw_parts(p, len) })
}

/// An output slot for a library-allocated buffer, set to NULL at once so a
/// caller that frees it after a failure frees nothing.
///
/// # Safety
/// `p` is NULL or valid for writes, and not aliased by another argument.
pub unsafe fn buffer_out<'a, T>(p: *mut *mut T) -> Option<&'a mut *mut T> {
    // SAFETY: by the caller's contract.
    let out = unsafe { p.as_mut() }?;
    *out = std::ptr::null_mut();
    Some(out)
}

/// An output value, set to its default (0, false) at once.
///
/// # Safety
/// `p` is NULL or valid for writes, and not aliased by another argument.
pub unsafe fn value_out<'a, T: Default>(p: *mut T) -> Option<&'a mut T> {
    // SAFETY: by the caller's contract.
    let out = unsafe { p.as_mut() }?;
    *out = T::default();
    Some(out)
}

/// Hands `items` to the caller in a malloc'd buffer that the caller free()s.
/// The buffer is never NULL on success, even for no items.
pub fn give<T: Copy>(out: &mut *mut T, items: &[T]) -> Result<()> {
    let size = std::mem::size_of_val(items).max(1);
    // SAFETY: malloc has no preconditions; its result is checked for NULL and
    // is aligned for any fundamental type.
    let buffer = unsafe { libc::malloc(size) }.cast::<T>();
    if buffer.is_null() {
        return Err(Errno::NOMEM);
    }
    // SAFETY: `buffer` has room for `items.len()` values and is fresh memory.
    unsafe { std::ptr::copy_nonoverlapping(items.as_ptr(), buffer, items.len()) };
    *out = buffer;
    Ok(())
}

/// Hands `bytes` and their length to the caller.
pub fn give_with_len(out: &mut *mut u8, len: &mut c_int, bytes: &[u8]) -> Result<()> {
    let n = c_int::try_from(bytes.len()).map_err(|_| Errno::INVAL)?;
    give(out, bytes)?;
    *len = n;
    Ok(())
}

/// Hands a NUL-terminated copy of `text` to the caller.
pub fn give_string(out: &mut *mut c_char, text: &str) -> Result<()> {
    let mut chars: Vec<c_char> = text.bytes().map(|b| b as c_char).collect();
    chars.push(0);
    give(out, &chars)
}
