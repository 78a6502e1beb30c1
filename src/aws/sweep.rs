//! `zkiot aws sweep`: silences every device that reported a perimeter breach, and with
//! `--stale` every device not seen for that long, from the Things' pages alone (ListThings,
//! 250 Things a call, with the attributes the devices write: [`crate::device::report`]).
//!
//! A report is evidence when it comes; its absence proves nothing, since a root attacker on
//! the device can stop the agent. So a device that stops sending heartbeats is as suspect as
//! one that reported a breach. A Thing of ours (one that `register-device`, `fleet provision`
//! or `fleet renew` recorded) that never reported is counted, and swept only with
//! `--never-seen`: devices installed before their agent ran would otherwise be cut off.
//!
//! The silencing itself is `aws silence`'s, for the Things found ([`super::silence`]).

use anyhow::Result;

use super::attributes::EXPIRES_ATTRIBUTE;
use super::cli::SweepArgs;
use super::client::Aws;
use super::days::unix_now;
use super::inventory::{self, ThingEntry};
use super::silence::{self, StatusChange, Targets};
use crate::device::report::{parse_utc, utc, SEEN_ATTRIBUTE, TAMPER_ATTRIBUTE};

/// Why a Thing is swept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reason {
    /// It reported these breaches.
    Tamper(String),
    /// It was last seen then (Unix seconds).
    Stale(i64),
    /// One of ours that never reported.
    NeverSeen,
}

/// What the sweep finds in the Things' attributes at `now`.
pub(crate) fn reason(
    thing: &ThingEntry,
    now: i64,
    stale: Option<i64>,
    never_seen: bool,
) -> Option<Reason> {
    let a = &thing.attributes;
    if let Some(tamper) = a.get(TAMPER_ATTRIBUTE).filter(|v| !v.is_empty()) {
        return Some(Reason::Tamper(tamper.clone()));
    }
    let stale = stale?;
    match a.get(SEEN_ATTRIBUTE) {
        // An unreadable time is no proof of life.
        Some(seen) => match parse_utc(seen) {
            Some(seen) if now.saturating_sub(seen) <= stale => None,
            Some(seen) => Some(Reason::Stale(seen)),
            None => Some(Reason::Stale(0)),
        },
        None if a.contains_key(EXPIRES_ATTRIBUTE) && never_seen => Some(Reason::NeverSeen),
        None => None,
    }
}

fn describe(reason: &Reason, now: i64) -> String {
    match reason {
        Reason::Tamper(breaches) => format!("reported a perimeter breach ({breaches})"),
        Reason::Stale(0) => "its last-seen time is unreadable".to_string(),
        Reason::Stale(seen) => format!(
            "not seen since {} ({} h ago)",
            utc(*seen),
            now.saturating_sub(*seen) / 3600
        ),
        Reason::NeverSeen => "never reported".to_string(),
    }
}

pub(crate) async fn sweep(aws: &Aws, global: &crate::GlobalOpts, args: &SweepArgs) -> Result<()> {
    let now = unix_now();
    let stale = args
        .stale
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let things = inventory::things(aws).await?;
    let mut swept = Vec::new();
    let (mut tampered, mut quiet, mut never) = (0, 0, 0);
    for thing in &things {
        let found = reason(thing, now, stale, args.never_seen);
        let never_reported = !thing.attributes.contains_key(SEEN_ATTRIBUTE)
            && thing.attributes.contains_key(EXPIRES_ATTRIBUTE);
        if never_reported && found.is_none() {
            never += 1;
        }
        let Some(found) = found else { continue };
        match found {
            Reason::Tamper(_) => tampered += 1,
            Reason::Stale(_) => quiet += 1,
            Reason::NeverSeen => never += 1,
        }
        println!("sweep: {}: {}", thing.name, describe(&found, now));
        swept.push(thing.name.clone());
    }
    let stale_text = match args.stale {
        Some(d) => format!(
            "{quiet} not seen for {}",
            crate::duration::format_duration(d)
        ),
        None => "staleness not checked (--stale)".to_string(),
    };
    let never_text = if args.never_seen {
        format!("{never} never reported")
    } else {
        format!("{never} of ours never reported (not swept without --never-seen)")
    };
    println!(
        "sweep: {} thing{} read: {tampered} reported a breach, {stale_text}, {never_text}; {} to silence",
        things.len(),
        if things.len() == 1 { "" } else { "s" },
        swept.len()
    );
    if swept.is_empty() || args.dry_run {
        if args.dry_run && !swept.is_empty() {
            println!("sweep: --dry-run: nothing silenced");
        }
        return Ok(());
    }
    silence::change_status(
        aws,
        global,
        &Targets::Swept(swept),
        StatusChange::Silence,
        &args.change,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn thing(pairs: &[(&str, &str)]) -> ThingEntry {
        ThingEntry {
            name: "t".into(),
            attributes: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>(),
        }
    }

    #[test]
    fn reasons() {
        let now = parse_utc("2026-12-07T12:00:00Z").unwrap();
        let week = Some(7 * 86_400);
        let ours = (EXPIRES_ATTRIBUTE, "2027-12-01");
        let seen = |t: &'static str| (SEEN_ATTRIBUTE, t);
        // A breach is swept whatever else.
        let tampered = thing(&[
            (TAMPER_ATTRIBUTE, "0@2026-12-07T04:00:00Z"),
            seen("2026-12-07T11:00:00Z"),
        ]);
        assert_eq!(
            reason(&tampered, now, None, false),
            Some(Reason::Tamper("0@2026-12-07T04:00:00Z".into()))
        );
        // An empty value is no report.
        assert_eq!(
            reason(&thing(&[(TAMPER_ATTRIBUTE, "")]), now, None, false),
            None
        );
        // Seen within the week: kept; before: swept; staleness only with --stale.
        let recent = thing(&[ours, seen("2026-12-01T12:00:00Z")]);
        assert_eq!(reason(&recent, now, week, false), None);
        let old = thing(&[ours, seen("2026-11-30T11:59:59Z")]);
        assert!(matches!(
            reason(&old, now, week, false),
            Some(Reason::Stale(_))
        ));
        assert_eq!(reason(&old, now, None, false), None);
        assert_eq!(
            reason(&thing(&[seen("garbage")]), now, week, false),
            Some(Reason::Stale(0))
        );
        // Never reported: ours only, and only when asked.
        let silent = thing(&[ours]);
        assert_eq!(reason(&silent, now, week, false), None);
        assert_eq!(reason(&silent, now, week, true), Some(Reason::NeverSeen));
        assert_eq!(reason(&thing(&[]), now, week, true), None);
    }
}
