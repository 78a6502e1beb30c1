//! `zkiot device selftest`: checks what the PKCS#11 module assumes about Zymbit's library and
//! the device, first straight through the library, then through the module, and reports what it
//! found (for a bug report) and every difference from what the module expects.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Result};
use openssl::bn::BigNum;
use openssl::ecdsa::EcdsaSig;
use openssl::nid::Nid;
use openssl::pkey::{Id, PKey, Public};
use serde::Serialize;
use zymkey::{KeyType, Slot, Zymkey, DIGEST_LEN, SIGNATURE_LEN};

use super::cli::SelftestArgs;
use super::labels::Labels;
use crate::p11::{public_key_from_point, public_key_on, KeyObject, P11Token};
use crate::GlobalOpts;

/// Text whose SHA-256 the self-test signs: a known digest, the same on every device.
const KNOWN_MESSAGE: &[u8] = b"zkiot device selftest v1";
/// Random bytes asked of the device.
const RANDOM_LEN: usize = 32;
/// The slot every model has a factory key in (the device key); tested when the library lists
/// no slots.
const DEFAULT_SLOT: i32 = zkconf::DEVICE_KEY_SLOT as i32;
/// Slots below this are the factory's; a key store has room beyond them (as the module decides).
const FIRST_FREE_SLOT: usize = 16;

/// One call into the library or the module, and how long it took.
#[derive(Debug, Serialize)]
pub struct Operation {
    pub name: String,
    pub millis: f64,
    pub ok: bool,
}

#[derive(Debug, Serialize)]
pub struct LibraryReport {
    pub path: PathBuf,
    pub loaded: bool,
    /// Optional functions of newer libraries, and whether this one has each.
    pub optional_symbols: Vec<(String, bool)>,
}

#[derive(Debug, Default, Serialize)]
pub struct DeviceReport {
    pub model: Option<String>,
    pub serial: Option<String>,
    pub firmware: Option<String>,
    pub time: Option<u32>,
    pub random_len: Option<usize>,
    /// Where the slot list came from: the library's zkGetAllocSlotsList, or the default slot.
    pub slots_from: String,
    /// Size of the device's key store and of its foreign keyring, as zkGetAllocSlotsList says.
    pub key_slots: Option<usize>,
    pub foreign_slots: Option<usize>,
    pub foreign_in_use: Option<usize>,
    pub slots: Vec<SlotReport>,
    /// What the device computes when it signs with an Ed25519 key, if checked.
    pub ed25519: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct SlotReport {
    pub slot: i32,
    /// The key's curve as read back from its public key: `P-256`, `secp256k1`, or a 32-byte
    /// key (Ed25519 or X25519, which the device cannot tell apart).
    pub curve: Option<String>,
    /// `raw X||Y` (what Zymbit documents), `SEC1 uncompressed`, or `unexpected`.
    pub public_key_format: Option<String>,
    pub public_key_len: Option<usize>,
    pub signature_len: Option<usize>,
    /// The signature over the known digest verifies with the slot's public key.
    pub signature_verifies: Option<bool>,
    /// The device's own zkVerifyECDSASigFromDigest accepts it.
    pub device_verifies: Option<bool>,
}

#[derive(Debug, Default, Serialize)]
pub struct ModuleReport {
    pub module: PathBuf,
    pub token_label: String,
    pub token_model: Option<String>,
    pub token_serial: Option<String>,
    pub key_label: Option<String>,
    pub signature_len: Option<usize>,
    /// C_Sign's signature verifies with the token's public key object.
    pub signature_verifies: Option<bool>,
    /// The token's key is the device slot's key.
    pub same_key_as_device: Option<bool>,
    /// The token offers key generation (it found a key store).
    pub key_generation: Option<bool>,
    /// Each device slot and how the token shows it: the curve it recorded or read, or hidden.
    pub slots_shown: Vec<(i32, String)>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub library: LibraryReport,
    pub device: DeviceReport,
    pub pkcs11: ModuleReport,
    pub operations: Vec<Operation>,
    /// Each difference from what the module expects; empty when all is well.
    pub problems: Vec<String>,
}

/// Runs the self-test and prints the report; fails when anything differed.
pub fn run(args: SelftestArgs, global: &GlobalOpts) -> Result<()> {
    let library = args.library.clone().unwrap_or_else(configured_library);
    let report = selftest(&library, global, args.ed25519);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    if !report.problems.is_empty() {
        bail!("device selftest failed (see the MISMATCH lines)");
    }
    Ok(())
}

/// The library the module would load (as the token chooses it): `$ZKIOT_ZKLIB`, else `zklib`
/// in the configuration, else Zymbit's path.
pub(super) fn configured_library() -> PathBuf {
    let configured = zkconf::Config::discover(None).ok().and_then(|c| c.zklib);
    zymkey::library_path(configured.as_deref())
}

struct Run {
    operations: Vec<Operation>,
    problems: Vec<String>,
}

impl Run {
    /// Times one call; a failure becomes a problem naming the call.
    fn time<T, E: std::fmt::Display>(
        &mut self,
        name: &str,
        call: impl FnOnce() -> std::result::Result<T, E>,
    ) -> Option<T> {
        match self.timed(name, call) {
            Ok(v) => Some(v),
            Err(e) => {
                self.problems.push(format!("{name} failed: {e}"));
                None
            }
        }
    }

