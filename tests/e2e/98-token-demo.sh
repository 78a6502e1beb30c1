#!/usr/bin/env bash
# scripts/token-demo.sh, the device half of the guide with stock tools, runs to the end on
# the emulator: a CSR signed in the token (one device signature), the certificate on the
# token, mutual TLS with curl (one device signature), and the server shows the certificate.
# shellcheck source=tests/e2e/lib.sh
source "$(dirname "$0")/lib.sh"
e2e_init
if [ "$BACKEND" != zkiot ]; then
    skip "scripts/token-demo.sh (only with the zkiot backend)"
    e2e_summary
    exit
fi
unset PKCS11_MODULE_PATH

export ZKIOT_DEMO_DIR=$T/demo
check "scripts/token-demo.sh" bash -c "'$REPO/scripts/token-demo.sh' </dev/null >'$T/demo.out' 2>&1 || { cat '$T/demo.out'; exit 1; }"
check "demo: one device signature for the CSR" grep -q '^   device signatures: 1$' "$T/demo.out"
# openssl req -verify exits 0 on a bad self-signature with OpenSSL 3.0: look for its verdict.
check "demo: the CSR's self-signature verifies" \
    grep -q 'Certificate request self-signature verify OK' "$T/demo.out"
check "demo: the certificate is stored on the token" grep -q 'Created certificate:' "$T/demo.out"
check "demo: the server shows the client certificate" \
    grep -q 'Subject: CN=demo-device-0001, O=zkiot demo' "$T/demo.out"
check "demo: one device signature for the handshake" \
    grep -q '^   device signatures for the handshake: 1$' "$T/demo.out"
check "demo: its s_server is stopped" \
    bash -c "! pgrep -f '[s]_server -accept 127.0.0.1:0 -cert $ZKIOT_DEMO_DIR/' >/dev/null"

e2e_summary
