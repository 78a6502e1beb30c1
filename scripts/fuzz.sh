#!/usr/bin/env bash
# Builds the fuzz targets of fuzz/ (libFuzzer, AddressSanitizer, nightly toolchain)
# and runs each for a bounded time. Exits non-zero when a target finds a crash, a
# sanitizer report, or a failed check; the input is kept in the artifacts folder.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]   (default: 12 s, every target)
#
# Environment:
#   CARGO_TARGET_DIR   the workspace's build folder (the emulator is built there);
#                      fuzz builds go to $CARGO_TARGET_DIR/fuzz
#   ZKIOT_FUZZ_DIR     corpora and artifacts (default /var/tmp/zkiot-fuzz): kept
#                      between runs, so later runs start from what earlier ones found
#   ZKIOT_FUZZ_ARGS    more libFuzzer options (say "-jobs=2 -workers=2")
#   ZKIOT_FUZZ_WORK    the PKCS#11 target's scratch folder for emulator state and
#                      store (default: under /dev/shm, where fsync costs nothing)
#
# The same targets run with `cargo +nightly fuzz run TARGET` from fuzz/ when
# cargo-fuzz is installed; this script needs only the nightly toolchain.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
seconds=${1:-12}
shift || true
FUZZ_DIR=${ZKIOT_FUZZ_DIR:-/var/tmp/zkiot-fuzz}
TRIPLE=x86_64-unknown-linux-gnu

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "fuzz: installing the nightly toolchain"
    rustup toolchain install nightly --profile minimal
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    for t in fuzz/fuzz_targets/*.rs; do
        targets+=("$(basename "$t" .rs)")
    done
fi

# The emulator the PKCS#11 target loads (an ordinary build of the workspace).
cargo build -p zkemu
emulator=$CARGO_TARGET_DIR/debug/libzkemu.so

# What cargo-fuzz passes: coverage counters, comparison tracing, ASan. With
# --target, build scripts and proc macros stay uninstrumented.
rustflags=(
    -Cpasses=sancov-module
    -Cllvm-args=-sanitizer-coverage-level=4
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters
    -Cllvm-args=-sanitizer-coverage-pc-table
    -Cllvm-args=-sanitizer-coverage-trace-compares
    --cfg fuzzing
    -Zsanitizer=address
    -Cdebug-assertions
    -Coverflow-checks
    -Cforce-frame-pointers
)
fuzz_target_dir=$CARGO_TARGET_DIR/fuzz
# Not --locked: fuzz/Cargo.lock pins the registry crates, and the workspace's
# own crates (path dependencies) come and go with the project.
(
    cd fuzz
    RUSTFLAGS="${rustflags[*]}" CARGO_TARGET_DIR=$fuzz_target_dir \
        cargo +nightly build --release --target "$TRIPLE" --bins
)

failed=0
for target in "${targets[@]}"; do
    corpus=$FUZZ_DIR/corpus/$target
    artifacts=$FUZZ_DIR/artifacts/$target
    mkdir -p "$corpus" "$artifacts"
    log=$(mktemp)
    echo "fuzz: $target for $seconds s"
    # The PKCS#11 target keeps what a process keeps (the module, the Zymkey
    # library, the emulator's state) from one input to the next, so libFuzzer
    # would scan its whole heap for leaks after most inputs: 6 times slower.
    # Leaks of the module are checked by 88-asan's LeakSanitizer runs instead.
    leaks=()
    [ "$target" = p11_calls ] && leaks=(-detect_leaks=0)
    rc=0
    # shellcheck disable=SC2086 # ZKIOT_FUZZ_ARGS holds several options
    ZKIOT_ZKLIB=$emulator \
        "$fuzz_target_dir/$TRIPLE/release/$target" \
        -max_total_time="$seconds" -max_len=2048 -timeout=20 -rss_limit_mb=4096 \
        -print_final_stats=1 -artifact_prefix="$artifacts/" "${leaks[@]}" \
        ${ZKIOT_FUZZ_ARGS:-} "$corpus" >"$log" 2>&1 || rc=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2)
    corp=$(grep -o 'corp: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2)
    if [ "$rc" -ne 0 ]; then
        failed=$((failed + 1))
        grep -B2 -A40 -m1 -E '==ERROR|panicked|deadly signal|Test unit written' "$log" || tail -n 60 "$log"
        echo "FAIL: fuzz $target: ${runs:-?} executions, then a failure (exit $rc); input in $artifacts/"
    else
        echo "PASS: fuzz $target: ${runs:-0} executions, coverage ${cov:-0} edges, corpus ${corp:-0} inputs, 0 crashes"
    fi
    rm -f "$log"
done
[ "$failed" -eq 0 ]
