//! The PKCS#11 call-sequence harness: a fresh emulator state (a copy of one
//! made at start-up) and object store per input, the module's function list,
//! and the checks made after every call.
//!
//! - [`setup`]: what start-up prepares once per process (the work directory,
//!   the template emulator state and store, the device's keys);
//! - [`op`]: the calls an input decodes to ([`Op`]) and how their arguments
//!   become C values;
//! - [`oracle`]: what must hold after every call;
//! - [`harness`]: [`Harness`], which makes each call through the module's
//!   function list (one file per PKCS#11 chapter below it) and checks it.
//!
//! Environment: `ZKIOT_ZKLIB` names the emulator library (required);
//! `ZKIOT_FUZZ_WORK` a scratch directory (default: a new one under the
//! system temporary directory).

mod harness;
mod op;
mod oracle;
mod setup;

pub use harness::Harness;
pub use op::Op;
