//! `zkiot device tamper`: the Zymkey's perimeter-breach (tamper) channels, straight through
//! Zymbit's library (as `device selftest` reaches it): the breaches each channel latched, whether
//! the device is in production mode, and, on request, the channels' actions set (after a
//! confirmation) and the latched breaches cleared once reported.
//!
//! Zymbit's API cannot read a channel's action back, so what this command sets is also recorded
//! in `tamper.toml` in the device folder, with the Zymkey's serial number, and shown as such.
//! That record is the host's word, not the device's.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use zymkey::{PerimeterAction, PerimeterEvents, Zymkey};

use super::cli::TamperArgs;
use super::config::device_dir;
use crate::fsutil;
use crate::GlobalOpts;

/// The record of the actions set through zkiot, in the device folder.
pub const RECORD_FILE: &str = "tamper.toml";

/// Which channels one `--set` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Channels {
    One(usize),
    All,
}

/// One `--set CHANNEL=ACTION`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Setting {
    channels: Channels,
    action: PerimeterAction,
}

fn parse_setting(text: &str) -> Result<Setting> {
    let Some((channel, action)) = text.split_once('=') else {
        bail!(
            "--set {text}: expected CHANNEL=ACTION, such as 0=notify or all=notify+self-destruct"
        );
    };
    let channels = match channel.trim() {
        "all" => Channels::All,
        n => Channels::One(n.parse().map_err(|_| {
            anyhow::anyhow!("--set {text}: {n:?} is not a channel (0, 1, … or all)")
        })?),
    };
    let action = action
        .parse()
        .map_err(|e: String| anyhow::anyhow!("--set {text}: {e}"))?;
    Ok(Setting { channels, action })
}

/// The action for each channel of a device with `count` channels, in channel order.
fn plan(settings: &[Setting], count: usize) -> Result<Vec<(usize, PerimeterAction)>> {
    let mut plan: Vec<Option<PerimeterAction>> = vec![None; count];
    for setting in settings {
        let channels = match setting.channels {
            Channels::All => (0..count).collect(),
            Channels::One(n) if n < count => vec![n],
            Channels::One(n) => bail!(
                "--set: this Zymkey has channels 0 to {}, not {n}",
                count.saturating_sub(1)
            ),
        };
        for channel in channels {
            if plan[channel].replace(setting.action).is_some() {
                bail!("--set: channel {channel} is named more than once");
            }
        }
    }
    Ok(plan
        .into_iter()
        .enumerate()
        .filter_map(|(channel, action)| action.map(|a| (channel, a)))
        .collect())
}

/// `tamper.toml`: what zkiot last set on which Zymkey.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    /// The Zymkey the actions were set on; a record of another is not shown.
    zymkey_serial: String,
    #[serde(default)]
    channel: Vec<RecordedAction>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordedAction {
    channel: usize,
    action: String,
    /// RFC 3339, UTC.
    set_at: String,
}

impl Record {
    /// The record of `serial` in `dir`; none when missing or of another Zymkey.
    fn load(dir: &Path, serial: &str) -> Result<Record> {
        let path = dir.join(RECORD_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Record::default()),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let record: Record =
            toml::from_str(&text).with_context(|| format!("cannot parse {}", path.display()))?;
        Ok(if record.zymkey_serial == serial {
            record
        } else {
            Record::default()
        })
    }

    fn get(&self, channel: usize) -> Option<&RecordedAction> {
        self.channel.iter().find(|r| r.channel == channel)
    }

    fn set(&mut self, channel: usize, action: PerimeterAction, at: &str) {
        self.channel.retain(|r| r.channel != channel);
        self.channel.push(RecordedAction {
            channel,
            action: action.to_string(),
            set_at: at.to_string(),
        });
        self.channel.sort_by_key(|r| r.channel);
    }

    fn save(&self, dir: &Path) -> Result<()> {
        let text = format!(
            "# What `zkiot device tamper` last set on this Zymkey. The device cannot be asked:\n\
             # this is the host's record, not the device's.\n{}",
            toml::to_string(self)?
        );
        fsutil::write_atomic(&dir.join(RECORD_FILE), text.as_bytes(), fsutil::PUBLIC_MODE)
    }
}

