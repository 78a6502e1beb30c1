//! Certificates the CLI reads (a CA's, a device's): PEM or DER, then what
//! the CLI derives from them.

#![no_main]

use libfuzzer_sys::fuzz_target;
use openssl::x509::X509;

fuzz_target!(|data: &[u8]| {
    let Ok(cert) = X509::from_pem(data).or_else(|_| X509::from_der(data)) else {
        return;
    };
    let _ = zkiot::x509::common_name(cert.subject_name());
    let _ = zkiot::x509::name_to_string(cert.issuer_name());
    let _ = zkiot::x509::fingerprint(&cert);
    let _ = zkiot::x509::check_valid_now(&cert, "fuzz");
    let _ = zkiot::x509::verify_chain(&cert, &cert);
});
