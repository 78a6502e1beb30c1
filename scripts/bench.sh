#!/usr/bin/env bash
# Signing throughput of libzkpkcs11.so beside raw OpenSSL and SoftHSM2, in one run.
# Usage: scripts/bench.sh [zkbench options, e.g. --seconds 5 --latency-ms 50 --threads 4]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
target=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --release --quiet -p zkiot-bench -p zkpkcs11 -p zkemu
exec "$target/release/zkbench" \
  --module "$target/release/libzkpkcs11.so" \
  --emulator "$target/release/libzkemu.so" "$@"
