//! Random number generation (PKCS#11 2.40 §5.15).

use cryptoki_sys::*;
use zktoken::Error;

use crate::{cryptoki_fn, input, module};

cryptoki_fn! {
    /// `C_SeedRandom`: the device's generator takes no seed.
    fn C_SeedRandom(hSession: CK_SESSION_HANDLE, pSeed: CK_BYTE_PTR, ulSeedLen: CK_ULONG) {
        module()?.session_info(hSession)?;
        // SAFETY: pSeed holds ulSeedLen bytes per the contract.
        unsafe { input(pSeed, ulSeedLen) }?;
        Err(Error::RandomSeedNotSupported)
    }
}

cryptoki_fn! {
    /// `C_GenerateRandom`: bytes from the device's generator.
    fn C_GenerateRandom(hSession: CK_SESSION_HANDLE, RandomData: CK_BYTE_PTR, ulRandomLen: CK_ULONG) {
        let m = module()?;
        let len = usize::try_from(ulRandomLen).map_err(|_| Error::ArgumentsBad("length too large"))?;
        if RandomData.is_null() {
            return Err(Error::ArgumentsBad("NULL buffer"));
        }
        // SAFETY: RandomData holds ulRandomLen bytes per the contract.
        let out = unsafe { std::slice::from_raw_parts_mut(RandomData, len) };
        m.generate_random(hSession, out)
    }
}
