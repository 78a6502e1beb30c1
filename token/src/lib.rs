//! The Zymkey PKCS#11 token logic (safe Rust, no C ABI).
