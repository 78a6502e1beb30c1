#!/usr/bin/env bash
# Device operations per process, from the emulator's trace, on ZYMKEY4i and HSM6:
# once the first process has filled the caches, listing the token and its objects
# (pkcs11-tool -L, -O) makes none, and a process that signs once (a curl mutual-TLS
# request, openssl pkeyutl) makes two: open and sign. Keys generated or removed
# through the module in another process are shown right without a device call. A
# generated key replaced meanwhile (by another process or tool) is noticed by the
# first signature that does not verify against the cached key: that handle fails
# instead of signing with the other key, and the next process shows the new key.
# shellcheck source=tests/e2e/lib.sh
source "$(dirname "$0")/lib.sh"
e2e_init
if [ "$BACKEND" != zkiot ]; then
    skip "device operation counts (only with the emulator's trace)"
    e2e_summary
    exit
fi
make_pki
start_s_server

# device_ops COMMAND...: runs the command (output in $T/ops.out) and prints the
# device operations it made, in order, as one line ("open sign"; empty for none).
device_ops() {
    local before
    before=$(wc -l <"$ZKIOT_EMU_TRACE")
    "$@" >"$T/ops.out" 2>&1 || { echo "FAILED: $*"; sed 's/^/  | /' "$T/ops.out"; return; }
    tail -n +$((before + 1)) "$ZKIOT_EMU_TRACE" | cut -d' ' -f1 | paste -sd' ' -
}

# expect_ops NAME EXPECTED COMMAND...
expect_ops() {
    local name=$1 expected=$2
    shift 2
    expect_eq "$name: device operations" "$expected" "$(device_ops "$@")"
}

p11() { pkcs11-tool --module "$MODULE" "$@"; }
curl_mtls() {
    curl -sS --fail --key "$1" --cert "$2" --cacert "$CA_CRT" -o "$T/page" "$SERVER_URL" &&
        page_shows_client_cert "$T/page" "$3"
}
pkeyutl_sign() {
    openssl pkeyutl -sign -engine pkcs11 -keyform engine -inkey "$1" -in "$T/digest" -out "$2"
}
# pubkey_of LABEL OUT_PEM: a public key as the token shows it.
pubkey_of() {
    p11 --read-object --type pubkey --label "$1" -o "$2.der" >/dev/null &&
        openssl pkey -pubin -inform DER -in "$2.der" -out "$2"
}
head -c 32 /dev/urandom >"$T/digest"

for model in ZYMKEY4i HSM6; do
    new_token "$model"
    first=$(device_ops p11 -L)
    case $first in
    "open info info info slot_list"*) pass "$model: the first process reads the device ($first)" ;;
    *) fail "$model: the first process reads the device: got '$first'" ;;
    esac
    expect_ops "$model: pkcs11-tool -L" "" p11 -L
    expect_ops "$model: pkcs11-tool -O" "" p11 -O
    check "$model: pkcs11-tool -O lists slot0" grep -q 'label: *slot0' "$T/ops.out"
    check "$model: CSR from slot0" token_csr "$T/$model.csr" "/CN=ops-$model"
    check "$model: client certificate" issue_cert "$T/$model.csr" "$T/$model.crt"
    expect_ops "$model: curl mutual-TLS request" "open sign" \
        curl_mtls "$KEY_URI" "$T/$model.crt" "CN=ops-$model"
    expect_ops "$model: openssl pkeyutl -sign" "open sign" pkeyutl_sign "$KEY_URI" "$T/$model.sig"
    # A process that reads the device (the device cache dropped) leaves the host's
    # OpenSSL error queue as it found it: pkcs11-tool builds an EVP_PKEY right after.
    rm -f "$TOKEN_DIR/store.device.toml"
    check "$model: pkcs11-tool reads a public key in a process that reads the device" \
        pubkey_of slot0 "$T/$model-fresh.pem"
    check "$model: ... and it is the key that signed" \
        openssl pkeyutl -verify -pubin -inkey "$T/$model-fresh.pem" -in "$T/digest" -sigfile "$T/$model.sig"
done

# HSM6 (the token of the last round): keys generated and removed in other processes.
gen_uri="pkcs11:token=$TOKEN_LABEL;object=gen1;type=private"
check "HSM6: pkcs11-tool --keypairgen --label gen1" \
    p11 --keypairgen --key-type EC:prime256v1 --label gen1
