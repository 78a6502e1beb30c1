//! `zkiot ca init`: a CA whose key is a file, in a PKCS#11 token (`--key`), or an AWS Private CA
//! (`--private-ca`).

use anyhow::{bail, Context, Result};
use openssl::x509::X509;

use super::cli::InitArgs;
use super::location::{config_path, KeyLocation};
use super::pkcs11_uri::Pkcs11Uri;
use super::token::{Found, TokenKey};
use super::{describe, CaKey, CertificateAuthority};
use crate::{fsutil, GlobalOpts};

pub(crate) fn init(args: InitArgs, global: &GlobalOpts) -> Result<()> {
    #[cfg(feature = "aws")]
    if let Some(arn) = &args.private_ca {
        return init_private_ca(arn, args.force, global);
    }
    if let Some(uri) = &args.key {
        return init_token(uri, &args, global);
    }
    init_file(args, global)
}

/// The default: a key file `ca/ca.key` (0600) beside the certificate.
fn init_file(args: InitArgs, global: &GlobalOpts) -> Result<()> {
    let cert_path = global.ca_cert_path();
    let key_path = global.ca_key_path();
    let (cert_exists, key_exists) = (cert_path.exists(), key_path.exists());
    if !args.force && config_path(global).exists() {
        // A CA whose key is in a token or a Private CA: check it and say so.
        let ca = CertificateAuthority::open(global)
            .context("an existing CA is in the way (use --force to replace it)")?;
        println!(
            "CA already exists ({}, key: {}); nothing changed.\n{}",
            cert_path.display(),
            KeyLocation::read(global)?.short(),
            describe(ca.certificate())?
        );
        print_init_next();
        return Ok(());
    }
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
    KeyLocation::File(key_path.clone()).save(global)?;
    println!(
        "Created CA key {} (0600) and certificate {}.\n{}",
        key_path.display(),
        cert_path.display(),
        describe(ca.certificate())?
    );
    print_init_next();
    Ok(())
}

/// `--key pkcs11:…`: the key is found in, or generated in, the token; the certificate is signed
/// there.
fn init_token(uri_text: &str, args: &InitArgs, global: &GlobalOpts) -> Result<()> {
    let uri = Pkcs11Uri::parse(uri_text)?;
    let module = uri
        .module_path
        .clone()
        .unwrap_or_else(|| global.module.clone());
    let module = std::path::absolute(&module)
        .with_context(|| format!("cannot resolve {}", module.display()))?;
    let cert_path = global.ca_cert_path();
    let key_path = global.ca_key_path();
    let existing = if cert_path.exists() {
        Some(
            X509::from_pem(&fsutil::read(&cert_path)?)
                .with_context(|| format!("{} is not a PEM certificate", cert_path.display()))?,
        )
    } else {
        None
    };
    if existing.is_none() && key_path.exists() && !args.force {
        bail!(
            "{} exists but {} does not; not making a CA beside a loose CA key (move it away, or \
             use --force)",
            key_path.display(),
            cert_path.display()
        );
    }

    let found = TokenKey::find(&uri, &module)?;
    let (ca, what) = match (found, existing) {
        // The token holds the key of the existing certificate: take the CA as it is.
        (Found::Key(key), Some(cert))
            if key
                .public_key()
                .and_then(|k| Ok(cert.public_key()?.public_eq(&k)))
                .unwrap_or(false) =>
        {
            let location = KeyLocation::Token {
                uri: key.uri().clone(),
                module: module.clone(),
            };
            let recorded = config_path(global).exists()
                && KeyLocation::read(global).ok().as_ref() == Some(&location);
            let ca = CertificateAuthority::checked(cert, CaKey::Token(Box::new(key)))
                .context("the existing CA certificate cannot be used")?;
            if recorded {
                return already_exists(&cert_path, &location, &ca);
            }
            location.save(global)?;
            (
                ca,
                "The CA key is now taken from the token (its certificate is unchanged)",
            )
        }
        (Found::Key(key), Some(_)) if !args.force => bail!(
            "the token's key {} does not match {}; use --force to make a new CA with it \
             (devices signed by the old CA will no longer chain to it)",
            key.uri().to_uri_string(),
            cert_path.display()
        ),
        (Found::Missing(empty), Some(_)) if !args.force => bail!(
            "token {:?} has no key {}, and {} exists: to keep that CA, import its key into the \
             token first (see the README); --force makes a new CA",
            empty.label(),
            uri.to_uri_string(),
            cert_path.display()
        ),
        (Found::Key(key), _) => (
            new_token_ca(args, key, &module, global)?,
            "Created the CA certificate with the key already in the token",
        ),
        (Found::Missing(empty), _) => (
            new_token_ca(args, empty.generate()?, &module, global)?,
            "Generated a P-256 key in the token and created the CA certificate with it",
        ),
    };
    let CaKey::Token(key) = &ca.key else {
        unreachable!("a token CA");
    };
    println!(
        "{what}: {}\n  key:         {}\n  recorded in: {} (no PIN)\n{}",
        cert_path.display(),
        key.describe(),
        config_path(global).display(),
        describe(ca.certificate())?
    );
    if key_path.exists() {
        println!(
            "{} is still there: once the CA works from the token, destroy it (shred -u {}); \
             zkiot does not sign beside a loose CA key.",
            key_path.display(),
            key_path.display()
        );
    }
    print_init_next();
    Ok(())
}

