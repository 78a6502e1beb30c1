//! `zkbench`: ECDSA P-256 signatures per second through `libzkpkcs11.so`, side by
//! side with raw OpenSSL and with SoftHSM2 through PKCS#11, in one run.
//!
//! Every case runs in a child process of its own, because the module and the
//! emulator read their environment once per process. A child prints one JSON
//! line; the parent prints the table with the ratios. Each PKCS#11 signature is
//! made the way consumers make it (`cryptoki`'s `sign` = a length query, then
//! the signature), so the table also shows that a length query costs no device
//! signature.
//!
//! The emulator's `ZKIOT_EMU_LATENCY_MS` stands in for the device's signing
//! time: with it, the "device" rows show the ceiling a real Zymkey sets (it
//! signs one request at a time, so more threads do not help).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;

const USAGE: &str = "\
usage: zkbench --module PATH --emulator PATH [--softhsm PATH] [--seconds S]
               [--latency-ms MS] [--threads N]

  --module      libzkpkcs11.so to measure
  --emulator    libzkemu.so the module loads (ZKIOT_ZKLIB)
  --softhsm     SoftHSM2 module, the software peer (default /usr/lib/softhsm/libsofthsm2.so)
  --seconds     time per case (default 3)
  --latency-ms  emulated device signing time for the device rows (default 20)
  --threads     threads for the multi-threaded rows (default 4)
";

#[derive(Debug, Clone)]
struct Options {
    module: PathBuf,
    emulator: PathBuf,
    softhsm: PathBuf,
    seconds: f64,
    latency_ms: u64,
    threads: usize,
}

/// One measured row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    OpenSsl,
    SoftHsm,
    Module,
    ModuleThreads,
    Device,
    DeviceThreads,
}

impl Case {
    const ALL: [Case; 6] = [
        Case::OpenSsl,
        Case::SoftHsm,
        Case::Module,
        Case::ModuleThreads,
        Case::Device,
        Case::DeviceThreads,
    ];

    fn name(self) -> &'static str {
        match self {
            Case::OpenSsl => "openssl",
            Case::SoftHsm => "softhsm",
            Case::Module => "module",
            Case::ModuleThreads => "module-threads",
            Case::Device => "device",
            Case::DeviceThreads => "device-threads",
        }
    }

    fn from_name(name: &str) -> Option<Case> {
        Case::ALL.into_iter().find(|c| c.name() == name)
    }

    fn describe(self, o: &Options) -> String {
        match self {
            Case::OpenSsl => "OpenSSL, in process, 1 thread".into(),
            Case::SoftHsm => "SoftHSM2 via PKCS#11, 1 thread".into(),
            Case::Module => "zkpkcs11 + emulator (0 ms), 1 thread".into(),
            Case::ModuleThreads => format!("zkpkcs11 + emulator (0 ms), {} threads", o.threads),
            Case::Device => format!("zkpkcs11 + emulator ({} ms), 1 thread", o.latency_ms),
            Case::DeviceThreads => format!(
                "zkpkcs11 + emulator ({} ms), {} threads",
                o.latency_ms, o.threads
            ),
        }
    }
}

/// What a child reports.
#[derive(Debug, Clone, Copy)]
struct Measurement {
    signatures: u64,
    seconds: f64,
    /// Device signatures the emulator counted, for the module rows.
    device_signatures: Option<u64>,
}

impl Measurement {
    fn per_second(&self) -> f64 {
        self.signatures as f64 / self.seconds
    }
}

