//! `zkiot`: the command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use zkiot::GlobalOpts;

/// Hardware-bound AWS IoT identities for devices with a Zymbit security module.
///
/// The flow: `ca init` → `aws register-ca` → `aws setup` (operator, once); `device csr` (device)
/// → `ca sign` (operator) → `device install-cert` (device) → `aws register-device` (operator);
/// then `device credentials` on the device prints temporary AWS credentials.
#[derive(Debug, Parser)]
#[command(
    name = "zkiot",
    version,
    propagate_version = true,
    max_term_width = 100
)]
struct Cli {
    /// The operator's folder: ca/ca.crt (with ca/ca.key or ca/ca.toml), devices/<thing>/…
    /// [default: ${XDG_DATA_HOME:-$HOME/.local/share}/zkiot]
    #[arg(
        long,
        global = true,
        env = "ZKIOT_HOME",
        value_name = "DIR",
        help_heading = "Global options"
    )]
    home: Option<PathBuf>,
    /// PKCS#11 module for the device commands, and for the CA's token in `ca init --key`
    /// [default: /usr/local/lib/zkiot/libzkpkcs11.so if installed, else p11-kit-proxy]
    #[arg(
        long,
        global = true,
        env = "ZKIOT_PKCS11_MODULE",
        value_name = "PATH",
        help_heading = "Global options"
    )]
    module: Option<PathBuf>,
    /// Label of the token that holds the device key
    /// [default: token_label in the zkiot configuration, else zymkey]
    #[arg(
        long,
        global = true,
        env = "ZKIOT_TOKEN_LABEL",
        help_heading = "Global options"
    )]
    token_label: Option<String>,
    /// Say more about what was read and decided.
    #[arg(long, short, global = true, help_heading = "Global options")]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of its largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// The certificate authority that issues device certificates (operator).
    #[command(subcommand)]
    Ca(zkiot::ca::CaCommand),
    /// Device identity, CSR, certificate and credentials (on the device).
    #[command(subcommand)]
    Device(zkiot::device::DeviceCommand),
    /// AWS IoT registration and set-up (operator).
    #[cfg(feature = "aws")]
    #[command(subcommand)]
    Aws(zkiot::aws::AwsCommand),
    /// Provision many devices at once (operator).
    #[cfg(feature = "aws")]
    #[command(subcommand)]
    Fleet(zkiot::aws::FleetCommand),
}

fn main() -> ExitCode {
    // Like other command-line tools, end quietly when the reader of stdout goes away
    // (`zkiot … | head -1`) instead of panicking on a broken pipe. Every file is written
    // before its step is reported, so nothing is left half-done.
    // SAFETY: called first in main, before any other thread exists; SIG_DFL is a valid handler.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let global = GlobalOpts {
        home_explicit: cli.home.is_some(),
        home: cli.home.unwrap_or_else(zkiot::default_home),
        module: cli.module.unwrap_or_else(zkiot::default_module),
        token_label: cli.token_label.filter(|l| !l.is_empty()),
        verbose: cli.verbose,
    };
    let result = match cli.command {
        Command::Ca(command) => zkiot::ca::run(command, &global),
        Command::Device(command) => zkiot::device::run(command, &global),
        #[cfg(feature = "aws")]
        Command::Aws(command) => zkiot::aws::run(command, &global),
        #[cfg(feature = "aws")]
        Command::Fleet(command) => zkiot::aws::run_fleet(command, &global),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let text = format!("{error:#}").replace('\n', " ");
            eprintln!("zkiot: error: {text}");
            ExitCode::FAILURE
        }
    }
}
