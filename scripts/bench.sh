#!/usr/bin/env bash
# What libzkpkcs11.so costs per signature and per process, beside raw OpenSSL,
# SoftHSM2 and key files, in one run and one table (bench/src/main.rs); under it the
# targets, met or not (device operations per process, ratios at the device latency,
# threads, memory; the device agent's device operations while idle and while it
# serves held credentials, and its peak memory), then the watched figures with no
# target (signatures per second against OpenSSL and SoftHSM2, per-process ratios at
# 0 ms: the emulator and library loading, not the device).
# Usage: scripts/bench.sh [zkbench options, e.g. --seconds 5 --latency-ms 50]
#        scripts/bench.sh --smoke   every row briefly, on the debug build the test
#                                   command made; checks device-operation counts only
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
target=${CARGO_TARGET_DIR:-$PWD/target}
profile=release
if [ "${1:-}" = --smoke ]; then
    profile=debug
    cargo build --quiet -p zkiot-bench -p zkpkcs11 -p zkemu -p zkiot
else
    cargo build --release --quiet -p zkiot-bench -p zkpkcs11 -p zkemu
    # The device agent as the device package builds it: without the AWS SDK.
    cargo build --release --quiet -p zkiot --no-default-features --bin zkiot
fi
exec "$target/$profile/zkbench" \
    --module "$target/$profile/libzkpkcs11.so" \
    --emulator "$target/$profile/libzkemu.so" \
    --zkiot "$target/$profile/zkiot" "$@"
