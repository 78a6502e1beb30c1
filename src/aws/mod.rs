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

mod cli;
mod client;
mod fleet;
pub mod policy;
mod register_ca;
mod setup;
pub mod state;
mod thing;

pub use cli::{AwsCommand, FleetCommand};
pub use client::{Aws, AwsOpts, Unreachable};
pub use state::{
    AwsState, DEFAULT_CREDENTIAL_DURATION, DEFAULT_POLICY_NAME, DEFAULT_ROLE_ALIAS,
    DEFAULT_ROLE_NAME,
};
pub use thing::{
    check_device_certificate, register_prepared, set_certificate_status, RegisterOutcome,
    RegistrationPrerequisites, StatusChange,
};

use anyhow::Result;

/// Runs one `zkiot aws` command.
pub fn run(cmd: AwsCommand, global: &crate::GlobalOpts) -> Result<()> {
    let runtime = client::runtime()?;
    runtime.block_on(async move {
        match cmd {
            AwsCommand::RegisterCa { aws } => {
                let aws = Aws::connect(&aws).await?;
                register_ca::register_ca(&aws, global).await
            }
            AwsCommand::Setup(args) => {
                let settings = setup::Settings::from_args(&args)?;
                let aws = Aws::connect(&args.aws).await?;
                setup::setup(&aws, global, &settings).await
            }
            AwsCommand::RegisterDevice(args) => {
                let aws = Aws::connect(&args.aws).await?;
                thing::register_device(&aws, global, args.cert.as_deref(), args.thing.as_deref())
                    .await
            }
            AwsCommand::Silence(t) => {
                let aws = Aws::connect(&t.aws).await?;
                thing::change_status(&aws, &t.thing, StatusChange::Silence).await
            }
            AwsCommand::Unsilence(t) => {
                let aws = Aws::connect(&t.aws).await?;
                thing::change_status(&aws, &t.thing, StatusChange::Unsilence).await
            }
            AwsCommand::Revoke { target, yes } => {
                if !yes {
                    confirm_revoke(&target.thing)?;
                }
                let aws = Aws::connect(&target.aws).await?;
                thing::change_status(&aws, &target.thing, StatusChange::Revoke).await
            }
            AwsCommand::Status { thing, aws } => {
                let aws = Aws::connect(&aws).await?;
                thing::status(&aws, global, thing.as_deref()).await
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

/// Runs one `zkiot fleet` command.
pub fn run_fleet(cmd: FleetCommand, global: &crate::GlobalOpts) -> Result<()> {
    match cmd {
        FleetCommand::Provision(args) => {
            client::runtime()?.block_on(fleet::provision(&args, global))
        }
    }
}
