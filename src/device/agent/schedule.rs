//! When the agent renews, and how long it waits after a failure: pure arithmetic over the
//! certificate's validity, tested here without a clock.
//!
//! A certificate is due for renewal once `share` of its lifetime has passed (default 2/3, as
//! smallstep's `step ca renew --daemon`), plus a jitter of up to 1/20 of the lifetime. The
//! jitter is drawn from the certificate's own fingerprint, so it differs from device to device
//! (a fleet provisioned in one week does not renew in one hour) but stays the same for one
//! certificate across restarts and `--once` runs. It never takes the renewal past 99% of the
//! lifetime.

use std::time::Duration;

use anyhow::{Context, Result};
use openssl::asn1::{Asn1Time, Asn1TimeRef};
use openssl::x509::X509;

/// Renew after this share of the lifetime unless told otherwise.
pub const DEFAULT_SHARE: f64 = 2.0 / 3.0;
/// The jitter: up to this share of the lifetime.
pub const JITTER_SHARE: f64 = 1.0 / 20.0;
/// The renewal is never later than this share of the lifetime.
const LATEST_SHARE: f64 = 0.99;
/// The first retry after a failure; each further one waits twice as long, up to the poll
/// interval.
pub const FIRST_RETRY: Duration = Duration::from_secs(60);
/// How often to look again while renewal is due and no renewed certificate is there yet.
pub const DEFAULT_POLL: Duration = Duration::from_secs(6 * 3600);

/// `2/3`, `0.75` or `80%`: a share strictly between 0 and 1.
pub fn parse_share(text: &str) -> Result<f64, String> {
    let text = text.trim();
    let bad = || format!("{text:?}: give a share of the lifetime such as 2/3, 0.75 or 80%");
    let value = if let Some(percent) = text.strip_suffix('%') {
        percent.trim().parse::<f64>().map_err(|_| bad())? / 100.0
    } else if let Some((a, b)) = text.split_once('/') {
        let a: f64 = a.trim().parse().map_err(|_| bad())?;
        let b: f64 = b.trim().parse().map_err(|_| bad())?;
        a / b
    } else {
        text.parse::<f64>().map_err(|_| bad())?
    };
    if !(value > 0.0 && value < 1.0) {
        return Err(format!("{text:?}: the share must be above 0 and below 1"));
    }
    Ok(value)
}

/// Seconds since the Unix epoch of an ASN.1 time.
pub fn unix_seconds(time: &Asn1TimeRef) -> Result<i64> {
    let diff = Asn1Time::from_unix(0)?.diff(time)?;
    Ok(i64::from(diff.days) * 86_400 + i64::from(diff.secs))
}

/// The certificate's validity, in seconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: i64,
    pub not_after: i64,
}

impl Validity {
    pub fn of(cert: &X509) -> Result<Self> {
        Ok(Self {
            not_before: unix_seconds(cert.not_before()).context("the certificate's notBefore")?,
            not_after: unix_seconds(cert.not_after()).context("the certificate's notAfter")?,
        })
    }

    /// When it is due for renewal: after `share` of the lifetime plus the jitter `jitter`
    /// (0 to 1, a share of [`JITTER_SHARE`]), never past 99% of the lifetime.
    pub fn renewal_time(&self, share: f64, jitter: f64) -> i64 {
        let lifetime = (self.not_after - self.not_before).max(0) as f64;
        let at = share + JITTER_SHARE * jitter.clamp(0.0, 1.0);
        self.not_before + (lifetime * at.min(LATEST_SHARE)) as i64
    }
}

/// A number in [0, 1) drawn from the certificate's SHA-256 fingerprint.
pub fn jitter_of(cert: &X509) -> Result<f64> {
    let digest = cert.digest(openssl::hash::MessageDigest::sha256())?;
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    Ok((u64::from_be_bytes(first) >> 11) as f64 / (1u64 << 53) as f64)
}

/// How long to wait after `failures` failures in a row (1 or more): [`FIRST_RETRY`], doubling
/// each time, at most `poll`.
pub fn backoff(failures: u32, poll: Duration) -> Duration {
    let doubled = FIRST_RETRY.saturating_mul(1u32 << failures.saturating_sub(1).min(20));
    doubled.min(poll.max(FIRST_RETRY))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares() {
        assert!((parse_share("2/3").unwrap() - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(parse_share("0.75").unwrap(), 0.75);
        assert_eq!(parse_share("80%").unwrap(), 0.8);
        for bad in ["0", "1", "3/2", "100%", "x", "1/0", "-0.5", ""] {
            assert!(parse_share(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn renewal_time_is_the_share_plus_at_most_a_twentieth() {
        let v = Validity {
            not_before: 1_000_000,
            not_after: 1_000_000 + 300 * 86_400,
        };
        assert_eq!(v.renewal_time(2.0 / 3.0, 0.0), 1_000_000 + 200 * 86_400);
        assert_eq!(v.renewal_time(2.0 / 3.0, 1.0), 1_000_000 + 215 * 86_400);
        // Never past 99% of the lifetime.
        assert_eq!(v.renewal_time(0.98, 1.0), 1_000_000 + 297 * 86_400);
    }

    #[test]
    fn backoff_doubles_up_to_the_poll_interval() {
        let poll = Duration::from_secs(3600);
        let waits: Vec<u64> = (1..=8).map(|n| backoff(n, poll).as_secs()).collect();
        assert_eq!(waits, [60, 120, 240, 480, 960, 1920, 3600, 3600]);
        assert_eq!(backoff(1000, poll).as_secs(), 3600);
        assert_eq!(backoff(1, Duration::from_secs(1)).as_secs(), 60);
    }
}
