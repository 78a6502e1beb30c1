# Shared helpers of the end-to-end tests. Sourced by every numbered test script.
#
# The tests drive the built PKCS#11 module (libzkpkcs11.so) over the emulator
# (libzkemu.so) through stock consumers: openssl + libp11, curl, pkcs11-tool,
# p11tool/gnutls-cli, p11-kit, python-pkcs11, the AWS IoT Device SDK and a C program.
#
# Environment (all optional):
#   CARGO_TARGET_DIR     where the libraries were built (default: <repo>/target)
#   ZKIOT_E2E_PROFILE    cargo profile directory: debug (default) or release
#   ZKIOT_E2E_MODULE     the PKCS#11 module under test
#   ZKIOT_E2E_EMULATOR   the emulator library the module loads
#   ZKIOT_E2E_BACKEND    zkiot (default) or softhsm: run the same consumer checks
#                        against SoftHSM2, to tell a test defect from a module defect
#   ZKIOT_VENV           the Python venv made by scripts/install-deps.sh
#   ZKIOT_E2E_KEEP=1     keep the temporary directories (their path is printed)

# shellcheck disable=SC2034 # the variables set here are used by the test scripts
set -uo pipefail

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$E2E_DIR/../.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
PROFILE=${ZKIOT_E2E_PROFILE:-debug}
BACKEND=${ZKIOT_E2E_BACKEND:-zkiot}
VENV=${ZKIOT_VENV:-$REPO/.venv}

case $BACKEND in
zkiot)
    MODULE=${ZKIOT_E2E_MODULE:-$TARGET_DIR/$PROFILE/libzkpkcs11.so}
    EMULATOR=${ZKIOT_E2E_EMULATOR:-$TARGET_DIR/$PROFILE/libzkemu.so}
    PIN=""
    ;;
softhsm)
    MODULE=${ZKIOT_E2E_MODULE:-/usr/lib/softhsm/libsofthsm2.so}
    EMULATOR=""
    PIN=1234
    ;;
*)
    echo "unknown ZKIOT_E2E_BACKEND=$BACKEND (zkiot | softhsm)" >&2
    exit 2
    ;;
esac

TOKEN_LABEL=zymkey
# Key URIs as users write them. SoftHSM needs a PIN; our token has none.
KEY_URI="pkcs11:token=$TOKEN_LABEL;object=slot0;type=private${PIN:+;pin-value=$PIN}"
CERT_URI="pkcs11:token=$TOKEN_LABEL;object=slot0;type=cert${PIN:+;pin-value=$PIN}"
# Login arguments for pkcs11-tool and p11tool (empty for a PIN-less token).
P11TOOL_LOGIN=()
P11TOOL_GNUTLS_LOGIN=()
if [ -n "$PIN" ]; then
    P11TOOL_LOGIN=(--login --pin "$PIN")
    P11TOOL_GNUTLS_LOGIN=(--login --set-pin "$PIN")
fi

E2E_PASSED=0
E2E_FAILED=0
E2E_PIDS=()
E2E_CLEANUPS=()

# ---------------------------------------------------------------- reporting

pass() { E2E_PASSED=$((E2E_PASSED + 1)); echo "PASS: $*"; }
fail() { E2E_FAILED=$((E2E_FAILED + 1)); echo "FAIL: $*"; }
skip() { echo "SKIP: $*"; }
note() { echo "      $*"; }

# check NAME COMMAND...: runs the command with its output in a log; PASS on exit 0,
# otherwise FAIL with the command and the tail of its output.
check() {
    local name=$1
    shift
    local log
    log=$(mktemp "$T/check.XXXXXX.log")
    if "$@" >"$log" 2>&1; then
        pass "$name"
    else
        local rc=$?
        fail "$name (exit $rc)"
        note "command: $*"
        sed -e 's/^/      | /' "$log" | tail -n 25
    fi
}

# expect_eq NAME EXPECTED ACTUAL
expect_eq() {
    if [ "$2" = "$3" ]; then
        pass "$1"
    else
        fail "$1: expected '$2', got '$3'"
    fi
}

# expect_same NAME EXPECTED ACTUAL: as expect_eq, and EXPECTED is not empty (two commands
# that both failed print the same nothing).
expect_same() {
    if [ -z "$2" ]; then
        fail "$1: nothing to compare (expected is empty)"
    else
        expect_eq "$@"
    fi
}

