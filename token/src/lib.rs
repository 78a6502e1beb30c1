//! The Zymkey PKCS#11 token logic (safe Rust, no C ABI).
//!
//! [`Module`] holds everything between `C_Initialize` and `C_Finalize`; its
//! methods are the PKCS#11 functions over safe types and return
//! [`Result`]s whose errors map to exactly one `CK_RV` each. The C ABI
//! lives in the `zkpkcs11` crate.
//!
//! # The token
//! One slot (id 0) with one token per Zymkey. Each device key slot `N`
//! shows as a private and a public key object with `CKA_ID` = `N` as two
//! big-endian bytes and `CKA_LABEL` = `slotN` (or the label given in the
//! configuration or at key generation); foreign-keyring slots (HSM6) show
//! as public keys with id `0x8000|N`, labelled `foreignN`. Keys of curves
//! that are not ECDSA curves (Ed25519, X25519) are hidden unless
//! `expose_non_ecdsa_keys` is set: libp11 0.4.12 stops enumerating a token
//! at the first key type it does not know.
//!
//! # Device calls
//! The model, serial number, firmware version and slot list are read from
//! the device by the first process and kept in the device cache
//! (`device_cache.rs`); each slot's public key is read once and kept in the
//! store. Later processes read neither from the device: the device is opened
//! by the first call that needs it, so listing the token and its objects
//! makes no device call, and a signature makes one (plus the open, once per
//! process). A length query makes none. Keys generated or removed through
//! the module update the cache; a signature that does not verify against the
//! cached public key makes the module read that key again and drop the
//! cache, so changes made with other tools are picked up.
//!
//! # Handles
//! Derived, so stable for the life of the process: key objects from the
//! slot number ([`KeySlot::private_handle`]), token objects from their
//! store row id, session objects from a per-process counter (`object.rs`).
//!
//! # Store
//! Certificates, data objects, cached public keys, and the labels and ids
//! given at key generation live in an SQLite file (`store.rs`), by default
//! `/var/lib/zkiot/<serial>.sqlite3` for root and
//! `${XDG_DATA_HOME:-$HOME/.local/share}/zkiot/<serial>.sqlite3` otherwise.
//!
//! # Configuration
//! None is needed; see [`Config`] for the optional TOML file and the
//! environment variables.

//! # Layout
//! The PKCS#11 functions are methods of [`Module`], one file per chapter,
//! named like the ABI crate's files: `slot_token.rs`, `session.rs`,
//! `object.rs`, `sign_verify.rs`, `keygen.rs`, `random.rs`. `module.rs`
//! holds the state they share; `token.rs` the device's identity and keys
//! (the only code that changes the key map); `key.rs`, `curve.rs`,
//! `attribute.rs`, `storage_object.rs` and `der.rs` the objects and their
//! encodings; `mechanism.rs` the signature mechanisms; `store.rs` the
//! SQLite store. Every module is private: what the ABI crate and the
//! tests use is re-exported below, so the compiler reports dead code.

#![forbid(unsafe_code)]

mod attribute;
mod curve;
mod der;
mod device;
mod device_cache;
mod error;
pub mod fork;
mod key;
mod keygen;
mod lock;
mod log;
mod mechanism;
mod module;
mod object;
mod ownership;
mod random;
mod session;
mod sign_verify;
mod slot_token;
mod storage_object;
mod store;
mod token;

pub use attribute::{
    read_template, ulong_bytes, value_buffer_len, Template, TemplateEntry, TemplateUse,
};
pub use device::Device;
pub use error::{Error, Result};
pub use key::KeySlot;
pub use module::Module;
pub use zkconf::Config;

/// What the tests of this crate and of the ABI crate check results with.
pub mod testing {
    pub use crate::curve::{Curve, SECP256K1_PARAMS};
    pub use crate::mechanism::{ecdsa_digest, verify_digest};
}

/// Re-exported so the ABI crate uses the same `CK_*` definitions.
pub use cryptoki_sys;
