//! zkiot: hardware-bound AWS IoT identities for devices with a Zymbit security module.
//!
//! The device's private key never leaves the Zymkey: every device-side operation signs through
//! the PKCS#11 module (`libzkpkcs11.so`), so the same code runs against the real device and the
//! emulator. The parts:
//!
//! - [`ca`]: the operator's certificate authority (`zkiot ca init`, `zkiot ca sign`).
//! - [`device`]: the device's identity, CSR, certificate installation and temporary AWS
//!   credentials (`zkiot device …`). Builds without the AWS SDK, for the Raspberry Pi.
//! - `aws`, `fleet` (cargo feature `aws`): registration with AWS IoT, one device or many.
//! - [`token`]: the PKCS#11 client that the device side signs with.

pub mod ca;
mod cli;
pub mod device;
pub mod fsutil;
pub mod thing;
pub mod token;

#[cfg(feature = "aws")]
pub mod aws;
#[cfg(feature = "aws")]
pub mod fleet;

pub use cli::{default_home, default_module, GlobalOpts};
