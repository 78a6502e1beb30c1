//! AWS Private CA (acm-pca) as the fleet's CA: it holds the CA key and issues each device
//! certificate for the device's CSR (IssueCertificate, then GetCertificate until it is ready).
//!
//! The CA commands are synchronous and `fleet` calls them from its tasks, so each call here
//! blocks: inside the AWS commands' multi-threaded runtime through `block_in_place` (the other
//! tasks move to other threads meanwhile), elsewhere on a runtime of its own. The Private CA is
//! reached as the AWS configuration says (credentials, `AWS_ENDPOINT_URL` or
//! `AWS_ENDPOINT_URL_ACM_PCA`), in the region its ARN names.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_acmpca::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_acmpca::primitives::Blob;
use aws_sdk_acmpca::types::{SigningAlgorithm, Validity, ValidityPeriodType};
use openssl::nid::Nid;
use openssl::pkey::Id;
use openssl::x509::X509;

use super::location::PrivateCaArn;
use crate::x509::hex;

/// How long a certificate may take to be issued before we give up (AWS's own waiter: 60 s).
const ISSUE_TIMEOUT: Duration = Duration::from_secs(60);

/// A Private CA and a client for it.
pub(super) struct PrivateCa {
    arn: PrivateCaArn,
    client: aws_sdk_acmpca::Client,
    /// Set when no runtime was running at connection time: the calls run on this one.
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for PrivateCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrivateCa")
            .field("arn", &self.arn.arn)
            .finish_non_exhaustive()
    }
}

/// A Private CA's certificate and the chain above it (empty for a root).
pub(super) struct CaCertificate {
    pub certificate: X509,
    pub chain: Option<String>,
}

