//! Signatures per second in one long-lived process: raw OpenSSL, SoftHSM2
//! through PKCS#11, and the module over the emulator with no latency.
//!
//! Every case runs in a child process of its own (the module and the emulator
//! read their environment once per process) and prints one JSON line. Each
//! PKCS#11 signature is made the way consumers make it (`cryptoki`'s `sign` =
//! a length query, then the signature), so the device column also shows that a
//! length query costs no device signature.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;

use crate::Options;

/// One in-process case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    OpenSsl { threads: usize },
    SoftHsm,
    Module { threads: usize },
}

/// What a case child reports.
#[derive(Debug, Clone, Copy)]
pub struct Throughput {
    pub signatures: u64,
    pub seconds: f64,
    /// Device signatures the emulator counted, for the module cases.
    pub device_signatures: Option<u64>,
}

impl Throughput {
    pub fn per_second(&self) -> f64 {
        self.signatures as f64 / self.seconds
    }

    pub fn to_json(self) -> String {
        serde_json::json!({
            "signatures": self.signatures,
            "seconds": self.seconds,
            "device_signatures": self.device_signatures,
        })
        .to_string()
    }

    pub fn from_json(line: &str) -> Result<Throughput> {
        let v: serde_json::Value = serde_json::from_str(line.trim())?;
        Ok(Throughput {
            signatures: v["signatures"].as_u64().context("signatures")?,
            seconds: v["seconds"].as_f64().context("seconds")?,
            device_signatures: v["device_signatures"].as_u64(),
        })
    }
}

impl Case {
    /// The `--case` argument naming this case.
    pub fn argument(self) -> String {
        match self {
            Case::OpenSsl { threads } => format!("openssl-{threads}"),
            Case::SoftHsm => "softhsm".into(),
            Case::Module { threads } => format!("module-{threads}"),
        }
    }

    pub fn from_argument(text: &str) -> Option<Case> {
        let (name, threads) = text.rsplit_once('-').unwrap_or((text, "1"));
        let threads = threads.parse().ok()?;
        match name {
            "openssl" => Some(Case::OpenSsl { threads }),
            "softhsm" => Some(Case::SoftHsm),
            "module" => Some(Case::Module { threads }),
            _ => None,
        }
    }

    pub fn describe(self) -> String {
        let threads = |n: usize| {
            if n == 1 {
                "1 thread".into()
            } else {
                format!("{n} threads")
            }
        };
        match self {
            Case::OpenSsl { threads: n } => format!("raw OpenSSL, {}", threads(n)),
            Case::SoftHsm => "SoftHSM2 via PKCS#11, 1 thread".into(),
            Case::Module { threads: n } => format!("zkpkcs11 + emulator 0 ms, {}", threads(n)),
        }
    }

    /// Runs the case in this process.
    pub fn measure(self, o: &Options) -> Result<Throughput> {
        let duration = Duration::from_secs_f64(o.seconds);
        match self {
            Case::OpenSsl { threads } => measure_openssl(duration, threads),
            Case::SoftHsm => measure_softhsm(o, duration),
            Case::Module { threads } => measure_module(o, duration, threads),
        }
    }
}

fn digest() -> [u8; 32] {
    let mut d = [0u8; 32];
    openssl::rand::rand_bytes(&mut d).expect("random digest");
    d
}

/// Runs `work` on `threads` threads until `duration` has passed; the
/// signatures made and the seconds taken.
fn on_threads(
    duration: Duration,
    threads: usize,
    work: impl Fn(&dyn Fn() -> bool) -> Result<u64> + Sync,
) -> Result<(u64, f64)> {
    let start = Instant::now();
    let running = || start.elapsed() < duration;
    let total = std::thread::scope(|scope| -> Result<u64> {
        let workers: Vec<_> = (0..threads)
            .map(|_| scope.spawn(|| work(&running)))
            .collect();
        let mut sum = 0;
        for w in workers {
            sum += w
                .join()
                .map_err(|_| anyhow::anyhow!("a worker panicked"))??;
        }
        Ok(sum)
    })?;
    Ok((total, start.elapsed().as_secs_f64()))
}

fn measure_openssl(duration: Duration, threads: usize) -> Result<Throughput> {
    let group = openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1)?;
    let key = openssl::ec::EcKey::generate(&group)?;
    let d = digest();
    let (signatures, seconds) = on_threads(duration, threads, |running| {
        let mut n = 0u64;
        while running() {
            openssl::ecdsa::EcdsaSig::sign(&d, &key)?;
            n += 1;
        }
        Ok(n)
    })?;
    Ok(Throughput {
        signatures,
        seconds,
        device_signatures: None,
    })
}

fn measure_softhsm(o: &Options, duration: Duration) -> Result<Throughput> {
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
    Ok(Throughput {
        signatures: n,
        seconds: start.elapsed().as_secs_f64(),
        device_signatures: None,
    })
}

fn measure_module(o: &Options, duration: Duration, threads: usize) -> Result<Throughput> {
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
    std::env::set_var("ZKIOT_EMU_LATENCY_MS", "0");
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
    let (signatures, seconds) = on_threads(duration, threads, |running| {
        let session = pkcs11.open_ro_session(slot)?;
        let mut n = 0u64;
        while running() {
            session.sign(&Mechanism::Ecdsa, key, &d)?;
            n += 1;
        }
        Ok(n)
    })?;
    let after = device_signatures(&emu_dir)?;
    Ok(Throughput {
        signatures,
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