fn main() {
    if let Err(e) = run() {
        eprintln!("zkbench: error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mut case = None;
    let mut module = None;
    let mut emulator = None;
    let mut softhsm = PathBuf::from("/usr/lib/softhsm/libsofthsm2.so");
    let mut seconds = 3.0;
    let mut latency_ms = 20;
    let mut threads = 4;
    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--case" => case = Some(value()?),
            "--module" => module = Some(PathBuf::from(value()?)),
            "--emulator" => emulator = Some(PathBuf::from(value()?)),
            "--softhsm" => softhsm = PathBuf::from(value()?),
            "--seconds" => seconds = value()?.parse().context("--seconds")?,
            "--latency-ms" => latency_ms = value()?.parse().context("--latency-ms")?,
            "--threads" => threads = value()?.parse().context("--threads")?,
            "-h" | "--help" => {
                print!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    let options = Options {
        module: module.context("--module is required")?,
        emulator: emulator.context("--emulator is required")?,
        softhsm,
        seconds,
        latency_ms,
        threads: threads.max(1),
    };
    match case {
        Some(name) => {
            let case = Case::from_name(&name).with_context(|| format!("unknown case {name}"))?;
            let m = measure(case, &options)?;
            println!(
                "{}",
                serde_json::json!({
                    "signatures": m.signatures,
                    "seconds": m.seconds,
                    "device_signatures": m.device_signatures,
                })
            );
            Ok(())
        }
        None => compare(&options),
    }
}

/// Runs every case in a child process and prints the table.
fn compare(o: &Options) -> Result<()> {
    let exe = std::env::current_exe()?;
    let mut rows = Vec::new();
    for case in Case::ALL {
        if case == Case::SoftHsm && !o.softhsm.exists() {
            eprintln!(
                "zkbench: {} not found, SoftHSM2 row skipped",
                o.softhsm.display()
            );
            continue;
        }
        let out = Command::new(&exe)
            .args(["--case", case.name()])
            .arg("--module")
            .arg(&o.module)
            .arg("--emulator")
            .arg(&o.emulator)
            .arg("--softhsm")
            .arg(&o.softhsm)
            .args(["--seconds", &o.seconds.to_string()])
            .args(["--latency-ms", &o.latency_ms.to_string()])
            .args(["--threads", &o.threads.to_string()])
            .output()
            .context("running a case")?;
        if !out.status.success() {
            bail!(
                "case {} failed: {}",
                case.name(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let line = String::from_utf8_lossy(&out.stdout);
        let v: serde_json::Value = serde_json::from_str(line.trim())
            .with_context(|| format!("case {} printed {line:?}", case.name()))?;
        rows.push((
            case,
            Measurement {
                signatures: v["signatures"].as_u64().unwrap_or(0),
                seconds: v["seconds"].as_f64().unwrap_or(f64::NAN),
                device_signatures: v["device_signatures"].as_u64(),
            },
        ));
    }
    let rate = |c: Case| {
        rows.iter()
            .find(|(k, _)| *k == c)
            .map(|(_, m)| m.per_second())
    };
    let openssl = rate(Case::OpenSsl);
    let softhsm = rate(Case::SoftHsm);
    let ratio = |r: f64, base: Option<f64>| match base {
        Some(b) if b > 0.0 => format!("{:.3}", r / b),
        _ => "-".into(),
    };
    println!(
        "{:<44} {:>10} {:>11} {:>12} {:>16}",
        "case", "sign/s", "vs OpenSSL", "vs SoftHSM2", "device signs/op"
    );
    for (case, m) in &rows {
        let r = m.per_second();
        let device = m
            .device_signatures
            .map(|d| format!("{:.3}", d as f64 / m.signatures.max(1) as f64))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<44} {:>10.0} {:>11} {:>12} {:>16}",
            case.describe(o),
            r,
            ratio(r, openssl),
            ratio(r, softhsm),
            device
        );
    }
    if o.latency_ms > 0 {
        println!(
            "device rows: ceiling {:.1} sign/s at {} ms per device signature",
            1000.0 / o.latency_ms as f64,
            o.latency_ms
        );
    }
    Ok(())
}

fn measure(case: Case, o: &Options) -> Result<Measurement> {
    let duration = Duration::from_secs_f64(o.seconds);
    match case {
        Case::OpenSsl => measure_openssl(duration),
        Case::SoftHsm => measure_softhsm(o, duration),
        Case::Module => measure_module(o, duration, 0, 1),
        Case::ModuleThreads => measure_module(o, duration, 0, o.threads),
        Case::Device => measure_module(o, duration, o.latency_ms, 1),
        Case::DeviceThreads => measure_module(o, duration, o.latency_ms, o.threads),
    }
}

fn digest() -> [u8; 32] {
    let mut d = [0u8; 32];
    openssl::rand::rand_bytes(&mut d).expect("random digest");
    d
}

fn measure_openssl(duration: Duration) -> Result<Measurement> {
    let group = openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1)?;
    let key = openssl::ec::EcKey::generate(&group)?;
    let d = digest();
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < duration {
        openssl::ecdsa::EcdsaSig::sign(&d, &key)?;
        n += 1;
    }
    Ok(Measurement {
        signatures: n,
        seconds: start.elapsed().as_secs_f64(),
        device_signatures: None,
    })
}

fn measure_softhsm(o: &Options, duration: Duration) -> Result<Measurement> {
    let dir = tempfile::tempdir()?;
    let tokens = dir.path().join("tokens");
    std::fs::create_dir(&tokens)?;
    let conf = dir.path().join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )?;
    std::env::set_var("SOFTHSM2_CONF", &conf);
    let pkcs11 = Pkcs11::new(&o.softhsm).context("loading SoftHSM2")?;
    pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))?;
    let slot = *pkcs11
        .get_all_slots()?
        .first()
        .context("SoftHSM2 has no slot")?;
    let so_pin = AuthPin::new("12345678".into());
    pkcs11.init_token(slot, &so_pin, "bench")?;
    let pin = AuthPin::new("1234".into());
    {
        let session = pkcs11.open_rw_session(slot)?;
        session.login(UserType::So, Some(&so_pin))?;
        session.init_pin(&pin)?;
    }
    let slot = *pkcs11
        .get_slots_with_token()?
        .first()
        .context("SoftHSM2 token vanished")?;
    let session = pkcs11.open_rw_session(slot)?;
    session.login(UserType::User, Some(&pin))?;
    // prime256v1
    let params = vec![0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    let (_, key) = session.generate_key_pair(
        &Mechanism::EccKeyPairGen,
        &[Attribute::EcParams(params), Attribute::Verify(true)],
        &[Attribute::Sign(true), Attribute::Token(false)],
    )?;
    let d = digest();
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < duration {
        session.sign(&Mechanism::Ecdsa, key, &d)?;
        n += 1;
    }
    Ok(Measurement {
        signatures: n,
        seconds: start.elapsed().as_secs_f64(),
        device_signatures: None,
    })
}

fn measure_module(
    o: &Options,
    duration: Duration,
    latency_ms: u64,
    threads: usize,
) -> Result<Measurement> {
    let dir = tempfile::tempdir()?;
    let emu_dir = dir.path().join("emu");
    let config = dir.path().join("zkiot.toml");
    std::fs::write(
        &config,
        format!(
            "store = \"{}\"\n",
            dir.path().join("store.sqlite3").display()
        ),
    )?;
    std::env::set_var("ZKIOT_ZKLIB", &o.emulator);
    std::env::set_var("ZKIOT_EMU_DIR", &emu_dir);
    std::env::set_var("ZKIOT_EMU_LATENCY_MS", latency_ms.to_string());
    std::env::set_var("ZKIOT_CONF", &config);
    std::env::remove_var("ZKIOT_EMU_TRACE");
    let pkcs11 = Pkcs11::new(&o.module).context("loading the module")?;
    pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))?;
    let slot = *pkcs11
        .get_slots_with_token()?
        .first()
        .context("the module shows no token")?;
    let key = {
        let session = pkcs11.open_ro_session(slot)?;
        find_key(&session)?
    };
    let before = device_signatures(&emu_dir)?;
    let d = digest();
    let start = Instant::now();
    let total: u64 = std::thread::scope(|scope| -> Result<u64> {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| -> Result<u64> {
                    let session = pkcs11.open_ro_session(slot)?;
                    let mut n = 0u64;
                    while start.elapsed() < duration {
                        session.sign(&Mechanism::Ecdsa, key, &d)?;
                        n += 1;
                    }
                    Ok(n)
                })
            })
            .collect();
        let mut sum = 0;
        for w in workers {
            sum += w
                .join()
                .map_err(|_| anyhow::anyhow!("a worker panicked"))??;
        }
        Ok(sum)
    })?;
    let seconds = start.elapsed().as_secs_f64();
    let after = device_signatures(&emu_dir)?;
    Ok(Measurement {
        signatures: total,
        seconds,
        device_signatures: Some(after - before),
    })
}

fn find_key(session: &cryptoki::session::Session) -> Result<ObjectHandle> {
    session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(b"slot0".to_vec()),
        ])?
        .into_iter()
        .next()
        .context("no private key labelled slot0")
        .and_then(|k| {
            // Reading the key type is what consumers do first; it must not cost a device call.
            session.get_attributes(k, &[AttributeType::KeyType])?;
            Ok(k)
        })
}

/// The emulator's count of device signatures, from its shared counters file:
/// a header line naming the counts, then 64-bit native-endian counts from byte
/// 256 in the header's order (see cdylib/zkemu/README.md).
fn device_signatures(emu_dir: &Path) -> Result<u64> {
    const FIRST_COUNT: usize = 256;
    let path = emu_dir.join("counters");
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let header = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
    let names = String::from_utf8_lossy(header);
    let index = names
        .split(' ')
        .skip(2)
        .position(|name| name == "sign")
        .with_context(|| format!("no sign count in {}", path.display()))?;
    let at = FIRST_COUNT + 8 * index;
    let count = bytes
        .get(at..at + 8)
        .with_context(|| format!("{} is short", path.display()))?;
    Ok(u64::from_ne_bytes(count.try_into()?))
}
