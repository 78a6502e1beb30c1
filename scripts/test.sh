#!/usr/bin/env bash
# The test command: installs what is missing, builds the workspace, runs the Rust
# tests, then the end-to-end tests through stock consumers against the built module
# and the emulator. Exits non-zero on any failure.
#
# Uses CARGO_TARGET_DIR when set, else ./target.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}

step() { printf '\n==> %s\n' "$*"; }
started=$(date +%s)

step "dependencies"
scripts/install-deps.sh

step "cargo build --workspace --all-targets"
cargo build --workspace --all-targets

step "cargo test --workspace"
cargo test --workspace

step "end-to-end tests (tests/e2e/run.sh)"
tests/e2e/run.sh

step "benchmark smoke run (scripts/bench.sh --smoke: every row, device-operation counts)"
scripts/bench.sh --smoke

step "fuzzing, bounded (scripts/fuzz.sh: ${ZKIOT_FUZZ_SECONDS:-12} s per target)"
scripts/fuzz.sh "${ZKIOT_FUZZ_SECONDS:-12}"

# The Debian packages installed on the supported platforms (arm64 under qemu-user,
# Debian 13): chroot needs root, and the root file systems are cached in /var/tmp.
if [ "$(id -u)" -eq 0 ] && [ "${ZKIOT_SKIP_PLATFORMS:-0}" != 1 ]; then
    step "packages on Debian 12 arm64 and Debian 13 (tests/rootfs/run.sh)"
    tests/rootfs/run.sh
else
    step "packages on other platforms: skipped (needs root; ZKIOT_SKIP_PLATFORMS=${ZKIOT_SKIP_PLATFORMS:-0})"
fi

step "all tests passed in $(($(date +%s) - started)) s"
