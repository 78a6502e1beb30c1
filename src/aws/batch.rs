//! The one way to act on many Things at once, shared by `fleet provision`, `fleet renew` and
//! `aws silence`/`unsilence`/`revoke` of a group or a file:
//!
//! - Things start in the order given, at most `concurrency` at a time;
//! - a progress bar on a terminal, with the lines a Thing prints shown above it as it finishes;
//! - once a Thing fails because AWS cannot be reached, no further Thing starts: those are
//!   "not attempted", the ones already running finish (or fail) on their own;
//! - at the end, the failures on stderr, one line each, in Thing name order, and a [`Tally`].

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::task::JoinSet;

use super::Unreachable;

/// What a batch works on: a Thing, by name.
pub(crate) trait Named {
    fn name(&self) -> &str;
}

impl Named for String {
    fn name(&self) -> &str {
        self
    }
}

/// Where a Thing's work prints while the batch runs: above the progress bar.
#[derive(Clone)]
pub(crate) struct Progress(ProgressBar);

impl Progress {
    /// A bar on a terminal (stderr), nothing otherwise.
    fn new(len: usize) -> Self {
        if !std::io::stderr().is_terminal() {
            return Self(ProgressBar::hidden());
        }
        let bar = ProgressBar::new(len as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        Self(bar)
    }

    /// Prints one line on stdout (the bar's own `println` prints nothing when it is hidden).
    pub(crate) fn println(&self, line: &str) {
        self.0.suspend(|| println!("{line}"));
    }
}

/// How a batch ended.
pub(crate) struct Tally<T> {
    /// The Things that succeeded, with what each did, by name.
    pub done: BTreeMap<String, T>,
    /// The Things that failed, with the error, by name.
    pub failed: BTreeMap<String, String>,
    /// Things not started because AWS had become unreachable.
    pub not_attempted: usize,
    /// Whether a Thing failed because AWS could not be reached (no further call is worth it).
    pub unreachable: bool,
    pub elapsed: Duration,
}

impl<T> Tally<T> {
    pub(crate) fn total(&self) -> usize {
        self.done.len() + self.failed.len() + self.not_attempted
    }

    /// `, N not attempted (AWS unreachable)` for the summary line, or nothing.
    pub(crate) fn not_attempted_note(&self) -> String {
        if self.not_attempted > 0 {
            format!(", {} not attempted (AWS unreachable)", self.not_attempted)
        } else {
            String::new()
        }
    }

    /// Succeeds when every Thing succeeded; else says how many did not (`not_done`, e.g.
    /// "things not changed"), and that the same command finishes them.
    pub(crate) fn finish(&self, not_done: &str) -> Result<()> {
        let left = self.failed.len() + self.not_attempted;
        if left > 0 {
            bail!(
                "{left} of {} {not_done}; fix the cause and run the same command again to finish",
                self.total()
            );
        }
        Ok(())
    }
}

/// Runs `work` for each of `things` (each named once), `concurrency` at a time, as the module
/// comment says.
pub(crate) async fn for_each_thing<J, T, F, Fut>(
    things: Vec<J>,
    concurrency: u16,
    mut work: F,
) -> Tally<T>
where
    J: Named,
    F: FnMut(J, Progress) -> Fut,
    Fut: Future<Output = Result<T>> + Send + 'static,
    T: Send + 'static,
{
    let started = Instant::now();
    let progress = Progress::new(things.len());
    let limit = usize::from(concurrency.max(1));
    let mut waiting = things.into_iter();
    let mut running = JoinSet::new();
    let mut names = HashMap::new();
    let mut tally = Tally {
        done: BTreeMap::new(),
        failed: BTreeMap::new(),
        not_attempted: 0,
        unreachable: false,
        elapsed: Duration::ZERO,
    };
    let mut unreachable = false;
    loop {
        while !unreachable && running.len() < limit {
            let Some(job) = waiting.next() else { break };
            let name = job.name().to_string();
            let task = running.spawn(work(job, progress.clone()));
            names.insert(task.id(), name);
        }
        let Some(joined) = running.join_next_with_id().await else {
            break;
        };
        let (id, result) = match joined {
            Ok((id, result)) => (id, result),
            // A panic: a bug, reported as this Thing's failure.
            Err(e) => (e.id(), Err(anyhow!("{e}"))),
        };
        let name = names.remove(&id).unwrap_or_default();
        progress.0.inc(1);
        match result {
            Ok(outcome) => {
                tally.done.insert(name, outcome);
            }
            Err(e) => {
                unreachable |= e.downcast_ref::<Unreachable>().is_some();
                tally.failed.insert(name, format!("{e:#}"));
            }
        }
    }
    tally.not_attempted = waiting.count();
    tally.unreachable = unreachable;
    tally.elapsed = started.elapsed();
    progress.0.finish_and_clear();
    for (thing, error) in &tally.failed {
        eprintln!("{thing}: {error}");
    }
    tally
}
