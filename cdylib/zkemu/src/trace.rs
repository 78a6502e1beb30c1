//! The trace file (`ZKIOT_EMU_TRACE`): one line `<operation> <slot>` appended
//! per device operation, by every process, so a test can count the device
//! calls a whole program made (for example signatures per TLS handshake).

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::errno::Result;
use crate::operation::{Operation, Target};

/// Appends `"<operation> <target>\n"` with a single `write` on an `O_APPEND`
/// descriptor, so lines from concurrent processes never interleave.
pub fn append(path: &Path, operation: Operation, target: Target) -> Result<()> {
    let line = format!("{} {target}\n", operation.name());
    let mut file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o644)
        .open(path)?;
    file.write_all(line.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_operation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trace");
        append(&path, Operation::Sign, Target::Device(0)).unwrap();
        append(&path, Operation::Verify, Target::Foreign(3)).unwrap();
        append(&path, Operation::Info, Target::None).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "sign 0\nverify foreign3\ninfo -\n"
        );
    }
}