expect_ops "HSM6: pkcs11-tool -O after the key generation" "" p11 -O
check "HSM6: -O lists gen1" grep -q 'label: *gen1' "$T/ops.out"
expect_ops "HSM6: openssl pkeyutl -sign with gen1" "open sign" pkeyutl_sign "$gen_uri" "$T/gen1.sig"
check "HSM6: public key of gen1" pubkey_of gen1 "$T/gen1.pem"
check "HSM6: the gen1 signature verifies" \
    openssl pkeyutl -verify -pubin -inkey "$T/gen1.pem" -in "$T/digest" -sigfile "$T/gen1.sig"
check "HSM6: pkcs11-tool --delete-object gen1" \
    p11 --delete-object --type privkey --label gen1
expect_ops "HSM6: pkcs11-tool -O after the removal" "" p11 -O
check "HSM6: -O no longer lists gen1" bash -c "! grep -q 'label: *gen1' '$T/ops.out'"

# A process holds a key while another one destroys it and generates a key in the
# same slot (so the same handle number): the held handle fails, twice.
PYTHON=$VENV/bin/python
require_file "$PYTHON" "venv (run scripts/install-deps.sh)"
check "HSM6: pkcs11-tool --keypairgen --label held" \
    p11 --keypairgen --key-type EC:prime256v1 --label held
check "HSM6: a handle held across another process's destroy and keypairgen fails" \
    "$PYTHON" "$REPO/tests/python/stale_handle.py" --module "$MODULE" --token "$TOKEN_LABEL" \
    --label held -- bash -c "pkcs11-tool --module '$MODULE' --delete-object --type privkey --label held &&
        pkcs11-tool --module '$MODULE' --keypairgen --key-type EC:prime256v1 --label fresh"
sign_with() {
    openssl pkeyutl -sign -engine pkcs11 -keyform engine \
        -inkey "pkcs11:token=$TOKEN_LABEL;object=$1;type=private" -in "$T/digest" -out "$T/$1.sig" &&
        openssl pkeyutl -verify -pubin -inkey "$T/$1.pem" -in "$T/digest" -sigfile "$T/$1.sig"
}
check "HSM6: -O lists fresh" bash -c "pkcs11-tool --module '$MODULE' -O | grep -q 'label: *fresh'"
check "HSM6: -O no longer lists held" output_lacks 'label: *held$' p11 -O
check "HSM6: public key of fresh" pubkey_of fresh "$T/fresh.pem"
check "HSM6: a signature with fresh verifies" sign_with fresh
check "HSM6: pkcs11-tool --delete-object fresh" \
    p11 --delete-object --type privkey --label fresh

# A generated key replaced outside the module (as Zymbit's tools would): its first
# signature does not verify against the cached key, so the module reads the key
# again, fails the stale handle and drops its device cache; the next process reads
# the device and shows the new key under the slot's own label, the one after it
# makes no device call.
check "HSM6: pkcs11-tool --keypairgen --label gen2" \
    p11 --keypairgen --key-type EC:prime256v1 --label gen2
gen2_uri="pkcs11:token=$TOKEN_LABEL;object=gen2;type=private"
replace_slot_16() {
    python3 - "$EMULATOR" <<'EOF'
import ctypes, sys
lib = ctypes.CDLL(sys.argv[1])
ctx = ctypes.c_void_p()
assert lib.zkOpen(ctypes.byref(ctx)) == 0
assert lib.zkRemoveKey(ctx, 16, False) == 0
assert lib.zkGenKeyPair(ctx, 0) == 16
assert lib.zkClose(ctx) == 0
EOF
}
sign_fails() { ! pkeyutl_sign "$@"; }
check "HSM6: slot 16 replaced through the emulator's C API" replace_slot_16
expect_ops "HSM6: a signature with gen2's stale handle fails" "open sign export_pubkey" \
    sign_fails "$gen2_uri" "$T/gen2.sig"
refreshed=$(device_ops p11 -O)
case $refreshed in
"open info info info slot_list"*) pass "HSM6: the next process reads the device again" ;;
*) fail "HSM6: the next process reads the device again: got '$refreshed'" ;;
esac
check "HSM6: -O lists slot16, no longer gen2" \
    bash -c "grep -q 'label: *slot16' '$T/ops.out' && ! grep -q 'label: *gen2' '$T/ops.out'"
check "HSM6: public key of slot16" pubkey_of slot16 "$T/slot16.pem"
check "HSM6: a signature with the new key of slot 16 verifies" sign_with slot16
expect_ops "HSM6: and the process after it makes no device call" "" p11 -O

e2e_summary
