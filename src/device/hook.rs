//! The command run after the device switched to a new certificate (`on_switch` in
//! `device.toml`, or `device agent --on-switch`), so that clients that read the certificate once
//! (the AWS IoT Device SDK builds its TLS context from the file when a client is made) take the
//! new one: `systemctl try-restart sensor.service`, or a signal the client handles.
//!
//! It runs with `sh -c`, its standard output sent to standard error (`device credentials` prints
//! the credentials on standard output), with `ZKIOT_CERT` (the certificate file),
//! `ZKIOT_CERTIFICATE_ID` (AWS IoT's id of the new certificate) and `ZKIOT_THING` in its
//! environment. A failure or a hook still running after [`HOOK_TIMEOUT`] is a warning: the
//! switch is done either way.

use std::os::fd::AsFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::renewal::Switched;
use super::settings::DeviceSettings;
use crate::x509::fingerprint;

/// How long the hook may run before it is killed.
pub const HOOK_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `command`, if any, after a switch; a failure is reported, not returned.
pub fn after_switch(command: Option<&str>, settings: &DeviceSettings, switched: &Switched) {
    let Some(command) = command.filter(|c| !c.trim().is_empty()) else {
        return;
    };
    if let Err(e) = run(command, settings, switched) {
        eprintln!("zkiot: warning: the on_switch command: {e:#}");
    }
}

fn run(command: &str, settings: &DeviceSettings, switched: &Switched) -> Result<()> {
    let stderr = std::io::stderr().as_fd().try_clone_to_owned()?;
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .env("ZKIOT_CERT", &settings.cert_path)
        .env("ZKIOT_CERTIFICATE_ID", fingerprint(&switched.cert)?)
        .env("ZKIOT_THING", &settings.request.thing)
        .stdin(Stdio::null())
        .stdout(Stdio::from(stderr))
        .spawn()
        .with_context(|| format!("cannot start {command:?}"))?;
    let deadline = Instant::now() + HOOK_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait()? {
            if !status.success() {
                bail!("{command:?} failed ({status})");
            }
            return Ok(());
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "{command:?} still ran after {} s and was killed",
                HOOK_TIMEOUT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
