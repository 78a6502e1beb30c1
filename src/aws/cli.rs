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
    /// key with a verification certificate whose CN is AWS's registration code, signed wherever
    /// the CA key lives (file, token, Private CA).
    RegisterCa {
        /// Register in SNI_ONLY mode: no verification certificate (so no CA signature), and the
        /// same CA may be registered by several AWS accounts in a region, as AWS recommends for
        /// shared CAs. Devices must send SNI (the credentials provider requires it anyway).
        #[arg(long)]
        sni_only: bool,
        #[command(flatten)]
        aws: AwsOpts,
    },
    /// Create the IAM role the credentials provider assumes, its role alias, and the IoT policy
    /// that lets device certificates use the alias; print the credentials endpoint.
    Setup(SetupArgs),
    /// Register one device certificate (signed by our CA), create its Thing, attach both and
    /// the IoT policy.
    RegisterDevice(RegisterDeviceArgs),
    /// Cut one device, a Thing group or a list off everything (reversible with `unsilence`):
    /// their certificates are deactivated (no new credentials, no new MQTT connection), their
    /// MQTT connections closed (iot-data DeleteConnection, client id = Thing name), and the
    /// credentials already issued to them refused by a Deny in the devices' role (inline policy
    /// zkiot-silenced, keyed by credentials-iot:AwsCertificateId). Prints, per device, what was
    /// cut and the worst case left.
    Silence(TargetArgs),
    /// Reactivate silenced certificates and take them off the deny list. A revoked certificate
    /// stays revoked; one that renewal retired stays retired.
    Unsilence(TargetArgs),
    /// Revoke the certificates of one device, a Thing group or a list, and cut them off as
    /// `silence` does. Final: AWS never lets a revoked certificate back.
    Revoke {
        #[command(flatten)]
        target: TargetArgs,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Check our CA's fleet for what Device Defender's audit would flag, from what AWS IoT holds;
    /// exit 1 on any finding.
    ///
    /// Findings: our CA or a device certificate expiring within --within (a renewal waiting for
    /// its device is none), a certificate on several Things, a Thing with several ACTIVE
    /// certificates (unless they are renewals of one for the same key), a certificate on no
    /// Thing, an INACTIVE or REVOKED certificate still on a Thing. Devices not seen, and those
    /// that reported a perimeter breach, are `aws sweep`'s.
    ///
    /// Reads the certificates and the Things a page at a time and each Thing's principals (one
    /// call per Thing); each ACTIVE certificate's expiry once, kept in
    /// aws/certificate-expiry.json.
    Audit(AuditArgs),
    /// Silence every device that reported a perimeter breach (its Zymkey's tamper sensor), and
    /// with --stale every device not seen for that long, as `aws silence` does.
    ///
    /// Reads the Things a page at a time (ListThings, 250 a call) and the attributes the
    /// devices' agents write on their own Thing: zkiot_tamper (the breaches their Zymkey
    /// latched) and zkiot_seen (their last heartbeat). A device that stops reporting is as
    /// suspect as one that reported a breach: a root attacker can stop the reports, not the
    /// silence. Ends with a summary; run it from a timer.
    Sweep(SweepArgs),
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
    /// Lifetime of the temporary credentials, in seconds (900–43200): also the longest a
    /// silenced device's credentials already issued can last where the role's Deny does not
    /// apply.
    #[arg(long, default_value_t = DEFAULT_CREDENTIAL_DURATION)]
    pub duration: i32,
    /// IAM policy (JSON file) granting the role what devices may do. Without it the role gets
    /// no permissions: the credentials then prove identity (sts:GetCallerIdentity) and nothing
    /// more.
    #[arg(long, value_name = "FILE")]
    pub permissions_policy: Option<PathBuf>,
    /// Also let devices renew their own certificates: an inline policy allowing
    /// iot:ListThingPrincipals and iot:UpdateThing on their own Thing and
    /// iot:DescribeCertificate (what `zkiot device credentials` calls to pick up a certificate
    /// `zkiot fleet renew` issued).
    #[arg(long)]
    pub renewal: bool,
    /// How long to wait for IAM to make a role this run created or changed usable by AWS IoT
    /// (IAM takes seconds to propagate a change, rarely up to a minute). The role alias is
    /// retried with backoff meanwhile, saying what it waits for; a role that existed unchanged
    /// is never waited for. E.g. 90s, 2m.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "60s", env = "ZKIOT_IAM_WAIT")]
    pub iam_wait: std::time::Duration,
    #[command(flatten)]
    pub aws: AwsOpts,
}

