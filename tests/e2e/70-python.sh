#!/usr/bin/env bash
# python-pkcs11 signs with CKM_ECDSA and CKM_ECDSA_SHA256 (single and multi-part);
# openssl verifies every signature. In one process, object searches and attribute
# reads cost no device operation and a signature (with its length query) exactly one
# (the first also opens the device). Data objects of 100 KB and 1 MiB written through
# python-pkcs11 read back whole, by it and by pkcs11-tool --read-object, each in
# another process; one of 1 MiB + 1 byte is refused (CKR_ATTRIBUTE_VALUE_INVALID).
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

# Data objects up to the store's bound (1 MiB), as conformance suites write them: each is
# written by one process, read back by another through python-pkcs11 and by pkcs11-tool
# (whose --write-object keeps only the first 5000 bytes of a file, so it only reads here).
data() { "$PYTHON" "$REPO/tests/python/data_object.py" --module "$MODULE" \
    --token "$TOKEN_LABEL" ${PIN:+--pin "$PIN"} "$@"; }
# read_back LABEL EXPECTED: the value read by python-pkcs11, then by pkcs11-tool, is EXPECTED.
read_back() {
    data read "$1" "$2.py" && cmp "$2" "$2.py" &&
        pkcs11-tool --module "$MODULE" "${P11TOOL_LOGIN[@]}" --read-object --type data \
            --label "$1" -o "$2.tool" && cmp "$2" "$2.tool"
}
for size in 102400 1048576; do
    head -c "$size" /dev/urandom >"$T/data.$size"
    check "python-pkcs11 writes a $size-byte data object" data write "data$size" "$T/data.$size"
    check "python-pkcs11 and pkcs11-tool read the $size bytes back in other processes" \
        read_back "data$size" "$T/data.$size"
done
if [ "$BACKEND" = zkiot ]; then
    check "a data object of 1 MiB + 1 byte is refused with CKR_ATTRIBUTE_VALUE_INVALID" \
        data refuse data-over 1048577
fi

e2e_summary
