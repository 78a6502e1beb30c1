#!/usr/bin/env bash
# (i) Hostile arguments: every function of the function list, with NULL pointers,
# garbage handles, huge lengths and counts, in every state, each call in a forked
# child with a time limit (tests/c/p11_sweep.c). The module must answer each one:
# no crash, no hang, no CKR_GENERAL_ERROR. Both models, with and without a PIN.
# shellcheck source=tests/e2e/lib.sh
source "$(dirname "$0")/lib.sh"
e2e_init

sweep=$T/p11_sweep
# shellcheck disable=SC2046 # pkg-config prints several flags
check "p11_sweep.c builds against p11-kit's pkcs11.h" \
    cc -std=c99 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Werror $(pkg-config --cflags p11-kit-1) \
    -o "$sweep" "$REPO/tests/c/p11_sweep.c" -ldl

# Probes known to take the host down, by function and argument variant, until
# their defects are fixed (issue 8: 1 = attribute lengths and counts checked
# before reading, 2 = C_GenerateRandom's length, 6 = a PIN longer than
# ulMaxPinLen). Remove an entry when its fix lands; the sweep says which now pass.
KNOWN=(
    "C_CreateObject many" "C_CreateObject long" "C_GetAttributeValue many"
    "C_SetAttributeValue many" "C_SetAttributeValue long" "C_FindObjectsInit many"
    "C_FindObjectsInit long" "C_GenerateKeyPair many" "C_GenerateKeyPair long"
    "C_GenerateRandom huge" "C_Login long"
)

# run_sweep: the sweep passes when every probe that did not answer is a known one.
run_sweep() {
    local out line known unknown=0
    out=$("$sweep" "$MODULE" 10 2>/dev/null)
    grep '^sweep:' <<<"$out" | tee -a "$T/sweep.summary"
    while read -r line; do
        [ -n "$line" ] || continue
        known=0
        for k in "${KNOWN[@]}"; do
            [[ $line == *" $k "* || $line == *" ${k% *} "*" ${k#* } "* ]] && known=1
        done
        if [ $known = 1 ]; then
            echo "known: $line"
        else
            echo "NEW:   $line"
            unknown=$((unknown + 1))
        fi
    done < <(grep -E '^(CRASH|HANG|GENERAL_ERROR)' <<<"$out")
    for k in "${KNOWN[@]}"; do
        if ! grep -qE "^(CRASH|HANG|GENERAL_ERROR) +${k% *} +${k#* } " <<<"$out"; then
            echo "now answered in every state: $k (remove it from KNOWN)"
        fi
    done
    grep -q '^sweep: [0-9]* probes' <<<"$out" && [ "$unknown" -eq 0 ]
}

new_token ZYMKEY4i
check "sweep over every export (ZYMKEY4i, no PIN)" run_sweep
note "$(tail -n 1 "$T/sweep.summary")"

if [ "$BACKEND" = zkiot ]; then
    new_token HSM6
    printf 'pin = "4321"\n' >>"$ZKIOT_CONF"
    export SWEEP_PIN=4321
    check "sweep over every export (HSM6, PIN set)" run_sweep
    note "$(tail -n 1 "$T/sweep.summary")"
    unset SWEEP_PIN
fi

e2e_summary
