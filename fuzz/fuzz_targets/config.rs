//! Configuration files: the module's (`zkiot.toml`, also passed inline in
//! `C_Initialize`) and the device folder's (`device.toml`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = zkconf::Config::parse(&text, "fuzz");
    let _ = zkconf::is_inline(&text);
    let _ = toml::from_str::<zkiot::device::config::DeviceConfig>(&text);
});
