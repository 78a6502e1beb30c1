//! Operation counters, shared by every process using the state directory.
//!
//! `counters` is a [`crate::shared`] file: its header line is
//! `zkemu-counters 1` followed by the operation names (see
//! [`Operation::name`]), and number `i` counts the calls of the `i`-th name so
//! far, in all processes. Every call that reaches the device counts, including
//! calls that fail; calls refused at the C boundary (NULL argument, unknown
//! context) do not. Counting is one atomic add: no lock, no file write.

use std::sync::atomic::Ordering;

use crate::errno::Result;
use crate::operation::Operation;
use crate::shared::SharedWords;
use crate::state::StateDir;

pub const COUNTERS_FILE: &str = "counters";

/// The counters of one state directory, mapped into this process.
#[derive(Debug)]
pub struct Counters {
    words: SharedWords,
}

impl Counters {
    pub fn open(state: &StateDir) -> Result<Counters> {
        let names: Vec<&str> = Operation::ALL.iter().map(|op| op.name()).collect();
        let header = format!("zkemu-counters 1 {}", names.join(" "));
        let words = SharedWords::open(
            &state.path(COUNTERS_FILE),
            &header,
            Operation::ALL.len(),
            || state.lock(),
        )?;
        Ok(Counters { words })
    }

    /// Adds one call of `operation`.
    pub fn increment(&self, operation: Operation) {
        self.words
            .get(operation.index())
            .fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::HEADER_LEN;

    #[test]
    fn counts_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path().to_path_buf());
        let counters = Counters::open(&state).unwrap();
        counters.increment(Operation::Sign);
        counters.increment(Operation::Sign);
        Counters::open(&state)
            .unwrap()
            .increment(Operation::ExportPubKey);
        let bytes = std::fs::read(state.path(COUNTERS_FILE)).unwrap();
        let header =
            std::str::from_utf8(&bytes[..bytes.iter().position(|b| *b == b'\n').unwrap()]).unwrap();
        let names: Vec<&str> = header.split(' ').skip(2).collect();
        let count = |name: &str| {
            let i = names.iter().position(|n| *n == name).unwrap();
            let at = HEADER_LEN + 8 * i;
            u64::from_ne_bytes(bytes[at..at + 8].try_into().unwrap())
        };
        assert_eq!(
            (count("sign"), count("export_pubkey"), count("open")),
            (2, 1, 0)
        );
        assert_eq!(names.len(), Operation::ALL.len());
    }
}
