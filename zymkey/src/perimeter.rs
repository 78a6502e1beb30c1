//! The perimeter-breach (tamper) circuits and the binding: the actions of each
//! channel, the latched breaches, waiting for one, and production mode.
//!
//! Every function here is optional (see [`crate::OPTIONAL_SYMBOLS`]): on a
//! library without it, the call is [`Error::Unsupported`].
//!
//! What Zymbit documents: two channels, 0 and 1; each notifies the host
//! (`ZK_PERIMETER_EVENT_ACTION_NOTIFY`), destroys every key of the device
//! (`…_SELF_DESTRUCT`), both, or neither. The module latches the time of each
//! channel's first breach, through a power loss while its battery lasts,
//! until the events are cleared, which also rearms the channels. Self-destruct
//! happens only in production mode (binding locked, or a ZYMKEY4i's lock tab
//! cut), and there it cannot be undone. The API has no call that reads the
//! actions back.

use std::ffi::c_int;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::{bad, Zymkey};

/// The most channels a device is believed to report; more is malformed output.
const MAX_CHANNELS: usize = 16;

/// The actions of one perimeter channel: a set of `ZK_PERIMETER_EVENT_ACTION_*` flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PerimeterAction {
    bits: u32,
}

impl PerimeterAction {
    /// Neither notify nor self-destruct: the breach is only latched.
    pub const NONE: PerimeterAction = PerimeterAction { bits: 0 };
    /// `ZK_PERIMETER_EVENT_ACTION_NOTIFY`: the host is told (`zkWaitForPerimeterEvent`).
    pub const NOTIFY: PerimeterAction = PerimeterAction { bits: 1 << 0 };
    /// `ZK_PERIMETER_EVENT_ACTION_SELF_DESTRUCT`: in production mode, every key
    /// of the device is destroyed at once; permanent.
    pub const SELF_DESTRUCT: PerimeterAction = PerimeterAction { bits: 1 << 1 };

    /// The flags as the C API takes them.
    pub const fn bits(self) -> u32 {
        self.bits
    }

    /// The action of `bits`; `None` if it has a bit the API does not define.
    pub const fn from_bits(bits: u32) -> Option<PerimeterAction> {
        if bits & !(Self::NOTIFY.bits | Self::SELF_DESTRUCT.bits) == 0 {
            Some(PerimeterAction { bits })
        } else {
            None
        }
    }

    /// Both sets of actions.
    pub const fn union(self, other: PerimeterAction) -> PerimeterAction {
        PerimeterAction {
            bits: self.bits | other.bits,
        }
    }

    pub const fn notifies(self) -> bool {
        self.bits & Self::NOTIFY.bits != 0
    }

    pub const fn self_destructs(self) -> bool {
        self.bits & Self::SELF_DESTRUCT.bits != 0
    }

    /// The actions by name: `notify`, `self-destruct`; none for [`Self::NONE`].
    pub fn names(self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if self.notifies() {
            names.push("notify");
        }
        if self.self_destructs() {
            names.push("self-destruct");
        }
        names
    }
}

impl std::ops::BitOr for PerimeterAction {
    type Output = PerimeterAction;
    fn bitor(self, other: PerimeterAction) -> PerimeterAction {
        self.union(other)
    }
}

/// `none`, `notify`, `self-destruct` or `notify+self-destruct`.
impl fmt::Display for PerimeterAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = self.names();
        if names.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&names.join("+"))
        }
    }
}

/// Parses what [`Display`](fmt::Display) writes: `none`, or `notify` and
/// `self-destruct` joined by `+` or `,` (case and `_` for `-` ignored).
impl FromStr for PerimeterAction {
    type Err = String;
    fn from_str(text: &str) -> std::result::Result<PerimeterAction, String> {
        let mut action = PerimeterAction::NONE;
        for word in text.split(['+', ',']) {
            let word = word.trim().to_ascii_lowercase().replace('_', "-");
            action = action
                | match word.as_str() {
                    "none" => PerimeterAction::NONE,
                    "notify" => PerimeterAction::NOTIFY,
                    "self-destruct" | "selfdestruct" => PerimeterAction::SELF_DESTRUCT,
                    _ => {
                        return Err(format!(
                            "{text:?} is not a perimeter action (use none, notify, \
                             self-destruct or notify+self-destruct)"
                        ))
                    }
                };
        }
        Ok(action)
    }
}

/// What `zkGetPerimeterDetectInfo` says: for each channel (the index), the
/// time of its first breach since the events were last cleared.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PerimeterEvents {
    /// Seconds since the epoch by the module's clock; `None`: no breach.
    pub first_breach: Vec<Option<u32>>,
}

impl PerimeterEvents {
    /// The number of channels the device reported.
    pub fn channels(&self) -> usize {
        self.first_breach.len()
    }