    /// Times one call, whose failure is a finding, not a problem.
    fn timed<T, E>(
        &mut self,
        name: &str,
        call: impl FnOnce() -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        let started = Instant::now();
        let result = call();
        self.operations.push(Operation {
            name: name.to_string(),
            millis: started.elapsed().as_secs_f64() * 1000.0,
            ok: result.is_ok(),
        });
        result
    }

    fn expect(&mut self, ok: bool, problem: impl FnOnce() -> String) {
        if !ok {
            self.problems.push(problem());
        }
    }
}

fn known_digest() -> [u8; DIGEST_LEN] {
    openssl::sha::sha256(KNOWN_MESSAGE)
}

fn selftest(library: &Path, global: &GlobalOpts, ed25519: bool) -> Report {
    let mut run = Run {
        operations: Vec::new(),
        problems: Vec::new(),
    };
    let mut lib_report = LibraryReport {
        path: library.to_path_buf(),
        loaded: false,
        optional_symbols: Vec::new(),
    };
    let mut device = DeviceReport::default();
    let mut device_keys = Vec::new();
    if let Some(zymkey) = run.time("load library", || Zymkey::load(library)) {
        lib_report.loaded = true;
        lib_report.optional_symbols = zymkey
            .library()
            .optional_symbols()
            .into_iter()
            .map(|(name, present)| (name.to_string(), present))
            .collect();
        device_keys = test_device(&zymkey, &mut device, &mut run, ed25519);
    }
    let pkcs11 = test_module(global, &device, &device_keys, &mut run);
    Report {
        library: lib_report,
        device,
        pkcs11,
        operations: run.operations,
        problems: run.problems,
    }
}

/// The device through the library. Returns each tested slot's public key (raw X‖Y).
fn test_device(
    zymkey: &Zymkey,
    report: &mut DeviceReport,
    run: &mut Run,
    ed25519: bool,
) -> Vec<(i32, Vec<u8>)> {
    // The first call opens the device (zkOpen) too.
    report.model = run.time("zkOpen, zkGetModelNumberString", || zymkey.model());
    report.serial = run.time("zkGetSerialNumberString", || zymkey.serial_number());
    report.firmware = run.time("zkGetFirmwareVersionString", || zymkey.firmware_version());
    for (what, value) in [("model", &report.model), ("serial number", &report.serial)] {
        if let Some(v) = value {
            run.expect(!v.trim().is_empty(), || {
                format!("the device's {what} is empty; the token's information needs it")
            });
        }
    }
    report.time = run.time("zkGetTime", || zymkey.time(false));
    if let Some(bytes) = run.time("zkGetRandBytes", || zymkey.random(RANDOM_LEN)) {
        report.random_len = Some(bytes.len());
        run.expect(bytes.len() == RANDOM_LEN, || {
            format!(
                "zkGetRandBytes gave {} bytes, asked for {RANDOM_LEN}",
                bytes.len()
            )
        });
        run.expect(bytes.iter().any(|&b| b != 0), || {
            "zkGetRandBytes gave only zero bytes".to_string()
        });
    }

    let has_list = zymkey
        .library()
        .optional_symbols()
        .iter()
        .any(|&(name, present)| name == "zkGetAllocSlotsList" && present);
    let slots = if has_list {
        report.slots_from = "zkGetAllocSlotsList".into();
        let list = run.time("zkGetAllocSlotsList", || zymkey.allocated_slots(false));
        report.key_slots = list.as_ref().map(|l| l.capacity);
        if report.key_slots.is_some_and(|n| n > FIRST_FREE_SLOT) {
            // A key store has a foreign keyring too.
            if let Some(foreign) = run.time("zkGetAllocSlotsList (foreign)", || {
                zymkey.allocated_slots(true)
            }) {
                report.foreign_slots = Some(foreign.capacity);
                report.foreign_in_use = Some(foreign.slots.len());
            }
        }
        list.map(|l| l.slots).unwrap_or_default()
    } else {
        report.slots_from = format!("default slot {DEFAULT_SLOT} (no zkGetAllocSlotsList)");
        vec![DEFAULT_SLOT]
    };
    run.expect(!slots.is_empty(), || {
        "the device lists no key slots".to_string()
    });

    let digest = known_digest();
    let mut keys = Vec::new();
    for number in slots {
        let slot = Slot::device(number);
        let mut s = SlotReport {
            slot: number,
            curve: None,
            public_key_format: None,
            public_key_len: None,
            signature_len: None,
            signature_verifies: None,
            device_verifies: None,
        };
        let export = if has_list {
            "zkExportPubKey"
        } else {
            "zkGetECDSAPubKey"
        };
        let public = run.time(&format!("{export} slot {number}"), || {
            zymkey.public_key(slot)
        });
        if let Some(raw) = public.as_deref().filter(|raw| raw.len() == ED25519_KEY_LEN) {
            // Ed25519 or X25519: no ECDSA; the module shows it only if it recorded its curve.
            s.public_key_len = Some(raw.len());
            s.public_key_format = Some("raw 32 bytes".into());
            s.curve = Some("32-byte (Ed25519 or X25519)".into());
            if ed25519 && report.ed25519.is_none() {
                report.ed25519 = Some(check_ed25519(zymkey, number, raw, run));
            }
            report.slots.push(s);
            continue;
        }
        let point = public.as_deref().and_then(|raw| {
            s.public_key_len = Some(raw.len());
            let (format, point) = match (raw.len(), raw.first()) {
                (64, _) => ("raw X||Y", [&[0x04], raw].concat()),
                (65, Some(0x04)) => ("SEC1 uncompressed", raw.to_vec()),
                _ => ("unexpected", Vec::new()),
            };
            s.public_key_format = Some(format.to_string());
            run.expect(!point.is_empty(), || {
                format!(
                    "slot {number}: public key of {} bytes; the module expects 64 (raw X||Y), 65 \
                     (04||X||Y) or 32 (Ed25519, X25519)",
                    raw.len()
                )
            });
            (!point.is_empty()).then_some(point)
        });
        let key = point.as_deref().and_then(|p| match ecdsa_key(p) {
            Some((curve, key)) => {
                s.curve = Some(curve.to_string());
                Some(key)
            }
            None => {
                run.problems.push(format!(
                    "slot {number}: the public key is on neither P-256 nor secp256k1"
                ));
                None
            }
        });
        if let Some(signature) = run.time(&format!("zkGenECDSASigFromDigest slot {number}"), || {
            zymkey.sign_digest(number, &digest)
        }) {
            s.signature_len = Some(signature.len());
            if let Some(key) = &key {
                let ok = verify_raw(key, &digest, &signature);
                s.signature_verifies = Some(ok);
                run.expect(ok, || {
                    format!("slot {number}: the device's signature does not verify with the slot's public key")
                });
            }
            let device_ok = run.time(&format!("zkVerifyECDSASigFromDigest slot {number}"), || {
                zymkey.verify_digest(slot, &digest, &signature)
            });
            s.device_verifies = device_ok;
            if let Some(ok) = device_ok {
                run.expect(ok, || {
                    format!("slot {number}: the device rejects its own signature")
                });
            }
        }
        if let Some(p) = point {
            keys.push((number, p));
        }
        report.slots.push(s);
    }
    if ed25519 && report.ed25519.is_none() {
        report.ed25519 = Some(if report.key_slots.is_some_and(|n| n > FIRST_FREE_SLOT) {
            with_temporary_ed25519_key(zymkey, run)
        } else {
            "not checked: the device holds no 32-byte key and generates none".into()
        });
    }
    keys
}

/// Length of an Ed25519 (or X25519) public key.
const ED25519_KEY_LEN: usize = 32;

/// The curve of an uncompressed point, P-256 or secp256k1, and the key.
fn ecdsa_key(point: &[u8]) -> Option<(&'static str, PKey<Public>)> {
    [
        ("P-256", Nid::X9_62_PRIME256V1),
        ("secp256k1", Nid::SECP256K1),
    ]
    .into_iter()
    .find_map(|(name, nid)| Some((name, public_key_on(nid, point).ok()?)))
}

/// Signs the known 32-byte digest with the 32-byte key of `slot` and says whether the result
/// is a pure Ed25519 signature of those 32 bytes. A refusal is a finding, not a mismatch: the
/// module offers no EdDSA signing either way.
fn check_ed25519(zymkey: &Zymkey, slot: i32, raw: &[u8], run: &mut Run) -> String {
    let message = known_digest();
    let signed = run.timed(
        &format!("zkGenECDSASigFromDigest slot {slot} (32-byte key)"),
        || zymkey.sign_digest(slot, &message),
    );
    let signature = match signed {
        Ok(signature) => signature,
        Err(e) => return format!("slot {slot}: the device refuses to sign with it ({e})"),
    };
    let pure = PKey::public_key_from_raw_bytes(raw, Id::ED25519)
        .and_then(|key| {
            openssl::sign::Verifier::new_without_digest(&key)?.verify_oneshot(&signature, &message)
        })
        .unwrap_or(false);
    if pure {
        format!("slot {slot}: pure Ed25519 over the 32 bytes it is given (CKM_EDDSA could be offered for 32-byte messages)")
    } else {
        format!("slot {slot}: the device signs, but not as pure Ed25519 over the 32 bytes it is given (or it is an X25519 key)")
    }
}

/// Makes an Ed25519 key, checks it, and removes it.
fn with_temporary_ed25519_key(zymkey: &Zymkey, run: &mut Run) -> String {
    let Some(slot) = run.time("zkGenKeyPair (Ed25519, temporary)", || {
        zymkey.generate_key(KeyType::Ed25519)
    }) else {
        return "not checked: the device did not make an Ed25519 key".into();
    };
    let finding = match run.time(&format!("zkExportPubKey slot {slot}"), || {
        zymkey.public_key(Slot::device(slot))
    }) {
        Some(raw) if raw.len() == ED25519_KEY_LEN => check_ed25519(zymkey, slot, &raw, run),
        Some(raw) => format!(
            "slot {slot}: the new Ed25519 key's public key has {} bytes, not 32",
            raw.len()
        ),
        None => "not checked: the new key's public key is unreadable".into(),
    };
    run.time(
        &format!("zkRemoveKey slot {slot} (the temporary key)"),
        || zymkey.remove_key(Slot::device(slot)),
    );
    finding
}

/// The same through the PKCS#11 module: C_Sign on the token's key, verified with its public key object.
fn test_module(
    global: &GlobalOpts,
    device: &DeviceReport,
    device_keys: &[(i32, Vec<u8>)],
    run: &mut Run,
) -> ModuleReport {
    let mut report = ModuleReport {
        module: global.module.clone(),
        ..ModuleReport::default()
    };
    let labels = match Labels::of(global, None) {
        Ok(labels) => labels,
        Err(e) => {
            run.problems.push(format!("{e:#}"));
            return report;
        }
    };
    report.token_label = labels.token.clone();
    let Some(token) = run.time("open the PKCS#11 token", || {
        P11Token::open(&global.module, &labels.token)
    }) else {
        return report;
    };
    report.token_model = Some(token.model().to_string());
    report.token_serial = Some(token.serial_number().to_string());
    compare_key_store(&token, device, &mut report, run);
    if let Some(model) = &device.model {
        run.expect(field_matches(model, token.model()), || {
            format!(
                "the token's model {:?} is not the device's {:?}",
                token.model(),
                model.trim()
            )
        });
    }
    if let Some(serial) = &device.serial {
        run.expect(field_matches(serial, token.serial_number()), || {
            format!(
                "the token's serial number {:?} is not the device's {:?}",
                token.serial_number(),
                serial.trim()
            )
        });
    }
    let label = labels.key;
    let Some(key) = run.time(&format!("find key {label}"), || token.find_key(&label)) else {
        return report;
    };
    report.key_label = Some(key.label.clone());
    let digest = known_digest();
    let Some(signature) = run.time("C_Sign (CKM_ECDSA)", || token.sign_digest(&key, &digest))
    else {
        return report;
    };
    report.signature_len = Some(signature.len());
    let public = run.time("read the token's public key object", || {
        token.public_key_object(&key.id)
    });
    if let Some(point) = public {
        match public_key_from_point(&point) {
            Ok(k) => {
                let ok = verify_raw(&k, &digest, &signature);
                report.signature_verifies = Some(ok);
                run.expect(ok, || {
                    "C_Sign's signature does not verify with the token's public key object"
                        .to_string()
                });
            }
            Err(e) => run.problems.push(format!(
                "the token's public key object is not a P-256 point: {e}"
            )),
        }
        if let Some((_, device_point)) = device_keys.iter().find(|(n, _)| *n == DEFAULT_SLOT) {
            let same = *device_point == point;
            report.same_key_as_device = Some(same);
            run.expect(same, || {
                format!("the token's key {label} is not device slot {DEFAULT_SLOT}'s public key")
            });
        }
    }
    report
}

/// What the module concluded from the device: whether it has a key store, and how it shows
/// each slot. Differences from what the device says are mismatches.
fn compare_key_store(
    token: &P11Token,
    device: &DeviceReport,
    report: &mut ModuleReport,
    run: &mut Run,
) {
    if let Some(mechanisms) = run.time("C_GetMechanismList", || token.mechanisms()) {
        let offered = mechanisms.contains(&cryptoki::mechanism::MechanismType::ECC_KEY_PAIR_GEN);
        report.key_generation = Some(offered);
        if let Some(size) = device.key_slots {
            let key_store = size > FIRST_FREE_SLOT;
            run.expect(offered == key_store, || {
                format!(
                    "the device's slot list has {size} slots ({} key store), but the module {} key generation",
                    if key_store { "a" } else { "no" },
                    if offered { "offers" } else { "does not offer" }
                )
            });
        }
    }
    let Some(keys) = run.time("C_FindObjects (private keys)", || token.key_objects()) else {
        return;
    };
    let shown = |slot: i32| -> Option<&KeyObject> {
        let id = u16::try_from(slot).ok()?.to_be_bytes();
        keys.iter().find(|k| k.id == id)
    };
    for s in &device.slots {
        let as_shown = shown(s.slot).map_or_else(|| "hidden".to_string(), KeyObject::curve);
        // A hidden key is no mismatch: a 32-byte key whose curve the module did not record,
        // or a key made by another tool since the module last read the device.
        if let Some(curve) = s
            .curve
            .as_deref()
            .filter(|c| !c.starts_with("32-byte") && as_shown != "hidden")
        {
            run.expect(as_shown == curve, || {
                format!(
                    "slot {}: a {curve} key on the device, shown by the module as {as_shown}",
                    s.slot
                )
            });
        }
        report.slots_shown.push((s.slot, as_shown));
    }
}

/// A token information field holds the device's string, space-padded and cut to the field.
fn field_matches(device: &str, token: &str) -> bool {
    let device = device.trim();
    let token = token.trim();
    !token.is_empty() && device.starts_with(token)
}

fn verify_raw(key: &PKey<Public>, digest: &[u8; DIGEST_LEN], raw: &[u8]) -> bool {
    if raw.len() != SIGNATURE_LEN {
        return false;
    }
    let (Ok(ec), Ok(r), Ok(s)) = (
        key.ec_key(),
        BigNum::from_slice(&raw[..32]),
        BigNum::from_slice(&raw[32..]),
    ) else {
        return false;
    };
    EcdsaSig::from_private_components(r, s)
        .and_then(|sig| sig.verify(digest, &ec))
        .unwrap_or(false)
}

fn yes_no(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "yes",
        Some(false) => "NO",
        None => "not checked",
    }
}

