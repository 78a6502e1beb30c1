//! Settings read from the environment at each `zkOpen`.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use crate::model::{Profile, FACTORY_SLOT_COUNTS};

/// State directory; default `${XDG_STATE_HOME:-$HOME/.local/state}/zkiot-emu`.
pub const DIR_ENV: &str = "ZKIOT_EMU_DIR";
/// Profile of a state created by this open (see [`Profile`]); default `ZYMKEY4i`.
pub const MODEL_ENV: &str = "ZKIOT_EMU_MODEL";
/// Model string of a `ZYMKEY5` state created by this open; default `ZYMKEY5`.
pub const MODEL_STRING_ENV: &str = "ZKIOT_EMU_MODEL_STRING";
/// Factory key slots of a key-store state created by this open, 1–16; default 12.
pub const FACTORY_SLOTS_ENV: &str = "ZKIOT_EMU_FACTORY_SLOTS";
/// Delay added to every operation that reaches the secure element (all but
/// `zkOpen` and `zkClose`), in whole milliseconds (default 0).
pub const LATENCY_ENV: &str = "ZKIOT_EMU_LATENCY_MS";
/// File that receives one `<operation> <slot>` line per device operation.
pub const TRACE_ENV: &str = "ZKIOT_EMU_TRACE";

/// Longest model string taken from `ZKIOT_EMU_MODEL_STRING`, in bytes.
pub const MAX_MODEL_STRING_LEN: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub dir: PathBuf,
    /// The profile asked for, if any; only used when the state is created.
    pub profile: Option<Profile>,
    /// The model string asked for, if any; only used when a `ZYMKEY5` state is created.
    pub model_string: Option<String>,
    /// The factory slot count asked for, if any; only used when a key-store
    /// state is created.
    pub factory_slots: Option<i32>,
    pub latency: Duration,
    pub trace: Option<PathBuf>,
}

impl Config {
    /// Reads the process environment; the error is a message for stderr.
    pub fn from_env() -> Result<Config, String> {
        Config::from_vars(|name| std::env::var_os(name))
    }

    /// Reads settings through `var`; unset and empty variables are the same.
    pub fn from_vars(var: impl Fn(&str) -> Option<OsString>) -> Result<Config, String> {
        let var = |name: &str| var(name).filter(|v| !v.is_empty());
        let dir = match var(DIR_ENV) {
            Some(dir) => PathBuf::from(dir),
            None => default_dir(&var).ok_or_else(|| {
                format!("no state directory: set {DIR_ENV} (or HOME or XDG_STATE_HOME)")
            })?,
        };
        let profile = match var(MODEL_ENV) {
            None => None,
            Some(name) => {
                let name = name.to_string_lossy();
                Some(Profile::from_name(&name).ok_or_else(|| {
                    format!(
                        "{MODEL_ENV}={name:?} is not a model this emulator knows (use {})",
                        Profile::names()
                    )
                })?)
            }
        };
        let model_string = var(MODEL_STRING_ENV).map(model_string).transpose()?;
        let factory_slots = match var(FACTORY_SLOTS_ENV) {
            None => None,
            Some(count) => {
                let count = count.to_string_lossy();
                let (low, high) = FACTORY_SLOT_COUNTS.into_inner();
                Some(
                    count
                        .trim()
                        .parse::<i32>()
                        .ok()
                        .filter(|n| FACTORY_SLOT_COUNTS.contains(n))
                        .ok_or_else(|| {
                            format!(
                                "{FACTORY_SLOTS_ENV}={count:?} is not a factory slot count \
                                 (use a whole number from {low} to {high})"
                            )
                        })?,
                )
            }
        };
        let latency = match var(LATENCY_ENV) {
            None => Duration::ZERO,
            Some(ms) => {
                let ms = ms.to_string_lossy();
                Duration::from_millis(ms.trim().parse::<u64>().map_err(|_| {
                    format!("{LATENCY_ENV}={ms:?} is not a whole number of milliseconds")
                })?)
            }
        };
        Ok(Config {
            dir,
            profile,
            model_string,
            factory_slots,
            latency,
            trace: var(TRACE_ENV).map(PathBuf::from),
        })
    }
}

/// A model string from `ZKIOT_EMU_MODEL_STRING`: text of at most
/// [`MAX_MODEL_STRING_LEN`] bytes with no control character, taken as given.
fn model_string(value: OsString) -> Result<String, String> {
    let text = value
        .into_string()
        .map_err(|value| format!("{MODEL_STRING_ENV}={value:?} is not UTF-8 text"))?;
    if text.len() > MAX_MODEL_STRING_LEN || text.chars().any(char::is_control) {
        return Err(format!(
            "{MODEL_STRING_ENV}={text:?} is not a model string \
             (at most {MAX_MODEL_STRING_LEN} bytes, no control characters)"
        ));
    }
    Ok(text)
}

