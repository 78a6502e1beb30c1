#!/usr/bin/env bash
# What libzkpkcs11.so costs per signature and per process, beside raw OpenSSL,
# SoftHSM2 and key files, in one run and one table (bench/src/main.rs).
# Usage: scripts/bench.sh [zkbench options, e.g. --seconds 5 --latency-ms 50]
#        scripts/bench.sh --smoke   every row briefly, on the debug build the test
#                                   command made; checks device-operation counts only
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
target=${CARGO_TARGET_DIR:-$PWD/target}
profile=release
if [ "${1:-}" = --smoke ]; then
    profile=debug
    cargo build --quiet -p zkiot-bench -p zkpkcs11 -p zkemu
else
    cargo build --release --quiet -p zkiot-bench -p zkpkcs11 -p zkemu
fi
exec "$target/$profile/zkbench" \
    --module "$target/$profile/libzkpkcs11.so" \
    --emulator "$target/$profile/libzkemu.so" "$@"
