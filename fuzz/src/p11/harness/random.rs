//! Random numbers (PKCS#11 2.40 §5.15).

use cryptoki_sys::*;
use testkit::call;

use super::Harness;
use crate::p11::op::Handle;
use crate::p11::oracle::check_rv;

impl Harness {
    pub(super) fn generate_random(&mut self, session: Handle, len: u16) {
        let mut buf = vec![0u8; len as usize % 4096];
        check_rv(
            "C_GenerateRandom",
            call!(
                self.raw(),
                C_GenerateRandom(
                    self.session(session),
                    buf.as_mut_ptr(),
                    buf.len() as CK_ULONG,
                )
            ),
        );
        self.check_output("C_GenerateRandom", &buf);
    }

    pub(super) fn seed_random(&mut self, session: Handle, seed: &[u8]) {
        check_rv(
            "C_SeedRandom",
            call!(
                self.raw(),
                C_SeedRandom(
                    self.session(session),
                    seed.as_ptr() as *mut _,
                    seed.len() as CK_ULONG,
                )
            ),
        );
    }
}