fn default_dir(var: &impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    let state_home = var("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| var("HOME").map(|home| PathBuf::from(home).join(".local/state")))?;
    Some(state_home.join("zkiot-emu"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, String> {
        Config::from_vars(|name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| OsString::from(v))
        })
    }

    #[test]
    fn defaults() {
        let c = config(&[("HOME", "/home/u")]).unwrap();
        assert_eq!(c.dir, PathBuf::from("/home/u/.local/state/zkiot-emu"));
        assert_eq!(
            (c.profile, c.latency, c.trace),
            (None, Duration::ZERO, None)
        );
        assert_eq!((c.model_string, c.factory_slots), (None, None));
        let c = config(&[("HOME", "/home/u"), ("XDG_STATE_HOME", "/xdg")]).unwrap();
        assert_eq!(c.dir, PathBuf::from("/xdg/zkiot-emu"));
        let c = config(&[("HOME", "/home/u"), ("XDG_STATE_HOME", "rel")]).unwrap();
        assert_eq!(c.dir, PathBuf::from("/home/u/.local/state/zkiot-emu"));
        assert!(config(&[]).is_err());
    }

    #[test]
    fn explicit_settings() {
        let c = config(&[
            (DIR_ENV, "/s"),
            (MODEL_ENV, "ZYMKEY5"),
            (MODEL_STRING_ENV, "ZYMKEY FIVE"),
            (FACTORY_SLOTS_ENV, " 14 "),
            (LATENCY_ENV, "25"),
            (TRACE_ENV, "/t"),
        ])
        .unwrap();
        assert_eq!(c.dir, PathBuf::from("/s"));
        assert_eq!(c.profile, Some(Profile::Zymkey5));
        assert_eq!(c.model_string.as_deref(), Some("ZYMKEY FIVE"));
        assert_eq!(c.factory_slots, Some(14));
        assert_eq!(c.latency, Duration::from_millis(25));
        assert_eq!(c.trace, Some(PathBuf::from("/t")));
    }

    #[test]
    fn every_profile_is_a_model() {
        for profile in Profile::ALL {
            let c = config(&[(DIR_ENV, "/s"), (MODEL_ENV, profile.name())]).unwrap();
            assert_eq!(c.profile, Some(profile));
        }
    }

    #[test]
    fn factory_slot_counts_from_1_to_16() {
        for (value, count) in [("1", 1), ("12", 12), ("14", 14), ("16", 16)] {
            let c = config(&[(DIR_ENV, "/s"), (FACTORY_SLOTS_ENV, value)]).unwrap();
            assert_eq!(c.factory_slots, Some(count));
        }
        for value in ["0", "17", "-3", "twelve", "12.5", "0x0c"] {
            let e = config(&[(DIR_ENV, "/s"), (FACTORY_SLOTS_ENV, value)]).unwrap_err();
            assert!(
                e.contains(&format!("{FACTORY_SLOTS_ENV}={value:?}")) && e.contains("1 to 16"),
                "{e}"
            );
        }
    }

    #[test]
    fn model_strings_are_plain_text() {
        let c = config(&[(DIR_ENV, "/s"), (MODEL_STRING_ENV, "ZK5")]).unwrap();
        assert_eq!(c.model_string.as_deref(), Some("ZK5"));
        let longest = "M".repeat(MAX_MODEL_STRING_LEN);
        let c = config(&[(DIR_ENV, "/s"), (MODEL_STRING_ENV, &longest)]).unwrap();
        assert_eq!(c.model_string, Some(longest.clone()));
        for bad in [
            format!("{longest}M"),
            "ZYMKEY5\n".to_string(),
            "A\u{7f}".to_string(),
        ] {
            let e = config(&[(DIR_ENV, "/s"), (MODEL_STRING_ENV, &bad)]).unwrap_err();
            assert!(e.contains(MODEL_STRING_ENV), "{e}");
        }
    }

    #[test]
    fn bad_values_are_explained() {
        let e = config(&[(DIR_ENV, "/s"), (MODEL_ENV, "HSM4")]).unwrap_err();
        assert!(
            e.contains("HSM4")
                && e.contains("ZYMKEY4i, HSM6, ZYMKEY5, ZYMKEY5-PREPROD, ZYMKEY5-EDU or HSM60"),
            "{e}"
        );
        let e = config(&[(DIR_ENV, "/s"), (LATENCY_ENV, "fast")]).unwrap_err();
        assert!(e.contains(LATENCY_ENV), "{e}");
    }
}
