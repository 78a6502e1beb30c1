//! Shared code of the fuzz targets (see `fuzz_targets/`).

pub mod p11;
