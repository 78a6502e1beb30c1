#!/usr/bin/env bash
# kill -9 while certificates are being imported: after every kill the object
# store passes SQLite's integrity check and every certificate on the token is whole
# (its CKA_VALUE is exactly the DER imported), and the token keeps working.
# Then kill -9 while HSM6 key pairs are being generated, and while they are being
# generated and destroyed: after every kill each key the emulated device holds
# outside its factory slots is on the token with the label and id its generation
# asked for (none is left with the slot's defaults), and the token shows no key
# the device no longer has.
#
# ZKIOT_KILLS sets the number of kills during import (default 60),
# ZKIOT_KEYGEN_KILLS during key generation, and again during generation and
# removal (default 30 each).
# shellcheck source=tests/e2e/lib.sh
source "$(dirname "$0")/lib.sh"
e2e_init
new_token

kills=${ZKIOT_KILLS:-60}
stress=$T/p11_stress
# shellcheck disable=SC2046 # pkg-config prints several flags
check "p11_stress.c builds against p11-kit's pkcs11.h" \
    cc -std=c99 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Werror $(pkg-config --cflags p11-kit-1) \
    -pthread -o "$stress" "$REPO/tests/c/p11_stress.c" -ldl

make_pki
openssl x509 -in "$CA_CRT" -outform DER -out "$T/cert.der"

store_ok() {
    [ -e "$TOKEN_DIR/store" ] || return 0
    python3 -c 'import sqlite3, sys
result = sqlite3.connect(sys.argv[1]).execute("PRAGMA integrity_check").fetchone()[0]
print(result)
sys.exit(result != "ok")' "$TOKEN_DIR/store"
}

# Keys in the emulated HSM6's key store outside its factory slots (0-15).
generated_on_device() {
    find "$ZKIOT_EMU_DIR/keys" -name 'slot-*.pem' | sed 's/.*slot-\([0-9]*\)\.pem$/\1/' |
        awk '$1 >= 16' | wc -l
}

# kill_loop MODE ARGS...: starts "p11_stress MODULE MODE ARGS" $kills times, kills
# it with SIGKILL after a random 20-300 ms, and checks the store and objects each time.
kill_loop() {
    local mode=$1 i bad=0 killed=0
    shift
    for i in $(seq 1 "$kills"); do
        "$stress" "$MODULE" "$mode" "$@" >/dev/null 2>>"$T/$mode.err" &
        local pid=$!
        sleep "0.$(printf '%03d' $((20 + RANDOM % 280)))"
        if kill -9 "$pid" 2>/dev/null; then
            killed=$((killed + 1))
        fi
        wait "$pid" 2>/dev/null
        if ! store_ok >"$T/integrity.log" 2>&1; then
            echo "after kill $i: integrity check failed: $(cat "$T/integrity.log")"
            bad=$((bad + 1))
        fi
        if ! "$stress" "$MODULE" check ${CHECK_DER:+"$CHECK_DER"} >"$T/check.log" 2>&1; then
            echo "after kill $i: $(tail -n 3 "$T/check.log")"
            bad=$((bad + 1))
        elif [ -n "${CHECK_KEYS:-}" ]; then
            local shown on_device
            shown=$(sed -n 's/.* generated \([0-9]*\)$/\1/p' "$T/check.log")
            on_device=$(generated_on_device)
            if [ "$shown" != "$on_device" ]; then
                echo "after kill $i: the device holds $on_device generated keys, the token shows $shown with the label and id asked for"
                bad=$((bad + 1))
            fi
        fi
    done
    echo "$killed of $kills processes killed mid-$mode; then $(tail -n 1 "$T/check.log")" | tee "$T/kill.summary"
    [ "$bad" -eq 0 ] && [ "$killed" -gt 0 ]
}

CHECK_DER=$T/cert.der check "kill -9 during certificate import, $kills times: store and certificates whole" \
    kill_loop certs "$T/cert.der" 0
note "$(cat "$T/kill.summary")"
check "the token still imports, finds and destroys a certificate" \
    "$stress" "$MODULE" certs "$T/cert.der" 1

# The emulator's HSM6 (softhsm has no device slots to compare with).
if [ "$BACKEND" = zkiot ]; then
    new_token HSM6
    kills=${ZKIOT_KEYGEN_KILLS:-30}
    CHECK_KEYS=1 check "kill -9 during HSM6 key generation, $kills times: every generated key has its label and id" \
        kill_loop keygen 0
    note "$(cat "$T/kill.summary"), $(generated_on_device) keys generated in all"
    new_token HSM6
    CHECK_KEYS=1 check "kill -9 during HSM6 key generation and removal, $kills times: the token shows exactly the device's keys" \
        kill_loop keygen 0 destroy
    note "$(cat "$T/kill.summary"), $(generated_on_device) keys left on the device"
    check "the token still generates a key pair" "$stress" "$MODULE" keygen 1
fi

e2e_summary
