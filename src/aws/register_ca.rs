//! `zkiot aws register-ca`.

use anyhow::{bail, Context, Result};
use aws_sdk_iot::types::{CaCertificateStatus, CertificateMode};
use openssl::x509::X509;

use super::client::{is_not_found, service_code, Aws};
use super::state::AwsState;
use crate::ca::CertificateAuthority;
use crate::x509::{common_name, fingerprint};
use crate::{fsutil, GlobalOpts};

/// Where the verification certificate sent with the registration is kept (it proves, to
/// anyone who checks later, what was sent).
pub const VERIFICATION_CERT: &str = "aws/verification.crt";

/// A CA certificate as AWS IoT knows it.
pub(crate) struct RegisteredCa {
    pub id: String,
    pub arn: Option<String>,
    pub status: Option<CaCertificateStatus>,
    pub pem: Option<String>,
}

/// Looks a CA certificate up by id; `None` if AWS does not know it.
pub(crate) async fn describe_ca(aws: &Aws, id: &str) -> Result<Option<RegisteredCa>> {
    match aws
        .iot
        .describe_ca_certificate()
        .certificate_id(id)
        .send()
        .await
    {
        Ok(out) => {
            let desc = out.certificate_description();
            Ok(Some(RegisteredCa {
                id: id.to_string(),
                arn: desc.and_then(|d| d.certificate_arn()).map(str::to_string),
                status: desc.and_then(|d| d.status()).cloned(),
                pem: desc.and_then(|d| d.certificate_pem()).map(str::to_string),
            }))
        }
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(aws.error("DescribeCACertificate", e)),
    }
}

/// Our CA as AWS IoT registered it ([`find_registered_ca`]); an error that says to run
/// `register-ca` when it is not registered.
pub(crate) async fn registered_ca(
    aws: &Aws,
    state: &AwsState,
    ca_cert: &X509,
) -> Result<RegisteredCa> {
    find_registered_ca(aws, state, ca_cert)
        .await?
        .with_context(|| {
            format!(
                "the CA is not registered with {}; run `zkiot aws register-ca` first",
                aws.endpoint_name()
            )
        })
}

/// Finds our CA in AWS IoT: by the id remembered in the state, else by the id AWS derives
/// (SHA-256 of the certificate's DER). A registration whose certificate differs from ours is
/// not ours.
pub(crate) async fn find_registered_ca(
    aws: &Aws,
    state: &AwsState,
    ca_cert: &X509,
) -> Result<Option<RegisteredCa>> {
    let derived = fingerprint(ca_cert)?;
    let mut ids = vec![derived.clone()];
    if let Some(stored) = &state.ca_certificate_id {
        if *stored != derived {
            ids.insert(0, stored.clone());
        }
    }
    let our_der = ca_cert.to_der()?;
    for id in ids {
        if let Some(found) = describe_ca(aws, &id).await? {
            let same = found
                .pem
                .as_deref()
                .and_then(|pem| X509::from_pem(pem.as_bytes()).ok())
                .and_then(|c| c.to_der().ok())
                .is_some_and(|der| der == our_der);
            if same {
                return Ok(Some(found));
            }
        }
    }
    Ok(None)
}

