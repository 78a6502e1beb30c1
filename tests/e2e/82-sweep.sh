#!/usr/bin/env bash
# Hostile arguments: every function of the function list, with NULL pointers,
# garbage handles, (CK_ULONG)-1 lengths and counts, and PIN and attribute lengths of
# 4 GiB, in every state (not initialised, public and logged-in session, signing,
# searching, finalised), each call in a forked child with a time limit
# (tests/c/p11_sweep.c). The module must answer each one: no crash, no hang, no
# CKR_GENERAL_ERROR. Both models, with and without a PIN. With our module the sweep
# covers the PKCS#11 3.0 interface too: C_GetInterfaceList, C_GetInterface, the 3.0
# list's C_GetInfo and every function 3.0 adds.
# shellcheck source=tests/e2e/lib.sh
source "$(dirname "$0")/lib.sh"
e2e_init

sweep=$T/p11_sweep
# shellcheck disable=SC2046 # pkg-config prints several flags
check "p11_sweep.c builds against p11-kit's pkcs11.h" \
    cc -std=c99 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Werror $(pkg-config --cflags p11-kit-1) \
    -o "$sweep" "$REPO/tests/c/p11_sweep.c" -ldl

# run_sweep: every probe answered; the lines of those that did not, and the summary.
run_sweep() {
    local out rc=0
    out=$("$sweep" "$MODULE" 10 2>/dev/null) || rc=$?
    grep -E '^(CRASH|HANG|GENERAL_ERROR)' <<<"$out"
    grep '^sweep:' <<<"$out" | tee -a "$T/sweep.summary"
    return $rc
}

new_token ZYMKEY4i
check "sweep over every export (ZYMKEY4i, no PIN)" run_sweep
note "$(tail -n 1 "$T/sweep.summary")"
if [ "$BACKEND" = zkiot ]; then
    check "the sweep went through the 3.0 interface's list too" \
        grep -q '^sweep: [0-9]* probes (2.40 and 3.0 lists)' "$T/sweep.summary"
fi

if [ "$BACKEND" = zkiot ]; then
    new_token HSM6
    printf 'pin = "4321"\n' >>"$ZKIOT_CONF"
    export SWEEP_PIN=4321
    check "sweep over every export (HSM6, PIN set)" run_sweep
    note "$(tail -n 1 "$T/sweep.summary")"
    unset SWEEP_PIN
fi

e2e_summary
