//! The AWS IoT credentials provider's answer, as `zkiot device credentials`
//! reads it off the wire: an HTTP response, then its JSON. Credentials that
//! come out are complete and have a valid expiration.

#![no_main]

use libfuzzer_sys::fuzz_target;
use zkiot::device::net::{http, provider};

fuzz_target!(|data: &[u8]| {
    let Ok(response) = http::parse_response(data) else {
        return;
    };
    let _ = response.header("x-amzn-ErrorType");
    if let Ok(credentials) = provider::credentials_from_answer(&response) {
        assert!(!credentials.access_key_id.is_empty());
        assert!(!credentials.secret_access_key.is_empty());
        assert!(!credentials.session_token.is_empty());
        credentials.expires_at().expect("a valid expiration");
    }
});
