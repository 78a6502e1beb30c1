//! What the `zymkey` binding reports when the library is not a usable Zymkey library.

mod common;

use std::path::Path;

use zymkey::{Error, Zymkey};

#[test]
fn missing_library_is_named() {
    let path = Path::new("/nonexistent/zkiot/libzk_app_utils.so");
    match Zymkey::load(path) {
        Err(Error::LibraryNotFound {
            path: named,
            reason,
        }) => {
            assert_eq!(named, path);
            assert!(!reason.is_empty());
        }
        other => panic!("expected LibraryNotFound, got {other:?}"),
    }
    let message = Zymkey::load(path).unwrap_err().to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
}

#[test]
fn library_without_the_symbols_is_refused() {
    let path = Path::new("libc.so.6");
    match Zymkey::load(path) {
        Err(Error::MissingSymbol {
            path: named,
            symbol,
        }) => {
            assert_eq!(named, path);
            assert_eq!(symbol, "zkOpen");
        }
        other => panic!("expected MissingSymbol, got {other:?}"),
    }
}

#[test]
fn emulator_has_every_symbol_of_the_header() {
    let header = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../include/zk_app_utils.h"),
    )
    .unwrap();
    let functions: Vec<&str> = header
        .lines()
        .filter_map(|line| line.strip_prefix("int "))
        .filter_map(|rest| rest.split('(').next())
        .collect();
    // The 17 functions of today's header at least; any added later must be exported too.
    assert!(functions.len() >= 17, "{functions:?}");
    let library = common::library_path();
    // SAFETY: the emulator's initialisers are Rust's own; nothing is called.
    let lib = unsafe { libloading::Library::new(&library) }.unwrap();
    for function in functions {
        // SAFETY: only the address is looked up.
        let symbol = unsafe { lib.get::<*const ()>(function.as_bytes()) };
        assert!(
            symbol.is_ok(),
            "{function} missing from {}",
            library.display()
        );
    }
}
