#!/usr/bin/env bash
# pkcs11-tool (OpenSC): -L -O -M; --sign -m ECDSA over digests of 20, 28, 32, 48
# and 64 bytes, verified by openssl pkeyutl; a device error (CKR_DEVICE_ERROR, then
# the next signature works); --generate-random; --test, by its "No errors" line (it
# exits 0 when its tests fail; a failed device call is seen to fail the check);
# --test-fork; --use-locking --test-threads. Which PKCS#11 entry point each consumer
# here takes (the 3.0 interface or C_GetFunctionList's 2.40 list), and that both work:
# -I reports Cryptoki 3.0 and --list-interfaces lists "PKCS 11" 3.0 then 2.40 (OpenSC
# loads through C_GetInterface, as pkcs11-spy's log shows); python-pkcs11 sees 2.40
# through C_GetFunctionList's list and signs.
# shellcheck source=tests/e2e/lib.sh
source "$(dirname "$0")/lib.sh"
e2e_init
new_token

p11() { pkcs11-tool --module "$MODULE" "$@"; }

check "pkcs11-tool -L lists a slot with token '$TOKEN_LABEL'" \
    bash -c "pkcs11-tool --module '$MODULE' -L | grep -q 'token label *: $TOKEN_LABEL\$'"
check "pkcs11-tool -O lists private and public key slot0" \
    bash -c "out=\$(pkcs11-tool --module '$MODULE' ${P11TOOL_LOGIN[*]} -O) &&
             grep -q '^Private Key Object; EC' <<<\"\$out\" &&
             grep -q '^Public Key Object; EC' <<<\"\$out\" &&
             grep -q 'label: *slot0' <<<\"\$out\" && grep -q 'ID: *0000\$' <<<\"\$out\""
check "pkcs11-tool -M lists ECDSA" \
    bash -c "pkcs11-tool --module '$MODULE' -M | grep -q '^ *ECDSA,'"

# PKCS#11 3.0. OpenSC (0.23 here, 0.26 on Debian 13) loads a module through
# C_GetInterface("PKCS 11", NULL) when it exports one, else C_GetFunctionList. Our
# default interface is 3.0, and each list's C_GetInfo reports that list's version: -I
# printing 3.0 shows pkcs11-tool holds the 3.0 list, which --list-interfaces requires.
# python-pkcs11 0.10 makes its calls through C_GetFunctionList's list, so it sees 2.40,
# and takes the 3.0 interface only for 3.0 functions.
if [ "$BACKEND" = zkiot ]; then
    check "pkcs11-tool -I: Cryptoki version 3.0 (it loaded the module through C_GetInterface)" \
        bash -c "pkcs11-tool --module '$MODULE' -I | grep -qx 'Cryptoki version 3.0'"
    list_interfaces() {
        local out
        out=$(pkcs11-tool --module "$MODULE" --list-interfaces) || return 1
        printf '%s\n' "$out"
        [ "$(grep -v 'funcs=' <<<"$out")" = "$(printf "%s\n" "Interface 'PKCS 11'" \
            '  version: 3.0' '  flags=0x0' "Interface 'PKCS 11'" '  version: 2.40' '  flags=0x0')" ]
    }
    check "pkcs11-tool --list-interfaces: 'PKCS 11' 3.0, then 2.40, no flags" list_interfaces
    # OpenSC's pkcs11-spy loads the module as pkcs11-tool does, logs each call, and writes
    # its own function list into the interface record C_GetInterface gives it.
    spy=$(find /usr/lib -name pkcs11-spy.so -print -quit 2>/dev/null)
    if [ -n "$spy" ]; then
        spy_first_call() {
            PKCS11SPY=$MODULE PKCS11SPY_OUTPUT=$T/spy-load.log pkcs11-tool --module "$spy" -I ||
                return 1
            grep -A5 -m1 '^0: ' "$T/spy-load.log"
            grep -qx '0: C_GetInterface' "$T/spy-load.log" &&
                grep -A5 -m1 '^0: ' "$T/spy-load.log" | grep -qx '\[in\] pVersion = NULL' &&
                grep -qE '^ +cryptokiVersion: +3\.0$' "$T/spy-load.log"
        }
        check "through pkcs11-spy: the first call is C_GetInterface(\"PKCS 11\", NULL), then 3.0" \
            spy_first_call
    fi
    python_versions() {
        "$VENV/bin/python" - "$MODULE" "$TOKEN_LABEL" <<'PY'
import sys
import pkcs11
lib = pkcs11.lib(sys.argv[1])
print("cryptoki_version", lib.cryptoki_version)
assert lib.cryptoki_version == (2, 40), lib.cryptoki_version
token = lib.get_token(token_label=sys.argv[2])
with token.open() as session:
    key = session.get_key(pkcs11.ObjectClass.PRIVATE_KEY, label="slot0")
    assert len(key.sign(b"\x11" * 32, mechanism=pkcs11.Mechanism.ECDSA)) == 64
PY
    }
    if [ -x "$VENV/bin/python" ]; then
        check "python-pkcs11 (C_GetFunctionList's list): Cryptoki version 2.40, and it signs" \
            python_versions
    else
        skip "python-pkcs11: no venv at $VENV (scripts/install-deps.sh makes it)"
    fi
