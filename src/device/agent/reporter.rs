//! The agent's reports to the device's Thing ([`crate::device::report`]): a perimeter breach at
//! once, and again until AWS IoT has it; a heartbeat whenever credentials were fetched (they are
//! fresh then: no device operation) and at least every `heartbeat`.
//!
//! One thread, fed by a channel: the perimeter watcher ([`super::watch`]) sends what the Zymkey
//! latched, and [`super::source::Source`] says when it fetched credentials. The report itself
//! takes the credentials the agent holds (fetched in a child process when they are not fresh),
//! so it costs the `UpdateThing` call alone most of the time.

use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::device::cli::Heartbeat;
use crate::device::report;

use super::source::Source;

/// What the reporter is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// The breaches the Zymkey latched ([`report::TAMPER_ATTRIBUTE`]'s value), `None`: none.
    Latched(Option<String>),
    /// Credentials were just fetched.
    Fetched,
}

/// The first pause after a failed report, doubling.
const FIRST_RETRY: Duration = Duration::from_secs(5);
/// The longest pause between two attempts while a report is owed.
const RETRY_AT_MOST: Duration = Duration::from_secs(300);
/// A fetch right after a report adds no heartbeat.
const FETCH_AFTER_REPORT: Duration = Duration::from_secs(60);
/// How long to wait for the next trigger when nothing is due.
const IDLE: Duration = Duration::from_secs(3600);

/// Starts the reporter thread; returns where to send it triggers.
pub fn start(source: Arc<Source>, heartbeat: Heartbeat) -> Sender<Trigger> {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || Reporter::new(source, heartbeat).run(&receiver));
    sender
}

struct Reporter {
    source: Arc<Source>,
    heartbeat: Option<Duration>,
    /// The breaches last latched, and those AWS IoT has.
    latched: Option<String>,
    reported: Option<String>,
    /// When the last report went through, and when the next one is owed (`None`: none).
    last_report: Option<Instant>,
    owed: Option<Instant>,
    failures: u32,
}

impl Reporter {
    fn new(source: Arc<Source>, heartbeat: Heartbeat) -> Self {
        Self {
            source,
            heartbeat: match heartbeat {
                Heartbeat::Every(every) => Some(every),
                Heartbeat::Off => None,
            },
            latched: None,
            reported: None,
            last_report: None,
            // A heartbeat at start: the operator learns the device is back.
            owed: matches!(heartbeat, Heartbeat::Every(_)).then(Instant::now),
            failures: 0,
        }
    }

    fn run(mut self, receiver: &Receiver<Trigger>) {
        loop {
            let wait = self
                .owed
                .map_or(IDLE, |at| at.saturating_duration_since(Instant::now()));
            match receiver.recv_timeout(wait) {
                Ok(Trigger::Latched(latched)) => {
                    if latched.is_some() && latched != self.reported {
                        eprintln!(
                            "zkiot agent: perimeter breach latched ({}); reporting it",
                            latched.as_deref().unwrap_or_default()
                        );
                        self.owed = Some(Instant::now());
                    }
                    self.latched = latched;
                }
                Ok(Trigger::Fetched) => {
                    let recent = self
                        .last_report
                        .is_some_and(|at| at.elapsed() < FETCH_AFTER_REPORT);
                    if self.heartbeat.is_some() && !recent {
                        self.owed = Some(Instant::now());
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            if self.owed.is_some_and(|at| at <= Instant::now()) {
                self.report();
            }
        }
    }

    /// One report: the heartbeat, with the breaches when there are any.
    fn report(&mut self) {
        let tamper = self.latched.clone();
        let sent = self.source.settings().and_then(|settings| {
            let credentials = self.source.credentials()?;
            report::send(
                &settings,
                &credentials,
                tamper.as_deref(),
                settings.request.timeout,
            )
        });
        match sent {
            Ok(()) => {
                if tamper.is_some() && tamper != self.reported {
                    eprintln!(
                        "zkiot agent: perimeter breach reported on the device's Thing ({})",
                        tamper.as_deref().unwrap_or_default()
                    );
                }
                self.reported = tamper;
                self.failures = 0;
                self.last_report = Some(Instant::now());
                self.owed = self.heartbeat.map(|every| Instant::now() + every);
            }
            Err(e) => {
                self.failures += 1;
                let wait = FIRST_RETRY
                    .saturating_mul(1u32 << self.failures.saturating_sub(1).min(16))
                    .min(RETRY_AT_MOST);
                eprintln!(
                    "zkiot agent: report to the device's Thing failed ({} in a row), next try in {} s: {e:#}",
                    self.failures,
                    wait.as_secs()
                );
                self.owed = Some(Instant::now() + wait);
            }
        }
    }
}