#[derive(Debug, Serialize)]
pub struct ChannelReport {
    pub channel: usize,
    pub breached: bool,
    /// Seconds since the epoch, by the Zymkey's clock; null when not breached.
    pub first_breach: Option<u32>,
    pub first_breach_utc: Option<String>,
    /// The action zkiot last set on this channel of this Zymkey, if any (not read from the device).
    pub recorded_action: Option<String>,
    pub recorded_at: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct SetReport {
    pub channel: usize,
    pub action: String,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub library: PathBuf,
    pub model: String,
    pub serial: String,
    /// Whether the binding is locked (production mode); `null` when the device does not say.
    pub production_mode: Option<bool>,
    pub channels: Vec<ChannelReport>,
    /// The actions set by this run.
    pub set: Vec<SetReport>,
    /// Whether this run cleared the latched breaches (those reported here).
    pub cleared: bool,
}

/// Runs `zkiot device tamper`.
pub fn run(args: TamperArgs, global: &GlobalOpts) -> Result<()> {
    let settings = args
        .set
        .iter()
        .map(|text| parse_setting(text))
        .collect::<Result<Vec<_>>>()?;
    let library = args
        .library
        .clone()
        .unwrap_or_else(super::selftest::configured_library);
    let dir = device_dir(args.dir.as_deref(), global);
    let zymkey = Zymkey::load(&library)?;
    let model = zymkey.model()?;
    let serial = zymkey.serial_number()?;
    let production_mode = production_mode(&zymkey)?;
    let events = zymkey.perimeter_events().map_err(|e| match e {
        zymkey::Error::Unsupported { .. } => anyhow::anyhow!(
            "{e}: this Zymkey library has no perimeter functions ({})",
            library.display()
        ),
        e => e.into(),
    })?;
    let plan = plan(&settings, events.channels())?;
    let mut record = Record::load(&dir, &serial)?;
    let mut report = Report {
        library,
        model,
        serial,
        production_mode,
        channels: channel_reports(&events, &record),
        set: Vec::new(),
        cleared: false,
    };
    if !args.json {
        print!("{}", render(&report));
        std::io::stdout().flush().ok();
    }

    if !plan.is_empty() && !args.yes {
        confirm(&report, &plan)?;
    }
    if args.clear {
        zymkey.clear_perimeter_events()?;
        report.cleared = true;
        if !args.json {
            println!("cleared   the latched breaches shown above; every channel is armed again");
        }
    }
    let set_at = now_utc();
    let mut failure = None;
    for &(channel, action) in &plan {
        if let Err(e) = zymkey.set_perimeter_event_action(channel, action) {
            failure = Some(refused(channel, &e, report.production_mode));
            break;
        }
        record.set(channel, action, &set_at);
        report.set.push(SetReport {
            channel,
            action: action.to_string(),
        });
        if !args.json {
            println!("set       channel {channel}: {action}");
        }
    }
    if !report.set.is_empty() {
        record.zymkey_serial = report.serial.clone();
        if let Err(e) = record.save(&dir) {
            eprintln!("zkiot: warning: the actions are set on the Zymkey, but not recorded: {e:#}");
        }
        report.channels = channel_reports(&events, &record);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Whether the binding is locked; `None` when the library or the model does not say.
fn production_mode(zymkey: &Zymkey) -> Result<Option<bool>> {
    match zymkey.binding_info() {
        Ok(info) => Ok(Some(info.locked)),
        Err(zymkey::Error::Unsupported { .. }) => Ok(None),
        Err(e) if e.errno() == Some(libc::EOPNOTSUPP) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn channel_reports(events: &PerimeterEvents, record: &Record) -> Vec<ChannelReport> {
    events
        .first_breach
        .iter()
        .enumerate()
        .map(|(channel, first_breach)| {
            let recorded = record.get(channel);
            ChannelReport {
                channel,
                breached: first_breach.is_some(),
                first_breach: *first_breach,
                first_breach_utc: first_breach.map(utc),
                recorded_action: recorded.map(|r| r.action.clone()),
                recorded_at: recorded.map(|r| r.set_at.clone()),
            }
        })
        .collect()
}

/// Epoch seconds as RFC 3339 UTC.
fn utc(seconds: u32) -> String {
    OffsetDateTime::from_unix_timestamp(seconds.into())
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| seconds.to_string())
}

fn now_utc() -> String {
    OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// A refused setting, with what Zymbit says about setting actions after the lock.
fn refused(channel: usize, e: &zymkey::Error, production: Option<bool>) -> anyhow::Error {
    let hint = if e.errno() == Some(libc::EPERM) && production != Some(false) {
        " (in production mode, Zymbit allows each channel's action to be set only once \
         after the binding is locked)"
    } else {
        ""
    };
    anyhow::anyhow!("channel {channel}: the Zymkey refused the action: {e}{hint}")
}

/// What the device's mode means for self-destruct, in one line.
fn mode_line(production: Option<bool>) -> &'static str {
    match production {
        Some(true) => {
            "production (binding locked): a breach of a self-destruct channel destroys every \
             key of this Zymkey, for good; self-destruct, once set, cannot be turned off"
        }
        Some(false) => {
            "developer (binding not locked): self-destruct is not carried out; a breach is \
             latched and notified only"
        }
        None => {
            "unknown: the device does not say (a ZYMKEY4i is in production mode once its lock \
             tab is cut); if it is, self-destruct is permanent"
        }
    }
}

pub fn render(r: &Report) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "zymkey    {}, serial {} (library {})",
        r.model,
        r.serial,
        r.library.display()
    );
    let _ = writeln!(out, "mode      {}", mode_line(r.production_mode));
    for c in &r.channels {
        match (c.first_breach, &c.first_breach_utc) {
            (Some(t), Some(when)) => {
                let _ = writeln!(
                    out,
                    "channel {} BREACHED: first breach {when} (epoch {t}), latched until cleared",
                    c.channel
                );
            }
            _ => {
                let _ = writeln!(
                    out,
                    "channel {} no breach since the events were last cleared",
                    c.channel
                );
            }
        }
        let action = match (&c.recorded_action, &c.recorded_at) {
            (Some(action), Some(at)) => {
                format!("{action}, as zkiot set it at {at} (the device cannot be asked)")
            }
            _ => "unknown: not set through zkiot on this Zymkey (the device cannot be asked)"
                .to_string(),
        };
        let _ = writeln!(out, "          action {action}");
    }
    out
}

/// Asks on the terminal before setting actions; refuses outright without one. Self-destruct is
/// confirmed by typing the Zymkey's serial number, anything else by typing "yes".
fn confirm(report: &Report, plan: &[(usize, PerimeterAction)]) -> Result<()> {
    let destructive = plan.iter().any(|(_, action)| action.self_destructs());
    let mut text = String::from("About to set on this Zymkey:\n");
    for (channel, action) in plan {
        text.push_str(&format!("  channel {channel}: {action}\n"));
        let breached = report.channels.get(*channel).is_some_and(|c| c.breached);
        if breached && action.bits() != 0 {
            text.push_str(&format!(
                "    (channel {channel} has a latched breach: it is armed again only once the \
                 events are cleared, with --clear)\n"
            ));
        }
    }
    if destructive {
        text.push_str(&format!(
            "SELF-DESTRUCT: on a breach of that channel the Zymkey destroys every key it holds, at \
             once, even with the host off. In production mode this is PERMANENT FOR THE DEVICE: \
             the setting cannot be undone, and after a breach the Zymkey has no keys, for good; \
             every certificate bound to its keys stops working. This Zymkey's mode: {}.\n",
            mode_line(report.production_mode)
        ));
    }
    if report.production_mode != Some(false) {
        text.push_str(
            "In production mode Zymbit allows each channel's action to be set only once after \
             the lock.\n",
        );
    }
    let expected = if destructive {
        report.serial.as_str()
    } else {
        "yes"
    };
    if !std::io::stdin().is_terminal() {
        eprint!("{text}");
        bail!("not confirmed: no terminal to ask on; pass --yes to set the actions");
    }
    eprint!("{text}Type {expected} to confirm: ");
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if answer.trim() != expected {
        bail!("not confirmed; no action set");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_name_a_channel_and_an_action() {
        let s = parse_setting("1=notify+self-destruct").unwrap();
        assert_eq!(s.channels, Channels::One(1));
        assert_eq!(
            s.action,
            PerimeterAction::NOTIFY | PerimeterAction::SELF_DESTRUCT
        );
        let s = parse_setting("all=none").unwrap();
        assert_eq!(
            (s.channels, s.action),
            (Channels::All, PerimeterAction::NONE)
        );
        for bad in ["1", "x=notify", "0=explode", "=notify", "-1=notify"] {
            assert!(parse_setting(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_plan_names_each_channel_once() {
        let notify = PerimeterAction::NOTIFY;
        let all = |a| Setting {
            channels: Channels::All,
            action: a,
        };
        let one = |n, a| Setting {
            channels: Channels::One(n),
            action: a,
        };
        assert_eq!(plan(&[all(notify)], 2).unwrap(), [(0, notify), (1, notify)]);
        assert_eq!(
            plan(&[one(1, notify), one(0, PerimeterAction::NONE)], 2).unwrap(),
            [(0, PerimeterAction::NONE), (1, notify)]
        );
        assert!(plan(&[one(2, notify)], 2).is_err());
        assert!(plan(&[one(0, notify), all(notify)], 2).is_err());
        assert!(plan(&[], 2).unwrap().is_empty());
    }

    #[test]
    fn the_record_belongs_to_one_zymkey() {
        let dir = tempfile::tempdir().unwrap();
        let mut record = Record {
            zymkey_serial: "EMU-1".into(),
            ..Record::default()
        };
        record.set(1, PerimeterAction::NOTIFY, "2026-12-08T10:00:00Z");
        record.set(0, PerimeterAction::SELF_DESTRUCT, "2026-12-08T10:00:00Z");
        record.set(1, PerimeterAction::NONE, "2026-12-08T11:00:00Z");
        record.save(dir.path()).unwrap();
        let back = Record::load(dir.path(), "EMU-1").unwrap();
        let actions: Vec<(usize, &str)> = back
            .channel
            .iter()
            .map(|r| (r.channel, r.action.as_str()))
            .collect();
        assert_eq!(actions, [(0, "self-destruct"), (1, "none")]);
        assert!(Record::load(dir.path(), "EMU-2")
            .unwrap()
            .channel
            .is_empty());
    }

    #[test]
    fn times_are_utc() {
        assert_eq!(utc(1_765_188_000), "2025-12-08T10:00:00Z");
    }
}
