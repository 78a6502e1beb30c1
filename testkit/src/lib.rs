//! The test kit: what the tests of every crate share, so that a new test picks it up here
//! instead of writing a copy of its own. `tests/README.md` says which tier of tests to run for
//! which change.
//!
//! - [`built`]: the freshly built `libzkpkcs11.so` and `libzkemu.so`, found beside the test
//!   binary.
//! - [`child`]: a test re-run in a child process of its own, since the module and the emulator
//!   read the process's environment; [`scenario`] (a PKCS#11 scenario over the built module and
//!   emulator, in steps) and [`role`] (an emulator test started again in a named role) are
//!   built on it.
//! - [`raw`]: the module's raw `CK_FUNCTION_LIST`, for the calls the safe `cryptoki` API
//!   cannot make (NULL pointers, bad handles, exact buffer lengths).
//! - [`x509`]: P-256 keys, test certificates and CSRs.
//! - [`ecdsa`]: ECDSA and EC point checks with OpenSSL.
//!
//! A dev-dependency of `zktoken`, `zkpkcs11`, `zkemu` and `zkiot`, and a dependency of the fuzz
//! targets (`fuzz/`); never of anything shipped.

pub mod built;
pub mod child;
pub mod ecdsa;
pub mod raw;
pub mod role;
pub mod scenario;
pub mod x509;