impl PrivateCa {
    /// A client for the Private CA `arn`, configured the usual way, in the ARN's region.
    pub fn connect(arn: &PrivateCaArn) -> Result<Self> {
        let runtime = match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                ensure!(
                    handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread,
                    "the Private CA client needs a multi-threaded runtime"
                );
                None
            }
            Err(_) => Some(
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("cannot start the async runtime")?,
            ),
        };
        let region = arn.region.clone();
        let load = async move {
            aws_config::defaults(BehaviorVersion::latest())
                .region(Region::new(region))
                .timeout_config(
                    TimeoutConfig::builder()
                        .connect_timeout(Duration::from_secs(5))
                        .operation_attempt_timeout(Duration::from_secs(30))
                        .build(),
                )
                .load()
                .await
        };
        let conf = match &runtime {
            Some(rt) => rt.block_on(load),
            None => block_in_place(load),
        };
        Ok(Self {
            arn: arn.clone(),
            client: aws_sdk_acmpca::Client::new(&conf),
            runtime,
        })
    }

    fn run<F: std::future::Future>(&self, future: F) -> F::Output {
        match &self.runtime {
            Some(rt) => rt.block_on(future),
            None => block_in_place(future),
        }
    }

    /// The ARN.
    pub fn arn(&self) -> &str {
        &self.arn.arn
    }

    /// GetCertificateAuthorityCertificate: the CA's certificate (and chain) as AWS holds it.
    pub fn certificate(&self) -> Result<CaCertificate> {
        let out = self
            .run(
                self.client
                    .get_certificate_authority_certificate()
                    .certificate_authority_arn(self.arn())
                    .send(),
            )
            .map_err(|e| error("GetCertificateAuthorityCertificate", e))?;
        let pem = out
            .certificate()
            .context("GetCertificateAuthorityCertificate returned no certificate")?;
        Ok(CaCertificate {
            certificate: X509::from_pem(pem.as_bytes())
                .context("the Private CA's certificate is not PEM")?,
            chain: out
                .certificate_chain()
                .map(str::to_string)
                .filter(|c| !c.trim().is_empty()),
        })
    }

    /// DescribeCertificateAuthority: "ACTIVE, ROOT, GENERAL_PURPOSE".
    pub fn describe(&self) -> Result<String> {
        let out = self
            .run(
                self.client
                    .describe_certificate_authority()
                    .certificate_authority_arn(self.arn())
                    .send(),
            )
            .map_err(|e| error("DescribeCertificateAuthority", e))?;
        let ca = out
            .certificate_authority()
            .context("DescribeCertificateAuthority returned nothing")?;
        let parts: Vec<String> = [
            ca.status().map(|s| s.as_str().to_string()),
            ca.r#type().map(|t| t.as_str().to_string()),
            ca.usage_mode().map(|m| m.as_str().to_string()),
        ]
        .into_iter()
        .flatten()
        .collect();
        Ok(parts.join(", "))
    }

    /// Issues a certificate for `csr_pem` ending at `not_after` (Unix time), signed as suits
    /// `ca_cert`'s key, with the client-authentication end-entity template; waits until it is
    /// ready. `request` identifies the request, so a retried one within five minutes gets the same
    /// certificate (IssueCertificate's idempotency token).
    pub fn issue(
        &self,
        csr_pem: &[u8],
        not_after: i64,
        ca_cert: &X509,
        request: &[u8],
    ) -> Result<X509> {
        let algorithm = signing_algorithm(ca_cert)?;
        let template = format!(
            "arn:{}:acm-pca:::template/EndEntityClientAuthCertificate/V1",
            self.arn.partition
        );
        let validity = Validity::builder()
            .r#type(ValidityPeriodType::Absolute)
            .value(not_after)
            .build()?;
        let token = hex(&openssl::sha::sha256(request)[..16]);
        let client = &self.client;
        let arn = self.arn();
        self.run(async move {
            let issued = client
                .issue_certificate()
                .certificate_authority_arn(arn)
                .csr(Blob::new(csr_pem))
                .signing_algorithm(algorithm)
                .template_arn(template)
                .validity(validity)
                .idempotency_token(token)
                .send()
                .await
                .map_err(|e| error("IssueCertificate", e))?;
            let cert_arn = issued
                .certificate_arn()
                .context("IssueCertificate returned no certificate ARN")?
                .to_string();
            let started = Instant::now();
            let mut pause = Duration::from_millis(200);
            loop {
                match client
                    .get_certificate()
                    .certificate_authority_arn(arn)
                    .certificate_arn(&cert_arn)
                    .send()
                    .await
                {
                    Ok(out) => {
                        let pem = out
                            .certificate()
                            .context("GetCertificate returned no certificate")?;
                        return X509::from_pem(pem.as_bytes())
                            .context("the Private CA returned a certificate that is not PEM");
                    }
                    Err(e) if e.code() == Some("RequestInProgressException") => {
                        if started.elapsed() >= ISSUE_TIMEOUT {
                            bail!(
                                "the Private CA has not issued {cert_arn} after {} s",
                                ISSUE_TIMEOUT.as_secs()
                            );
                        }
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_secs(2));
                    }
                    Err(e) => return Err(error("GetCertificate", e)),
                }
            }
        })
    }
}

fn block_in_place<F: std::future::Future>(future: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(future))
}

/// The signing algorithm that suits the CA's key: SHA-256 with RSA, ECDSA with the curve's hash.
fn signing_algorithm(ca_cert: &X509) -> Result<SigningAlgorithm> {
    let key = ca_cert.public_key()?;
    Ok(match key.id() {
        Id::RSA => SigningAlgorithm::Sha256Withrsa,
        Id::EC => match key.ec_key()?.group().curve_name() {
            Some(Nid::X9_62_PRIME256V1) => SigningAlgorithm::Sha256Withecdsa,
            Some(Nid::SECP384R1) => SigningAlgorithm::Sha384Withecdsa,
            Some(Nid::SECP521R1) => SigningAlgorithm::Sha512Withecdsa,
            other => bail!("the Private CA's EC key is on an unexpected curve ({other:?})"),
        },
        other => bail!("the Private CA's key is of an unexpected type ({other:?})"),
    })
}

/// One line naming the operation and what the service said.
fn error<E, R>(operation: &str, err: SdkError<E, R>) -> anyhow::Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let detail = match (err.code(), err.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_string(),
        _ => aws_sdk_acmpca::error::DisplayErrorContext(&err).to_string(),
    };
    anyhow!("{operation} failed: {detail}")
}
