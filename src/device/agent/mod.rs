//! `zkiot device agent`: the process that looks after the device, under systemd
//! (`zkiot-agent.service`), or one pass at a time with `--once`.
//!
//! - **Renewal** ([`schedule`], then [`source::Source::renew`]): each pass reads the certificate
//!   file (no device operation). Before its renewal time (a share of its lifetime, default 2/3,
//!   plus a jitter) nothing else happens. From then on the agent gets credentials and picks up
//!   the certificate `zkiot fleet renew` registered for it ([`crate::device::renewal`]): proven
//!   with a credentials call before the switch, installed atomically, the old one kept until
//!   then. After a switch it runs the `on_switch` hook ([`crate::device::hook`]). While the
//!   operator has issued nothing yet it looks again every `renew_poll` (6 h); after a failure it
//!   retries after 1 minute, doubling, at most `renew_poll`.
//! - **Local credentials** ([`server`]): the container-credentials endpoint on 127.0.0.1 for the
//!   device's apps, from the credentials the agent holds in memory ([`source`]).
//!
//! - **Reports** ([`reporter`]): a perimeter breach the Zymkey latched, as soon as the watcher
//!   ([`watch`], a child process) sees it and again until AWS IoT has it, and a heartbeat at
//!   start, with each fetch of credentials, after each renewal pass and at least every
//!   `heartbeat` (6 h), on the device's Thing ([`crate::device::report`]).
//!
//! Between passes it sleeps, waking at least hourly to see whether the certificate file changed
//! (`device credentials` may have switched it). Besides the heartbeat and the watcher's wait, an
//! idle agent makes no device operation and no AWS call.

pub mod reporter;
pub mod schedule;
mod server;
pub mod source;
mod watch;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::cli::{parse_heartbeat, AgentArgs, Heartbeat};
use super::config::{self, DeviceConfig, SYSTEM_DEVICE_DIR};
use super::hook;
use super::settings::DeviceSettings;
use crate::x509::fingerprint;
use crate::{fsutil, GlobalOpts};
use schedule::{backoff, jitter_of, Validity, DEFAULT_POLL, DEFAULT_SHARE};
use source::Source;

/// Where the local endpoint listens unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9911";
/// The group that may read the token file, when it exists and no other is named.
pub const DEFAULT_TOKEN_GROUP: &str = "zkiot-credentials";
/// The token file of the system's agent (in systemd's RuntimeDirectory).
pub const SYSTEM_TOKEN_FILE: &str = "/run/zkiot/credentials-token";
/// The longest sleep between two looks at the certificate file.
const WAKE_AT_LEAST_EVERY: Duration = Duration::from_secs(3600);
/// How often the device reports that it is alive, unless told otherwise.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(6 * 3600);

/// The agent's settings beyond the credentials call's: flag, else `device.toml`, else default.
struct Options {
    share: f64,
    poll: Duration,
    on_switch: Option<String>,
    listen: Option<SocketAddr>,
    token_file: PathBuf,
    /// The token group: its name and id.
    token_group: Option<(String, u32)>,
    heartbeat: Heartbeat,
}

impl Options {
    fn resolve(args: &AgentArgs, global: &GlobalOpts) -> Result<Self> {
        let dir = config::device_dir(args.connection.dir.as_deref(), global);
        let config = DeviceConfig::load(&dir)?;
        let share = match (args.renew_at, &config.renew_at) {
            (Some(share), _) => share,
            (None, Some(text)) => schedule::parse_share(text)
                .map_err(anyhow::Error::msg)
                .context("renew_at in device.toml")?,
            (None, None) => DEFAULT_SHARE,
        };
        let poll = match (args.poll, &config.renew_poll) {
            (Some(poll), _) => poll,
            (None, Some(text)) => crate::duration::parse_duration(text)
                .map_err(anyhow::Error::msg)
                .context("renew_poll in device.toml")?,
            (None, None) => DEFAULT_POLL,
        };
        let listen_text = args
            .listen
            .clone()
            .or(config.listen.clone())
            .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
        let listen = if listen_text == "off" {
            None
        } else {
            let addr: SocketAddr = listen_text.parse().with_context(|| {
                format!("the local endpoint's address {listen_text:?} is not IP:PORT (or off)")
            })?;
            if !addr.ip().is_loopback() {
                bail!(
                    "the local credentials endpoint listens on a loopback address only \
                     (127.0.0.1 or ::1), not {addr}: nothing off this host may ask for credentials"
                );
            }
            Some(addr)
        };
        let token_file = args
            .token_file
            .clone()
            .or(config.token_file.clone())
            .unwrap_or_else(|| {
                if dir == Path::new(SYSTEM_DEVICE_DIR) {
                    PathBuf::from(SYSTEM_TOKEN_FILE)
                } else {
                    dir.join("credentials-token")
                }
            });
        let token_group = match args.token_group.clone().or(config.token_group.clone()) {
            Some(name) => Some((
                name.clone(),
                group_id(&name)?.with_context(|| format!("no group {name:?} on this system"))?,
            )),
            None => {
                group_id(DEFAULT_TOKEN_GROUP)?.map(|gid| (DEFAULT_TOKEN_GROUP.to_string(), gid))
            }
        };
        let heartbeat = match (args.heartbeat, &config.heartbeat) {
            (Some(heartbeat), _) => heartbeat,
            (None, Some(text)) => parse_heartbeat(text)
                .map_err(anyhow::Error::msg)
                .context("heartbeat in device.toml")?,
            (None, None) => Heartbeat::Every(DEFAULT_HEARTBEAT),
        };
        Ok(Self {
            heartbeat,
            share,
            poll,
            on_switch: args.on_switch.clone().or(config.on_switch.clone()),
            listen,
            token_file,
            token_group,
        })
    }
}

