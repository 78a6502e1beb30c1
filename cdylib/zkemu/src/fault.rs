//! Fault injection for tests.
//!
//! If `$ZKIOT_EMU_DIR/fail-next` exists and holds an operation name (`sign`,
//! `gen_key`, … as named in `counters`; surrounding whitespace ignored), the next
//! call of that operation, in any process, fails with `-EIO` and the file is
//! removed under the state lock: exactly one call fails, the following one
//! works. A file naming another operation is left alone.

use std::fs;
use std::io::ErrorKind;

use crate::errno::Result;
use crate::operation::Operation;
use crate::state::StateDir;

pub const FAIL_NEXT_FILE: &str = "fail-next";

/// Whether this call of `operation` is the one to fail; consumes the request.
pub fn take(state: &StateDir, operation: Operation) -> Result<bool> {
    let path = state.path(FAIL_NEXT_FILE);
    // Checked without the lock first: the common case is no file at all.
    if !path.exists() {
        return Ok(false);
    }
    let _lock = state.lock()?;
    let requested = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    if requested.trim() != operation.name() {
        return Ok(false);
    }
    fs::remove_file(&path)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fails_exactly_once_and_only_the_named_operation() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path().to_path_buf());
        assert!(!take(&state, Operation::Sign).unwrap());
        fs::write(state.path(FAIL_NEXT_FILE), "sign\n").unwrap();
        assert!(!take(&state, Operation::Verify).unwrap());
        assert!(take(&state, Operation::Sign).unwrap());
        assert!(!take(&state, Operation::Sign).unwrap());
        assert!(!state.path(FAIL_NEXT_FILE).exists());
    }
}
