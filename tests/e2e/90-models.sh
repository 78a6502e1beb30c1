#!/usr/bin/env bash
# (i) Both emulated models: CSR and mutual TLS on ZYMKEY4i and HSM6; on HSM6 a key
# generated through PKCS#11 signs a CSR; ZYMKEY4i refuses key generation.
# shellcheck source=tests/e2e/lib.sh
source "$(dirname "$0")/lib.sh"
e2e_init
if [ "$BACKEND" != zkiot ]; then
    skip "emulated models (only with the zkiot backend)"
    e2e_summary
    exit
fi
make_pki
start_s_server

p11() { pkcs11-tool --module "$MODULE" "$@"; }

csr_and_mtls() {
    local model=$1 csr=$T/$1.csr crt=$T/$1.crt before
    before=$(device_signs)
    check "$model: CSR from slot0" token_csr "$csr" "/CN=device-$model/O=zkiot e2e"
    expect_signs "$model: one device signature for the CSR" "$before" 1
    check_csr "$model: the CSR verifies" "$csr"
    check "$model: public key of slot 0" token_pubkey "$T/$model-pub.pem"
    expect_same "$model: the CSR carries the slot 0 key" \
        "$(cat "$T/$model-pub.pem" 2>/dev/null)" "$(openssl req -in "$csr" -noout -pubkey 2>/dev/null)"
    check "$model: test CA issues the certificate" issue_cert "$csr" "$crt"
    for tls in --tlsv1.3 "--tls-max 1.2"; do
        before=$(device_signs)
        # shellcheck disable=SC2086 # $tls is one or two words on purpose
        check "$model: curl $tls mutual TLS" \
            curl -sS --fail $tls --key "$KEY_URI" --cert "$crt" --cacert "$CA_CRT" \
            -o "$T/$model.page" "$SERVER_URL"
        expect_signs "$model: one device signature for the $tls handshake" "$before" 1
        check "$model: server shows the client certificate ($tls)" \
            page_shows_client_cert "$T/$model.page" "CN=device-$model"
    done
}

# ---- ZYMKEY4i: three factory slots, no key generation
new_token ZYMKEY4i
csr_and_mtls ZYMKEY4i
check "ZYMKEY4i: private keys slot0..slot2 and no more" \
    bash -c "[ \"\$(pkcs11-tool --module '$MODULE' -O --type privkey | grep -c 'label: *slot[0-9]*\$')\" = 3 ]"
check "ZYMKEY4i: no CKM_EC_KEY_PAIR_GEN advertised" \
    output_lacks 'ECDSA-KEY-PAIR-GEN' p11 -M
check "ZYMKEY4i: pkcs11-tool --keypairgen is refused (mechanism not supported)" \
    fails_saying 'key mechanism .* not supported' p11 --keypairgen --key-type EC:prime256v1 --label gen1

# ---- HSM6: twelve factory slots, key generation from slot 16
new_token HSM6
csr_and_mtls HSM6
check "HSM6: private keys slot0..slot11" \
    bash -c "[ \"\$(pkcs11-tool --module '$MODULE' -O --type privkey | grep -c 'label: *slot[0-9]*\$')\" = 12 ]"
check "HSM6: CKM_EC_KEY_PAIR_GEN advertised" \
    bash -c "pkcs11-tool --module '$MODULE' -M | grep -q 'ECDSA-KEY-PAIR-GEN'"
check "HSM6: pkcs11-tool --keypairgen --key-type EC:prime256v1 --label gen1" \
    p11 --keypairgen --key-type EC:prime256v1 --label gen1
gen_uri="pkcs11:token=$TOKEN_LABEL;object=gen1;type=private"
before=$(device_signs)
check "HSM6: CSR signed by the generated key ($gen_uri)" \
    token_csr "$T/gen1.csr" '/CN=device-gen1/O=zkiot e2e' "$gen_uri"
expect_signs "HSM6: one device signature for the CSR" "$before" 1
check_csr "HSM6: the generated key's CSR verifies" "$T/gen1.csr"
gen_pub() {
    p11 --read-object --type pubkey --label gen1 -o "$T/gen1.der" >/dev/null &&
        openssl pkey -pubin -inform DER -in "$T/gen1.der"
}
expect_same "HSM6: the CSR carries the generated public key" \
    "$(gen_pub 2>/dev/null)" "$(openssl req -in "$T/gen1.csr" -noout -pubkey 2>/dev/null)"
keys_differ() {
    local slot0 gen1
    slot0=$(cat "$T/HSM6-pub.pem") && gen1=$(openssl req -in "$T/gen1.csr" -noout -pubkey) &&
        [ -n "$slot0" ] && [ -n "$gen1" ] && [ "$slot0" != "$gen1" ]
}
check "HSM6: the generated key differs from slot 0" keys_differ
check "HSM6: pkcs11-tool --delete-object removes the generated key" \
    p11 --delete-object --type privkey --label gen1
check "HSM6: the generated key is gone" output_lacks 'label: *gen1$' p11 -O --type privkey

# OpenSC's own EC test: generate, rename, sign, delete, on a read-write session.
test_ec() {
    local out
    out=$(p11 --test-ec --session-rw --login --pin 0000 --id 0042 --label ectest \
        --key-type EC:prime256v1 2>&1) || { echo "$out"; return 1; }
    echo "$out"
    grep -q '==> OK' <<<"$out"
}
check "HSM6: pkcs11-tool --test-ec" test_ec

e2e_summary