/// The id of group `name` (or a number), from /etc/group.
fn group_id(name: &str) -> Result<Option<u32>> {
    if let Ok(gid) = name.parse::<u32>() {
        return Ok(Some(gid));
    }
    let groups = match std::fs::read_to_string("/etc/group") {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).context("cannot read /etc/group"),
    };
    Ok(groups.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next() == Some(name))
            .then(|| fields.nth(1).and_then(|gid| gid.parse().ok()))
            .flatten()
    }))
}

/// What one pass did.
enum Pass {
    /// Not due before `at` (Unix seconds).
    NotDue { at: i64, expires: i64 },
    /// Switched to a new certificate.
    Switched { id: String, expires: i64 },
    /// Due, and no renewed certificate yet.
    Waiting { expires: i64 },
}

fn rfc3339(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| unix.to_string())
}

fn now_unix() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

impl Pass {
    fn describe(&self) -> String {
        match self {
            Pass::NotDue { at, expires } => format!(
                "certificate valid until {}; renewal from {}",
                rfc3339(*expires),
                rfc3339(*at)
            ),
            Pass::Switched { id, expires } => {
                format!(
                    "switched to certificate {id} (valid until {})",
                    rfc3339(*expires)
                )
            }
            Pass::Waiting { expires } => format!(
                "renewal due, no renewed certificate yet (the operator's `zkiot fleet renew` \
                 issues it); the current one is valid until {}",
                rfc3339(*expires)
            ),
        }
    }
}

/// One renewal pass: nothing but a file read unless the certificate is due.
/// When the certificate of `settings` is due for renewal (Unix seconds), and, before then,
/// the pass that does nothing: a file read, no device operation. A fresh-key renewal cut short
/// carries on whether or not renewal is due.
fn schedule(settings: &DeviceSettings, options: &Options) -> Result<(i64, Option<Pass>)> {
    let validity = Validity::of(&settings.cert)?;
    let at = validity.renewal_time(options.share, jitter_of(&settings.cert)?);
    let not_due =
        (now_unix() < at && !super::rekey::in_progress(&settings.dir)).then_some(Pass::NotDue {
            at,
            expires: validity.not_after,
        });
    Ok((at, not_due))
}

fn pass(source: &Source, options: &Options) -> Result<Pass> {
    let settings: DeviceSettings = source.settings()?;
    if let (_, Some(not_due)) = schedule(&settings, options)? {
        return Ok(not_due);
    }
    let renewed = source.renew(&settings);
    if options.heartbeat != Heartbeat::Off {
        if let Some(credentials) = source.held_fresh() {
            if let Err(e) =
                super::report::send(&settings, &credentials, None, settings.request.timeout)
            {
                eprintln!("zkiot agent: warning: no heartbeat: {e:#}");
            }
        }
    }
    match renewed? {
        Some(switched) => {
            hook::after_switch(options.on_switch.as_deref(), &settings, &switched);
            Ok(Pass::Switched {
                id: fingerprint(&switched.cert)?,
                expires: Validity::of(&switched.cert)?.not_after,
            })
        }
        None => Ok(Pass::Waiting {
            expires: Validity::of(&settings.cert)?.not_after,
        }),
    }
}

