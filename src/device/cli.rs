//! `zkiot device …` as clap parses it.

use std::path::PathBuf;

use clap::{Args, Subcommand};

/// `zkiot device …`: run these on the device.
#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Print the device's unique ID and the thing name derived from it.
    ///
    /// The ID is the SHA-256 of the text
    /// "zkiot-device-id-v1\nzymkey-serial=S\nhost-serial=H\n", in lowercase hex, where S is the
    /// Zymkey's serial number (the PKCS#11 token's serialNumber) and H the host's serial number
    /// (/proc/device-tree/serial-number or /sys/firmware/devicetree/base/serial-number on a
    /// Raspberry Pi, else /etc/machine-id), both trimmed. The thing name is "zk-" and the first
    /// 16 hex digits. --verbose shows S, H and where they came from.
    Id(IdArgs),
    /// Make a certificate signing request signed by the token's key (one device signature).
    Csr(CsrArgs),
    /// Install the signed device certificate: files in the device folder and a certificate object on the token.
    InstallCert(InstallCertArgs),
    /// Print temporary AWS credentials from the AWS IoT credentials provider (mutual TLS with the token's key).
    ///
    /// Usable as an AWS profile's `credential_process = zkiot device credentials`: the
    /// endpoint, role alias, thing name, CA bundle and the token and key labels default to the
    /// values install-cert saved in device.toml. Credentials are cached (0600) and reused until 5 minutes before they
    /// expire, so repeated calls do not sign again.
    Credentials(CredentialsArgs),
    /// Check Zymbit's library, the device and the PKCS#11 module; print what was found.
    ///
    /// Reports the library loaded (path, optional functions), the device's model, serial
    /// number, firmware and time, random bytes, and for each key slot the public key (format,
    /// length) and a signature over a known digest (r||s length, verified with that key and by
    /// the device); then a signature through the module's C_Sign, verified with the token's
    /// public key object; and how long each operation took. Exits non-zero, with a line per
    /// difference from what the module expects, when anything is off: attach its output
    /// (or --json) to a bug report.
    Selftest(SelftestArgs),
    /// Show the Zymkey's tamper (perimeter-breach) channels and their latched breaches; set what
    /// a breach does.
    ///
    /// A Zymkey has two perimeter circuits, channels 0 and 1. It latches the time of each
    /// channel's first breach, even with the host off while its battery lasts, until the events
    /// are cleared (--clear, once they are reported). A channel's action says what a breach
    /// does: notify (the host is told; software on the host, an attacker with root included, can
    /// ignore it), self-destruct (the Zymkey destroys every key it holds, at once, host on or
    /// off), both, or none.
    ///
    /// SELF-DESTRUCT IN PRODUCTION MODE IS PERMANENT FOR THE DEVICE: once the binding is locked,
    /// a self-destruct action cannot be turned off, and after a breach the Zymkey has no keys,
    /// for good; every certificate bound to its keys (its AWS IoT identity) stops working. In
    /// developer mode a breach is only latched and notified. After the lock, Zymbit allows each
    /// channel's action to be set once.
    ///
    /// The device cannot report its actions: the action shown is the one zkiot last set on this
    /// Zymkey (recorded in tamper.toml in the device folder). --set asks for confirmation (type
    /// the Zymkey's serial number for self-destruct, else yes); --yes skips it, for scripts.
    /// --json prints the report for machines.
    Tamper(TamperArgs),
    /// Run the device agent: renew the certificate, serve credentials to the device's apps.
    ///
    /// Renewal: the certificate's expiry is read from its file (no device operation); from a
    /// share of its lifetime (--renew-at, default 2/3, plus a jitter of up to 1/20 of the
    /// lifetime) the agent gets credentials and picks up the certificate the operator renewed
    /// (`zkiot fleet renew`), proves it with a credentials call, switches to it and runs
    /// --on-switch. Failures are retried with backoff (1 minute, doubling, at most --poll); the
    /// device keeps its certificate until a new one is proven. Local credentials: the AWS SDKs'
    /// container-credentials endpoint on 127.0.0.1 (AWS_CONTAINER_CREDENTIALS_FULL_URI), with
    /// the token in a file only the token group can read (AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE);
    /// credentials are kept in memory and fetched again before they expire, so an app's
    /// request while they are valid costs no device operation. --once does one renewal pass.
    Agent(AgentArgs),
    /// Check the device's set-up, each check named, with a hint when it fails.
    ///
    /// The Zymkey library, the PKCS#11 module and its p11-kit registration; the token and its
    /// device cache against the device; the certificate (for the token's key, from the
    /// installed CA, time left, on the token); the clock against the Zymkey's; that the
    /// endpoints resolve; the agent's service. Exits non-zero when any check fails.
    Check(CheckArgs),
}

