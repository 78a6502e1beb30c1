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
//! A process reads the model, serial number, firmware version and slot
//! list once, when the token is first needed, and each slot's public key
//! only if the store has not cached it. After that, finding objects and
//! reading attributes never call the device; each signature is exactly one
//! device call, and a length query none.
//!
//! # Handles
//! Derived, so stable for the life of the process: key objects from the
//! slot number ([`key::KeySlot::private_handle`]), token objects from their
//! store row id, session objects from a per-process counter ([`object`]).
//!
//! # Store
//! Certificates, data objects, cached public keys, and the labels and ids
//! given at key generation live in an SQLite file ([`store`]), by default
//! `/var/lib/zkiot/<serial>.sqlite3` for root and
//! `${XDG_DATA_HOME:-$HOME/.local/share}/zkiot/<serial>.sqlite3` otherwise.
//!
//! # Configuration
//! None is needed; see [`config`] for the optional TOML file and the
//! environment variables.

#![forbid(unsafe_code)]

pub mod attribute;
pub mod config;
pub mod curve;
pub mod der;
pub mod device;
pub mod error;
pub mod fork;
pub mod key;
pub mod keygen;
mod lock;
pub mod log;
pub mod mechanism;
pub mod module;
pub mod object;
pub mod random;
pub mod session;
pub mod sign_verify;
pub mod slot_token;
pub mod storage_object;
pub mod store;
pub mod token;

pub use attribute::{read_template, value_buffer_len, Template, TemplateEntry, TemplateUse};
pub use config::Config;
pub use error::{Error, Result};
pub use module::Module;

/// Re-exported so the ABI crate uses the same `CK_*` definitions.
pub use cryptoki_sys;
