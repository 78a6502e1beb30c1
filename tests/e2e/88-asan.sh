#!/usr/bin/env bash
# The consumers' tests under AddressSanitizer and LeakSanitizer: the module and
# the emulator built with -Zsanitizer=address (nightly toolchain), loaded by
# pkcs11-tool --test and --test-fork, python-pkcs11 and the C program (built with
# -fsanitize=address) with gcc's ASan runtime first in the process: no memory error,
# and no leak with a frame of the module or the emulator in its stack (the
# consumers' own leaks, from pkcs11-tool and CPython at exit, are counted apart).
# shellcheck source=tests/e2e/lib.sh
source "$(dirname "$0")/lib.sh"
e2e_init

if [ "$BACKEND" != zkiot ]; then
    skip "sanitizer builds are of this project's module"
    e2e_summary
    exit
fi

TRIPLE=x86_64-unknown-linux-gnu
asan_dir=$TARGET_DIR/asan
check "module and emulator build with -Zsanitizer=address" \
    env RUSTFLAGS="-Zsanitizer=address -Zexternal-clangrt -Cforce-frame-pointers" CARGO_TARGET_DIR="$asan_dir" \
    cargo +nightly build --manifest-path "$REPO/Cargo.toml" --target "$TRIPLE" -p zkpkcs11 -p zkemu
MODULE=$asan_dir/$TRIPLE/debug/libzkpkcs11.so
EMULATOR=$asan_dir/$TRIPLE/debug/libzkemu.so
require_file "$MODULE" "sanitized module"
new_token
# new_token points ZKIOT_ZKLIB at the ordinary emulator.
export ZKIOT_ZKLIB=$EMULATOR

runtime=$(gcc -print-file-name=libasan.so)
runtime=$(readlink -f "$runtime")
require_file "$runtime" "gcc's AddressSanitizer runtime (libasan)"
reports=$T/asan
mkdir -p "$reports"
# LeakSanitizer reports without failing the run (exitcode=0): the reports are
# read below, and a leak counts against the module when a frame of its stack is
# in the module or the emulator. Consumers' own leaks (pkcs11-tool 0.23 keeps a
# few allocations at exit; CPython does not free every object at exit) have
# stacks of the consumer's frames only, and are listed with their count.
export ASAN_OPTIONS="detect_leaks=1:log_path=$reports/report:handle_segv=1:detect_stack_use_after_return=0"
export LSAN_OPTIONS="exitcode=0"

# verdict: "errors E module-leaks M consumer-leaks C" from the reports.
verdict() {
    python3 - "$reports" <<'PY'
import glob, re, sys
errors = module = consumer = 0
ours = re.compile(r"libzkpkcs11|libzkemu|zktoken|zkpkcs11|zymkey|zkemu|cdylib/|token/src/")
for path in glob.glob(sys.argv[1] + "/report.*"):
    text = open(path, errors="replace").read()
    errors += len(re.findall(r"ERROR: AddressSanitizer", text))
    for block in re.split(r"\n(?=(?:Direct|Indirect) leak of )", text)[1:]:
        if ours.search(block):
            module += 1
            print(block[:3000], file=sys.stderr)
        else:
            consumer += 1
print(f"errors {errors} module-leaks {module} consumer-leaks {consumer}")
PY
}

# preloaded LINE COMMAND...: the command with the ASan runtime preloaded; fails when it
# fails, or when LINE (unless empty) is not a line of its output.
preloaded() {
    local line=$1 out rc=0
    shift
    out=$(env LD_PRELOAD="$runtime" "$@" 2>&1) || rc=$?
    printf '%s\n' "$out"
    [ "$rc" -eq 0 ] && { [ -z "$line" ] || grep -qx -- "$line" <<<"$out"; }
}

# sanitized NAME [--expect LINE] COMMAND...: runs the command with the ASan runtime
# preloaded; PASS when it exits 0 (and prints LINE), AddressSanitizer found no error
# and no leak is the module's.
sanitized() {
    local name=$1 line=""
    shift
    if [ "$1" = --expect ]; then
        line=$2
        shift 2
    fi
    rm -f "$reports"/report.*
    check "$name" preloaded "$line" "$@"
    local result
    result=$(verdict 2>"$T/leaks.log")
    if [[ $result == "errors 0 module-leaks 0 "* ]]; then
        pass "$name: $result"
    else
        fail "$name: $result"
        sed -e 's/^/      | /' "$T/leaks.log" "$reports"/report.* | head -n 80
    fi
}

# pkcs11-tool --test exits 0 whatever it finds: its verdict is the line "No errors".
sanitized "pkcs11-tool --test (ASan/LSan)" --expect 'No errors' pkcs11-tool --module "$MODULE" --test
sanitized "pkcs11-tool --test-fork (ASan/LSan)" pkcs11-tool --module "$MODULE" --test-fork

PYTHON=$VENV/bin/python
require_file "$PYTHON" "venv (run scripts/install-deps.sh)"
sanitized "python-pkcs11 signs (ASan/LSan)" \
    "$PYTHON" "$REPO/tests/python/sign.py" --module "$MODULE" --out "$T/py" --token "$TOKEN_LABEL" \
    --mechanism ECDSA --mechanism ECDSA_SHA256 --mechanism ECDSA_SHA256_MULTIPART

app=$T/p11_app
# shellcheck disable=SC2046 # pkg-config prints several flags
check "p11_app.c builds with -fsanitize=address" \
    cc -std=c99 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Werror -g -fsanitize=address \
    $(pkg-config --cflags p11-kit-1) -o "$app" "$REPO/tests/c/p11_app.c" -ldl
head -c 32 /dev/urandom >"$T/digest"
sanitized "p11_app signs (ASan/LSan)" "$app" "$MODULE" "$TOKEN_LABEL" slot0 "$T/digest" "$T/sig.der"

e2e_summary
