//! The trace file (`ZKIOT_EMU_TRACE`): one line `<operation> <slot>` appended
//! per device operation, by every process, so a test can count the device
//! calls a whole program made (for example signatures per TLS handshake).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::errno::Result;
use crate::operation::{Operation, Target};

/// The trace file, opened once per `zkOpen` with `O_APPEND`.
#[derive(Debug)]
pub struct Trace {
    file: File,
}

impl Trace {
    pub fn open(path: &Path) -> Result<Trace> {
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o644)
            .open(path)?;
        Ok(Trace { file })
    }

    /// Appends `"<operation> <target>\n"` with a single `write` on the
    /// `O_APPEND` descriptor, so lines from concurrent threads and processes
    /// never interleave, and a file emptied meanwhile is written from its start.
    pub fn append(&self, operation: Operation, target: Target) -> Result<()> {
        let line = format!("{} {target}\n", operation.name());
        (&self.file).write_all(line.as_bytes())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_operation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trace");
        let trace = Trace::open(&path).unwrap();
        trace.append(Operation::Sign, Target::Device(0)).unwrap();
        trace.append(Operation::Verify, Target::Foreign(3)).unwrap();
        std::fs::write(&path, "").unwrap();
        trace.append(Operation::Info, Target::None).unwrap();
        Trace::open(&path)
            .unwrap()
            .append(Operation::Open, Target::None)
            .unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "info -\nopen -\n");
    }
}
