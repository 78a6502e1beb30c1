#!/usr/bin/env bash
# An existing-style C application (tests/c/p11_app.c): built against p11-kit's
# pkcs11.h, dlopen()s the module, finds the key by label, signs a SHA-256 digest
# with CKM_ECDSA; openssl verifies the signature.
# shellcheck source=tests/e2e/lib.sh
source "$(dirname "$0")/lib.sh"
e2e_init
new_token

app=$T/p11_app
# shellcheck disable=SC2046 # pkg-config prints several flags
check "p11_app.c builds against p11-kit's pkcs11.h" \
    cc -std=c99 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Werror $(pkg-config --cflags p11-kit-1) \
    -o "$app" "$REPO/tests/c/p11_app.c" -ldl

head -c 500 /dev/urandom >"$T/message"
openssl dgst -sha256 -binary -out "$T/digest" "$T/message"
before=$(device_signs)
check "p11_app signs the digest with slot0" \
    "$app" "$MODULE" "$TOKEN_LABEL" slot0 "$T/digest" "$T/sig.der" ${PIN:+"$PIN"}
expect_signs "one device signature (the length query is free)" "$before" 1
check "public key of slot 0" token_pubkey "$T/pub.pem"
check "openssl pkeyutl -verify accepts the signature" \
    openssl pkeyutl -verify -pubin -inkey "$T/pub.pem" -in "$T/digest" -sigfile "$T/sig.der"
check "openssl dgst -verify accepts it over the message" \
    openssl dgst -sha256 -verify "$T/pub.pem" -signature "$T/sig.der" "$T/message"
check "p11_app fails cleanly for an unknown key label" \
    fails_saying "expected exactly one private key labelled 'no-such-key'" \
    "$app" "$MODULE" "$TOKEN_LABEL" no-such-key "$T/digest" "$T/none.der" ${PIN:+"$PIN"}

e2e_summary
