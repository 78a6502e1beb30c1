//! The device side: identity, CSR, certificate installation and temporary AWS credentials.
//!
//! Everything here signs through the PKCS#11 module ([`crate::token`]); the private key never
//! leaves the Zymkey, and nothing here needs the AWS SDK, so it builds for the Raspberry Pi with
//! `--no-default-features`.
//!
//! API for other parts of zkiot:
//! - [`id::DeviceId`]: the device ID and its short, thing-name form (algorithm in [`id`]).
//! - [`csr::build_csr`] / [`csr::check_csr`]: a CSR signed by the token.
//! - [`config::DeviceConfig`], [`config::device_dir`]: the device folder and `device.toml`.
//! - [`credentials::fetch`], [`credentials::render`]: credentials from the AWS IoT credentials
//!   provider over mutual TLS ([`tls`]).

pub mod config;
pub mod credentials;
pub mod csr;
pub mod id;
pub mod tls;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use openssl::x509::X509;

use crate::ca::{self, common_name, fingerprint, name_to_string};
use crate::fsutil;
use crate::token::{point_of, CertificateStored, Token, DEFAULT_KEY_LABEL};
use crate::GlobalOpts;
use config::{DeviceConfig, CACHE_FILE, CA_FILE, CERT_FILE};
pub use credentials::OutputFormat;
pub use id::DeviceId;

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
    /// endpoint, role alias, thing name and CA bundle default to the values install-cert saved
    /// in device.toml. Credentials are cached (0600) and reused until 5 minutes before they
    /// expire, so repeated calls do not sign again.
    Credentials(CredentialsArgs),
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
    /// Label of the private key on the token.
    #[arg(long, default_value = DEFAULT_KEY_LABEL)]
    pub key_label: String,
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
    /// Label of the private key on the token.
    #[arg(long, default_value = DEFAULT_KEY_LABEL)]
    pub key_label: String,
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
    /// Replace a different certificate already installed.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct CredentialsArgs {
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
    /// Output format.
    #[arg(long, value_enum, default_value = "process")]
    pub format: OutputFormat,
    /// Credentials cache (default: credentials.json in the device folder, 0600).
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Neither read nor write the cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Device certificate (default from device.toml, else device.crt in the device folder).
    #[arg(long)]
    pub cert: Option<PathBuf>,
    /// Label of the private key on the token (default from device.toml, else slot0).
    #[arg(long)]
    pub key_label: Option<String>,
    /// Device folder (default: /etc/zkiot/device as root, else $ZKIOT_HOME/device).
    #[arg(long, env = "ZKIOT_DEVICE_DIR")]
    pub dir: Option<PathBuf>,
    /// Network timeout in seconds.
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
}

/// Runs one `zkiot device …` command.
pub fn run(command: DeviceCommand, global: &GlobalOpts) -> Result<()> {
    match command {
        DeviceCommand::Id(args) => run_id(args, global),
        DeviceCommand::Csr(args) => run_csr(args, global),
        DeviceCommand::InstallCert(args) => run_install_cert(args, global),
        DeviceCommand::Credentials(args) => run_credentials(args, global),
    }
}

fn open_token(global: &GlobalOpts) -> Result<Token> {
    Token::open(&global.module, &global.token_label)
}

/// Reads the device ID through the token.
pub fn read_device_id(token: &Token) -> Result<DeviceId> {
    DeviceId::compute(
        id::zymkey_serial_input(token.label(), token.serial_number()),
        id::host_serial_input()?,
    )
}

fn run_id(args: IdArgs, global: &GlobalOpts) -> Result<()> {
    let token = open_token(global)?;
    let id = read_device_id(&token)?;
    if global.verbose {
        for input in id.inputs() {
            println!("{} = {}  (from {})", input.name, input.value, input.origin);
        }
    }
    if args.short {
        println!("{}", id.short());
    } else if args.hex {
        println!("{}", id.hex());
    } else {
        println!("device id:  {}", id.hex());
        println!("thing name: {}", id.short());
    }
    Ok(())
}

