#!/usr/bin/env bash
# Soak: several processes, each with several threads signing (every signature
# checked with C_Verify), while other processes create, find and destroy token
# certificates. No call may fail, and the emulator's counters must show exactly
# one device signature per signature returned (tests/c/p11_stress.c).
#
# ZKIOT_SOAK="PROCESSES THREADS SIGNATURES_PER_THREAD CERTIFICATES" sizes it
# (default "4 8 60 100").
# shellcheck source=tests/e2e/lib.sh
source "$(dirname "$0")/lib.sh"
e2e_init
new_token

read -r processes threads per_thread certificates <<<"${ZKIOT_SOAK:-4 8 60 100}"
stress=$T/p11_stress
# shellcheck disable=SC2046 # pkg-config prints several flags
check "p11_stress.c builds against p11-kit's pkcs11.h" \
    cc -std=c99 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Werror $(pkg-config --cflags p11-kit-1) \
    -pthread -o "$stress" "$REPO/tests/c/p11_stress.c" -ldl

make_pki
openssl x509 -in "$CA_CRT" -outform DER -out "$T/cert.der"

# device_counter NAME: the emulator's count of NAME calls (its counters file: a
# header line of names, NUL padding to byte 256, then one 64-bit count per name).
device_counter() {
    python3 -c 'import struct, sys
try:
    data = open(sys.argv[1], "rb").read()
except FileNotFoundError:
    print(0)
    sys.exit()
names = data[:256].split(b"\n")[0].split()[2:]
i = names.index(sys.argv[2].encode())
print(struct.unpack_from("=Q", data, 256 + 8 * i)[0])' "$ZKIOT_EMU_DIR/counters" "$1"
}

signs_before=$(device_counter sign)
trace_before=$(device_signs)
pids=()
for i in $(seq 1 "$processes"); do
    "$stress" "$MODULE" sign "$threads" "$per_thread" >"$T/sign.$i.out" 2>"$T/sign.$i.err" &
    pids+=($!)
done
for i in 1 2; do
    "$stress" "$MODULE" certs "$T/cert.der" "$certificates" >"$T/certs.$i.out" 2>"$T/certs.$i.err" &
    pids+=($!)
done
failed=0
for pid in "${pids[@]}"; do
    wait "$pid" || failed=$((failed + 1))
done
expect_eq "every soak process exits 0" 0 "$failed"
grep -hv "^zkemu: Zymkey emulator" "$T"/*.err | sort | uniq -c | head -n 20

signatures=$(awk '{ n += $2 } END { print n }' "$T"/sign.*.out)
errors=$(awk '{ n += $4 } END { print n }' "$T"/sign.*.out "$T"/certs.*.out)
created=$(awk '{ n += $2 } END { print n }' "$T"/certs.*.out)
note "$processes processes x $threads threads: $signatures signatures; $created certificates created and destroyed"
expect_eq "every signature returned ($processes x $threads x $per_thread)" \
    $((processes * threads * per_thread)) "$signatures"
expect_eq "every certificate created, found and destroyed" $((2 * certificates)) "$created"
expect_eq "no call failed" 0 "$errors"
if have_trace; then
    expect_eq "the emulator's counter shows one device signature per signature returned" \
        "$signatures" $(($(device_counter sign) - signs_before))
    expect_eq "the trace shows the same" "$signatures" $(($(device_signs) - trace_before))
fi
check "no certificate is left" bash -c "'$stress' '$MODULE' check '$T/cert.der' | grep -qx 'objects [0-9]* bad 0 generated [0-9]*'"
check "pkcs11-tool -O --type cert lists no stress- certificate" \
    output_lacks stress- pkcs11-tool --module "$MODULE" -O --type cert

e2e_summary