/// Registers the CA: in DEFAULT mode with a verification certificate the CA signs (in its
/// token, or issued by its Private CA, wherever its key is), or with `sni_only` in SNI_ONLY mode,
/// which needs no verification certificate and so no CA signature at all.
pub(crate) async fn register_ca(aws: &Aws, global: &GlobalOpts, sni_only: bool) -> Result<()> {
    let ca_cert = CertificateAuthority::certificate_only(global)?;
    let mut state = AwsState::load(&global.home, aws.endpoint_url.as_deref(), &aws.region)?;

    if let Some(found) = find_registered_ca(aws, &state, &ca_cert).await? {
        let status = found
            .status
            .as_ref()
            .map(|s| s.as_str().to_string())
            .unwrap_or_else(|| "unknown".into());
        state.ca_certificate_id = Some(found.id.clone());
        state.ca_certificate_arn = found.arn.clone();
        state.save(&global.home)?;
        println!(
            "CA already registered with {}: {} ({status}); nothing to do",
            aws.endpoint_name(),
            found.id
        );
        if found.status != Some(CaCertificateStatus::Active) {
            println!(
                "note: the CA is not ACTIVE, so AWS IoT refuses devices it signed; \
                 activate it with `aws iot update-ca-certificate --certificate-id {} --new-status ACTIVE`",
                found.id
            );
        }
        println!("next: zkiot aws setup");
        return Ok(());
    }

    let (verification_pem, code) = if sni_only {
        (None, None)
    } else {
        let (pem, code) = verification_certificate(aws, global, &ca_cert).await?;
        (Some(pem), Some(code))
    };

    let ca_pem = String::from_utf8(ca_cert.to_pem()?)?;
    let mut request = aws
        .iot
        .register_ca_certificate()
        .ca_certificate(&ca_pem)
        .set_as_active(true)
        .allow_auto_registration(true);
    request = match verification_pem {
        Some(pem) => request.verification_certificate(String::from_utf8(pem)?),
        None => request.certificate_mode(CertificateMode::SniOnly),
    };
    let registered = request.send().await;
    let (id, arn) = match registered {
        Ok(out) => (
            out.certificate_id()
                .context("RegisterCACertificate returned no certificate id")?
                .to_string(),
            out.certificate_arn().map(str::to_string),
        ),
        // Registered between our look-up and now (another operator, a retried run).
        Err(e) if service_code(&e) == Some("ResourceAlreadyExistsException") => {
            match find_registered_ca(aws, &state, &ca_cert).await? {
                Some(found) => (found.id, found.arn),
                None => return Err(aws.error("RegisterCACertificate", e)),
            }
        }
        Err(e) => return Err(aws.error("RegisterCACertificate", e)),
    };
    let derived = fingerprint(&ca_cert)?;
    if id != derived {
        bail!(
            "AWS IoT gave the CA certificate id {id}, expected the SHA-256 of its DER ({derived})"
        );
    }
    state.ca_certificate_id = Some(id.clone());
    state.ca_certificate_arn = arn;
    state.save(&global.home)?;
    match code {
        Some(code) => {
            println!(
                "registered CA {id} with {} (ACTIVE, auto-registration on)",
                aws.endpoint_name()
            );
            println!(
                "verification certificate (CN = registration code {code}): {}",
                global.home.join(VERIFICATION_CERT).display()
            );
        }
        None => println!(
            "registered CA {id} with {} (ACTIVE, SNI_ONLY: no verification certificate; devices \
             must send SNI, as the credentials provider requires anyway; auto-registration on)",
            aws.endpoint_name()
        ),
    }
    println!("next: zkiot aws setup");
    Ok(())
}

/// A verification certificate for AWS's registration code, signed by the CA wherever its key
/// is, checked and kept in the operator's folder; its PEM and the code.
async fn verification_certificate(
    aws: &Aws,
    global: &GlobalOpts,
    ca_cert: &X509,
) -> Result<(Vec<u8>, String)> {
    let ca = CertificateAuthority::open(global)?;
    if ca.certificate().to_der()? != ca_cert.to_der()? {
        bail!("the CA changed while it was being registered; run the command again");
    }
    let code = aws
        .iot
        .get_registration_code()
        .send()
        .await
        .map_err(|e| aws.error("GetRegistrationCode", e))?
        .registration_code()
        .map(str::to_string)
        .context("GetRegistrationCode returned no code")?;

    let verification = ca.sign_verification_certificate(&code)?;
    // What AWS checks (and emulators skip): CN = the code, signed by the CA being registered.
    let cn = common_name(verification.subject_name()).context("the verification certificate")?;
    if cn != code {
        bail!("the verification certificate's CN is {cn:?}, not the registration code");
    }
    if !verification.verify(&*ca_cert.public_key()?)? {
        bail!("the verification certificate does not verify under the CA");
    }
    let verification_pem = verification.to_pem()?;
    fsutil::write_atomic(
        &global.home.join(VERIFICATION_CERT),
        &verification_pem,
        fsutil::PUBLIC_MODE,
    )?;
    Ok((verification_pem, code))
}
