#!/usr/bin/env bash
# (p) The module never calls into OpenSSL: it links neither libssl nor libcrypto and
# imports no OpenSSL function, so no PKCS#11 call can re-enter OpenSSL's provider layer
# (or load OpenSSL's configuration, which may load pkcs11-provider and, through it,
# this module again) while OpenSSL is calling the module through pkcs11-provider.
# Its ECDSA verification, hashing and certificate parsing are pure Rust.
# shellcheck source=tests/e2e/lib.sh
source "$(dirname "$0")/lib.sh"
e2e_init

if [ "$BACKEND" != zkiot ]; then
    skip "the module's own OpenSSL use (not $BACKEND's)"
    e2e_summary
    exit
fi
# Each prints what it found and fails if there is anything.
no_openssl_link() {
    ! readelf -d "$MODULE" | grep -E 'NEEDED.*\[lib(ssl|crypto)\.so'
}
no_openssl_import() {
    ! nm -D --undefined-only "$MODULE" | grep -E '@OPENSSL_[0-9]'
}
check "$(basename "$MODULE") links neither libssl nor libcrypto" no_openssl_link
check "$(basename "$MODULE") imports no OpenSSL function" no_openssl_import
e2e_summary
