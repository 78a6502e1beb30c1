//! Where the agent's credentials come from, and its renewal attempts: one lock around the
//! credentials it holds in memory, so that apps' requests never fetch twice at once.
//!
//! Credentials are fetched only when asked for and not held fresh: an agent that nobody asks
//! makes no device operation. Held credentials are handed out until [`refresh_margin`] before
//! they expire; the next request then fetches new ones ([`Source::credentials`]): in a child
//! process, `zkiot device agent … --fetch-credentials` ([`fetch`]: opening the token, one device
//! signature), as the long-running agent's renewal passes run in `zkiot device agent … --once`
//! children ([`Source::renew`]). So the long-running process never loads the PKCS#11 module:
//! its memory stays that of a small server, and every use of the token starts from a fresh
//! module (a module or device library in a bad state dies with its process).

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use time::OffsetDateTime;

use crate::device::cli::ConnectionArgs;
use crate::device::credentials::{open_device_token, REFRESH_MARGIN};
use crate::device::net::provider::{self, Credentials};
use crate::device::rekey::{self, Rekey};
use crate::device::renewal::{Renewal, Switched};
use crate::device::settings::DeviceSettings;
use crate::x509::read_certificate;

use crate::GlobalOpts;

/// How long before they expire held credentials are replaced: a third of their lifetime, at
/// most 20 minutes (the AWS SDKs refresh container credentials 15 minutes before they expire,
/// so they get credentials that last longer than that whenever the role allows it).
pub fn refresh_margin(lifetime: Duration) -> Duration {
    (lifetime / 3).min(Duration::from_secs(20 * 60))
}

/// Credentials held in memory, and when to replace them.
struct Held {
    credentials: Credentials,
    refresh_at: OffsetDateTime,
}

impl Held {
    fn new(credentials: Credentials) -> Result<Self> {
        let expires = credentials.expires_at()?;
        let now = OffsetDateTime::now_utc();
        let lifetime = Duration::try_from(expires - now).unwrap_or(Duration::ZERO);
        Ok(Self {
            refresh_at: expires - refresh_margin(lifetime),
            credentials,
        })
    }

    fn fresh(&self) -> bool {
        OffsetDateTime::now_utc() < self.refresh_at
    }
}

type OnFetch = Box<dyn Fn() + Send + Sync>;

/// The agent's credentials: the settings to resolve, and what it holds.
pub struct Source {
    connection: ConnectionArgs,
    global: GlobalOpts,
    held: Mutex<Option<Held>>,
    /// Called after each fetch: fresh credentials make a heartbeat free.
    on_fetch: Mutex<Option<OnFetch>>,
}

impl Source {
    pub fn new(connection: ConnectionArgs, global: GlobalOpts) -> Arc<Self> {
        Arc::new(Self {
            connection,
            global,
            held: Mutex::new(None),
            on_fetch: Mutex::new(None),
        })
    }

    /// Calls `then` after each fetch from now on.
    pub fn on_fetch(&self, then: impl Fn() + Send + Sync + 'static) {
        *self.on_fetch.lock().unwrap_or_else(|p| p.into_inner()) = Some(Box::new(then));
    }

    /// The credentials held, while fresh.
    pub fn held_fresh(&self) -> Option<Credentials> {
        self.lock()
            .as_ref()
            .filter(|h| h.fresh())
            .map(|h| h.credentials.clone())
    }

    /// The settings as `device.toml` and the certificate file say now.
    pub fn settings(&self) -> Result<DeviceSettings> {
        DeviceSettings::resolve(&self.connection, &self.global)
    }

    fn lock(&self) -> MutexGuard<'_, Option<Held>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Credentials for an app: those held while fresh (no device operation), else new ones
    /// from a child process ([`fetch`]).
    pub fn credentials(&self) -> Result<Credentials> {
        let mut held = self.lock();
        if let Some(h) = held.as_ref().filter(|h| h.fresh()) {
            return Ok(h.credentials.clone());
        }
        let out = child("--fetch-credentials")
            .stderr(Stdio::inherit())
            .output()
            .context("cannot start a process to fetch credentials")?;
        if !out.status.success() {
            bail!("fetching credentials failed ({})", out.status);
        }
        let fetched: Credentials = serde_json::from_slice(&out.stdout)
            .context("the process that fetched credentials printed no credentials")?;
        fetched.expires_at()?;
        *held = Some(Held::new(fetched.clone())?);
        drop(held);
        if let Some(then) = &*self.on_fetch.lock().unwrap_or_else(|p| p.into_inner()) {
            then();
        }
        Ok(fetched)
    }

    /// One renewal attempt with `settings` (in `--once`, the process of one pass): credentials
    /// (held, else fetched), then the renewed
    /// certificate picked up and switched to: for a fresh key where the Zymkey makes keys
    /// ([`Rekey::run`]), else for the same key ([`Renewal::pick_up`]). `None` when the
    /// operator has issued none yet.
    pub fn renew(&self, settings: &DeviceSettings) -> Result<Option<Switched>> {
        let target = settings
            .renewal
            .as_ref()
            .context("renewal is off (renew_within_days = 0 in device.toml, or no region known)")?;
        let ca = read_certificate(&target.fleet_ca).context("the installed fleet CA")?;
        let mut held = self.lock();
        let (token, key) = open_device_token(settings, &self.global)?;
        let credentials = match held
            .as_ref()
            .filter(|h| h.credentials.fresh_for(REFRESH_MARGIN))
        {
            Some(h) => h.credentials.clone(),
            None => {
                let fetched = provider::fetch(&settings.request, &token, &key, &settings.cert)?;
                *held = Some(Held::new(fetched.clone())?);
                fetched
            }
        };
        // A fresh key where the Zymkey makes keys (unless device.toml says new_key = false),
        // and always to finish one in progress.
        let fresh_key = rekey::in_progress(&settings.dir)
            || (settings.config.new_key != Some(false) && token.generates_keys()?);
        let renewal = Renewal {
            settings,
            target,
            ca: &ca,
            token: &token,
            key: &key,
        };
        let switched = if fresh_key {
            Rekey(renewal).run(&credentials)?
        } else {
            renewal.pick_up(&credentials)?
        };
        if let Some(switched) = &switched {
            *held = Some(Held::new(switched.credentials.clone())?);
        }
        Ok(switched)
    }
}

/// `zkiot device agent` as this process was started, with `flag` added: one task of the
/// long-running agent, in a process of its own.
pub fn child(flag: &str) -> Command {
    let mut command = Command::new("/proc/self/exe");
    command
        .args(std::env::args_os().skip(1))
        .arg(flag)
        .stdin(Stdio::null());
    command
}

/// `--fetch-credentials`: fetches credentials with the token (opening it, one device signature)
/// and prints them as JSON for the parent agent.
pub fn fetch(connection: &ConnectionArgs, global: &GlobalOpts) -> Result<()> {
    let settings = DeviceSettings::resolve(connection, global)?;
    let (token, key) = open_device_token(&settings, global)?;
    let fetched = provider::fetch(&settings.request, &token, &key, &settings.cert)?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&serde_json::to_vec(&fetched)?)?;
    stdout.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn margins() {
        assert_eq!(refresh_margin(Duration::from_secs(3600)).as_secs(), 1200);
        assert_eq!(refresh_margin(Duration::from_secs(900)).as_secs(), 300);
        assert_eq!(refresh_margin(Duration::from_secs(43_200)).as_secs(), 1200);
    }
}
