#!/usr/bin/env bash
# Every emulated profile: CSR and mutual TLS with slot 0's P-256 key on each. ZYMKEY4i
# refuses key generation. The key-store profiles (HSM6, ZYMKEY5 as produced, reporting
# "ZYMKEY5", ZYMKEY5-PREPROD and ZYMKEY5-EDU reporting "HSM6", HSM60, and a ZYMKEY5 with 14
# factory slots) show the factory slots the device lists, generate a P-256 key that signs a
# CSR, and a secp256k1 key that signs through pkcs11-tool and verifies with openssl. An
# Ed25519 key on the device stays hidden, and libp11 still lists the token and signs.
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

# emulator_keygen TYPE: a key made through the emulator's C API, as Zymbit's tools make
# one (0 P-256, 1 secp256k1, 2 Ed25519, 3 X25519); prints its slot.
emulator_keygen() {
    python3 - "$EMULATOR" "$1" <<'EOF'
import ctypes, sys
lib = ctypes.CDLL(sys.argv[1])
ctx = ctypes.c_void_p()
assert lib.zkOpen(ctypes.byref(ctx)) == 0
slot = lib.zkGenKeyPair(ctx, int(sys.argv[2]))
assert slot >= 16, slot
assert lib.zkClose(ctx) == 0
print(slot)
EOF
}

k1_pubkey() {
    p11 --read-object --type pubkey --label k1 -o "$T/$1-k1.der" >/dev/null &&
        openssl pkey -pubin -inform DER -in "$T/$1-k1.der" -out "$T/$1-k1.pem" &&
        openssl pkey -pubin -in "$T/$1-k1.pem" -noout -text | grep -q 'secp256k1'
}
head -c 32 /dev/urandom >"$T/digest"
# last_sign_slot_generated: the last device signature used a generated key (slot >= 16).
last_sign_slot_generated() {
    local last
    last=$(grep '^sign ' "$ZKIOT_EMU_TRACE" | tail -n 1)
    echo "last device signature: $last"
    [ "${last#sign }" -ge 16 ] 2>/dev/null
}

# key_store_profile NAME PROFILE REPORTED FACTORY: a fresh device of PROFILE (with the
# environment the caller set) reports REPORTED and shows FACTORY factory slots.
key_store_profile() {
    local name=$1 profile=$2 reported=$3 factory=$4 gen_uri
    new_token "$profile"
    # The Ed25519 key is made before the module first reads the device.
    check "$name: an Ed25519 key made on the device" emulator_keygen 2
    csr_and_mtls "$name"
    expect_eq "$name: the token shows the model string the device reports" \
        "$reported" "$(p11 -L 2>/dev/null | sed -n 's/^ *token model *: *//p')"
    check "$name: private keys slot0..slot$((factory - 1)), as the device lists them" \
        bash -c "[ \"\$(pkcs11-tool --module '$MODULE' -O --type privkey | grep -c 'label: *slot[0-9]*\$')\" = $factory ]"
    check "$name: the Ed25519 key is hidden" output_lacks 'EDWARDS\|label: *slot16$' p11 -O
    check "$name: CKM_EC_KEY_PAIR_GEN advertised" \
        bash -c "pkcs11-tool --module '$MODULE' -M | grep -q 'ECDSA-KEY-PAIR-GEN'"
    check "$name: pkcs11-tool --keypairgen EC:prime256v1 --label gen1" \
        p11 --keypairgen --key-type EC:prime256v1 --label gen1
    gen_uri="pkcs11:token=$TOKEN_LABEL;object=gen1;type=private"
    check "$name: CSR signed by the generated key" \
        token_csr "$T/$name-gen1.csr" "/CN=$name-gen1/O=zkiot e2e" "$gen_uri"
    check_csr "$name: the generated key's CSR verifies" "$T/$name-gen1.csr"
    check "$name: pkcs11-tool --keypairgen EC:secp256k1 --label k1 --id 4b31" \
        p11 --keypairgen --key-type EC:secp256k1 --label k1 --id 4b31
    check "$name: the secp256k1 key's public key, as openssl reads it" k1_pubkey "$name"
    check "$name: pkcs11-tool signs with the secp256k1 key (ECDSA over a SHA-256 digest)" \
        p11 --sign -m ECDSA --id 4b31 --signature-format openssl \
        -i "$T/digest" -o "$T/$name-k1.sig"
    check "$name: the signature was the secp256k1 key's" last_sign_slot_generated
    check "$name: openssl verifies the secp256k1 signature" \
        openssl pkeyutl -verify -pubin -inkey "$T/$name-k1.pem" -in "$T/digest" \
        -sigfile "$T/$name-k1.sig"
    check "$name: pkcs11-tool --delete-object removes the generated keys" \
        bash -c "pkcs11-tool --module '$MODULE' --delete-object --type privkey --label gen1 &&
                 pkcs11-tool --module '$MODULE' --delete-object --type privkey --label k1"
    check "$name: the generated keys are gone" output_lacks 'label: *\(gen1\|k1\)$' p11 -O --type privkey
}

key_store_profile HSM6 HSM6 HSM6 12
key_store_profile ZYMKEY5 ZYMKEY5 ZYMKEY5 12
ZKIOT_EMU_FACTORY_SLOTS=14 ZKIOT_EMU_MODEL_STRING="ZYMKEY FIVE" \
    key_store_profile ZYMKEY5-14 ZYMKEY5 "ZYMKEY FIVE" 14
key_store_profile ZYMKEY5-PREPROD ZYMKEY5-PREPROD HSM6 12
key_store_profile ZYMKEY5-EDU ZYMKEY5-EDU HSM6 12
key_store_profile HSM60 HSM60 HSM60 12

# OpenSC's own EC test: generate, rename, sign, delete, on a read-write session.
test_ec() {
    local out
    out=$(p11 --test-ec --session-rw --login --pin 0000 --id 0042 --label ectest \
        --key-type EC:prime256v1 2>&1) || { echo "$out"; return 1; }
    echo "$out"
    grep -q '==> OK' <<<"$out"
}
new_token HSM6
check "HSM6: pkcs11-tool --test-ec" test_ec

e2e_summary
