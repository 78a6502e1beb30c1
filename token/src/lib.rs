//! The Zymkey PKCS#11 token logic (safe Rust, no C ABI).
//!
//! [`Module`] holds everything between `C_Initialize` and `C_Finalize`; its
//! methods are the PKCS#11 functions over safe types and return
//! [`Result`]s whose errors map to exactly one `CK_RV` each. The C ABI
//! lives in the `zkpkcs11` crate.

pub mod config;
pub mod device;
pub mod error;
pub mod factory;
pub mod find;
pub mod key;
pub mod keygen;
pub mod log;
pub mod mechanism;
pub mod module;
pub mod object;
pub mod session;
pub mod sign;
pub mod store;
pub mod token;

pub use config::Config;
pub use error::{Error, Result};
pub use module::Module;
pub use object::{Template, TemplateEntry};

/// Re-exported so the ABI crate uses the same `CK_*` definitions.
pub use cryptoki_sys;
