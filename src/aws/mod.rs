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

mod attributes;
mod audit;
mod batch;
mod cli;
mod client;
mod days;
pub mod deny;
mod expiry;
mod fleet;
mod index;
mod inventory;
mod limiter;
pub mod policy;
mod record;
mod register_ca;
mod rekey;
mod renew;
mod setup;
mod silence;
pub mod state;
mod sweep;
mod thing;

pub use cli::{AwsCommand, FleetCommand};
pub use client::{Aws, AwsOpts, Unreachable};
pub use silence::{set_certificate_status, StatusChange};
pub use state::{
    AwsState, DEFAULT_CREDENTIAL_DURATION, DEFAULT_POLICY_NAME, DEFAULT_ROLE_ALIAS,
    DEFAULT_ROLE_NAME,
};
pub use thing::{
    check_device_certificate, register_prepared, RegisterOutcome, RegistrationPrerequisites,
};

use anyhow::Result;

/// Runs one `zkiot aws` command.
pub fn run(cmd: AwsCommand, global: &crate::GlobalOpts) -> Result<()> {
    let runtime = client::runtime()?;
    runtime.block_on(async move {
        match cmd {
            AwsCommand::RegisterCa { sni_only, aws } => {
                let aws = Aws::connect(&aws).await?;
                register_ca::register_ca(&aws, global, sni_only).await
            }
            AwsCommand::Setup(args) => {
                let settings = setup::Settings::from_args(&args)?;
                let aws = Aws::connect(&args.aws).await?;
                setup::setup(&aws, global, &settings).await
            }
            AwsCommand::RegisterDevice(args) => {
                let aws = Aws::connect(&args.aws).await?;
                thing::register_device(
                    &aws,
                    global,
                    args.cert.as_deref(),
                    args.thing.as_deref(),
                    args.group.as_deref(),
                )
                .await
            }
            AwsCommand::Silence(t) => change_status(&t, StatusChange::Silence, global).await,
            AwsCommand::Unsilence(t) => change_status(&t, StatusChange::Unsilence, global).await,
            AwsCommand::Revoke { target, yes } => {
                let targets = silence::Targets::from_args(&target)?;
                if !yes {
                    confirm_revoke(&targets)?;
                }
                change_status(&target, StatusChange::Revoke, global).await
            }
            AwsCommand::Audit(args) => {
                let aws = Aws::connect(&args.aws).await?;
                audit::audit(&aws, global, &args).await
            }
            AwsCommand::Sweep(args) => {
                let aws = Aws::connect(&args.aws).await?;
                sweep::sweep(&aws, global, &args).await
            }
            AwsCommand::Status { thing, aws } => {
                let aws = Aws::connect(&aws).await?;
                thing::status(&aws, global, thing.as_deref()).await
            }
        }
    })
}

async fn change_status(
    target: &cli::TargetArgs,
    change: StatusChange,
    global: &crate::GlobalOpts,
) -> Result<()> {
    let targets = silence::Targets::from_args(target)?;
    let aws = Aws::connect(&target.aws).await?;
    silence::change_status(&aws, global, &targets, change, &target.change).await
}

/// Asks on the terminal; refuses outright when there is no terminal to ask on.
fn confirm_revoke(targets: &silence::Targets) -> Result<()> {
    use std::io::{BufRead, IsTerminal, Write};
    let what = match targets {
        silence::Targets::Thing(thing) => format!("the certificate of {thing}"),
        silence::Targets::Group(group) => {
            format!("the certificates of every thing in group {group}")
        }
        silence::Targets::File(file) => {
            format!(
                "the certificates of every thing named in {}",
                file.display()
            )
        }
        silence::Targets::Swept(things) => {
            format!("the certificates of the {} things swept", things.len())
        }
    };
    if !std::io::stdin().is_terminal() {
        anyhow::bail!("revoking {what} is final; pass --yes to confirm");
    }
    let expected = targets.confirmation();
    eprint!("Revoke {what}? This cannot be undone. Type {expected} to confirm: ");
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if answer.trim() != expected {
        anyhow::bail!("not confirmed; nothing revoked");
    }
    Ok(())
}

/// Runs one `zkiot fleet` command.
pub fn run_fleet(cmd: FleetCommand, global: &crate::GlobalOpts) -> Result<()> {
    match cmd {
        FleetCommand::Provision(args) => {
            client::runtime()?.block_on(fleet::provision(&args, global))
        }
        FleetCommand::Renew(args) => client::runtime()?.block_on(renew::renew(&args, global)),
    }
}