/// Options of `zkiot aws audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Report certificates, and the CA, that expire within this long (e.g. 30d, 12h).
    #[arg(long, value_parser = parse_duration, default_value = "30d")]
    pub within: std::time::Duration,
    /// Print the report as one JSON object instead of lines.
    #[arg(long)]
    pub json: bool,
    /// Things read at the same time.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,
    #[command(flatten)]
    pub aws: AwsOpts,
}

/// Options of `zkiot aws sweep`.
#[derive(Debug, Args)]
pub struct SweepArgs {
    /// Also silence every device whose last heartbeat is older than this (e.g. 7d, 36h); make
    /// it a few times the devices' heartbeat (6h by default). Without it, only breaches count.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub stale: Option<std::time::Duration>,
    /// With --stale, also silence our devices that never reported at all (by default they are
    /// only counted: a device installed before its agent first ran has not reported yet).
    #[arg(long, requires = "stale")]
    pub never_seen: bool,
    /// Say which devices would be silenced, and why, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub change: ChangeOpts,
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
    #[command(flatten)]
    pub change: ChangeOpts,
    #[command(flatten)]
    pub aws: AwsOpts,
}

/// How a status change runs, whichever command names the devices (`silence`, `unsilence`,
/// `revoke`, `sweep`).
#[derive(Debug, Args)]
pub struct ChangeOpts {
    /// Things changed at the same time.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,
    /// The AWS IoT data plane endpoint that closes devices' MQTT connections (DeleteConnection)
    /// [default: the endpoint override if one is in force, else the account's iot:Data-ATS
    /// endpoint from DescribeEndpoint].
    #[arg(long, value_name = "URL", env = "ZKIOT_IOT_DATA_ENDPOINT")]
    pub iot_data_endpoint: Option<String>,
}

/// `zkiot fleet …`.
#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Sign every CSR in a folder with the CA and register each device with AWS IoT.
    Provision(ProvisionArgs),
    /// Renew the certificates that expire soon, for the same device keys, and retire the old
    /// ones once each device has switched.
    ///
    /// For every Thing whose newest ACTIVE certificate from our CA expires within --within, a new
    /// certificate for the same public key (read from the registered certificate, which our CA
    /// must have issued) is issued, registered ACTIVE and attached to the Thing and the policy.
    /// The device picks it up by itself (`zkiot device credentials`) and records the switch in
    /// its Thing's `zkiot_certificate` attribute; then this command deactivates the older
    /// certificates, and revokes them once they have been inactive for --grace. A device that
    /// has not switched keeps its certificate. Run it daily.
    Renew(RenewArgs),
}

/// Options of `zkiot fleet renew`.
#[derive(Debug, Args)]
pub struct RenewArgs {
    /// Renew certificates that expire within this long (e.g. 30d, 12h).
    #[arg(long, value_parser = parse_duration, default_value = "30d")]
    pub within: std::time::Duration,
    /// Validity of the new certificates, in days.
    #[arg(long, default_value_t = crate::ca::DEFAULT_DEVICE_DAYS)]
    pub days: u32,
    /// How long an old certificate stays INACTIVE (undoable) before it is revoked.
    #[arg(long, value_parser = parse_duration, default_value = "7d")]
    pub grace: std::time::Duration,
    /// Things handled at the same time.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,
    /// Record of what was done (JSON lines) [default: <home>/fleet/renew.jsonl].
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
    /// Read every Thing's page (ListThings) even when the account's fleet indexing could find
    /// the Things to look at (it is used only within 7 days of such a walk from this machine).
    #[arg(long)]
    pub walk: bool,
    #[command(flatten)]
    pub aws: AwsOpts,
}

pub use crate::duration::parse_duration;

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
