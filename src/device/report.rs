//! What the device tells the operator about itself, on its own Thing, with the temporary
//! credentials it gets anyway: when it was last seen (a heartbeat) and the perimeter breaches
//! its Zymkey latched. `zkiot aws sweep` silences the devices that reported a breach or that
//! have not been seen for too long; `aws status` shows both.
//!
//! Both are Thing attributes written with `UpdateThing` (merged: the others stay), which the
//! devices' role allows on the device's own Thing only (`aws setup --renewal`). A report is the
//! device's word: a root attacker on the device can stop it, or write what they like on that
//! one Thing, which is why a device that stops reporting is suspect too.

use std::time::Duration;

use anyhow::{Context, Result};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use zymkey::PerimeterEvents;

use super::net::provider::Credentials;
use super::settings::DeviceSettings;

/// When the device last reported, UTC (`2026-12-07T04:12:00Z`).
pub const SEEN_ATTRIBUTE: &str = "zkiot_seen";
/// The breaches its Zymkey latched, as `CHANNEL@FIRST-BREACH-UTC`, comma-separated
/// (`0@2026-12-07T04:12:00Z`); absent when none was ever reported. The device never removes
/// it: the operator does, once the device is dealt with.
pub const TAMPER_ATTRIBUTE: &str = "zkiot_tamper";

/// `time` (Unix seconds) as the attributes write it.
pub fn utc(time: i64) -> String {
    OffsetDateTime::from_unix_timestamp(time)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| time.to_string())
}

/// An attribute's time back in Unix seconds.
pub fn parse_utc(text: &str) -> Option<i64> {
    OffsetDateTime::parse(text, &Rfc3339)
        .ok()
        .map(OffsetDateTime::unix_timestamp)
}

/// The latched breaches as [`TAMPER_ATTRIBUTE`] holds them; `None` when there is none.
pub fn tamper_value(events: &PerimeterEvents) -> Option<String> {
    let breaches: Vec<String> = events
        .breached()
        .map(|(channel, time)| format!("{channel}@{}", utc(i64::from(time))))
        .collect();
    (!breaches.is_empty()).then(|| breaches.join(","))
}

/// Writes the heartbeat, and `tamper` when given, on the device's own Thing.
pub fn send(
    settings: &DeviceSettings,
    credentials: &Credentials,
    tamper: Option<&str>,
    timeout: Duration,
) -> Result<()> {
    let iot = settings.iot.as_ref().context(
        "no AWS IoT API to report to: no region is known (region or iot_api in device.toml)",
    )?;
    let seen = utc(OffsetDateTime::now_utc().unix_timestamp());
    let mut attributes = vec![(SEEN_ATTRIBUTE, seen.as_str())];
    if let Some(tamper) = tamper {
        attributes.push((TAMPER_ATTRIBUTE, tamper));
    }
    iot.api(credentials, timeout)?
        .set_thing_attributes(&settings.request.thing, &attributes)
        .with_context(|| {
            format!(
                "cannot write {} on thing {} (the devices' role allows it once `zkiot aws setup \
                 --renewal` ran)",
                attributes
                    .iter()
                    .map(|(name, _)| *name)
                    .collect::<Vec<_>>()
                    .join(" and "),
                settings.request.thing
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaches_as_the_attribute_holds_them() {
        let none = PerimeterEvents {
            first_breach: vec![None, None],
        };
        assert_eq!(tamper_value(&none), None);
        let both = PerimeterEvents {
            first_breach: vec![Some(1_765_080_000), Some(1_765_080_061)],
        };
        assert_eq!(
            tamper_value(&both).as_deref(),
            Some("0@2025-12-07T04:00:00Z,1@2025-12-07T04:01:01Z")
        );
        let second = PerimeterEvents {
            first_breach: vec![None, Some(1_765_080_000)],
        };
        assert_eq!(
            tamper_value(&second).as_deref(),
            Some("1@2025-12-07T04:00:00Z")
        );
        // Only characters AWS IoT allows in an attribute value.
        let value = tamper_value(&both).unwrap();
        assert!(value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.,@/:#=[]-".contains(c)));
    }

    #[test]
    fn times_round_trip() {
        assert_eq!(utc(1_765_080_000), "2025-12-07T04:00:00Z");
        assert_eq!(parse_utc("2025-12-07T04:00:00Z"), Some(1_765_080_000));
        assert_eq!(parse_utc("yesterday"), None);
    }
}
