#!/usr/bin/env bash
# The module never calls into OpenSSL: it links neither libssl nor libcrypto and
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
# Each prints what it read, and fails if there is anything, or if the tool fails or reads
# no dependency at all (a missing readelf or nm prints nothing, which would pass).
no_openssl_link() {
    local out
    out=$(readelf -d "$MODULE") || return 1
    printf '%s\n' "$out"
    grep -q 'NEEDED.*\[libc\.so' <<<"$out" && ! grep -E 'NEEDED.*\[lib(ssl|crypto)\.so' <<<"$out"
}
no_openssl_import() {
    local out
    out=$(nm -D --undefined-only "$MODULE") || return 1
    printf '%s\n' "$out"
    grep -q '@GLIBC_' <<<"$out" && ! grep -E '@OPENSSL_[0-9]' <<<"$out"
}
check "$(basename "$MODULE") links neither libssl nor libcrypto" no_openssl_link
check "$(basename "$MODULE") imports no OpenSSL function" no_openssl_import
e2e_summary
