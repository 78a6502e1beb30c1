//! What must hold after every call, whatever the input: no
//! `CKR_GENERAL_ERROR` (the module's answer to a panic or a broken invariant),
//! no device private key in any output, no length answered beyond the
//! caller's buffer, and every signature made verifying under a device key.

use cryptoki_sys::*;

use super::op::Mech;
use super::setup::DeviceKeys;

/// Fails on `CKR_GENERAL_ERROR`; returns `rv`.
pub fn check_rv(call: &str, rv: CK_RV) -> CK_RV {
    assert_ne!(rv, CKR_GENERAL_ERROR, "{call} returned CKR_GENERAL_ERROR");
    rv
}

/// The bytes of a C structure the module filled in.
pub fn as_bytes<T>(value: &T) -> &[u8] {
    // SAFETY: any initialised value can be read as bytes.
    unsafe { std::slice::from_raw_parts(value as *const T as *const u8, std::mem::size_of::<T>()) }
}

/// Fails if `output` holds a device private key.
pub fn check_output(keys: &DeviceKeys, call: &str, output: &[u8]) {
    for secret in &keys.secrets {
        assert!(
            !output.windows(secret.len()).any(|w| w == secret.as_slice()),
            "{call} output a device private key"
        );
    }
}

/// Fails when a call that succeeded answered a length beyond the buffer it was given.
pub fn check_length(call: &str, len: CK_ULONG, buffer_len: usize) {
    assert!(len as usize <= buffer_len, "{call}: length beyond buffer");
}

/// Fails unless `signature` (r‖s) verifies over `data` under a device key.
pub fn check_signature(keys: &DeviceKeys, mech: Mech, data: &[u8], signature: &[u8]) {
    assert_eq!(signature.len(), 64, "signature length");
    let digest = match mech.digest().expect("a signing mechanism") {
        None => data.to_vec(),
        Some(md) => openssl::hash::hash(md, data).expect("hash").to_vec(),
    };
    assert!(
        keys.public
            .iter()
            .any(|key| testkit::ecdsa::verifies_under(key, &digest, signature)),
        "a signature ({mech:?}, {} input bytes) verifies under no device key",
        data.len()
    );
}
