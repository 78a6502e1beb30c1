//! `zkiot ca sign`.

use anyhow::{bail, Context, Result};
use openssl::x509::X509;

use super::cli::SignArgs;
use super::{describe, CertificateAuthority, SignOptions};
use crate::x509::{check_valid_now, csr_common_name, parse_csr, verify_chain};
use crate::{fsutil, GlobalOpts};

pub(crate) fn sign(args: SignArgs, global: &GlobalOpts) -> Result<()> {
    let csr_bytes = fsutil::read(&args.csr)?;
    let ca = CertificateAuthority::open(global)?;
    let csr = parse_csr(&csr_bytes).with_context(|| format!("{}", args.csr.display()))?;
    // Read the CN only to pick the default folder; sign_csr checks it properly.
    let thing = csr_common_name(&csr).ok();
    let out = match (&args.out, &thing) {
        (Some(out), _) => out.clone(),
        (None, Some(thing)) if crate::thing_name::validate_thing_name(thing).is_ok() => {
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