    /// Each breached channel and the time of its first breach.
    pub fn breached(&self) -> impl Iterator<Item = (usize, u32)> + '_ {
        self.first_breach
            .iter()
            .enumerate()
            .filter_map(|(channel, time)| time.map(|t| (channel, t)))
    }

    /// Whether any channel was breached.
    pub fn any(&self) -> bool {
        self.first_breach.iter().any(Option::is_some)
    }
}

/// What `zkGetCurrentBindingInfo` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BindingInfo {
    /// The binding is locked: the device is in production mode, where
    /// self-destruct is carried out and cannot be turned off.
    pub locked: bool,
    /// The device is bound to this host.
    pub bound: bool,
}

fn channel_arg(function: &'static str, channel: usize) -> Result<c_int> {
    c_int::try_from(channel).map_err(|_| Error::InvalidArgument {
        function,
        detail: format!("channel {channel}"),
    })
}

impl Zymkey {
    /// Sets what a breach of `channel` (0 or 1) does. On a device in
    /// production mode, [`PerimeterAction::SELF_DESTRUCT`] cannot be undone,
    /// and Zymbit allows each channel's action to be set only once after the
    /// lock.
    pub fn set_perimeter_event_action(
        &self,
        channel: usize,
        action: PerimeterAction,
    ) -> Result<()> {
        const FUNCTION: &str = "zkSetPerimeterEventAction";
        let f = self
            .lib
            .set_perimeter_action
            .ok_or(Error::Unsupported { function: FUNCTION })?;
        let channel = channel_arg(FUNCTION, channel)?;
        let mut s = self.session()?;
        // SAFETY: plain integer arguments.
        let rc = unsafe { f(s.ctx(), channel, action.bits()) };
        s.check(FUNCTION, rc).map(|_| ())
    }

    /// The latched breaches, one entry per channel.
    pub fn perimeter_events(&self) -> Result<PerimeterEvents> {
        const FUNCTION: &str = "zkGetPerimeterDetectInfo";
        let f = self
            .lib
            .perimeter_info
            .ok_or(Error::Unsupported { function: FUNCTION })?;
        let mut s = self.session()?;
        let mut list: *mut u32 = std::ptr::null_mut();
        let mut count: c_int = 0;
        // SAFETY: the library allocates `count` u32 into `list`.
        let rc = unsafe { f(s.ctx(), &mut list, &mut count) };
        let times = if list.is_null() {
            None
        } else {
            // Bounded before reading: a count past any device is malformed.
            let len = usize::try_from(count).unwrap_or(0).min(MAX_CHANNELS);
            // SAFETY: `list` holds `count` u32 from malloc (`len` at most that);
            // copied, then freed once.
            let v = unsafe { std::slice::from_raw_parts(list, len) }.to_vec();
            // SAFETY: as above; nothing reads `list` after this.
            unsafe { libc::free(list.cast()) };
            Some(v)
        };
        s.check(FUNCTION, rc)?;
        let count = usize::try_from(count)
            .ok()
            .filter(|n| *n <= MAX_CHANNELS)
            .ok_or_else(|| bad(FUNCTION, &format!("{count} channels")))?;
        let times = match times {
            Some(times) => times,
            None if count == 0 => Vec::new(),
            None => return Err(bad(FUNCTION, "no list")),
        };
        Ok(PerimeterEvents {
            first_breach: times.into_iter().map(|t| (t != 0).then_some(t)).collect(),
        })
    }

    /// Forgets every latched breach and rearms every channel.
    pub fn clear_perimeter_events(&self) -> Result<()> {
        const FUNCTION: &str = "zkClearPerimeterDetectEvents";
        let f = self
            .lib
            .clear_perimeter
            .ok_or(Error::Unsupported { function: FUNCTION })?;
        let mut s = self.session()?;
        // SAFETY: the context is the only argument.
        let rc = unsafe { f(s.ctx()) };
        s.check(FUNCTION, rc).map(|_| ())
    }

    /// Waits up to `timeout` (whole milliseconds, at most `u32::MAX`; zero
    /// looks without waiting) for a breach on a channel set to notify:
    /// `true` for one, `false` when the time ran out. A timeout keeps the
    /// device context open. The wait holds this `Zymkey`'s context all
    /// along: a program that signs meanwhile waits with a `Zymkey` of its own.
    pub fn wait_for_perimeter_event(&self, timeout: Duration) -> Result<bool> {
        const FUNCTION: &str = "zkWaitForPerimeterEvent";
        let f = self
            .lib
            .wait_perimeter
            .ok_or(Error::Unsupported { function: FUNCTION })?;
        let timeout_ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
        let mut s = self.session()?;
        // SAFETY: plain integer arguments.
        let rc = unsafe { f(s.ctx(), timeout_ms) };
        if rc == -libc::ETIMEDOUT {
            return Ok(false);
        }
        s.check(FUNCTION, rc).map(|_| true)
    }

