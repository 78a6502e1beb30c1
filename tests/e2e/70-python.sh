#!/usr/bin/env bash
# (g) python-pkcs11 signs with CKM_ECDSA and CKM_ECDSA_SHA256 (single and multi-part);
# openssl verifies every signature.
# shellcheck source=tests/e2e/lib.sh
source "$(dirname "$0")/lib.sh"
e2e_init
new_token

PYTHON=$VENV/bin/python
require_file "$PYTHON" "venv (run scripts/install-deps.sh)"

mechanisms=(--mechanism ECDSA --mechanism ECDSA_SHA256 --mechanism ECDSA_SHA256_MULTIPART)
if [ "$BACKEND" = softhsm ]; then
    mechanisms=(--mechanism ECDSA) # SoftHSM 2.6.1 has no CKM_ECDSA_SHA256
fi
out=$T/py
before=$(device_signs)
check "python-pkcs11 signs (${mechanisms[*]})" \
    "$PYTHON" "$REPO/tests/python/sign.py" --module "$MODULE" --out "$out" \
    --token "$TOKEN_LABEL" ${PIN:+--pin "$PIN"} "${mechanisms[@]}"
expect_signs "one device signature per python-pkcs11 signature" "$before" $((${#mechanisms[@]} / 2))

check "public key of slot 0 (pkcs11-tool)" token_pubkey "$T/pub.pem"
expect_eq "python-pkcs11 reads the same public key" \
    "$(cat "$T/pub.pem" 2>/dev/null)" "$(openssl pkey -pubin -inform DER -in "$out/pub.der" 2>/dev/null)"

check "openssl verifies the CKM_ECDSA signature over the digest" \
    openssl pkeyutl -verify -pubin -inkey "$T/pub.pem" -in "$out/digest" -sigfile "$out/sig-ECDSA.der"
if [ "$BACKEND" = zkiot ]; then
    check "openssl verifies the CKM_ECDSA_SHA256 signature over the message" \
        openssl dgst -sha256 -verify "$T/pub.pem" -signature "$out/sig-ECDSA_SHA256.der" "$out/message"
    check "openssl verifies the multi-part CKM_ECDSA_SHA256 signature" \
        openssl dgst -sha256 -verify "$T/pub.pem" -signature "$out/sig-ECDSA_SHA256_MULTIPART.der" "$out/message"
fi
check "openssl rejects the signature for another message" \
    bash -c "head -c 100 /dev/urandom >'$T/other' &&
             ! openssl dgst -sha256 -verify '$T/pub.pem' -signature '$out/sig-ECDSA.der' '$T/other'"

if have_trace; then
    check "device operations: none for searches and attribute reads, one per signature" \
        "$PYTHON" "$REPO/tests/python/device_calls.py" --module "$MODULE" --token "$TOKEN_LABEL"
fi

e2e_summary
