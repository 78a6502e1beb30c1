//! The operator's side of AWS IoT: registering the CA, the role and policies the credentials
//! provider needs, and each device's certificate and Thing.
//!
//! Every command converges: it reads what exists, creates only what is missing, and says what
//! it did. The service is the source of truth; `aws.json` in the operator's folder only remembers
//! names and identifiers between runs (and the credentials endpoint, which must stay stable).
//!
//! AWS checks some things that emulators skip (certificate chains, terminal `REVOKED`, role
//! alias durations); those checks are made here, before any call, so the same commands behave
//! identically against AWS and against a local stand-in.

mod ca;
mod client;
mod device;
pub mod policy;
mod setup;
pub mod state;

use anyhow::Result;
use clap::{Args, Subcommand};
use std::path::PathBuf;

pub use client::{Aws, AwsOpts, Unreachable};
pub use device::{
    check_device_certificate, register_prepared, set_certificate_status, DevicePrerequisites,
    RegisterOutcome, StatusChange,
};
pub use setup::{
    DEFAULT_CREDENTIAL_DURATION, DEFAULT_POLICY_NAME, DEFAULT_ROLE_ALIAS, DEFAULT_ROLE_NAME,
};
pub use state::AwsState;

/// `zkiot aws …`: the operator's AWS IoT steps.
#[derive(Debug, Subcommand)]
pub enum AwsCommand {
    /// Register the CA with AWS IoT (active, auto-registration on), proving possession of its
    /// key with a verification certificate whose CN is AWS's registration code.
    RegisterCa {
        #[command(flatten)]
        aws: AwsOpts,
    },
    /// Create the IAM role the credentials provider assumes, its role alias, and the IoT policy
    /// that lets device certificates use the alias; print the credentials endpoint.
    Setup(SetupArgs),
    /// Register one device certificate (signed by our CA), create its Thing, attach both and
    /// the IoT policy.
    RegisterDevice(RegisterDeviceArgs),
    /// Deactivate a device's certificate (reversible with `unsilence`): the credentials provider
    /// refuses it at once.
    Silence(ThingArgs),
    /// Reactivate a silenced device's certificate. A revoked certificate stays revoked.
    Unsilence(ThingArgs),
    /// Revoke a device's certificate. Final: AWS never lets a revoked certificate back.
    Revoke {
        #[command(flatten)]
        target: ThingArgs,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Show what exists in AWS IoT for this operator (or for one Thing).
    Status {
        /// Show this Thing's certificates and policies.
        #[arg(long)]
        thing: Option<String>,
        #[command(flatten)]
        aws: AwsOpts,
    },
}

/// Options of `zkiot aws setup`.
#[derive(Debug, Args)]
pub struct SetupArgs {
    /// IAM role that devices' temporary credentials act as.
    #[arg(long, default_value = DEFAULT_ROLE_NAME)]
    pub role_name: String,
    /// Role alias devices name when they ask the credentials provider.
    #[arg(long, default_value = DEFAULT_ROLE_ALIAS)]
    pub role_alias: String,
    /// IoT policy attached to every device certificate.
    #[arg(long, default_value = DEFAULT_POLICY_NAME)]
    pub policy_name: String,
    /// Lifetime of the temporary credentials, in seconds (900–43200).
    #[arg(long, default_value_t = DEFAULT_CREDENTIAL_DURATION)]
    pub duration: i32,
    /// IAM policy (JSON file) granting the role what devices may do. Without it the role gets
    /// no permissions: the credentials then prove identity (sts:GetCallerIdentity) and nothing
    /// more.
    #[arg(long, value_name = "FILE")]
    pub permissions_policy: Option<PathBuf>,
    #[command(flatten)]
    pub aws: AwsOpts,
}

/// Options of `zkiot aws register-device`.
#[derive(Debug, Args)]
#[group(id = "device_source", required = true, multiple = true, args = ["cert", "thing"])]
pub struct RegisterDeviceArgs {
    /// The device certificate (PEM). Default: `devices/<thing>/device.crt` in the home folder.
    #[arg(long, value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// Thing name. Default: the certificate's CN.
    #[arg(long)]
    pub thing: Option<String>,
    #[command(flatten)]
    pub aws: AwsOpts,
}

/// A device, named by its Thing.
#[derive(Debug, Args)]
pub struct ThingArgs {
    /// The device's Thing name.
    #[arg(long)]
    pub thing: String,
    #[command(flatten)]
    pub aws: AwsOpts,
}

/// Runs one `zkiot aws` command.
pub fn run(cmd: AwsCommand, global: &crate::GlobalOpts) -> Result<()> {
    let runtime = client::runtime()?;
    runtime.block_on(async move {
        match cmd {
            AwsCommand::RegisterCa { aws } => {
                let aws = Aws::connect(&aws).await?;
                ca::register_ca(&aws, global).await
            }
            AwsCommand::Setup(args) => {
                let settings = setup::Settings::from_args(&args)?;
                let aws = Aws::connect(&args.aws).await?;
                setup::setup(&aws, global, &settings).await
            }
            AwsCommand::RegisterDevice(args) => {
                let aws = Aws::connect(&args.aws).await?;
                device::register_device(&aws, global, args.cert.as_deref(), args.thing.as_deref())
                    .await
            }
            AwsCommand::Silence(t) => {
                let aws = Aws::connect(&t.aws).await?;
                device::change_status(&aws, &t.thing, StatusChange::Silence).await
            }
            AwsCommand::Unsilence(t) => {
                let aws = Aws::connect(&t.aws).await?;
                device::change_status(&aws, &t.thing, StatusChange::Unsilence).await
            }
            AwsCommand::Revoke { target, yes } => {
                if !yes {
                    confirm_revoke(&target.thing)?;
                }
                let aws = Aws::connect(&target.aws).await?;
                device::change_status(&aws, &target.thing, StatusChange::Revoke).await
            }
            AwsCommand::Status { thing, aws } => {
                let aws = Aws::connect(&aws).await?;
                device::status(&aws, global, thing.as_deref()).await
            }
        }
    })
}

/// Asks on the terminal; refuses outright when there is no terminal to ask on.
fn confirm_revoke(thing: &str) -> Result<()> {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        anyhow::bail!("revoking {thing}'s certificate is final; pass --yes to confirm");
    }
    eprint!("Revoke the certificate of {thing}? This cannot be undone. Type the thing name to confirm: ");
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if answer.trim() != thing {
        anyhow::bail!("not confirmed; nothing revoked");
    }
    Ok(())
}