#[derive(Debug, Args)]
pub struct TamperArgs {
    /// Zymbit library (default: $ZKIOT_ZKLIB, else `zklib` in the configuration file, else
    /// /usr/lib/libzk_app_utils.so: the one the module loads).
    #[arg(long)]
    pub library: Option<PathBuf>,
    /// Set a channel's action: CHANNEL is 0, 1 or all; ACTION is none, notify, self-destruct or
    /// notify+self-destruct. Repeat for each channel. Self-destruct in production mode is
    /// permanent.
    #[arg(long = "set", value_name = "CHANNEL=ACTION")]
    pub set: Vec<String>,
    /// Set the actions without asking.
    #[arg(long)]
    pub yes: bool,
    /// Clear the latched breaches after reporting them, which arms every channel again.
    #[arg(long)]
    pub clear: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Device folder, where tamper.toml records the actions set (default: /etc/zkiot/device as
    /// root, else $ZKIOT_HOME/device).
    #[arg(long, env = "ZKIOT_DEVICE_DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SelftestArgs {
    /// Zymbit library to test (default: $ZKIOT_ZKLIB, else `zklib` in the configuration file,
    /// else /usr/lib/libzk_app_utils.so: the one the module loads).
    #[arg(long)]
    pub library: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Check what the device computes when it signs with an Ed25519 key. Uses an Ed25519 key
    /// the device holds (a 32-byte public key whose signature verifies as Ed25519); with none,
    /// on a device that generates keys, makes a temporary one and removes it afterwards. The
    /// module offers no EdDSA signing until this says the device computes pure Ed25519.
    #[arg(long)]
    pub ed25519: bool,
}

#[derive(Debug, Args)]
pub struct IdArgs {
    /// Print only the thing name (zk-…).
    #[arg(long, conflicts_with = "hex")]
    pub short: bool,
    /// Print only the 64-digit ID.
    #[arg(long)]
    pub hex: bool,
}

#[derive(Debug, Args)]
pub struct CsrArgs {
    /// Thing name for the CN (default: the device ID's short form, zk-…).
    #[arg(long)]
    pub thing: Option<String>,
    /// Label of the private key on the token [default: slot 0's label in the zkiot
    /// configuration, else slot0].
    #[arg(long)]
    pub key_label: Option<String>,
    /// Where to write the CSR (default: device.csr in the device folder).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Device folder (default: /etc/zkiot/device as root, else $ZKIOT_HOME/device).
    #[arg(long, env = "ZKIOT_DEVICE_DIR")]
    pub dir: Option<PathBuf>,
    /// Replace an existing CSR that does not match.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct InstallCertArgs {
    /// The device certificate signed by the fleet CA (PEM or DER).
    #[arg(long)]
    pub cert: PathBuf,
    /// The fleet CA certificate that signed it (PEM).
    #[arg(long)]
    pub ca: PathBuf,
    /// Label of the private key on the token, saved in device.toml when given [default: slot
    /// 0's label in the zkiot configuration, else slot0].
    #[arg(long)]
    pub key_label: Option<String>,
    /// Device folder (default: /etc/zkiot/device as root, else $ZKIOT_HOME/device).
    #[arg(long, env = "ZKIOT_DEVICE_DIR")]
    pub dir: Option<PathBuf>,
    /// Credentials endpoint to save in device.toml (from `aws iot describe-endpoint --endpoint-type iot:CredentialProvider`).
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Role alias to save in device.toml.
    #[arg(long)]
    pub role_alias: Option<String>,
    /// CA bundle that verifies the credentials endpoint, to save in device.toml.
    #[arg(long)]
    pub ca_bundle: Option<PathBuf>,
    /// AWS IoT API endpoint where `device credentials` looks for a renewed certificate, to save
    /// in device.toml (default: https://iot.<region>.amazonaws.com, the region taken from the
    /// credentials endpoint).
    #[arg(long, value_name = "URL")]
    pub iot_api: Option<String>,
    /// Replace a different certificate already installed.
    #[arg(long)]
    pub force: bool,
}

/// Where the device gets its credentials: what `device credentials`, `device agent` and `device
/// check` share. Each value defaults to what `install-cert` saved in device.toml.
#[derive(Debug, Clone, Args)]
pub struct ConnectionArgs {
    /// Credentials endpoint host (HOST or HOST:PORT); default from device.toml.
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Role alias; default from device.toml.
    #[arg(long)]
    pub role_alias: Option<String>,
    /// Thing name sent as x-amzn-iot-thingname; default from device.toml, else the certificate's CN.
    #[arg(long)]
    pub thing: Option<String>,
    /// PEM bundle that verifies the endpoint's certificate (default from device.toml, else the
    /// system trust store, which holds Amazon's roots on Debian).
    #[arg(long)]
    pub ca_bundle: Option<PathBuf>,
    /// Connect to ADDR:PORT instead of resolving the endpoint (SNI and checks still use the endpoint name).
    #[arg(long, value_name = "ADDR:PORT")]
    pub connect: Option<String>,
    /// Device certificate (default from device.toml, else device.crt in the device folder).
    #[arg(long)]
    pub cert: Option<PathBuf>,
    /// Label of the private key on the token [default: from device.toml, else slot 0's label
    /// in the zkiot configuration, else slot0].
    #[arg(long)]
    pub key_label: Option<String>,
    /// Device folder (default: /etc/zkiot/device as root, else $ZKIOT_HOME/device).
    #[arg(long, env = "ZKIOT_DEVICE_DIR")]
    pub dir: Option<PathBuf>,
    /// Network timeout in seconds.
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
}

#[derive(Debug, Args)]
pub struct CredentialsArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// Output format.
    #[arg(long, value_enum, default_value = "process")]
    pub format: OutputFormat,
    /// Credentials cache (default: credentials.json in the device folder, 0600).
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Neither read nor write the cache.
    #[arg(long)]
    pub no_cache: bool,
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// One pass, then exit: renew if due (no device operation when not), serve nothing. For a
    /// timer or cron.
    #[arg(long)]
    pub once: bool,
    /// Share of the certificate's lifetime after which it is renewed: `2/3`, `0.75` or `80%`
    /// [default: renew_at in device.toml, else 2/3]. Each certificate adds its own jitter of up
    /// to 1/20 of its lifetime, so a fleet provisioned at once does not renew at once.
    #[arg(long, value_name = "SHARE", value_parser = super::agent::schedule::parse_share)]
    pub renew_at: Option<f64>,
    /// How often to look again once renewal is due and the operator has not yet issued the new
    /// certificate (`6h`, `30m`, ...) [default: renew_poll in device.toml, else 6h].
    #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse_duration)]
    pub poll: Option<std::time::Duration>,
    /// Command run (with `sh -c`) after the device switched to a new certificate, so that
    /// clients reading the certificate once (the AWS IoT Device SDK) take it [default: on_switch
    /// in device.toml]. It gets ZKIOT_CERT (the certificate file), ZKIOT_CERTIFICATE_ID and
    /// ZKIOT_THING in its environment.
    #[arg(long, value_name = "COMMAND")]
    pub on_switch: Option<String>,
    /// Where the local credentials endpoint listens, on the loopback interface only
    /// [default: listen in device.toml, else 127.0.0.1:9911]; `off` serves none.
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<String>,
    /// The file that holds the local endpoint's authorization token [default: token_file in
    /// device.toml, else /run/zkiot/credentials-token as root, else credentials-token in the
    /// device folder]. A new token is written at each start.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// The group that may read the token file (mode 0640) [default: token_group in device.toml,
    /// else zkiot-credentials if that group exists, else none: mode 0600].
    #[arg(long, value_name = "GROUP")]
    pub token_group: Option<String>,
    /// How often the agent writes on the device's Thing that it is alive (zkiot_seen), for
    /// `zkiot aws sweep --stale` (`6h`, `30m`, ...; `off`: never) [default: heartbeat in
    /// device.toml, else 6h]. Each fetch of credentials and each renewal pass reports too; a
    /// report needs no device operation while the agent holds fresh credentials.
    #[arg(long, value_name = "DURATION|off", value_parser = parse_heartbeat)]
    pub heartbeat: Option<Heartbeat>,
    /// Fetch credentials once and print them as JSON: what the long-running agent runs in a
    /// child process of its own when an app needs new ones.
    #[arg(long, hide = true, conflicts_with = "once")]
    pub fetch_credentials: bool,
    /// Watch the Zymkey's perimeter and print its latched breaches as JSON lines: what the
    /// long-running agent runs in a child process of its own.
    #[arg(long, hide = true, conflicts_with_all = ["once", "fetch_credentials"])]
    pub watch_tamper: bool,
}

