//! Operation counters, shared by every process using the state directory.
//!
//! `counters` is a [`crate::shared`] file: its header line is
//! `zkemu-counters 1` followed by the operation names (see
//! [`Operation::name`]), and number `i` counts the calls of the `i`-th name so
//! far, in all processes. Every call that reaches the device counts, including
//! calls that fail; calls refused at the C boundary (NULL argument, unknown
//! context) do not. Counting is one atomic add: no lock, no file write.
//!
//! Names are only ever added at the end, so the format stays version 1: a
//! file made by an older emulator, with fewer names, is extended in place
//! (its counts kept, the new ones from 0, the header rewritten), while a
//! process of the older emulator keeps counting into the counts it knows.
//! Readers go by the header's names, never by a fixed count.

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

    #[test]
    fn a_file_with_fewer_names_is_extended_with_its_counts_kept() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path().to_path_buf());
        // The file as the emulator made it before `accelerometer` was counted.
        let old_names = "open close random sign verify export_pubkey slot_list gen_key \
                         remove_key store_foreign info time";
        let mut old = format!("zkemu-counters 1 {old_names}\n").into_bytes();
        old.resize(HEADER_LEN, 0);
        for count in 1..=12u64 {
            old.extend_from_slice(&count.to_ne_bytes());
        }
        std::fs::write(state.path(COUNTERS_FILE), &old).unwrap();

        let counters = Counters::open(&state).unwrap();
        counters.increment(Operation::Accelerometer);
        counters.increment(Operation::Sign);
        let bytes = std::fs::read(state.path(COUNTERS_FILE)).unwrap();
        assert_eq!(bytes.len(), HEADER_LEN + 8 * 15);
        let header = format!("zkemu-counters 1 {old_names} accelerometer perimeter binding\n");
        assert!(bytes.starts_with(header.as_bytes()));
        assert!(bytes[header.len()..HEADER_LEN].iter().all(|b| *b == 0));
        let count = |i: usize| {
            let at = HEADER_LEN + 8 * i;
            u64::from_ne_bytes(bytes[at..at + 8].try_into().unwrap())
        };
        let counts: Vec<u64> = (0..15).map(count).collect();
        assert_eq!(counts, [1, 2, 3, 5, 5, 6, 7, 8, 9, 10, 11, 12, 1, 0, 0]);
    }
}
