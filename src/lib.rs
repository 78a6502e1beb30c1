//! zkiot: hardware-bound AWS IoT identities for devices with a Zymbit security module.
//!
//! The device's private key never leaves the Zymkey: every device-side operation signs through
//! the PKCS#11 module (`libzkpkcs11.so`), so the same code runs against the real device and the
//! emulator. The parts:
//!
//! - [`ca`]: the operator's certificate authority (`zkiot ca init`, `zkiot ca sign`, `zkiot ca
//!   status`): its key a file, in a PKCS#11 token, or AWS Private CA.
//! - [`device`]: the device's identity, CSR, certificate installation and temporary AWS
//!   credentials (`zkiot device …`). Builds without the AWS SDK, for the Raspberry Pi.
//! - `aws` (cargo feature `aws`): registration with AWS IoT, one device or a fleet
//!   (`zkiot aws …`, `zkiot fleet …`).
//! - [`p11`]: the PKCS#11 client ([`p11::P11Token`]) that the device side signs with, through
//!   any module.
//! - [`x509`], [`thing_name`], [`fsutil`], [`global`], [`duration`]: what the parts share.
//!
//! Each command folder has the same layout: `cli.rs` holds the clap types, `mod.rs` hands each
//! command to the file that runs it.

pub mod ca;
pub mod device;
pub mod duration;
pub mod fsutil;
pub mod global;
pub mod p11;
pub mod thing_name;
pub mod x509;

#[cfg(feature = "aws")]
pub mod aws;

pub use global::{default_home, default_module, GlobalOpts};
