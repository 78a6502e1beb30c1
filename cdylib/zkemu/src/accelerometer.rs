//! The accelerometer of the profiles that have one: tap sensitivity, waiting
//! for a tap, and readings.
//!
//! The emulated device lies flat and still: 1 g on the Z axis, 0 on X and Y,
//! no tap direction on any axis. A tap happens only when a test asks for one:
//! if `$ZKIOT_EMU_DIR/tap-next` exists, the next `zkWaitForTap`, in any
//! process, removes it and returns 0 (at once, or as soon as the file appears
//! while it waits). The tap sensitivity is checked and accepted, not kept: an
//! injected tap is seen whatever it is.

use std::ffi::c_int;
use std::fs;
use std::io::ErrorKind;
use std::time::{Duration, Instant};

use crate::errno::{Errno, Result};
use crate::state::StateDir;

pub const TAP_NEXT_FILE: &str = "tap-next";

/// How often a waiting `zkWaitForTap` looks for an injected tap.
const POLL: Duration = Duration::from_millis(10);

/// `ZK_ACCEL_AXIS_ALL`, the last `ZK_ACCEL_AXIS_TYPE` (X, Y, Z are 0, 1, 2).
const AXIS_ALL: c_int = 3;

/// `zkAccelAxisDataType`: one axis of `zkGetAccelerometerData`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct AxisData {
    /// The reading, in units of g.
    pub g: f64,
    /// The direction of the force along the axis that caused a tap: -1, +1,
    /// or 0 for none.
    pub tap_direction: c_int,
}

/// What the emulated accelerometer reads, X, Y, Z: at rest, lying flat.
pub const AT_REST: [AxisData; 3] = [
    AxisData {
        g: 0.0,
        tap_direction: 0,
    },
    AxisData {
        g: 0.0,
        tap_direction: 0,
    },
    AxisData {
        g: 1.0,
        tap_direction: 0,
    },
];

/// Checks the arguments of `zkSetTapSensitivity`: an axis of
/// `ZK_ACCEL_AXIS_TYPE` and a percentage from 0 (off) to 100 (most
/// sensitive); anything else, NaN included, is `EINVAL`.
pub fn check_sensitivity(axis: c_int, percent: f32) -> Result<()> {
    if (0..=AXIS_ALL).contains(&axis) && (0.0..=100.0).contains(&percent) {
        Ok(())
    } else {
        Err(Errno::INVAL)
    }
}

/// `zkWaitForTap`: 0 for an injected tap, `ETIMEDOUT` once `timeout` has
/// passed without one (a zero timeout looks once and does not wait).
pub fn wait_for_tap(state: &StateDir, timeout: Duration) -> Result<()> {
    let start = Instant::now();
    loop {
        if take_tap(state)? {
            return Ok(());
        }
        let waited = start.elapsed();
        if waited >= timeout {
            return Err(Errno::TIMEDOUT);
        }
        std::thread::sleep(POLL.min(timeout - waited));
    }
}

/// Whether a tap was injected; consumes it. Removing the file is the claim,
/// so exactly one waiter, in one process, gets each tap.
fn take_tap(state: &StateDir) -> Result<bool> {
    match fs::remove_file(state.path(TAP_NEXT_FILE)) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sensitivity_is_a_percentage_of_an_axis() {
        for axis in 0..=3 {
            for percent in [0.0, 50.5, 100.0] {
                assert_eq!(check_sensitivity(axis, percent), Ok(()));
            }
        }
        for (axis, percent) in [
            (-1, 50.0),
            (4, 50.0),
            (0, -0.5),
            (0, 100.5),
            (0, f32::NAN),
            (0, f32::INFINITY),
        ] {
            assert_eq!(
                check_sensitivity(axis, percent),
                Err(Errno::INVAL),
                "{axis} {percent}"
            );
        }
    }

    #[test]
    fn waits_out_its_timeout_without_a_tap() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path().to_path_buf());
        let start = Instant::now();
        assert_eq!(
            wait_for_tap(&state, Duration::from_millis(60)),
            Err(Errno::TIMEDOUT)
        );
        assert!(start.elapsed() >= Duration::from_millis(60));
        assert_eq!(wait_for_tap(&state, Duration::ZERO), Err(Errno::TIMEDOUT));
    }

    #[test]
    fn an_injected_tap_ends_one_wait() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path().to_path_buf());
        fs::write(state.path(TAP_NEXT_FILE), "").unwrap();
        assert_eq!(wait_for_tap(&state, Duration::ZERO), Ok(()));
        assert!(!state.path(TAP_NEXT_FILE).exists());
        assert_eq!(wait_for_tap(&state, Duration::ZERO), Err(Errno::TIMEDOUT));

        // A tap that comes while waiting ends the wait early.
        let path = state.path(TAP_NEXT_FILE);
        let tapper = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            fs::write(path, "").unwrap();
        });
        let start = Instant::now();
        assert_eq!(wait_for_tap(&state, Duration::from_secs(30)), Ok(()));
        assert!(start.elapsed() < Duration::from_secs(10));
        tapper.join().unwrap();
    }

    #[test]
    fn at_rest_it_reads_1_g_on_z() {
        let g: Vec<f64> = AT_REST.iter().map(|axis| axis.g).collect();
        assert_eq!(g, [0.0, 0.0, 1.0]);
        assert!(AT_REST.iter().all(|axis| axis.tap_direction == 0));
        // The C layout of zkAccelAxisDataType: a double, then an int.
        assert_eq!(std::mem::offset_of!(AxisData, tap_direction), 8);
    }
}