/// A new self-signed CA certificate for the token's key, signed in the token, and its record.
fn new_token_ca(
    args: &InitArgs,
    key: TokenKey,
    module: &std::path::Path,
    global: &GlobalOpts,
) -> Result<CertificateAuthority> {
    let location = KeyLocation::Token {
        uri: key.uri().clone(),
        module: module.to_path_buf(),
    };
    let ca =
        CertificateAuthority::self_signed(&args.subject, args.days, CaKey::Token(Box::new(key)))?;
    let cert_path = global.ca_cert_path();
    if let Some(dir) = cert_path.parent() {
        fsutil::ensure_dir(dir, 0o700)?;
    }
    fsutil::write_atomic(&cert_path, &ca.certificate().to_pem()?, fsutil::PUBLIC_MODE)?;
    location.save(global)?;
    Ok(ca)
}

/// `--private-ca ARN`: AWS Private CA keeps the key; its certificate becomes `ca/ca.crt`.
#[cfg(feature = "aws")]
fn init_private_ca(arn: &str, force: bool, global: &GlobalOpts) -> Result<()> {
    use super::location::PrivateCaArn;
    use super::private_ca::PrivateCa;

    let arn = PrivateCaArn::parse(arn)?;
    let pca = PrivateCa::connect(&arn)?;
    let fetched = pca.certificate()?;
    let cert = fetched.certificate;
    let self_signed = cert.verify(&*cert.public_key()?).unwrap_or(false)
        && cert.issuer_name().to_der()? == cert.subject_name().to_der()?;
    if !self_signed || fetched.chain.is_some() {
        bail!(
            "AWS Private CA {} is a subordinate CA; zkiot takes a root Private CA (the device \
             certificates' checks use ca/ca.crt as the root)",
            arn.arn
        );
    }
    let location = KeyLocation::PrivateCa(arn.clone());
    let ca = CertificateAuthority::checked(cert, CaKey::PrivateCa(pca))
        .with_context(|| format!("AWS Private CA {}", arn.arn))?;
    let cert_path = global.ca_cert_path();
    let key_path = global.ca_key_path();
    if cert_path.exists() && !force {
        let existing = X509::from_pem(&fsutil::read(&cert_path)?)
            .with_context(|| format!("{} is not a PEM certificate", cert_path.display()))?;
        if existing.to_der()? != ca.certificate().to_der()? {
            bail!(
                "{} is another CA's certificate than AWS Private CA {}'s; use --force to replace it \
                 (devices signed by the old CA will no longer chain to it)",
                cert_path.display(),
                arn.arn
            );
        }
        if config_path(global).exists() && KeyLocation::read(global).ok() == Some(location.clone())
        {
            return already_exists(&cert_path, &location, &ca);
        }
    }
    if let Some(dir) = cert_path.parent() {
        fsutil::ensure_dir(dir, 0o700)?;
    }
    fsutil::write_atomic(&cert_path, &ca.certificate().to_pem()?, fsutil::PUBLIC_MODE)?;
    location.save(global)?;
    println!(
        "The CA is AWS Private CA {}: it keeps the key and issues the device certificates. Its \
         certificate is {}; recorded in {}.\n{}",
        arn.arn,
        cert_path.display(),
        config_path(global).display(),
        describe(ca.certificate())?
    );
    if key_path.exists() {
        println!(
            "{} is still there: destroy it (shred -u {}) once it is no longer needed; zkiot does \
             not sign beside a loose CA key.",
            key_path.display(),
            key_path.display()
        );
    }
    print_init_next();
    Ok(())
}

/// Says that `ca init` found the CA it was asked for already in place, and what comes next.
fn already_exists(
    cert_path: &std::path::Path,
    location: &KeyLocation,
    ca: &CertificateAuthority,
) -> Result<()> {
    println!(
        "CA already exists ({}, key: {}); nothing changed.\n{}",
        cert_path.display(),
        location.short(),
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
