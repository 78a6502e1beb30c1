//! The libraries under test, as this build made them.
//!
//! A test binary lives in `target/<profile>/deps/`. `cargo test` (re)builds there the
//! `cdylib` of the crate under test (and of any crate it depends on); `cargo build` builds
//! there too and links each library one level up, beside the binaries. So a library is looked
//! for in `deps/` first, which is never older, then in `target/<profile>/`.

use std::path::{Path, PathBuf};

/// The built library `name` (`libzkpkcs11.so`, `libzkemu.so`) of this build; fails the test,
/// saying how to build it, when it is missing.
pub fn library(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("path of the test binary");
    let deps = exe
        .parent()
        .expect("the test binary lives in target/<profile>/deps");
    let candidates = [
        deps.join(name),
        deps.parent().unwrap_or(Path::new("/")).join(name),
    ];
    candidates
        .iter()
        .find(|path| path.exists())
        .unwrap_or_else(|| {
            panic!(
                "{name} is not built: looked for {candidates:?}; run `cargo build --workspace` first \
                 (with the same CARGO_TARGET_DIR)"
            )
        })
        .clone()
}

/// `libzkpkcs11.so`, the PKCS#11 module.
pub fn module() -> PathBuf {
    library("libzkpkcs11.so")
}

/// `libzkemu.so`, the emulator of Zymbit's library.
pub fn emulator() -> PathBuf {
    library("libzkemu.so")
}
