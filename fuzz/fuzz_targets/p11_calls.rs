//! Sequences of PKCS#11 calls, with arguments decoded from the input, through
//! the module's C function list, over the emulator (HSM6 model). Fails on a
//! crash or sanitizer report, on `CKR_GENERAL_ERROR`, on a private key byte
//! string in any output, on a length answer larger than the buffer given, and
//! on a signature that does not verify under a device key.

#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use zkiot_fuzz::p11::{Harness, Op};

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let mut harness = Harness::start(&mut u);
    let mut steps = 0;
    while !u.is_empty() && steps < 64 {
        let Ok(op) = Op::arbitrary(&mut u) else { break };
        harness.run(op);
        steps += 1;
    }
    harness.finish();
});