fn run_csr(args: CsrArgs, global: &GlobalOpts) -> Result<()> {
    let dir = config::device_dir(args.dir.as_deref(), global);
    let out = args.out.unwrap_or_else(|| dir.join("device.csr"));
    let token = open_token(global)?;
    let thing = match args.thing {
        Some(t) => t,
        None => read_device_id(&token)?.short(),
    };
    crate::thing::validate_thing_name(&thing)?;
    let key = token.find_key(&args.key_label)?;

    if out.exists() && !args.force {
        let existing = fsutil::read(&out)?;
        let matches = ca::parse_csr(&existing).and_then(|csr| csr::check_csr(&csr, &key, &thing));
        match matches {
            Ok(()) => {
                println!(
                    "CSR {} already exists for thing {thing} and key {:?}; nothing changed.",
                    out.display(),
                    key.label
                );
                print_csr_next(&out);
                return Ok(());
            }
            Err(e) => bail!(
                "{} already exists and does not match ({e:#}); not overwriting it (use --force to replace it)",
                out.display()
            ),
        }
    }
    let csr = csr::build_csr(&token, &key, &thing)?;
    fsutil::write_atomic(&out, &csr.to_pem()?, fsutil::PUBLIC_MODE)?;
    println!(
        "Wrote CSR {} (CN={thing}), signed by key {:?} on token {:?}.",
        out.display(),
        key.label,
        token.label()
    );
    print_csr_next(&out);
    Ok(())
}

fn print_csr_next(out: &Path) {
    println!(
        "Next: on the operator's machine, `zkiot ca sign --csr {}`, then bring device.crt and ca.crt back and run `zkiot device install-cert --cert device.crt --ca ca.crt`.",
        out.file_name().map(|f| f.to_string_lossy()).unwrap_or_default()
    );
}

fn read_cert(path: &Path) -> Result<X509> {
    let bytes = fsutil::read(path)?;
    X509::from_pem(&bytes)
        .or_else(|_| X509::from_der(&bytes))
        .with_context(|| {
            format!(
                "{} is not an X.509 certificate (PEM or DER)",
                path.display()
            )
        })
}

/// Installs `file` with `contents`: unchanged if identical, refused if different without
/// `force`. Returns whether it was written.
fn install_file(path: &Path, contents: &[u8], force: bool) -> Result<bool> {
    match std::fs::read(path) {
        Ok(existing) if existing == contents => Ok(false),
        Ok(_) if !force => bail!(
            "{} already holds a different certificate; not overwriting it (use --force to replace it)",
            path.display()
        ),
        _ => {
            fsutil::write_atomic(path, contents, fsutil::PUBLIC_MODE)?;
            Ok(true)
        }
    }
}

fn run_install_cert(args: InstallCertArgs, global: &GlobalOpts) -> Result<()> {
    let dir = config::device_dir(args.dir.as_deref(), global);
    let cert = read_cert(&args.cert)?;
    let ca_cert = read_cert(&args.ca)?;
    let thing = common_name(cert.subject_name()).context("the certificate's subject")?;
    crate::thing::validate_thing_name(&thing)?;
    if let Some(alias) = &args.role_alias {
        credentials::validate_role_alias(alias)?;
    }

    let token = open_token(global)?;
    let key = token.find_key(&args.key_label)?;
    let cert_point =
        point_of(&cert.public_key()?).context("the certificate's key is not an EC P-256 key")?;
    if cert_point != key.point {
        bail!(
            "the certificate {} is for another key than {:?} on token {:?}",
            args.cert.display(),
            key.label,
            token.label()
        );
    }
    ca::check_valid_now(&cert, "device certificate")?;
    ca::verify_chain(&cert, &ca_cert)?;

    // Refuse before changing anything if a different certificate is installed.
    let cert_pem = cert.to_pem()?;
    let ca_pem = ca_cert.to_pem()?;
    for (path, contents) in [
        (dir.join(CERT_FILE), &cert_pem),
        (dir.join(CA_FILE), &ca_pem),
    ] {
        if !args.force && path.exists() && fsutil::read(&path)? != *contents {
            bail!(
                "{} already holds a different certificate; not overwriting it (use --force to replace it)",
                path.display()
            );
        }
    }
    fsutil::ensure_dir(&dir, 0o755)?;
    let wrote_cert = install_file(&dir.join(CERT_FILE), &cert_pem, args.force)?;
    let wrote_ca = install_file(&dir.join(CA_FILE), &ca_pem, args.force)?;

    let mut config = DeviceConfig::load(&dir)?;
    let before = config.clone();
    config.thing = Some(thing.clone());
    config.token_label = Some(global.token_label.clone());
    config.key_label = Some(key.label.clone());
    config.certificate = Some(PathBuf::from(CERT_FILE));
    config.ca = Some(PathBuf::from(CA_FILE));
    if args.endpoint.is_some() {
        config.endpoint = args.endpoint.clone();
    }
    if args.role_alias.is_some() {
        config.role_alias = args.role_alias.clone();
    }
    if let Some(bundle) = &args.ca_bundle {
        let bundle = std::path::absolute(bundle)?;
        tls::server_roots(Some(&bundle))?;
        config.ca_bundle = Some(bundle);
    }
    let wrote_config = config != before;
    if wrote_config {
        config.save(&dir)?;
    }

    let stored = token.store_certificate(&key, &cert)?;

    let state = |written: bool| if written { "written" } else { "unchanged" };
    println!(
        "Installed certificate for thing {thing} ({}, serial {}, valid until {}).",
        name_to_string(cert.subject_name()),
        cert.serial_number().to_bn()?.to_hex_str()?,
        cert.not_after()
    );
    println!("  {}: {}", dir.join(CERT_FILE).display(), state(wrote_cert));
    println!("  {}: {}", dir.join(CA_FILE).display(), state(wrote_ca));
    println!(
        "  {}: {}",
        dir.join(config::CONFIG_FILE).display(),
        state(wrote_config)
    );
    let on_token = match stored {
        CertificateStored::Unchanged => "already there",
        CertificateStored::Created => "stored",
        CertificateStored::Replaced => "stored, replacing an older one",
    };
    println!(
        "  token {:?}: certificate object with key {:?}'s CKA_ID {}: {on_token}",
        token.label(),
        key.label,
        ca::hex(&key.id)
    );
    println!(
        "  PKCS#11 URI: pkcs11:token={};object={};type=cert",
        token.label(),
        key.label
    );
    if config.endpoint.is_some() && config.role_alias.is_some() {
        println!("Next: `zkiot device credentials` prints temporary AWS credentials (or use it as an AWS profile's credential_process).");
    } else {
        println!("Next: `zkiot device credentials --endpoint <credentials endpoint> --role-alias <alias>` (or re-run install-cert with --endpoint and --role-alias to save them).");
    }
    Ok(())
}

