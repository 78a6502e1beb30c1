//! What start-up prepares once per process: the work directory, an emulator
//! state and store loaded once (copied for each input), and the device's keys.

use std::path::{Path, PathBuf};
use std::ptr::null_mut;
use std::sync::OnceLock;

use cryptoki_sys::*;
use openssl::ec::EcKey;
use openssl::pkey::{Id, PKey, Public};
use testkit::assert_rv;
use testkit::raw::Raw;

/// What start-up prepared once per process.
pub(super) struct Setup {
    pub raw: Raw,
    pub work: PathBuf,
    pub template_emu: PathBuf,
    /// The store and device cache the first load of the template left.
    pub template_store: PathBuf,
    pub template_keys: DeviceKeys,
    /// A self-signed P-256 certificate (DER) to store on the token.
    pub certificate: Vec<u8>,
}

/// The device's keys as the emulator holds them: what must never be output,
/// and what a signature must verify under.
#[derive(Clone, Default)]
pub(super) struct DeviceKeys {
    pub secrets: Vec<Vec<u8>>,
    pub public: Vec<EcKey<Public>>,
}

impl DeviceKeys {
    pub fn read(emu_dir: &Path) -> DeviceKeys {
        let mut keys = DeviceKeys::default();
        let Ok(entries) = std::fs::read_dir(emu_dir.join("keys")) else {
            return keys;
        };
        for entry in entries.flatten() {
            let Ok(pem) = std::fs::read(entry.path()) else {
                continue;
            };
            let Ok(key) = PKey::private_key_from_pem(&pem) else {
                continue;
            };
            match key.id() {
                Id::EC => {
                    let ec = key.ec_key().expect("an EC key");
                    keys.secrets
                        .push(ec.private_key().to_vec_padded(32).expect("32 bytes"));
                    let public =
                        EcKey::from_public_key(ec.group(), ec.public_key()).expect("public key");
                    keys.public.push(public);
                }
                _ => {
                    if let Ok(raw) = key.raw_private_key() {
                        keys.secrets.push(raw);
                    }
                }
            }
        }
        keys
    }
}

pub(super) fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        assert!(
            std::env::var_os("ZKIOT_ZKLIB").is_some(),
            "set ZKIOT_ZKLIB to the emulator library (libzkemu.so)"
        );
        let work = match std::env::var_os("ZKIOT_FUZZ_WORK") {
            Some(dir) => PathBuf::from(dir),
            // On tmpfs when there is one: the store and the emulator fsync.
            None => Path::new("/dev/shm")
                .canonicalize()
                .unwrap_or_else(|_| std::env::temp_dir())
                .join(format!("zkiot-fuzz.{}", std::process::id())),
        };
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work).expect("work directory");
        // Nothing the module writes by default may land outside the work directory.
        std::env::set_current_dir(&work).expect("cd work");
        std::env::set_var("HOME", &work);
        std::env::set_var("XDG_STATE_HOME", work.join("state"));
        std::env::set_var("ZKIOT_LOG", "off");
        std::env::remove_var("ZKIOT_EMU_TRACE");
        std::env::remove_var("ZKIOT_EMU_LATENCY_MS");
        std::env::set_var("ZKIOT_EMU_MODEL", "HSM6");
        std::env::set_var("ZKIOT_CONF", work.join("zkiot.toml"));
        std::fs::write(
            work.join("zkiot.toml"),
            format!("store = {:?}\n", work.join("run/store.sqlite3")),
        )
        .expect("configuration");

        // The module is linked into the target, so that its code is instrumented.
        let mut list: CK_FUNCTION_LIST_PTR = null_mut();
        // SAFETY: a valid out-pointer.
        let rv = unsafe { zkpkcs11::C_GetFunctionList(&mut list) };
        assert_eq!(rv, CKR_OK);
        // SAFETY: the module's function list is a static.
        let raw = Raw::from_list(unsafe { &*list });

        // The emulator creates its state (factory keys) on first open.
        let template_emu = work.join("template-emu");
        std::env::set_var("ZKIOT_EMU_DIR", &template_emu);
        std::fs::create_dir_all(work.join("run")).expect("run directory");
        assert_rv!(raw.initialize_null(), CKR_OK);
        let mut info = CK_TOKEN_INFO::default();
        assert_rv!(testkit::call!(raw, C_GetTokenInfo(0, &mut info)), CKR_OK);
        assert_rv!(raw.finalize(), CKR_OK);
        // What that load wrote (store, device cache) is the warm start.
        let template_store = work.join("template-store");
        std::fs::rename(work.join("run"), &template_store).expect("template store");
        let template_keys = DeviceKeys::read(&template_emu);
        assert!(
            !template_keys.public.is_empty(),
            "the emulator made no keys"
        );
        std::env::set_var("ZKIOT_EMU_DIR", work.join("run/emu"));
        Setup {
            raw,
            work,
            template_emu,
            template_store,
            template_keys,
            certificate: testkit::x509::Cert::new("fuzz")
                .build(&testkit::x509::p256())
                .to_der()
                .unwrap(),
        }
    })
}

/// Copies a directory tree, leaving out lock files.
pub(super) fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir").flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else if !entry.file_name().to_string_lossy().ends_with("lock") {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}
