//! General purpose, slot and token calls (PKCS#11 2.40 §5.4, §5.5).

use std::ptr::null_mut;

use cryptoki_sys::*;
use testkit::call;

use super::Harness;
use crate::p11::op::{inline_config, initialize_args, Handle, InitArgs, Mech, Out, Slot};
use crate::p11::oracle::{as_bytes, check_length, check_rv};

impl Harness {
    pub(super) fn initialize(&mut self, args: InitArgs) {
        let raw = self.raw();
        let rv = match args {
            InitArgs::Null => call!(raw, C_Initialize(null_mut())),
            InitArgs::Args {
                flags,
                mutexes,
                config,
            } => {
                let text =
                    config.map(|c| inline_config(&c, &self.setup.work.join("run/store.sqlite3")));
                let mut a = initialize_args(flags, mutexes, text.as_ref());
                call!(raw, C_Initialize(&mut a as *mut _ as *mut _))
            }
        };
        check_rv("C_Initialize", rv);
    }

    pub(super) fn finalize(&mut self) {
        let rv = check_rv("C_Finalize", call!(self.raw(), C_Finalize(null_mut())));
        if rv == CKR_OK {
            self.sessions.clear();
            self.objects.clear();
            self.signing.clear();
        }
    }

    pub(super) fn get_info(&mut self) {
        let mut info = CK_INFO::default();
        check_rv("C_GetInfo", call!(self.raw(), C_GetInfo(&mut info)));
        self.check_output("C_GetInfo", as_bytes(&info));
    }

    pub(super) fn get_slot_list(&mut self, present: bool, out: Out) {
        let mut buf: Option<Vec<CK_SLOT_ID>> = out.buffer(1).map(|b| vec![0; b.len()]);
        let mut len = buf.as_ref().map_or(0, |b| b.len()) as CK_ULONG;
        let p = buf.as_mut().map_or(null_mut(), |b| b.as_mut_ptr());
        let rv = check_rv(
            "C_GetSlotList",
            call!(self.raw(), C_GetSlotList(present as CK_BBOOL, p, &mut len)),
        );
        if rv == CKR_OK {
            if let Some(b) = &buf {
                check_length("C_GetSlotList", len, b.len());
            }
        }
    }

    pub(super) fn get_slot_info(&mut self, slot: Slot) {
        let mut info = CK_SLOT_INFO::default();
        check_rv(
            "C_GetSlotInfo",
            call!(self.raw(), C_GetSlotInfo(slot.id(), &mut info)),
        );
        self.check_output("C_GetSlotInfo", as_bytes(&info));
    }

    pub(super) fn get_token_info(&mut self, slot: Slot) {
        let mut info = CK_TOKEN_INFO::default();
        check_rv(
            "C_GetTokenInfo",
            call!(self.raw(), C_GetTokenInfo(slot.id(), &mut info)),
        );
        self.check_output("C_GetTokenInfo", as_bytes(&info));
    }

    pub(super) fn get_mechanism_list(&mut self, slot: Slot, out: Out) {
        let mut buf: Option<Vec<CK_MECHANISM_TYPE>> = out.buffer(8).map(|b| vec![0; b.len()]);
        let mut len = buf.as_ref().map_or(0, |b| b.len()) as CK_ULONG;
        let p = buf.as_mut().map_or(null_mut(), |b| b.as_mut_ptr());
        let rv = check_rv(
            "C_GetMechanismList",
            call!(self.raw(), C_GetMechanismList(slot.id(), p, &mut len)),
        );
        if rv == CKR_OK {
            if let Some(b) = &buf {
                check_length("C_GetMechanismList", len, b.len());
            }
        }
    }

    pub(super) fn get_mechanism_info(&mut self, slot: Slot, mech: Mech) {
        let mut info = CK_MECHANISM_INFO::default();
        check_rv(
            "C_GetMechanismInfo",
            call!(
                self.raw(),
                C_GetMechanismInfo(slot.id(), mech.ck(), &mut info)
            ),
        );
    }

    pub(super) fn init_token(&mut self, slot: Slot, pin: &[u8]) {
        let mut label = [b' '; 32];
        check_rv(
            "C_InitToken",
            call!(
                self.raw(),
                C_InitToken(
                    slot.id(),
                    pin.as_ptr() as *mut _,
                    pin.len() as CK_ULONG,
                    label.as_mut_ptr(),
                )
            ),
        );
    }

    pub(super) fn init_pin(&mut self, session: Handle, pin: &[u8]) {
        check_rv(
            "C_InitPIN",
            call!(
                self.raw(),
                C_InitPIN(
                    self.session(session),
                    pin.as_ptr() as *mut _,
                    pin.len() as CK_ULONG,
                )
            ),
        );
    }

    pub(super) fn set_pin(&mut self, session: Handle, old: &[u8], new: &[u8]) {
        check_rv(
            "C_SetPIN",
            call!(
                self.raw(),
                C_SetPIN(
                    self.session(session),
                    old.as_ptr() as *mut _,
                    old.len() as CK_ULONG,
                    new.as_ptr() as *mut _,
                    new.len() as CK_ULONG,
                )
            ),
        );
    }
}
