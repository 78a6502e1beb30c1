//! What `zkiot ca sign` is given: a CSR (PEM or DER). The CA refuses it or
//! issues a certificate that chains to it.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use zkiot::ca::{CertificateAuthority, SignOptions};

fn ca() -> &'static CertificateAuthority {
    static CA: OnceLock<CertificateAuthority> = OnceLock::new();
    CA.get_or_init(|| CertificateAuthority::create("/CN=fuzz CA", 2).expect("a test CA"))
}

fuzz_target!(|data: &[u8]| {
    if let Ok(csr) = zkiot::x509::parse_csr(data) {
        let _ = zkiot::x509::csr_common_name(&csr);
        let _ = zkiot::x509::name_to_string(csr.subject_name());
    }
    if let Ok(cert) = ca().sign_csr(data, &SignOptions::default()) {
        zkiot::x509::verify_chain(&cert, ca().certificate())
            .expect("an issued certificate chains to its CA");
    }
});
