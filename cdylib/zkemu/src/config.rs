//! Settings read from the environment at each `zkOpen`.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use crate::model::Model;

/// State directory; default `${XDG_STATE_HOME:-$HOME/.local/state}/zkiot-emu`.
pub const DIR_ENV: &str = "ZKIOT_EMU_DIR";
/// Model of a state created by this open: `ZYMKEY4i` (default) or `HSM6`.
pub const MODEL_ENV: &str = "ZKIOT_EMU_MODEL";
/// Delay added to every operation that reaches the secure element (all but
/// `zkOpen` and `zkClose`), in whole milliseconds (default 0).
pub const LATENCY_ENV: &str = "ZKIOT_EMU_LATENCY_MS";
/// File that receives one `<operation> <slot>` line per device operation.
pub const TRACE_ENV: &str = "ZKIOT_EMU_TRACE";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub dir: PathBuf,
    /// The model asked for, if any; only used when the state is created.
    pub model: Option<Model>,
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
        let model = match var(MODEL_ENV) {
            None => None,
            Some(name) => {
                let name = name.to_string_lossy();
                Some(Model::from_name(&name).ok_or_else(|| {
                    format!(
                        "{MODEL_ENV}={name:?} is not a model this emulator knows \
                         (use ZYMKEY4i or HSM6)"
                    )
                })?)
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
            model,
            latency,
            trace: var(TRACE_ENV).map(PathBuf::from),
        })
    }
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
        assert_eq!((c.model, c.latency, c.trace), (None, Duration::ZERO, None));
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
            (MODEL_ENV, "HSM6"),
            (LATENCY_ENV, "25"),
            (TRACE_ENV, "/t"),
        ])
        .unwrap();
        assert_eq!(c.dir, PathBuf::from("/s"));
        assert_eq!(c.model, Some(Model::Hsm6));
        assert_eq!(c.latency, Duration::from_millis(25));
        assert_eq!(c.trace, Some(PathBuf::from("/t")));
    }

    #[test]
    fn bad_values_are_explained() {
        let e = config(&[(DIR_ENV, "/s"), (MODEL_ENV, "HSM4")]).unwrap_err();
        assert!(e.contains("HSM4") && e.contains("ZYMKEY4i or HSM6"), "{e}");
        let e = config(&[(DIR_ENV, "/s"), (LATENCY_ENV, "fast")]).unwrap_err();
        assert!(e.contains(LATENCY_ENV), "{e}");
    }
}