/// Runs the agent.
pub(crate) fn run(args: AgentArgs, global: &GlobalOpts) -> Result<()> {
    if args.fetch_credentials {
        return source::fetch(&args.connection, global);
    }
    if args.watch_tamper {
        return watch::watch();
    }
    let options = Options::resolve(&args, global)?;
    let source = Source::new(args.connection.clone(), global.clone());
    if args.once {
        let done = pass(&source, &options).context("renewal")?;
        println!("zkiot agent: {}", done.describe());
        return Ok(());
    }
    // Refuse a device that is not set up before serving anything.
    let settings = source.settings()?;
    if settings.iot.is_some() {
        let reports = reporter::start(source.clone(), options.heartbeat);
        let fetched = reports.clone();
        source.on_fetch(move || {
            let _ = fetched.send(reporter::Trigger::Fetched);
        });
        watch::start(reports);
    } else {
        eprintln!(
            "zkiot agent: no reports to the device's Thing (no perimeter breach, no heartbeat): \
             no region is known (set region or iot_api in device.toml)"
        );
    }
    if let Some(listen) = options.listen {
        let token = server::new_token()?;
        let gid = options.token_group.as_ref().map(|(_, gid)| *gid);
        let mode = if gid.is_some() {
            0o640
        } else {
            fsutil::SECRET_MODE
        };
        fsutil::write_atomic_owned(&options.token_file, token.as_bytes(), mode, gid)
            .context("the local endpoint's token file")?;
        let bound = server::start(listen, token, source.clone())?;
        eprintln!(
            "zkiot agent: local credentials at http://{bound}{} for AWS_CONTAINER_CREDENTIALS_FULL_URI; \
             token in {} (AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE), readable by {}",
            server::PATH,
            options.token_file.display(),
            match &options.token_group {
                Some((name, _)) => format!("group {name}"),
                None => "its owner only".to_string(),
            }
        );
    }
    renew_forever(&source, &options)
}

/// One renewal pass of the long-running agent: the schedule here (a file read), the rest (the
/// token, the AWS calls, the hook) in a `zkiot device agent … --once` child, so that this
/// process never loads the PKCS#11 module.
fn pass_in_child(source: &Source, options: &Options) -> Result<Pass> {
    let settings = source.settings()?;
    let at = match schedule(&settings, options)? {
        (_, Some(not_due)) => return Ok(not_due),
        (at, None) => at,
    };
    let before = fingerprint(&settings.cert)?;
    let status = source::child("--once")
        .stdout(std::process::Stdio::null())
        .status()
        .context("cannot start a renewal pass")?;
    if !status.success() {
        bail!("the renewal pass failed ({status}; its log says why)");
    }
    let after = source.settings()?;
    let id = fingerprint(&after.cert)?;
    let expires = Validity::of(&after.cert)?.not_after;
    Ok(if id != before {
        Pass::Switched { id, expires }
    } else if super::rekey::in_progress(&after.dir) || now_unix() >= at {
        Pass::Waiting { expires }
    } else {
        Pass::NotDue { at, expires }
    })
}

/// The certificate file's modification time, to notice a switch made by another process.
fn certificate_stamp(source: &Source) -> Option<SystemTime> {
    let settings = source.settings().ok()?;
    std::fs::metadata(&settings.cert_path)
        .and_then(|m| m.modified())
        .ok()
}

fn renew_forever(source: &Source, options: &Options) -> Result<()> {
    let mut failures = 0u32;
    let mut next = now_unix();
    let mut stamp = certificate_stamp(source);
    loop {
        let now = now_unix();
        let changed = certificate_stamp(source);
        if now >= next || changed != stamp {
            stamp = changed;
            match pass_in_child(source, options) {
                Ok(done) => {
                    failures = 0;
                    eprintln!("zkiot agent: {}", done.describe());
                    next = match done {
                        Pass::NotDue { at, .. } => at,
                        Pass::Switched { .. } => now_unix(),
                        Pass::Waiting { .. } => now_unix() + secs(options.poll),
                    };
                    if matches!(done, Pass::Switched { .. }) {
                        stamp = certificate_stamp(source);
                    }
                }
                Err(e) => {
                    failures += 1;
                    let wait = backoff(failures, options.poll);
                    eprintln!(
                        "zkiot agent: renewal failed ({failures} in a row), next try in {} s: {e:#}",
                        wait.as_secs()
                    );
                    next = now_unix() + secs(wait);
                }
            }
        }
        let wait = (next - now_unix()).clamp(1, secs(WAKE_AT_LEAST_EVERY));
        std::thread::sleep(Duration::from_secs(wait as u64));
    }
}

fn secs(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_by_name_or_number() {
        assert_eq!(group_id("root").unwrap(), Some(0));
        assert_eq!(group_id("4242").unwrap(), Some(4242));
        assert_eq!(group_id("no-such-group-zkiot").unwrap(), None);
    }
}
