//! The Zymkey's perimeter, watched for the agent in a child process of its own
//! (`zkiot device agent … --watch-tamper`), so that the long-running process never loads
//! Zymbit's library and a library in a bad state dies with its process.
//!
//! The child reads the latched breaches at start (a breach while the agent was not running,
//! host off included, is latched), then waits for the next one with `zkWaitForPerimeterEvent`,
//! which wakes on channels set to notify the host; it reads the latched breaches again after
//! each such wake-up, and every [`RELOOK`] for channels that do not notify. It prints them as
//! one JSON line each time they change. The parent ([`start`]) turns each line into a report
//! ([`super::reporter`]), and starts the child again if it ends.

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use zymkey::{PerimeterEvents, Zymkey};

use super::reporter::Trigger;
use super::schedule::backoff;
use super::source;
use crate::device::report::tamper_value;

/// How long one wait lasts: the child looks whether its parent is still there in between.
const WAIT: Duration = Duration::from_secs(30);
/// How often the latched breaches are read without a notification (channels whose action is
/// not notify latch too).
const RELOOK: Duration = Duration::from_secs(300);
/// The longest pause before the watcher is started again after it ended.
const RESTART_AT_MOST: Duration = Duration::from_secs(600);

/// One line of the child's output.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Line {
    /// The latched breaches: for each channel, the first breach's time (Unix seconds) or null.
    Latched(Vec<Option<u32>>),
    /// The library has no perimeter functions: nothing to watch.
    Unsupported(String),
}

fn print(line: &Line) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, line)?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

/// `--watch-tamper`: runs until the parent goes away or the device fails.
pub fn watch() -> Result<()> {
    let parent = std::os::unix::process::parent_id();
    // Ends with the agent, however it ends (a SIGKILL included), not at its next look.
    // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number and touches no memory.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) };
    if std::os::unix::process::parent_id() != parent {
        return Ok(());
    }
    let library = crate::device::selftest::configured_library();
    let zymkey = Zymkey::load(&library)?;
    let mut last: Option<PerimeterEvents> = None;
    let mut looked = Instant::now();
    let mut look = true;
    loop {
        if look {
            let events = match zymkey.perimeter_events() {
                Ok(events) => events,
                Err(e @ zymkey::Error::Unsupported { .. }) => {
                    return print(&Line::Unsupported(format!("{e} ({})", library.display())));
                }
                Err(e) => return Err(e).context("reading the latched perimeter breaches"),
            };
            looked = Instant::now();
            if last.as_ref() != Some(&events) {
                print(&Line::Latched(events.first_breach.clone()))?;
                last = Some(events);
            }
        }
        let notified = zymkey
            .wait_for_perimeter_event(WAIT)
            .context("waiting for a perimeter breach")?;
        if std::os::unix::process::parent_id() != parent {
            return Ok(());
        }
        look = notified || looked.elapsed() >= RELOOK;
    }
}

/// Starts the watcher child, and again whenever it ends, in a thread of the agent; each
/// reading goes to `reports`.
pub fn start(reports: Sender<Trigger>) {
    std::thread::spawn(move || {
        let mut failures = 0u32;
        loop {
            match run_child(&reports) {
                Ok(Ended::Unsupported(why)) => {
                    eprintln!("zkiot agent: perimeter breaches not watched: {why}");
                    return;
                }
                Ok(Ended::NoReceiver) => return,
                Ok(Ended::Exited(status)) => {
                    failures += 1;
                    let wait = backoff(failures, RESTART_AT_MOST);
                    eprintln!(
                        "zkiot agent: the perimeter watcher ended ({status}); started again in {} s",
                        wait.as_secs()
                    );
                    std::thread::sleep(wait);
                }
                Err(e) => {
                    failures += 1;
                    let wait = backoff(failures, RESTART_AT_MOST);
                    eprintln!(
                        "zkiot agent: cannot watch the perimeter ({e:#}); trying again in {} s",
                        wait.as_secs()
                    );
                    std::thread::sleep(wait);
                }
            }
        }
    });
}

enum Ended {
    Unsupported(String),
    Exited(std::process::ExitStatus),
    NoReceiver,
}

fn run_child(reports: &Sender<Trigger>) -> Result<Ended> {
    let mut child = source::child("--watch-tamper")
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start the perimeter watcher")?;
    let stdout = child.stdout.take().context("no pipe from the watcher")?;
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading the perimeter watcher")?;
        let trigger = match serde_json::from_str::<Line>(&line) {
            Ok(Line::Latched(first_breach)) => {
                Trigger::Latched(tamper_value(&PerimeterEvents { first_breach }))
            }
            Ok(Line::Unsupported(why)) => {
                let _ = child.wait();
                return Ok(Ended::Unsupported(why));
            }
            Err(e) => {
                eprintln!("zkiot agent: the perimeter watcher said {line:?}: {e}");
                continue;
            }
        };
        if reports.send(trigger).is_err() {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(Ended::NoReceiver);
        }
    }
    Ok(Ended::Exited(child.wait()?))
}
