//! Diagnostics: `tracing` to stderr or to the configured log file, never to
//! stdout (that belongs to the host program). Level from `ZKIOT_LOG`, else
//! `log_level`, else `warn`.

use std::sync::Once;

use zkconf::Config;

static INIT: Once = Once::new();

/// Installs the module's log output, once per process.
pub fn init(config: &Config) {
    INIT.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_new(config.log_filter())
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_target(false)
            .with_ansi(false);
        let file = config.log_file.as_ref().and_then(|path| {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| {
                    eprintln!(
                        "zkpkcs11: cannot open log file {}: {e}; logging to stderr",
                        path.display()
                    )
                })
                .ok()
        });
        // Another tracing user in the same copy of this library may have
        // installed a subscriber first; keep theirs.
        let _ = match file {
            Some(f) => builder.with_writer(std::sync::Mutex::new(f)).try_init(),
            None => builder.with_writer(std::io::stderr).try_init(),
        };
    });
}
