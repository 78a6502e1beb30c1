//! `zkiot ca …`: the operator's commands as clap parses them.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::{DEFAULT_CA_DAYS, DEFAULT_CA_SUBJECT, DEFAULT_DEVICE_DAYS};

/// `zkiot ca …`: the certificate authority that issues device certificates.
#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create the CA: a P-256 key and a self-signed CA certificate (ca/ca.crt).
    ///
    /// The key is a file (ca/ca.key, 0600) by default; with --key it is generated in, or taken
    /// from, a PKCS#11 token, and with --private-ca AWS Private CA holds it. Where it lives is
    /// recorded in ca/ca.toml (never a PIN). Re-running with an existing CA checks and prints it
    /// and changes nothing.
    Init(InitArgs),
    /// Issue a device certificate for a CSR (SHA-256, clientAuth, random serial).
    ///
    /// Refuses a CSR whose signature does not verify, whose CN is not a valid thing name (or not
    /// --expect-cn), and a CA whose key does not match its certificate or that has expired.
    Sign(SignArgs),
    /// Say where the CA's key lives (file, PKCS#11 token, AWS Private CA), and the CA
    /// certificate's subject and expiry; check that the key is there and matches.
    Status,
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
    /// Keep the CA key in a PKCS#11 token, named by an RFC 7512 URI such as
    /// 'pkcs11:token=ca;object=fleet-ca'. The key is generated there (P-256) unless the token
    /// has one by that name, in which case it is used (an existing ca/ca.crt must match it).
    /// The module is the URI's module-path, else --module. The token's PIN comes from
    /// ZKIOT_CA_PIN or the URI's pin-source=file:<path>, and is never recorded.
    #[arg(long, value_name = "PKCS11_URI")]
    pub key: Option<String>,
    /// Use this AWS Private CA (its ARN) as the CA: it keeps the key and issues each device
    /// certificate; its certificate becomes ca/ca.crt.
    #[cfg(feature = "aws")]
    #[arg(long, value_name = "ARN", conflicts_with_all = ["key", "subject", "days"])]
    pub private_ca: Option<String>,
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
