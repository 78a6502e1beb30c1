#!/usr/bin/env bash
# The README's main command, scripts/demo.sh, runs the whole guide to the end: the operator's
# steps against moto, the device's through the token, and temporary AWS credentials from the
# local credentials provider that then work against moto; the silenced device is refused; the
# agent reports a perimeter breach and aws sweep silences the device.
# shellcheck source=tests/e2e/lib.sh
source "$(dirname "$0")/lib.sh"
e2e_init
if [ "$BACKEND" != zkiot ]; then
    skip "scripts/demo.sh (only with the zkiot backend)"
    e2e_summary
    exit
fi
unset PKCS11_MODULE_PATH ZKIOT_ZKLIB ZKIOT_CONF ZKIOT_EMU_DIR ZKIOT_EMU_TRACE

export ZKIOT_FLOW_DIR=$T/flow
out=$T/demo.out
check "scripts/demo.sh" bash -c "'$REPO/scripts/demo.sh' </dev/null >'$out' 2>&1 || { cat '$out'; exit 1; }"
check "demo: the CA is registered" grep -q 'aws register-ca' "$out"
check "demo: the device CSR is made through the token" grep -q 'zkiot device csr' "$out"
check "demo: temporary credentials work against moto (sts get-caller-identity)" \
    grep -q '"Account": "123456789012"' "$out"
check "demo: a silenced device is refused" grep -q 'Access Denied' "$out"
check "demo: the agent reports the perimeter breach on the Thing" \
    grep -q 'perimeter breach reported on the device' "$out"
check "demo: aws status shows it" grep -q 'PERIMETER BREACH reported (0@' "$out"
check "demo: aws sweep silences exactly that device" grep -q '1 reported a breach.*1 to silence' "$out"
check "demo: it ends" grep -q '^Done\.' "$out"
check "demo: its servers are stopped" \
    bash -c "! pgrep -f '[c]redprov/server.py.*$ZKIOT_FLOW_DIR' >/dev/null"
check "demo: its device agent and perimeter watcher are stopped" \
    bash -c "! pgrep -f '[z]kiot device agent --connect' >/dev/null"

e2e_summary
