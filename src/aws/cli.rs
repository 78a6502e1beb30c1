//! `zkiot aws …` and `zkiot fleet …` as clap parses them.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::client::AwsOpts;
use super::state::{
    DEFAULT_CREDENTIAL_DURATION, DEFAULT_POLICY_NAME, DEFAULT_ROLE_ALIAS, DEFAULT_ROLE_NAME,
};

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
    /// Deactivate the certificates of one device, a Thing group or a list (reversible with
    /// `unsilence`): the credentials provider refuses them at once.
    Silence(TargetArgs),
    /// Reactivate silenced certificates. A revoked certificate stays revoked.
    Unsilence(TargetArgs),
    /// Revoke the certificates of one device, a Thing group or a list. Final: AWS never lets a
    /// revoked certificate back.
    Revoke {
        #[command(flatten)]
        target: TargetArgs,
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
    /// Also put the Thing in this (static) Thing group, created if missing.
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,
    #[command(flatten)]
    pub aws: AwsOpts,
}

/// The devices a status change applies to: one Thing, the members of a Thing group, or the
/// Things named in a file.
#[derive(Debug, Args)]
#[group(id = "targets", required = true, multiple = false, args = ["thing", "group", "things_file"])]
pub struct TargetArgs {
    /// One device's Thing name.
    #[arg(long)]
    pub thing: Option<String>,
    /// Every Thing in this Thing group.
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,
    /// A file of Thing names, one a line (blank lines and lines starting with # are skipped).
    #[arg(long, value_name = "FILE")]
    pub things_file: Option<PathBuf>,
    /// Things changed at the same time.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,
    #[command(flatten)]
    pub aws: AwsOpts,
}

/// `zkiot fleet …`.
#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Sign every CSR in a folder with the CA and register each device with AWS IoT.
    Provision(ProvisionArgs),
}

/// Options of `zkiot fleet provision`.
#[derive(Debug, Args)]
pub struct ProvisionArgs {
    /// Folder of CSRs (`*.csr`, PEM or DER), one per device; each CN is the thing name.
    #[arg(long, value_name = "DIR")]
    pub csr_dir: PathBuf,
    /// Devices registered at the same time.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,
    /// Record of what was done (JSON lines) [default: <home>/fleet/provision.jsonl].
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
    /// Validity of the device certificates, in days.
    #[arg(long, default_value_t = crate::ca::DEFAULT_DEVICE_DAYS)]
    pub days: u32,
    #[command(flatten)]
    pub aws: AwsOpts,
}
