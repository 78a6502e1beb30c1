//! Random number generation (PKCS#11 2.40 §5.15).

use cryptoki_sys::*;
use zktoken::{Error, Result};

use crate::{export, input, module, output};

export!(C_SeedRandom(
    hSession: CK_SESSION_HANDLE,
    pSeed: CK_BYTE_PTR,
    ulSeedLen: CK_ULONG,
) = unsafe seed_random);

/// `C_SeedRandom` (§5.15): the device's generator takes no seed, which the
/// specification answers with `CKR_RANDOM_SEED_NOT_SUPPORTED`.
///
/// # Safety
/// `pSeed` is NULL or valid for reading `ulSeedLen` bytes.
unsafe fn seed_random(
    hSession: CK_SESSION_HANDLE,
    pSeed: CK_BYTE_PTR,
    ulSeedLen: CK_ULONG,
) -> Result<()> {
    module()?.check_session(hSession)?;
    // SAFETY: by the contract above.
    unsafe { input(pSeed, ulSeedLen) }?;
    Err(Error::RandomSeedNotSupported)
}

export!(C_GenerateRandom(
    hSession: CK_SESSION_HANDLE,
    RandomData: CK_BYTE_PTR,
    ulRandomLen: CK_ULONG,
) = unsafe generate_random);

/// `C_GenerateRandom` (§5.15): bytes from the device's generator.
///
/// # Safety
/// `RandomData` is NULL or valid for writing `ulRandomLen` bytes.
unsafe fn generate_random(
    hSession: CK_SESSION_HANDLE,
    RandomData: CK_BYTE_PTR,
    ulRandomLen: CK_ULONG,
) -> Result<()> {
    let m = module()?;
    // SAFETY: by the contract above.
    let out = unsafe { output(RandomData, ulRandomLen) }?;
    m.generate_random(hSession, out.ok_or(Error::ArgumentsBad("NULL buffer"))?)
}
