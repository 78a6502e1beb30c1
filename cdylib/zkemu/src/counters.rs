//! Operation counters, shared by every process using the state directory.
//!
//! `counters.json` holds one JSON object mapping operation names (see
//! [`Operation::name`]: `open`, `close`, `random`, `sign`, `verify`,
//! `export_pubkey`, `slot_list`, `gen_key`, `remove_key`, `store_foreign`,
//! `info`, `time`) to the number of calls so far, for example
//! `{"open": 2, "sign": 5}`. An operation never called is absent (read it as 0).
//! Every call that reaches the device counts, including calls that fail; calls
//! refused at the C boundary (NULL argument, unknown context) do not. The file
//! is rewritten under the state lock; delete it to start counting from zero.

use std::collections::BTreeMap;
use std::fs;
use std::io::ErrorKind;

use crate::errno::{Errno, Result};
use crate::operation::Operation;
use crate::state::{self, Durability, StateDir};

pub const COUNTERS_FILE: &str = "counters.json";

pub type Counters = BTreeMap<String, u64>;

/// The counters as last written; empty if nothing was counted yet.
pub fn read(state: &StateDir) -> Result<Counters> {
    match fs::read(state.path(COUNTERS_FILE)) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|_| Errno::IO),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(Counters::new()),
        Err(e) => Err(e.into()),
    }
}

/// Adds one call of `operation`.
pub fn increment(state: &StateDir, operation: Operation) -> Result<()> {
    let _lock = state.lock()?;
    let mut counters = read(state)?;
    *counters.entry(operation.name().to_string()).or_insert(0) += 1;
    let json = serde_json::to_vec(&counters).map_err(|_| Errno::IO)?;
    state::write_atomic(&state.path(COUNTERS_FILE), &json, Durability::Unsynced)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path().to_path_buf());
        assert!(read(&state).unwrap().is_empty());
        increment(&state, Operation::Sign).unwrap();
        increment(&state, Operation::Sign).unwrap();
        increment(&state, Operation::ExportPubKey).unwrap();
        let text = fs::read_to_string(state.path(COUNTERS_FILE)).unwrap();
        assert_eq!(text, r#"{"export_pubkey":1,"sign":2}"#);
    }
}