    /// The digital perimeter's low-power period, in microseconds (HSM6, HSM60, SCM).
    pub fn set_digital_perimeter_lp_period(&self, microseconds: i32) -> Result<()> {
        const FUNCTION: &str = "zkSetDigitalPerimeterDetectLPPeriod";
        let f = self
            .lib
            .digital_lp_period
            .ok_or(Error::Unsupported { function: FUNCTION })?;
        let mut s = self.session()?;
        // SAFETY: plain integer arguments.
        let rc = unsafe { f(s.ctx(), microseconds) };
        s.check(FUNCTION, rc).map(|_| ())
    }

    /// The digital perimeter's maximum number of bits (HSM6, HSM60, SCM).
    pub fn set_digital_perimeter_lp_max_bits(&self, bits: i32) -> Result<()> {
        const FUNCTION: &str = "zkSetDigitalPerimeterDetectLPMaxBits";
        let f = self
            .lib
            .digital_lp_max_bits
            .ok_or(Error::Unsupported { function: FUNCTION })?;
        let mut s = self.session()?;
        // SAFETY: plain integer arguments.
        let rc = unsafe { f(s.ctx(), bits) };
        s.check(FUNCTION, rc).map(|_| ())
    }

    /// The digital perimeter's minimum and maximum delays, in nanoseconds
    /// (HSM6, HSM60, SCM).
    pub fn set_digital_perimeter_delays(&self, min_ns: i32, max_ns: i32) -> Result<()> {
        const FUNCTION: &str = "zkSetDigitalPerimeterDetectDelays";
        let f = self
            .lib
            .digital_delays
            .ok_or(Error::Unsupported { function: FUNCTION })?;
        let mut s = self.session()?;
        // SAFETY: plain integer arguments.
        let rc = unsafe { f(s.ctx(), min_ns, max_ns) };
        s.check(FUNCTION, rc).map(|_| ())
    }

    /// Locks the binding: production mode, for good. From then on a breach on
    /// a self-destruct channel destroys every key of the device.
    pub fn lock_binding(&self) -> Result<()> {
        const FUNCTION: &str = "zkLockBinding";
        let f = self
            .lib
            .lock_binding
            .ok_or(Error::Unsupported { function: FUNCTION })?;
        let mut s = self.session()?;
        // SAFETY: the context is the only argument.
        let rc = unsafe { f(s.ctx()) };
        s.check(FUNCTION, rc).map(|_| ())
    }

    /// Whether the binding is locked (production mode) and the device bound to this host.
    pub fn binding_info(&self) -> Result<BindingInfo> {
        const FUNCTION: &str = "zkGetCurrentBindingInfo";
        let f = self
            .lib
            .binding_info
            .ok_or(Error::Unsupported { function: FUNCTION })?;
        let mut s = self.session()?;
        let (mut locked, mut bound) = (false, false);
        // SAFETY: writes one bool into each of two distinct locals.
        let rc = unsafe { f(s.ctx(), &mut locked, &mut bound) };
        s.check(FUNCTION, rc)?;
        Ok(BindingInfo { locked, bound })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_are_the_header_flags() {
        assert_eq!(PerimeterAction::NOTIFY.bits(), 1);
        assert_eq!(PerimeterAction::SELF_DESTRUCT.bits(), 2);
        let both = PerimeterAction::NOTIFY | PerimeterAction::SELF_DESTRUCT;
        assert_eq!(both.bits(), 3);
        assert!(both.notifies() && both.self_destructs());
        assert_eq!(PerimeterAction::from_bits(3), Some(both));
        assert_eq!(PerimeterAction::from_bits(4), None);
        assert_eq!(PerimeterAction::default(), PerimeterAction::NONE);
    }

    #[test]
    fn actions_by_name() {
        for (text, bits, shown) in [
            ("none", 0, "none"),
            ("notify", 1, "notify"),
            ("self-destruct", 2, "self-destruct"),
            ("SELF_DESTRUCT", 2, "self-destruct"),
            ("notify+self-destruct", 3, "notify+self-destruct"),
            ("self-destruct, notify", 3, "notify+self-destruct"),
            ("none+notify", 1, "notify"),
        ] {
            let action: PerimeterAction = text.parse().unwrap();
            assert_eq!(action.bits(), bits, "{text}");
            assert_eq!(action.to_string(), shown, "{text}");
            assert_eq!(shown.parse::<PerimeterAction>(), Ok(action));
        }
        for bad in ["", "destroy", "notify+", "notify self-destruct"] {
            assert!(bad.parse::<PerimeterAction>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn events_by_channel() {
        let events = PerimeterEvents {
            first_breach: vec![None, Some(1_700_000_000)],
        };
        assert_eq!(events.channels(), 2);
        assert!(events.any());
        assert_eq!(events.breached().collect::<Vec<_>>(), [(1, 1_700_000_000)]);
        assert!(!PerimeterEvents {
            first_breach: vec![None, None]
        }
        .any());
    }
}