fn run_credentials(args: CredentialsArgs, global: &GlobalOpts) -> Result<()> {
    let dir = config::device_dir(args.dir.as_deref(), global);
    let config = DeviceConfig::load(&dir)?;
    let cert_path = args
        .cert
        .clone()
        .or_else(|| {
            config
                .certificate
                .as_ref()
                .map(|c| DeviceConfig::resolve(&dir, c))
        })
        .unwrap_or_else(|| dir.join(CERT_FILE));
    let cert = read_cert(&cert_path)
        .context("no device certificate; run `zkiot device install-cert` first, or pass --cert")?;
    let endpoint = args.endpoint.or(config.endpoint.clone()).context(
        "no credentials endpoint: pass --endpoint (or save one with install-cert --endpoint)",
    )?;
    let role_alias = args
        .role_alias
        .or(config.role_alias.clone())
        .context("no role alias: pass --role-alias (or save one with install-cert --role-alias)")?;
    let thing = match args.thing.or(config.thing.clone()) {
        Some(t) => t,
        None => common_name(cert.subject_name()).context("the certificate's subject")?,
    };
    let ca_bundle = args.ca_bundle.or_else(|| {
        config
            .ca_bundle
            .as_ref()
            .map(|c| DeviceConfig::resolve(&dir, c))
    });
    let key_label = args
        .key_label
        .or(config.key_label.clone())
        .unwrap_or_else(|| DEFAULT_KEY_LABEL.to_string());
    let request = credentials::CredentialsRequest {
        endpoint,
        role_alias,
        thing,
        connect: args.connect,
        ca_bundle,
        timeout: Duration::from_secs(args.timeout.max(1)),
    };
    request.host_port()?;
    let cache_path = args.cache.unwrap_or_else(|| dir.join(CACHE_FILE));
    let cert_fingerprint = fingerprint(&cert)?;

    if !args.no_cache {
        if let Some(cached) = credentials::read_cache(&cache_path, &request, &cert_fingerprint) {
            if global.verbose {
                eprintln!(
                    "zkiot: using cached credentials from {} (expire {})",
                    cache_path.display(),
                    cached.expiration
                );
            }
            return emit(&cached, args.format);
        }
    }

    let token = Arc::new(open_token(global)?);
    let fetched = credentials::fetch(&request, token, &key_label, cert.to_der()?)?;
    if !args.no_cache {
        if let Err(e) = credentials::write_cache(&cache_path, &request, &cert_fingerprint, &fetched)
        {
            eprintln!("zkiot: warning: credentials not cached: {e:#}");
        }
    }
    if global.verbose {
        eprintln!(
            "zkiot: got credentials for thing {} from {} (expire {})",
            request.thing, request.endpoint, fetched.expiration
        );
    }
    emit(&fetched, args.format)
}

fn emit(credentials: &credentials::Credentials, format: OutputFormat) -> Result<()> {
    let text = credentials::render(credentials, format)?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}
