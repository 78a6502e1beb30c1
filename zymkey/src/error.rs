use std::path::PathBuf;

/// What went wrong talking to the Zymkey library.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The shared library could not be loaded at all.
    #[error(
        "cannot load the Zymkey library {path}: {reason} \
         (install Zymbit's zkapputilslib, or point ZKIOT_ZKLIB or `zklib` in the ZKIOT_CONF file at it)"
    )]
    LibraryNotFound { path: PathBuf, reason: String },

    /// The library loaded but lacks a symbol every Zymbit library has.
    #[error("{path} is not a Zymkey library: it has no symbol {symbol}")]
    MissingSymbol { path: PathBuf, symbol: &'static str },

    /// An optional function is absent from this (older) library.
    #[error("{function} is not supported by this Zymkey library")]
    Unsupported { function: &'static str },

    /// The library returned a failure: a negative errno.
    #[error("{function} failed: {} (errno {errno})", errno_text(*.errno))]
    Device { function: &'static str, errno: i32 },

    /// The library reported success but its output is not what the API promises.
    #[error("{function} returned malformed output: {detail}")]
    BadOutput {
        function: &'static str,
        detail: String,
    },

    /// The caller passed an argument the API cannot take.
    #[error("invalid argument to {function}: {detail}")]
    InvalidArgument {
        function: &'static str,
        detail: String,
    },
}

impl Error {
    /// The positive errno of a device failure, if this is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Device { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

fn errno_text(errno: i32) -> String {
    std::io::Error::from_raw_os_error(errno).to_string()
}

pub type Result<T> = std::result::Result<T, Error>;
