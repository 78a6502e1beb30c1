//! The device side: identity, CSR, certificate installation and temporary AWS credentials.
//!
//! Everything here signs through the PKCS#11 module ([`crate::p11`]); the private key never
//! leaves the Zymkey, and nothing here needs the AWS SDK, so it builds for the Raspberry Pi with
//! `--no-default-features`.
//!
//! The commands (`zkiot device …`) are parsed in `cli.rs` and each runs in its own file:
//! `id`, `csr`, `install-cert` (`install.rs`), `credentials` ([`credentials`]), `selftest`,
//! `tamper` (the Zymkey's perimeter channels, through Zymbit's library), `agent` ([`agent`]:
//! renewal and local credentials, long-running) and `check` (`check.rs`). Under them:
//! - [`labels::Labels`]: which token and which key, by label (from the command line, then
//!   `device.toml`, then the zkiot configuration the module reads).
//! - [`id::DeviceId`]: the device ID and its short, thing-name form (algorithm in [`id`]).
//! - [`csr::build_csr`] / [`csr::check_csr`]: a CSR signed by the token.
//! - [`config::DeviceConfig`], [`config::device_dir`]: the device folder and `device.toml`.
//! - [`settings::DeviceSettings`]: what `credentials` and the agent work with, resolved once
//!   from their flags, `device.toml` and the defaults.
//! - [`certificate::check_device_certificate`]: whether a certificate is this device's.
//! - [`renewal`]: the device's side of certificate renewal, for the same key; [`rekey`]: with
//!   a fresh key where the Zymkey makes keys; [`hook`]: the command run after a switch.
//! - [`report`]: what the device writes on its own Thing: its heartbeat and the perimeter
//!   breaches its Zymkey latched.
//! - [`net`]: the network client: the AWS IoT credentials provider ([`net::provider`]) over
//!   mutual TLS with the token's key ([`net::tls`]), the AWS IoT API calls of renewal
//!   ([`net::iot_api`]), and a small HTTP/1.1 client ([`net::http`]).

pub mod agent;
pub mod certificate;
mod check;
pub mod cli;
pub mod config;
pub mod credentials;
pub mod csr;
pub mod hook;
pub mod id;
mod install;
pub mod labels;
pub mod net;
pub mod rekey;
pub mod renewal;
pub mod report;
mod selftest;
pub mod settings;
mod tamper;

use anyhow::Result;

use crate::GlobalOpts;
pub use cli::{DeviceCommand, OutputFormat};
pub use id::DeviceId;

/// Runs one `zkiot device …` command.
pub fn run(command: DeviceCommand, global: &GlobalOpts) -> Result<()> {
    match command {
        DeviceCommand::Id(args) => id::run(args, global),
        DeviceCommand::Csr(args) => csr::run(args, global),
        DeviceCommand::InstallCert(args) => install::run(args, global),
        DeviceCommand::Credentials(args) => credentials::run(args, global),
        DeviceCommand::Selftest(args) => selftest::run(args, global),
        DeviceCommand::Tamper(args) => tamper::run(args, global),
        DeviceCommand::Agent(args) => agent::run(args, global),
        DeviceCommand::Check(args) => check::run(args, global),
    }
}