/// How often the agent reports that the device is alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heartbeat {
    Every(std::time::Duration),
    Off,
}

/// `--heartbeat` (and `heartbeat` in device.toml): a duration, or `off`.
pub fn parse_heartbeat(text: &str) -> Result<Heartbeat, String> {
    if text.trim() == "off" {
        return Ok(Heartbeat::Off);
    }
    let every = crate::duration::parse_duration(text)?;
    if every < std::time::Duration::from_secs(1) {
        return Err(format!(
            "{text:?}: a heartbeat needs at least 1s between reports, or off"
        ));
    }
    Ok(Heartbeat::Every(every))
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// Zymbit library to check (default: $ZKIOT_ZKLIB, else `zklib` in the configuration file,
    /// else /usr/lib/libzk_app_utils.so: the one the module loads).
    #[arg(long)]
    pub library: Option<PathBuf>,
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
    /// Largest difference allowed between this machine's clock and the Zymkey's, in seconds.
    #[arg(long, default_value_t = 300)]
    pub max_clock_skew: u64,
}

/// Output formats of `zkiot device credentials`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// AWS `credential_process` JSON (`Version: 1`).
    Process,
    /// The provider's credentials object as it came.
    Json,
    /// `export AWS_…=…` lines for a shell.
    Env,
}
