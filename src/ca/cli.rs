//! `zkiot ca …`: the operator's commands.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use openssl::x509::X509;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::{
    check_valid_now, csr_common_name, fingerprint, name_to_string, parse_csr, verify_chain,
    CertificateAuthority, SignOptions, DEFAULT_CA_DAYS, DEFAULT_CA_SUBJECT, DEFAULT_DEVICE_DAYS,
};
use crate::fsutil;
use crate::GlobalOpts;

/// `zkiot ca …`: the certificate authority that issues device certificates.
#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create the CA: a P-256 key (ca/ca.key, 0600) and a self-signed CA certificate (ca/ca.crt).
    ///
    /// Re-running with an existing CA checks and prints it and changes nothing.
    Init(InitArgs),
    /// Issue a device certificate for a CSR (SHA-256, clientAuth, random serial).
    ///
    /// Refuses a CSR whose signature does not verify, whose CN is not a valid thing name (or not
    /// --expect-cn), and a CA whose key does not match its certificate or that has expired.
    Sign(SignArgs),
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Subject of the CA certificate, as /CN=…/O=….
    #[arg(long, default_value = DEFAULT_CA_SUBJECT)]
    pub subject: String,
    /// Validity of the CA certificate, in days.
    #[arg(long, default_value_t = DEFAULT_CA_DAYS)]
    pub days: u32,
    /// Replace an existing CA (devices signed by the old one will no longer chain to it).
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct SignArgs {
    /// The CSR (PEM or DER).
    #[arg(long)]
    pub csr: PathBuf,
    /// Where to write the certificate (default: devices/<thing>/device.crt in the home folder).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Validity in days.
    #[arg(long, default_value_t = DEFAULT_DEVICE_DAYS, conflicts_with = "not_after")]
    pub days: u32,
    /// End of validity: RFC 3339 time or YYYY-MM-DD (UTC midnight).
    #[arg(long, value_parser = parse_time)]
    pub not_after: Option<OffsetDateTime>,
    /// Refuse the CSR unless its CN is exactly this thing name.
    #[arg(long)]
    pub expect_cn: Option<String>,
    /// Replace an existing certificate that does not match the CSR.
    #[arg(long)]
    pub force: bool,
}

fn parse_time(text: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(text, &Rfc3339)
        .or_else(|_| OffsetDateTime::parse(&format!("{text}T00:00:00Z"), &Rfc3339))
        .map_err(|_| format!("{text:?} is neither an RFC 3339 time nor YYYY-MM-DD"))
}

/// Runs one `zkiot ca …` command.
pub fn run(command: CaCommand, global: &GlobalOpts) -> Result<()> {
    match command {
        CaCommand::Init(args) => init(args, global),
        CaCommand::Sign(args) => sign(args, global),
    }
}

fn describe(cert: &X509) -> Result<String> {
    Ok(format!(
        "  subject:     {}\n  valid until: {}\n  SHA-256:     {}",
        name_to_string(cert.subject_name()),
        cert.not_after(),
        fingerprint(cert)?
    ))
}

fn init(args: InitArgs, global: &GlobalOpts) -> Result<()> {
    let cert_path = global.ca_cert_path();
    let key_path = global.ca_key_path();
    let (cert_exists, key_exists) = (cert_path.exists(), key_path.exists());
    if !args.force {
        match (cert_exists, key_exists) {
            (true, true) => {
                let ca = CertificateAuthority::load(&cert_path, &key_path)
                    .context("an existing CA is in the way (use --force to replace it)")?;
                println!(
                    "CA already exists ({}); nothing changed.\n{}",
                    cert_path.display(),
                    describe(ca.certificate())?
                );
                print_init_next();
                return Ok(());
            }
            (true, false) => bail!(
                "{} exists but {} does not; not replacing a CA certificate without its key (use --force to create a new CA)",
                cert_path.display(),
                key_path.display()
            ),
            (false, true) => bail!(
                "{} exists but {} does not; not replacing a CA key (use --force to create a new CA)",
                key_path.display(),
                cert_path.display()
            ),
            (false, false) => {}
        }
    }
    let ca = CertificateAuthority::create(&args.subject, args.days)?;
    ca.save(&cert_path, &key_path, args.force)?;
    println!(
        "Created CA key {} (0600) and certificate {}.\n{}",
        key_path.display(),
        cert_path.display(),
        describe(ca.certificate())?
    );
    print_init_next();
    Ok(())
}

