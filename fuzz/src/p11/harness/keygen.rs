//! Key generation (PKCS#11 2.40 §5.14): a new key joins the device keys the
//! oracles know.

use std::ptr::null_mut;

use cryptoki_sys::*;
use testkit::call;

use super::Harness;
use crate::p11::op::{mechanism_struct, template, Attr, Handle, Mechanism};
use crate::p11::oracle::check_rv;
use crate::p11::setup::DeviceKeys;

impl Harness {
    pub(super) fn generate_key_pair(
        &mut self,
        session: Handle,
        mechanism: &Mechanism,
        public: &[Attr],
        private: &[Attr],
    ) {
        let (_pv, mut pt) = template(public, &self.setup.certificate);
        let (_sv, mut st) = template(private, &self.setup.certificate);
        let (_param, mut m) = mechanism_struct(mechanism);
        let mp = if mechanism.null {
            null_mut()
        } else {
            &mut m as *mut _
        };
        let (mut hp, mut hs) = (0, 0);
        let rv = check_rv(
            "C_GenerateKeyPair",
            call!(
                self.raw(),
                C_GenerateKeyPair(
                    self.session(session),
                    mp,
                    pt.as_mut_ptr(),
                    pt.len() as CK_ULONG,
                    st.as_mut_ptr(),
                    st.len() as CK_ULONG,
                    &mut hp,
                    &mut hs,
                )
            ),
        );
        if rv == CKR_OK {
            self.objects.push(hp);
            self.objects.push(hs);
            self.keys = DeviceKeys::read(&self.setup.work.join("run/emu"));
        }
    }
}