fi

check "public key of slot 0" token_pubkey "$T/pub.pem"
head -c 1000 /dev/urandom >"$T/message"
for hash in sha1 sha224 sha256 sha384 sha512; do
    digest=$T/digest.$hash
    sig=$T/sig.$hash
    openssl dgst "-$hash" -binary -out "$digest" "$T/message"
    size=$(stat -c %s "$digest")
    before=$(device_signs)
    check "pkcs11-tool --sign -m ECDSA, $size-byte $hash digest" \
        p11 "${P11TOOL_LOGIN[@]}" --sign -m ECDSA --id 0000 -i "$digest" -o "$sig" \
        --signature-format openssl
    expect_signs "one device signature for the $size-byte input" "$before" 1
    check "openssl pkeyutl -verify accepts the $size-byte signature" \
        openssl pkeyutl -verify -pubin -inkey "$T/pub.pem" -in "$digest" -sigfile "$sig"
done

# The signature is over the digest given, not over something else.
check "a signature does not verify for another digest" \
    fails_saying 'Signature Verification Failure' \
    openssl pkeyutl -verify -pubin -inkey "$T/pub.pem" -in "$T/digest.sha256" -sigfile "$T/sig.sha1"

# A device error fails that signature with CKR_DEVICE_ERROR (seen through OpenSC's
# pkcs11-spy); the next signature works.
spy=$(find /usr/lib -name pkcs11-spy.so -print -quit 2>/dev/null)
if have_trace && [ -n "$spy" ]; then
    echo sign >"$ZKIOT_EMU_DIR/fail-next"
    device_error() {
        ! PKCS11SPY=$MODULE PKCS11SPY_OUTPUT=$T/spy.log pkcs11-tool --module "$spy" \
            --sign -m ECDSA --id 0000 -i "$T/digest.sha256" -o "$T/sig.fault" || return 1
        grep -A8 ': C_Sign$' "$T/spy.log" | grep 'Returned:'
        grep -A8 ': C_Sign$' "$T/spy.log" | grep -q 'Returned: *48 CKR_DEVICE_ERROR'
    }
    check "a device error: pkcs11-tool --sign fails, C_Sign returned CKR_DEVICE_ERROR" device_error
    check "the next signature works and verifies" \
        bash -c "pkcs11-tool --module '$MODULE' --sign -m ECDSA --id 0000 -i '$T/digest.sha256' -o '$T/sig.after' --signature-format openssl &&
                 openssl pkeyutl -verify -pubin -inkey '$T/pub.pem' -in '$T/digest.sha256' -sigfile '$T/sig.after'"
fi

check "pkcs11-tool --generate-random 48 gives 48 bytes" \
    bash -c "[ \"\$(pkcs11-tool --module '$MODULE' --generate-random 48 | wc -c)\" = 48 ]"

check "pkcs11-tool --test: No errors" pkcs11_tool_test --module "$MODULE" "${P11TOOL_LOGIN[@]}"
# pkcs11-tool --test exits 0 however many of its tests fail; the check above goes by its
# "No errors" line, and is seen to fail when a device call fails.
if have_trace; then
    echo random >"$ZKIOT_EMU_DIR/fail-next"
    test_with_device_error() {
        local out
        out=$(pkcs11_tool_test --module "$MODULE") && { echo "$out"; return 1; }
        echo "$out"
        grep -qx '1 errors' <<<"$out"
    }
    check "pkcs11-tool --test with one failed device call: '1 errors', refused" test_with_device_error
fi

fork_ok() {
    local out
    out=$(p11 --test-fork 2>&1) || { echo "$out"; return 1; }
    echo "$out"
    ! grep -qE 'CKR_|error' <<<"$out"
}
check "pkcs11-tool --test-fork" fork_ok

# The main thread lists slots, objects and mechanisms meanwhile; with less to do it
# reaches pkcs11-tool's cleanup before the threads end, and the tool then sleeps 30 s.
threads_ok() {
    local out rc=0
    out=$(p11 --use-locking --test-threads ILGISLT0 --test-threads ILGISLT0 \
        --test-threads INGISLT0 -L -O -M 2>&1) || rc=$?
    echo "$out"
    [ "$rc" -eq 0 ] && grep -q 'all threads have ended with CKR_OK' <<<"$out"
}
if [ "$BACKEND" = softhsm ]; then
    skip "pkcs11-tool --use-locking --test-threads (SoftHSM 2.6.1 crashes at exit)"
else
    check "pkcs11-tool --use-locking --test-threads (3 threads)" threads_ok
fi

e2e_summary
