//! `zkiot device install-cert`: the signed certificate into the device folder and onto the token.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::certificate::check_device_certificate;
use super::cli::InstallCertArgs;
use super::config::{self, DeviceConfig, CA_FILE, CERT_FILE};
use super::labels::Labels;
use super::net::{provider, tls};
use crate::p11::CertificateStored;
use crate::x509::{common_name, hex, name_to_string, read_certificate};
use crate::{fsutil, GlobalOpts};

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

pub(crate) fn run(args: InstallCertArgs, global: &GlobalOpts) -> Result<()> {
    let dir = config::device_dir(args.dir.as_deref(), global);
    let cert = read_certificate(&args.cert)?;
    let ca_cert = read_certificate(&args.ca)?;
    let thing = common_name(cert.subject_name()).context("the certificate's subject")?;
    crate::thing_name::validate_thing_name(&thing)?;
    if let Some(alias) = &args.role_alias {
        provider::validate_role_alias(alias)?;
    }

    let (token, key) = Labels::of(global, args.key_label.as_deref())?.open(global)?;
    check_device_certificate(&cert, &key, Some(&ca_cert)).with_context(|| {
        format!(
            "the certificate {} (key {:?} on token {:?})",
            args.cert.display(),
            key.label,
            token.label()
        )
    })?;

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
    // Only labels chosen on the command line: the others follow the zkiot configuration.
    config.token_label = global.token_label.clone();
    config.key_label = args.key_label.clone();
    config.certificate = Some(PathBuf::from(CERT_FILE));
    config.ca = Some(PathBuf::from(CA_FILE));
    if args.endpoint.is_some() {
        config.endpoint = args.endpoint.clone();
    }
    if args.role_alias.is_some() {
        config.role_alias = args.role_alias.clone();
    }
    if args.iot_api.is_some() {
        config.iot_api = args.iot_api.clone();
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
        hex(&key.id)
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
