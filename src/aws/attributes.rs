//! What the operator's commands record about each device in AWS IoT itself, as Thing
//! attributes, so that a fleet run knows from the pages of ListThings (250 Things a call) which
//! devices need a look, and two operators on two machines see the same fleet. The operator's
//! own records (`fleet/renew.jsonl`, `aws/certificate-expiry.json`) only speed things up.
//!
//! - `zkiot_expires` (`2027-01-13`): the day (UTC) the newest of our certificates on the Thing
//!   expires; written when a certificate is registered (`fleet provision`, `aws register-device`,
//!   `fleet renew`).
//! - `zkiot_renewal`: where a renewal stands, while it is not over: `waiting` (a new certificate
//!   is registered, the device has not switched to it), `retiring-2026-12-07` (the device
//!   switched; its older certificates were deactivated that day and are revoked once `--grace`
//!   has passed). Removed once they are.
//! - the device's own: `zkiot_certificate` (`device::renewal`), the certificate it switched to,
//!   and `zkiot_csr`, `zkiot_csr_signature` (`device::rekey`) while it asks for a fresh key.
//!
//! Values are days and words, so fleet indexing can find them by exact match.
//!
//! That is up to five attributes, and AWS IoT allows a Thing without a Thing type three: so the
//! Things zkiot registers get the Thing type [`THING_TYPE`] (50 attributes), made when missing,
//! and a Thing without a type gets it when its attributes are next written. A Thing of another
//! type keeps it.

use std::collections::HashMap;

use super::days::{day, day_start};
use crate::device::rekey::CSR_ATTRIBUTE;

/// The Thing type of the devices' Things.
pub(crate) const THING_TYPE: &str = "zkiot-device";
/// The day the newest of our certificates on the Thing expires.
pub(crate) const EXPIRES_ATTRIBUTE: &str = "zkiot_expires";
/// Where a renewal stands.
pub(crate) const RENEWAL_ATTRIBUTE: &str = "zkiot_renewal";
/// `zkiot_renewal` while the device has yet to switch.
pub(crate) const WAITING: &str = "waiting";
/// `zkiot_renewal` while the older certificates wait for `--grace` to pass: `retiring-<day>`.
pub(crate) const RETIRING_PREFIX: &str = "retiring-";

const DAY: i64 = 86_400;

/// The `zkiot_renewal` value of older certificates deactivated at `unix`.
pub(crate) fn retiring(unix: i64) -> String {
    format!("{RETIRING_PREFIX}{}", day(unix))
}

/// The latest time a `retiring-<day>` value can stand for (the end of that day).
pub(crate) fn retiring_since(value: &str) -> Option<i64> {
    value
        .strip_prefix(RETIRING_PREFIX)
        .and_then(day_start)
        .map(|start| start + DAY - 1)
}

/// Why `fleet renew` must look at a Thing, by its attributes alone; `None`: nothing to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Look {
    /// No record of ours (a Thing from before these attributes, or from another tool).
    Unrecorded,
    /// Its newest certificate expires within the renewal window (to the day).
    Due,
    /// A renewal waits for the device to switch.
    Waiting,
    /// Older certificates whose grace period may have passed.
    Retiring,
    /// Its device posted a CSR for a fresh key (`rekey.rs`).
    Rekey,
}

/// Whether a Thing with `attributes` needs a look at `now`, renewing what expires within
/// `within` and revoking what has been inactive for `grace` (seconds).
pub(crate) fn look(
    attributes: &HashMap<String, String>,
    now: i64,
    within: i64,
    grace: i64,
) -> Option<Look> {
    if attributes.get(CSR_ATTRIBUTE).is_some_and(|v| !v.is_empty()) {
        return Some(Look::Rekey);
    }
    match attributes.get(RENEWAL_ATTRIBUTE).map(String::as_str) {
        Some(WAITING) => return Some(Look::Waiting),
        Some(value) => match value.strip_prefix(RETIRING_PREFIX).and_then(day_start) {
            // Deactivated that day, at the earliest at its start.
            Some(start) if start.saturating_add(grace) <= now => return Some(Look::Retiring),
            Some(_) => {}
            None => return Some(Look::Unrecorded),
        },
        None => {}
    }
    match attributes.get(EXPIRES_ATTRIBUTE).map(|d| day_start(d)) {
        None | Some(None) => Some(Look::Unrecorded),
        Some(Some(start)) if start <= now.saturating_add(within) => Some(Look::Due),
        Some(Some(_)) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn which_things_need_a_look() {
        let now = day_start("2026-12-07").unwrap() + 12 * 3600;
        let days = |n: i64| n * DAY;
        let within = days(30);
        let grace = days(7);
        let look = |pairs: &[(&str, &str)]| look(&attrs(pairs), now, within, grace);
        assert_eq!(look(&[]), Some(Look::Unrecorded));
        assert_eq!(look(&[(EXPIRES_ATTRIBUTE, "soon")]), Some(Look::Unrecorded));
        assert_eq!(look(&[(EXPIRES_ATTRIBUTE, "2027-12-01")]), None);
        // Within 30 days to the day: 2027-01-06 12:00 is the limit.
        assert_eq!(look(&[(EXPIRES_ATTRIBUTE, "2027-01-06")]), Some(Look::Due));
        assert_eq!(look(&[(EXPIRES_ATTRIBUTE, "2027-01-07")]), None);
        assert_eq!(look(&[(EXPIRES_ATTRIBUTE, "2026-11-01")]), Some(Look::Due));
        let lasting = (EXPIRES_ATTRIBUTE, "2027-12-01");
        assert_eq!(
            look(&[lasting, (RENEWAL_ATTRIBUTE, WAITING)]),
            Some(Look::Waiting)
        );
        assert_eq!(
            look(&[lasting, (RENEWAL_ATTRIBUTE, "retiring-2026-11-30")]),
            Some(Look::Retiring)
        );
        assert_eq!(
            look(&[lasting, (RENEWAL_ATTRIBUTE, "retiring-2026-12-01")]),
            None
        );
        assert_eq!(
            look(&[lasting, (RENEWAL_ATTRIBUTE, "something")]),
            Some(Look::Unrecorded)
        );
        assert_eq!(look(&[lasting, (CSR_ATTRIBUTE, "MIIB")]), Some(Look::Rekey));
        assert_eq!(look(&[lasting, (CSR_ATTRIBUTE, "")]), None);
        assert_eq!(retiring(now), "retiring-2026-12-07");
        assert_eq!(
            retiring_since("retiring-2026-12-07"),
            Some(day_start("2026-12-08").unwrap() - 1)
        );
    }
}