fn print_init_next() {
    if cfg!(feature = "aws") {
        println!("Next: `zkiot aws register-ca` registers this CA with AWS IoT; on each device, `zkiot device csr`.");
    } else {
        println!("Next: register this CA with AWS IoT (`zkiot aws register-ca`); on each device, `zkiot device csr`.");
    }
}

fn sign(args: SignArgs, global: &GlobalOpts) -> Result<()> {
    let csr_bytes = fsutil::read(&args.csr)?;
    let ca = CertificateAuthority::load(&global.ca_cert_path(), &global.ca_key_path())?;
    let csr = parse_csr(&csr_bytes).with_context(|| format!("{}", args.csr.display()))?;
    // Read the CN only to pick the default folder; sign_csr checks it properly.
    let thing = csr_common_name(&csr).ok();
    let out = match (&args.out, &thing) {
        (Some(out), _) => out.clone(),
        (None, Some(thing)) if crate::thing::validate_thing_name(thing).is_ok() => {
            global.device_record_dir(thing).join("device.crt")
        }
        _ => global.home.join("devices").join("device.crt"),
    };
    let opts = SignOptions {
        days: args.days,
        not_after: args.not_after,
        expected_cn: args.expect_cn.clone(),
    };

    if out.exists() && !args.force {
        let existing = X509::from_pem(&fsutil::read(&out)?);
        let reusable = existing.as_ref().is_ok_and(|cert| {
            let same_key = csr
                .public_key()
                .and_then(|k| cert.public_key().map(|c| c.public_eq(&k)))
                .unwrap_or(false);
            same_key
                && cert.subject_name().to_der().ok() == csr.subject_name().to_der().ok()
                && verify_chain(cert, ca.certificate()).is_ok()
                && check_valid_now(cert, "certificate").is_ok()
        });
        if reusable {
            // Still hold the CSR to every rule before saying it is fine.
            ca.sign_csr(&csr_bytes, &opts)?;
            let cert = existing?;
            println!(
                "Certificate {} already issued for this CSR; nothing changed.\n{}",
                out.display(),
                describe(&cert)?
            );
            print_sign_next(&out, thing.as_deref(), global);
            return Ok(());
        }
        bail!(
            "{} already exists and is not a current certificate for this CSR from this CA; not overwriting it (use --force to replace it)",
            out.display()
        );
    }

    let cert = ca.sign_csr(&csr_bytes, &opts)?;
    fsutil::write_atomic(&out, &cert.to_pem()?, fsutil::PUBLIC_MODE)?;
    println!(
        "Issued device certificate {} (serial {}).\n{}",
        out.display(),
        cert.serial_number().to_bn()?.to_hex_str()?,
        describe(&cert)?
    );
    print_sign_next(&out, thing.as_deref(), global);
    Ok(())
}

fn print_sign_next(out: &std::path::Path, thing: Option<&str>, global: &GlobalOpts) {
    let register = match thing {
        Some(thing) if out == global.device_record_dir(thing).join("device.crt") => {
            format!("zkiot aws register-device --thing {thing}")
        }
        _ => format!("zkiot aws register-device --cert {}", out.display()),
    };
    println!(
        "Next: copy {} and {} to the device and run `zkiot device install-cert --cert device.crt --ca ca.crt` there; register it with AWS IoT: `{register}`.",
        out.display(),
        global.ca_cert_path().display()
    );
}
