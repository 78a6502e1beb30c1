//! Where the agent's credentials come from, and its renewal attempts: one lock around the
//! credentials it holds in memory, so that apps' requests and a renewal never fetch twice at
//! once.
//!
//! Credentials are fetched only when asked for and not held fresh: an agent that nobody asks
//! makes no device operation. Held credentials are handed out until
//! [`refresh_margin`] before they expire; the next request then fetches new ones (opening the
//! token, one device signature). A renewal uses the credentials held, if fresh, for its AWS IoT
//! calls, and holds the credentials the new certificate got.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{Context, Result};
use time::OffsetDateTime;

use crate::device::certificate::check_device_certificate;
use crate::device::cli::ConnectionArgs;
use crate::device::credentials::REFRESH_MARGIN;
use crate::device::net::provider::{self, Credentials};
use crate::device::rekey::{self, Rekey};
use crate::device::renewal::{Renewal, Switched};
use crate::device::settings::DeviceSettings;
use crate::p11::{P11Key, P11Token};
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

/// The agent's credentials: the settings to resolve, and what it holds.
pub struct Source {
    connection: ConnectionArgs,
    global: GlobalOpts,
    held: Mutex<Option<Held>>,
}

impl Source {
    pub fn new(connection: ConnectionArgs, global: GlobalOpts) -> Arc<Self> {
        Arc::new(Self {
            connection,
            global,
            held: Mutex::new(None),
        })
    }

    /// The settings as `device.toml` and the certificate file say now.
    pub fn settings(&self) -> Result<DeviceSettings> {
        DeviceSettings::resolve(&self.connection, &self.global)
    }

    fn lock(&self) -> MutexGuard<'_, Option<Held>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Credentials for an app: those held while fresh (no device operation), else new ones.
    pub fn credentials(&self) -> Result<Credentials> {
        let mut held = self.lock();
        if let Some(h) = held.as_ref().filter(|h| h.fresh()) {
            return Ok(h.credentials.clone());
        }
        let settings = self.settings()?;
        let (token, key) = open(&settings, &self.global)?;
        let fetched = provider::fetch(&settings.request, &token, &key, &settings.cert)?;
        *held = Some(Held::new(fetched.clone())?);
        Ok(fetched)
    }

    /// One renewal attempt with `settings`: credentials (held, else fetched), then the renewed
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
        let (token, key) = open(settings, &self.global)?;
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
        let switched = if fresh_key {
            Rekey {
                settings,
                target,
                ca: &ca,
                token: &token,
                key: &key,
            }
            .run(&credentials)?
        } else {
            Renewal {
                settings,
                target,
                ca: &ca,
                token: &token,
                key: &key,
            }
            .pick_up(&credentials)?
        };
        if let Some(switched) = &switched {
            *held = Some(Held::new(switched.credentials.clone())?);
        }
        Ok(switched)
    }
}

/// Opens the token, finds the key and checks that the certificate is for it (no device
/// operation while the module's device cache holds).
fn open(settings: &DeviceSettings, global: &GlobalOpts) -> Result<(Arc<P11Token>, P11Key)> {
    let (token, key) = settings.labels()?.open(global)?;
    check_device_certificate(&settings.cert, &key, None).with_context(|| {
        format!(
            "the device certificate {} (key {:?} on token {:?})",
            settings.cert_path.display(),
            key.label,
            token.label()
        )
    })?;
    Ok((Arc::new(token), key))
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
