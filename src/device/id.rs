//! The device ID: one stable name for this device, bound to both the Zymkey and the host.
//!
//! Algorithm (version 1):
//!
//! 1. `S` = the Zymkey's serial number, as the PKCS#11 token reports it (`CK_TOKEN_INFO.
//!    serialNumber` of the token labelled `zymkey`), with the padding spaces removed.
//! 2. `H` = the host's serial number, from the first of these that exists and is not empty,
//!    with surrounding whitespace and NUL bytes removed:
//!    `/proc/device-tree/serial-number`, `/sys/firmware/devicetree/base/serial-number` (the SoC
//!    serial on a Raspberry Pi), `/etc/machine-id` (elsewhere). `/sys/class/dmi/id/product_uuid`
//!    is deliberately not used: only root can read it, so the ID would depend on who asks.
//! 3. The ID is the lowercase hex SHA-256 of the UTF-8 text
//!    `"zkiot-device-id-v1\nzymkey-serial=" S "\nhost-serial=" H "\n"`. Neither value may
//!    contain a newline. The same value by hand:
//!    `printf 'zkiot-device-id-v1\nzymkey-serial=%s\nhost-serial=%s\n' "$S" "$H" | sha256sum`.
//! 4. The short form, used as the default thing name, is `zk-` followed by the first 16 hex
//!    digits (64 bits).

use std::path::Path;

use anyhow::{bail, Result};

use super::cli::IdArgs;
use crate::p11::P11Token;
use crate::x509::hex;
use crate::GlobalOpts;

/// Where the host serial number is looked for, in order.
pub const HOST_SERIAL_SOURCES: &[&str] = &[
    "/proc/device-tree/serial-number",
    "/sys/firmware/devicetree/base/serial-number",
    "/etc/machine-id",
];

/// Version tag that starts the hashed text.
const ID_VERSION: &str = "zkiot-device-id-v1";

/// One input of the device ID and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdInput {
    /// `zymkey-serial` or `host-serial`.
    pub name: &'static str,
    /// The file or PKCS#11 field it was read from.
    pub origin: String,
    /// The value, as hashed.
    pub value: String,
}

/// A device ID and the inputs it was computed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceId {
    hex: String,
    inputs: Vec<IdInput>,
}

impl DeviceId {
    /// Computes the ID from the two inputs (see the module documentation).
    pub fn compute(zymkey_serial: IdInput, host_serial: IdInput) -> Result<Self> {
        let mut text = format!("{ID_VERSION}\n");
        for input in [&zymkey_serial, &host_serial] {
            if input.value.is_empty() {
                bail!("the {} ({}) is empty", input.name, input.origin);
            }
            if input.value.contains('\n') {
                bail!("the {} ({}) contains a newline", input.name, input.origin);
            }
            text.push_str(&format!("{}={}\n", input.name, input.value));
        }
        Ok(Self {
            hex: hex(&openssl::sha::sha256(text.as_bytes())),
            inputs: vec![zymkey_serial, host_serial],
        })
    }

    /// The full ID, 64 lowercase hex digits.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The short form `zk-<first 16 hex digits>`, a valid AWS IoT thing name.
    pub fn short(&self) -> String {
        format!("zk-{}", &self.hex[..16])
    }

    /// The inputs, in hashing order.
    pub fn inputs(&self) -> &[IdInput] {
        &self.inputs
    }
}

/// The Zymkey input, from the token's serial number.
pub fn zymkey_serial_input(token_label: &str, serial: &str) -> IdInput {
    IdInput {
        name: "zymkey-serial",
        origin: format!("PKCS#11 token {token_label:?} serialNumber"),
        value: serial.trim().to_string(),
    }
}

/// The host input, from the first source of [`HOST_SERIAL_SOURCES`] that has a value.
pub fn host_serial_input() -> Result<IdInput> {
    host_serial_from(HOST_SERIAL_SOURCES.iter().map(Path::new))
}

fn host_serial_from<'a>(sources: impl Iterator<Item = &'a Path>) -> Result<IdInput> {
    let mut tried = Vec::new();
    for path in sources {
        tried.push(path.display().to_string());
        let Ok(bytes) = std::fs::read(path) else {
            continue;
        };
        let value = String::from_utf8_lossy(&bytes)
            .trim_matches(|c: char| c == '\0' || c.is_whitespace())
            .to_string();
        if !value.is_empty() {
            return Ok(IdInput {
                name: "host-serial",
                origin: path.display().to_string(),
                value,
            });
        }
    }
    bail!("no host serial number found (tried {})", tried.join(", "))
}

/// Reads the device ID through the token.
pub fn read_device_id(token: &P11Token) -> Result<DeviceId> {
    DeviceId::compute(
        zymkey_serial_input(token.label(), token.serial_number()),
        host_serial_input()?,
    )
}

pub(crate) fn run(args: IdArgs, global: &GlobalOpts) -> Result<()> {
    let token = P11Token::open(&global.module, &super::labels::token_label(global)?)?;
    let id = read_device_id(&token)?;
    if global.verbose {
        for input in id.inputs() {
            println!("{} = {}  (from {})", input.name, input.value, input.origin);
        }
    }
    if args.short {
        println!("{}", id.short());
    } else if args.hex {
        println!("{}", id.hex());
    } else {
        println!("device id:  {}", id.hex());
        println!("thing name: {}", id.short());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(name: &'static str, value: &str) -> IdInput {
        IdInput {
            name,
            origin: "test".into(),
            value: value.into(),
        }
    }

    #[test]
    fn matches_the_documented_text() {
        let id = DeviceId::compute(
            input("zymkey-serial", "ZK123"),
            input("host-serial", "10000000abcdef"),
        )
        .unwrap();
        let expected = hex(&openssl::sha::sha256(
            b"zkiot-device-id-v1\nzymkey-serial=ZK123\nhost-serial=10000000abcdef\n",
        ));
        assert_eq!(id.hex(), expected);
        assert_eq!(id.short(), format!("zk-{}", &expected[..16]));
        crate::thing_name::validate_thing_name(&id.short()).unwrap();
    }

    #[test]
    fn refuses_empty_and_newlines() {
        assert!(DeviceId::compute(input("zymkey-serial", ""), input("host-serial", "x")).is_err());
        assert!(
            DeviceId::compute(input("zymkey-serial", "a\nb"), input("host-serial", "x")).is_err()
        );
    }

    #[test]
    fn host_serial_trims_nul_and_skips_missing() {
        let dir = tempfile::tempdir().unwrap();
        let dt = dir.path().join("serial-number");
        std::fs::write(&dt, b"00000000deadbeef\0").unwrap();
        let missing = dir.path().join("missing");
        let got = host_serial_from([missing.as_path(), dt.as_path()].into_iter()).unwrap();
        assert_eq!(got.value, "00000000deadbeef");
        assert!(host_serial_from([missing.as_path()].into_iter()).is_err());
    }
}
