//! `zkiot ca init`.

use anyhow::{bail, Context, Result};

use super::cli::InitArgs;
use super::{describe, CertificateAuthority};
use crate::GlobalOpts;

pub(crate) fn init(args: InitArgs, global: &GlobalOpts) -> Result<()> {
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