# Fails with the given message when a prerequisite is missing; ends the script.
require_file() {
    if [ ! -e "$1" ]; then
        fail "$2: $1 does not exist"
        exit 1
    fi
}

# ---------------------------------------------------------------- lifecycle

e2e_cleanup() {
    local pid i
    for ((i = ${#E2E_CLEANUPS[@]} - 1; i >= 0; i--)); do
        eval "${E2E_CLEANUPS[i]}" >/dev/null 2>&1 || true
    done
    for pid in "${E2E_PIDS[@]}"; do
        kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    done
    if [ "${ZKIOT_E2E_KEEP:-0}" = 1 ]; then
        echo "      kept $T"
    else
        rm -rf "$T"
    fi
}

# on_exit COMMAND: run at exit, in reverse order of registration.
on_exit() { E2E_CLEANUPS+=("$1"); }

e2e_summary() {
    echo "RESULT: $E2E_PASSED passed, $E2E_FAILED failed"
    [ "$E2E_FAILED" -eq 0 ]
}

# e2e_init: temp dir, cleanup trap, module checks. Call once at the top of a test.
e2e_init() {
    T=$(mktemp -d "${TMPDIR:-/tmp}/zkiot-e2e.XXXXXX")
    trap e2e_cleanup EXIT
    trap 'exit 130' INT TERM
    unset OPENSSL_CONF
    # Python's assert statements are checks in these tests (python -c, tests/python/): an
    # inherited PYTHONOPTIMIZE would strip them, and the checks would pass unrun.
    unset PYTHONOPTIMIZE
    require_file "$MODULE" "PKCS#11 module"
    if [ "$BACKEND" = zkiot ]; then
        require_file "$EMULATOR" "emulator"
    fi
    export PKCS11_MODULE_PATH=$MODULE
}

# new_token [MODEL]: a fresh token. For zkiot: fresh emulator state of MODEL
# (ZYMKEY4i by default), a fresh certificate store and trace file.
# For softhsm: a fresh token labelled zymkey with a P-256 key slot0, id 0000.
TOKEN_SEQ=0
new_token() {
    local model=${1:-ZYMKEY4i}
    TOKEN_SEQ=$((TOKEN_SEQ + 1))
    TOKEN_DIR=$T/token$TOKEN_SEQ
    mkdir -p "$TOKEN_DIR"
    if [ "$BACKEND" = zkiot ]; then
        export ZKIOT_ZKLIB=$EMULATOR
        export ZKIOT_EMU_DIR=$TOKEN_DIR/emu
        export ZKIOT_EMU_MODEL=$model
        export ZKIOT_EMU_TRACE=$TOKEN_DIR/trace
        export ZKIOT_CONF=$TOKEN_DIR/zkiot.toml
        mkdir -p "$ZKIOT_EMU_DIR"
        : >"$ZKIOT_EMU_TRACE"
        printf 'store = "%s"\n' "$TOKEN_DIR/store" >"$ZKIOT_CONF"
    else
        export SOFTHSM2_CONF=$TOKEN_DIR/softhsm2.conf
        mkdir -p "$TOKEN_DIR/tokens"
        cat >"$SOFTHSM2_CONF" <<EOF
directories.tokendir = $TOKEN_DIR/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
library.reset_on_fork = true
EOF
        softhsm2-util --init-token --free --label "$TOKEN_LABEL" --so-pin 12345678 --pin "$PIN" >/dev/null
        pkcs11-tool --module "$MODULE" --token-label "$TOKEN_LABEL" --login --pin "$PIN" \
            --keypairgen --key-type EC:prime256v1 --id 0000 --label slot0 >/dev/null
    fi
}

# Number of device signatures so far ("sign <slot>" lines in the emulator trace).
device_signs() {
    [ "$BACKEND" = zkiot ] || { echo 0; return; }
    grep -c '^sign ' "$ZKIOT_EMU_TRACE" || true
}

# Whether device operations can be counted (only with the emulator).
have_trace() { [ "$BACKEND" = zkiot ]; }

# expect_signs NAME BEFORE EXPECTED_DELTA
expect_signs() {
    if ! have_trace; then
        skip "$1 (no device trace with $BACKEND)"
        return
    fi
    local now
    now=$(device_signs)
    expect_eq "$1" "$3" "$((now - $2))"
}

# ---------------------------------------------------------------- PKI

# make_pki: a P-256 test CA (ca.key, ca.crt) and a server certificate for 127.0.0.1.
make_pki() {
    local d=$T/pki
    mkdir -p "$d"
    openssl ecparam -name prime256v1 -genkey -noout -out "$d/ca.key" 2>/dev/null
    openssl req -x509 -new -key "$d/ca.key" -sha256 -days 2 -subj '/CN=zkiot e2e test CA' \
        -addext 'basicConstraints=critical,CA:TRUE' \
        -addext 'keyUsage=critical,keyCertSign,cRLSign' -out "$d/ca.crt" 2>/dev/null
    printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n' \
        >"$d/client.ext"
    printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n' \
        >"$d/server.ext"
    openssl ecparam -name prime256v1 -genkey -noout -out "$d/server.key" 2>/dev/null
    openssl req -new -key "$d/server.key" -subj '/CN=localhost' -out "$d/server.csr" 2>/dev/null
    openssl x509 -req -in "$d/server.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
        -days 2 -sha256 -extfile "$d/server.ext" -out "$d/server.crt" 2>/dev/null
    CA_CRT=$d/ca.crt
    CA_KEY=$d/ca.key
    SERVER_CRT=$d/server.crt
    SERVER_KEY=$d/server.key
    CLIENT_EXT=$d/client.ext
}

# token_csr OUT SUBJECT [KEY_URI]: a CSR signed by the token key through the engine.
token_csr() {
    openssl req -new -engine pkcs11 -keyform engine -key "${3:-$KEY_URI}" \
        -subj "$2" -out "$1"
}

# csr_verifies CSR: the CSR's self-signature verifies. Goes by what openssl says, not by
# its exit status alone: OpenSSL 3.0 (Debian 12) prints "Certificate request
# self-signature verify failure" and still exits 0; 3.5 (Debian 13) exits 1.
csr_verifies() {
    local out rc=0
    out=$(openssl req -in "$1" -noout -verify 2>&1) || rc=$?
    printf '%s\n' "$out"
    [ "$rc" -eq 0 ] || return 1
    grep -q 'verify OK$' <<<"$out" && ! grep -q 'verify failure' <<<"$out"
}

# tamper_csr CSR OUT: a copy of CSR with one bit of its signature flipped (the last byte
# of the DER, inside the signature BIT STRING): still a well-formed CSR, but one whose
# signature does not match its public key. Shell and openssl only (the root file
# systems of tests/rootfs have no python).
tamper_csr() {
    local der last
    der=$(mktemp "$T/tamper.XXXXXX.der")
    openssl req -in "$1" -outform DER -out "$der" || return 1
    last=$(tail -c 1 "$der" | od -An -tu1 | tr -d ' ')
    { head -c -1 "$der" && printf "\\$(printf '%03o' $((last ^ 1)))"; } >"$der.bad"
    openssl req -inform DER -in "$der.bad" -out "$2"
}

# csr_refused CSR: a copy of CSR with a flipped signature bit is well formed and still
# carries CSR's public key, and csr_verifies refuses it.
csr_refused() {
    local bad
    bad=$(mktemp "$T/bad.XXXXXX.csr")
    tamper_csr "$1" "$bad" || return 1
    [ "$(openssl req -in "$bad" -noout -pubkey)" = "$(openssl req -in "$1" -noout -pubkey)" ] || {
        echo "the tampered CSR does not carry the same public key"
        return 1
    }
    if csr_verifies "$bad"; then
        echo "csr_verifies accepted $bad, whose signature was tampered with"
        return 1
    fi
}

# check_csr NAME CSR: NAME passes when CSR's self-signature verifies. So that the check
# is seen to fail, a copy of CSR with one bit of its signature flipped must be refused.
check_csr() {
    check "$1" csr_verifies "$2"
    check "$1; a copy with one signature bit flipped does not" csr_refused "$2"
}

# issue_cert CSR OUT: the test CA signs a client certificate (clientAuth).
issue_cert() {
    openssl x509 -req -in "$1" -CA "$CA_CRT" -CAkey "$CA_KEY" -CAcreateserial -days 1 \
        -sha256 -extfile "$CLIENT_EXT" -out "$2"
}

# token_pubkey OUT_PEM [ID]: the slot's public key, read from the token by pkcs11-tool.
token_pubkey() {
    local der=$T/pub.$$.der
    pkcs11-tool --module "$MODULE" "${P11TOOL_LOGIN[@]}" --read-object --type pubkey \
        --id "${2:-0000}" -o "$der" >/dev/null 2>&1 &&
        openssl pkey -pubin -inform DER -in "$der" -out "$1"
}

# ---------------------------------------------------------------- servers

# start_s_server: openssl s_server on 127.0.0.1 (a free port picked by the kernel),
# requiring a client certificate from the test CA. Sets SERVER_PORT and SERVER_URL.
# Without -verify_return_error, s_server only logs a client certificate that does not
# verify and completes the handshake anyway.
start_s_server() {
    local log=$T/s_server.$RANDOM.log
    : >"$log" # exists before the server writes its port into it
    openssl s_server -accept 127.0.0.1:0 -cert "$SERVER_CRT" -key "$SERVER_KEY" \
        -Verify 1 -verify_return_error -CAfile "$CA_CRT" -www "$@" >"$log" 2>&1 </dev/null &
    E2E_PIDS+=($!)
    SERVER_PORT=""
    local i
    for i in $(seq 1 100); do
        SERVER_PORT=$(sed -n 's/^ACCEPT 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$log")
        [ -n "$SERVER_PORT" ] && break
        sleep 0.05
    done
    if [ -z "$SERVER_PORT" ]; then
        fail "s_server did not start"
        sed -e 's/^/      | /' "$log"
        exit 1
    fi
    SERVER_URL=https://127.0.0.1:$SERVER_PORT/
    SERVER_LOG=$log
}

# The s_server -www page lists the client certificate, and that it verified.
page_shows_client_cert() {
    grep -q '^Client certificate' "$1" && grep -q "Subject: $2" "$1" &&
        grep -q 'Verify return code: 0 (ok)' "$1"
}

# ---------------------------------------------------------------- results, not exit status

# output_lacks PATTERN COMMAND...: the command succeeds and nothing it prints matches the
# extended regular expression PATTERN. "! command | grep -q PATTERN" alone also passes
# when the command fails and prints nothing.
output_lacks() {
    local pattern=$1 out rc=0
    shift
    out=$("$@" 2>&1) || rc=$?
    printf '%s\n' "$out"
    if [ "$rc" -ne 0 ]; then
        echo "(exit $rc)"
        return 1
    fi
    ! grep -qE -- "$pattern" <<<"$out"
}

# fails_saying PATTERN COMMAND...: the command fails with an exit status of its own (not a
# signal) and says something matching the extended regular expression PATTERN. "! command"
# alone passes whatever the failure, a missing file or a crash included.
fails_saying() {
    local pattern=$1 out rc=0
    shift
    out=$("$@" 2>&1) || rc=$?
    printf '%s\n(exit %s)\n' "$out" "$rc"
    [ "$rc" -ne 0 ] && [ "$rc" -lt 128 ] && grep -qE -- "$pattern" <<<"$out"
}

# pkcs11_tool_test ARGS...: pkcs11-tool ARGS --test, passing only when it prints "No
# errors". It prints "N errors" when some of its tests fail, and exits 0 all the same.
pkcs11_tool_test() {
    local out rc=0
    out=$(pkcs11-tool "$@" --test 2>&1) || rc=$?
    printf '%s\n' "$out"
    [ "$rc" -eq 0 ] && grep -qx 'No errors' <<<"$out"
}

# p11kit_zkiot_entry: the module zkiot's entry in "p11-kit list-modules", which starts
# with "zkiot:" (p11-kit 0.24) or "module: zkiot" (0.25); empty when it lists no such
# module. Fails when p11-kit list-modules does.
p11kit_zkiot_entry() {
    local out
    out=$(p11-kit list-modules 2>&1) || {
        printf '%s\n' "$out" >&2
        return 1
    }
    awk '/^[^ ]/{m=($1=="zkiot:" || ($1=="module:" && $2=="zkiot"))} m' <<<"$out"
}

# p11kit_lists_zkiot TOKEN_LABEL: p11-kit lists the module zkiot, showing that token.
p11kit_lists_zkiot() {
    local entry
    entry=$(p11kit_zkiot_entry) || return 1
    printf '%s\n' "$entry"
    grep -q "token: $1\$" <<<"$entry"
}

# p11kit_lists_no_zkiot: p11-kit list-modules works and lists no module zkiot.
p11kit_lists_no_zkiot() {
    local entry
    entry=$(p11kit_zkiot_entry) || return 1
    printf '%s\n' "$entry"
    [ -z "$entry" ]
}
