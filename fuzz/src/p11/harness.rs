//! The harness: one input's calls through the module's function list, each
//! checked by the oracles. The calls of each PKCS#11 chapter are in the file
//! named like the module's own (`cdylib/pkcs11/src/`).

mod general;
mod keygen;
mod object;
mod random;
mod session;
mod sign_verify;
mod unsupported;

use std::collections::HashMap;

use arbitrary::{Arbitrary, Unstructured};
use cryptoki_sys::*;
use testkit::raw::Raw;

use super::op::{Handle, InitArgs, Mech, Op, Signature};
use super::oracle;
use super::setup::{copy_dir, setup, DeviceKeys, Setup};

/// A signing operation as the harness expects the module to hold it.
struct Signing {
    mech: Mech,
    data: Vec<u8>,
}

pub struct Harness {
    setup: &'static Setup,
    keys: DeviceKeys,
    sessions: Vec<CK_SESSION_HANDLE>,
    objects: Vec<CK_OBJECT_HANDLE>,
    signing: HashMap<CK_SESSION_HANDLE, Signing>,
    last_signature: Vec<u8>,
}

impl Harness {
    /// A fresh emulator state and store, and an initialised module.
    pub fn start(u: &mut Unstructured) -> Harness {
        let setup = setup();
        let run = setup.work.join("run");
        let _ = std::fs::remove_dir_all(&run);
        // A warm start is what most processes see (the public keys in the
        // store, the device in its cache), and is much faster; a cold one
        // reads the device.
        if bool::arbitrary(u).unwrap_or(false) {
            copy_dir(&setup.template_store, &run);
        }
        copy_dir(&setup.template_emu, &run.join("emu"));
        let mut harness = Harness {
            setup,
            keys: setup.template_keys.clone(),
            sessions: Vec::new(),
            objects: Vec::new(),
            signing: Default::default(),
            last_signature: Vec::new(),
        };
        let init = InitArgs::arbitrary(u).unwrap_or(InitArgs::Null);
        harness.run(Op::Initialize(init));
        harness
    }

    pub fn finish(&mut self) {
        self.run(Op::Finalize);
    }

    /// Runs one call and checks its result.
    pub fn run(&mut self, op: Op) {
        match op {
            Op::Initialize(args) => self.initialize(args),
            Op::Finalize => self.finalize(),
            Op::GetInfo => self.get_info(),
            Op::GetSlotList { present, out } => self.get_slot_list(present, out),
            Op::GetSlotInfo(slot) => self.get_slot_info(slot),
            Op::GetTokenInfo(slot) => self.get_token_info(slot),
            Op::GetMechanismList { slot, out } => self.get_mechanism_list(slot, out),
            Op::GetMechanismInfo { slot, mech } => self.get_mechanism_info(slot, mech),
            Op::InitToken { slot, pin } => self.init_token(slot, &pin),
            Op::InitPin { session, pin } => self.init_pin(session, &pin),
            Op::SetPin { session, old, new } => self.set_pin(session, &old, &new),
            Op::OpenSession { slot, flags } => self.open_session(slot, flags),
            Op::CloseSession(h) => self.close_session(h),
            Op::CloseAllSessions(slot) => self.close_all_sessions(slot),
            Op::GetSessionInfo(h) => self.get_session_info(h),
            Op::Login { session, user, pin } => self.login(session, user, pin.as_deref()),
            Op::Logout(h) => self.logout(h),
            Op::CreateObject { session, template } => self.create_object(session, &template),
            Op::CopyObject { session, object } => self.copy_object(session, object),
            Op::DestroyObject { session, object } => self.destroy_object(session, object),
            Op::GetObjectSize { session, object } => self.get_object_size(session, object),
            Op::GetAttributeValue {
                session,
                object,
                requests,
            } => self.get_attribute_value(self.session(session), self.object(object), &requests),
            Op::SetAttributeValue {
                session,
                object,
                template,
            } => self.set_attribute_value(session, object, &template),
            Op::FindObjectsInit { session, template } => {
                self.find_objects_init(session, &template)
            }
            Op::FindObjects { session, max } => self.find_objects(session, max),
            Op::FindObjectsFinal(h) => self.find_objects_final(h),
            Op::GenerateKeyPair {
                session,
                mechanism,
                public,
                private,
            } => self.generate_key_pair(session, &mechanism, &public, &private),
            Op::SignInit {
                session,
                mechanism,
                key,
            } => self.sign_init(session, &mechanism, key),
            Op::Sign { session, data, out } => self.sign(session, &data, out),
            Op::SignUpdate { session, data } => self.sign_update(session, &data),
            Op::SignFinal { session, out } => self.sign_final(session, out),
            Op::VerifyInit {
                session,
                mechanism,
                key,
            } => self.verify_init(session, &mechanism, key),
            Op::Verify {
                session,
                data,
                signature,
            } => self.verify(session, &data, &signature),
            Op::VerifyUpdate { session, data } => self.verify_update(session, &data),
            Op::VerifyFinal { session, signature } => self.verify_final(session, &signature),
            Op::GenerateRandom { session, len } => self.generate_random(session, len),
            Op::SeedRandom { session, seed } => self.seed_random(session, &seed),
            Op::Unsupported { which, session } => self.unsupported(which, self.session(session)),
        }
    }

    /// The module's function list.
    fn raw(&self) -> &'static Raw {
        &self.setup.raw
    }

    fn session(&self, h: Handle) -> CK_SESSION_HANDLE {
        match h {
            Handle::Known(i) if !self.sessions.is_empty() => {
                self.sessions[i as usize % self.sessions.len()]
            }
            Handle::Known(i) => i as CK_SESSION_HANDLE,
            Handle::Raw(n) => n,
            Handle::Zero => 0,
        }
    }

    fn object(&self, h: Handle) -> CK_OBJECT_HANDLE {
        match h {
            Handle::Known(i) if !self.objects.is_empty() => {
                self.objects[i as usize % self.objects.len()]
            }
            Handle::Known(i) => i as CK_OBJECT_HANDLE,
            Handle::Raw(n) => n,
            Handle::Zero => 0,
        }
    }

    /// Fails if `output` holds a device private key.
    fn check_output(&self, call: &str, output: &[u8]) {
        oracle::check_output(&self.keys, call, output);
    }

    fn signature_bytes(&self, s: &Signature) -> Vec<u8> {
        match s {
            Signature::Last { flip } => {
                let mut sig = self.last_signature.clone();
                if let (Some(i), false) = (flip, sig.is_empty()) {
                    let n = *i as usize % sig.len();
                    sig[n] ^= 1;
                }
                sig
            }
            Signature::Bytes(b) => b.clone(),
        }
    }
}
