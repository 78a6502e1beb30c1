#!/usr/bin/env bash
# openssl req through the libp11 engine: a CSR signed by the token key, carrying
# the slot's public key, at the cost of exactly one device signature. The CSR
# verifies by what `openssl req -verify` prints ("verify OK": OpenSSL 3.0 exits 0
# on a bad signature), and a copy with one signature bit flipped is refused.
# shellcheck source=tests/e2e/lib.sh
source "$(dirname "$0")/lib.sh"
e2e_init
new_token

before=$(device_signs)
check "openssl req -engine pkcs11 writes a CSR with $KEY_URI" \
    token_csr "$T/dev.csr" '/CN=device-01/O=zkiot e2e'
expect_signs "one device signature for the CSR" "$before" 1
check_csr "the CSR's self-signature verifies" "$T/dev.csr"

check "pkcs11-tool reads the slot 0 public key" token_pubkey "$T/slot0.pem"
csr_key() { openssl req -in "$T/dev.csr" -noout -pubkey; }
expect_same "the CSR's public key is the slot 0 public key" \
    "$(cat "$T/slot0.pem" 2>/dev/null)" "$(csr_key 2>/dev/null)"

# The same key addressed by CKA_ID instead of label.
check "openssl req with the key addressed as id=%00%00" \
    token_csr "$T/dev-id.csr" '/CN=device-01' \
    "pkcs11:token=$TOKEN_LABEL;id=%00%00;type=private${PIN:+;pin-value=$PIN}"
expect_same "the id= CSR carries the same key" \
    "$(cat "$T/slot0.pem" 2>/dev/null)" \
    "$(openssl req -in "$T/dev-id.csr" -noout -pubkey 2>/dev/null)"

e2e_summary
