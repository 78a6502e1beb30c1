//! The record of a fleet run: JSON lines, one per step done, each synced to disk before the next
//! step, so a run cut short can be finished by running it again.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::sync::Mutex;

use anyhow::{anyhow, bail, Context, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::fsutil;

/// The record file: read once at start, appended to (and synced) after every step.
pub(crate) struct Record {
    file: Mutex<File>,
}

impl Record {
    /// Opens (creating) the record and returns it with the entries already there. A last line
    /// cut short by a crash is ignored.
    pub(crate) fn open<E: DeserializeOwned>(path: &Path) -> Result<(Self, Vec<E>)> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fsutil::ensure_dir(dir, 0o755)?;
        }
        let mut entries = Vec::new();
        if path.exists() {
            let reader = BufReader::new(
                File::open(path).with_context(|| format!("cannot read {}", path.display()))?,
            );
            let lines: Vec<String> = reader
                .lines()
                .collect::<std::io::Result<_>>()
                .with_context(|| format!("cannot read {}", path.display()))?;
            let count = lines.len();
            for (i, line) in lines.iter().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                match serde_json::from_str::<E>(line) {
                    Ok(entry) => entries.push(entry),
                    Err(_) if i + 1 == count => {} // torn final write
                    Err(e) => bail!("{} line {}: {e}", path.display(), i + 1),
                }
            }
        }
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        // A torn last line must not glue onto the next entry.
        if file.metadata()?.len() > 0 {
            let text = std::fs::read(path)?;
            if text.last() != Some(&b'\n') {
                file.write_all(b"\n")?;
            }
        }
        Ok((
            Self {
                file: Mutex::new(file),
            },
            entries,
        ))
    }

    pub(crate) fn append<E: Serialize>(&self, entry: &E) -> Result<()> {
        let mut line = serde_json::to_vec(entry)?;
        line.push(b'\n');
        let mut file = self
            .file
            .lock()
            .map_err(|_| anyhow!("the record writer panicked"))?;
        file.write_all(&line)?;
        file.sync_data()?;
        Ok(())
    }
}

/// Seconds since the Unix epoch, for the record's `time`.
pub(crate) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
