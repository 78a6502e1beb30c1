//! Whether a certificate is this device's: the one rule that `install-cert`, `credentials` and
//! the renewal apply before they use a certificate.

use anyhow::{ensure, Context, Result};
use openssl::x509::X509;

use crate::p11::{point_of, P11Key};
use crate::x509::{check_valid_now, verify_chain};

/// Checks that `cert` is for `key` (the same P-256 public key), valid now, and, given the fleet
/// CA, issued by it. The messages speak of the certificate as "it": callers say which one.
pub fn check_device_certificate(cert: &X509, key: &P11Key, fleet_ca: Option<&X509>) -> Result<()> {
    let point = point_of(&cert.public_key()?).context("its key is not an EC P-256 key")?;
    ensure!(
        point == key.point,
        "it is for another key than {:?}",
        key.label
    );
    check_valid_now(cert, "certificate")?;
    if let Some(ca) = fleet_ca {
        verify_chain(cert, ca).context("it does not chain to the fleet CA")?;
    }
    Ok(())
}