fn or_dash<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref()
        .map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// The human-readable report.
pub fn render(r: &Report) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let l = &r.library;
    let _ = writeln!(
        out,
        "library   {} ({})",
        l.path.display(),
        if l.loaded { "loaded" } else { "NOT loaded" }
    );
    if l.loaded {
        let symbols: Vec<String> = l
            .optional_symbols
            .iter()
            .map(|(name, present)| format!("{name} {}", if *present { "yes" } else { "no" }))
            .collect();
        let _ = writeln!(out, "optional  {}", symbols.join(", "));
        let d = &r.device;
        let _ = writeln!(
            out,
            "device    model {}, serial {}, firmware {}, time {}",
            or_dash(&d.model),
            or_dash(&d.serial),
            or_dash(&d.firmware),
            or_dash(&d.time)
        );
        let _ = writeln!(out, "random    {} bytes", or_dash(&d.random_len));
        let _ = writeln!(out, "slots     from {}", d.slots_from);
        let _ = writeln!(
            out,
            "pool      key store {} slots; foreign keyring {} slots ({} in use)",
            or_dash(&d.key_slots),
            or_dash(&d.foreign_slots),
            or_dash(&d.foreign_in_use)
        );
        for s in &d.slots {
            let _ = writeln!(
                out,
                "slot {:<4} {}; public key {} ({} bytes); signature r||s {} bytes; verifies with the public key: {}; device verifies it: {}",
                s.slot,
                or_dash(&s.curve),
                or_dash(&s.public_key_format),
                or_dash(&s.public_key_len),
                or_dash(&s.signature_len),
                yes_no(s.signature_verifies),
                yes_no(s.device_verifies)
            );
        }
    }
    let m = &r.pkcs11;
    let _ = writeln!(
        out,
        "pkcs11    module {}, token {} (model {}, serial {}), key {}",
        m.module.display(),
        m.token_label,
        or_dash(&m.token_model),
        or_dash(&m.token_serial),
        or_dash(&m.key_label)
    );
    let _ = writeln!(
        out,
        "pkcs11    C_Sign r||s {} bytes; verifies with the token's public key object: {}; same key as the device slot: {}",
        or_dash(&m.signature_len),
        yes_no(m.signature_verifies),
        yes_no(m.same_key_as_device)
    );
    if let Some(finding) = &r.device.ed25519 {
        let _ = writeln!(out, "ed25519   {finding}");
    }
    let shown: Vec<String> = m
        .slots_shown
        .iter()
        .map(|(slot, as_shown)| format!("{slot} {as_shown}"))
        .collect();
    let _ = writeln!(
        out,
        "module    key generation offered: {}; slots shown: {}",
        yes_no(m.key_generation),
        if shown.is_empty() {
            "-".to_string()
        } else {
            shown.join(", ")
        }
    );
    for op in &r.operations {
        let _ = writeln!(
            out,
            "time      {:<48} {:>9.3} ms{}",
            op.name,
            op.millis,
            if op.ok { "" } else { "  (failed)" }
        );
    }
    for p in &r.problems {
        let _ = writeln!(out, "MISMATCH  {p}");
    }
    let _ = writeln!(
        out,
        "result    {}",
        if r.problems.is_empty() {
            "ok: the library, the device and the module behave as the module expects".to_string()
        } else {
            format!("FAILED: {} problem(s) above", r.problems.len())
        }
    );
    out
}
