#!/usr/bin/env bash
# GnuTLS consumers: p11tool lists (--list-all), test-signs (--test-sign) and
# exports the public key (--export-pubkey), gnutls-cli does mutual TLS with the
# token key.
# shellcheck source=tests/e2e/lib.sh
source "$(dirname "$0")/lib.sh"
e2e_init
new_token
make_pki
[ -n "$PIN" ] && export GNUTLS_PIN=$PIN
KEY_URI_GNUTLS="pkcs11:token=$TOKEN_LABEL;object=slot0;type=private"

list_all() {
    local out
    out=$(p11tool --provider "$MODULE" "${P11TOOL_GNUTLS_LOGIN[@]}" --list-all "pkcs11:token=$TOKEN_LABEL") ||
        return 1
    echo "$out"
    grep -q "object=slot0;type=private" <<<"$out" && grep -q "object=slot0;type=public" <<<"$out"
}
check "p11tool --provider … --list-all shows the private and public key" list_all
check "p11tool --list-token-urls shows token=$TOKEN_LABEL" \
    bash -c "p11tool --provider '$MODULE' --list-token-urls | grep -q 'token=$TOKEN_LABEL'"

test_sign() {
    local out
    out=$(p11tool --provider "$MODULE" "${P11TOOL_GNUTLS_LOGIN[@]}" --test-sign "$KEY_URI_GNUTLS" 2>&1) ||
        { echo "$out"; return 1; }
    echo "$out"
    ! grep -qi 'fail' <<<"$out"
}
check "p11tool --test-sign $KEY_URI_GNUTLS" test_sign

check "p11tool --export-pubkey matches pkcs11-tool's public key" \
    bash -c "p11tool --provider '$MODULE' ${P11TOOL_GNUTLS_LOGIN[*]} --export-pubkey '$KEY_URI_GNUTLS' >'$T/gnutls-pub.pem' 2>/dev/null &&
             pkcs11-tool --module '$MODULE' ${P11TOOL_LOGIN[*]} --read-object --type pubkey --id 0000 -o '$T/pub.der' >/dev/null 2>&1 &&
             [ \"\$(openssl pkey -pubin -in '$T/gnutls-pub.pem')\" = \"\$(openssl pkey -pubin -inform DER -in '$T/pub.der')\" ]"

check "CSR from the token" token_csr "$T/dev.csr" '/CN=device-gnutls/O=zkiot e2e'
check "test CA issues the client certificate" issue_cert "$T/dev.csr" "$T/dev.crt"
start_s_server

before=$(device_signs)
gnutls_mtls() {
    printf 'GET / HTTP/1.0\r\n\r\n' |
        timeout 30 gnutls-cli --provider "$MODULE" --x509cafile "$CA_CRT" \
            --x509certfile "$T/dev.crt" --x509keyfile "$KEY_URI_GNUTLS" \
            -p "$SERVER_PORT" 127.0.0.1 >"$T/gnutls.out" 2>&1
    cat "$T/gnutls.out"
    grep -q 'Handshake was completed' "$T/gnutls.out"
}
check "gnutls-cli --x509keyfile $KEY_URI_GNUTLS completes mutual TLS" gnutls_mtls
expect_signs "one device signature for the gnutls-cli handshake" "$before" 1
# s_server logs "depth=0 CN = ..." for every client certificate it looks at, and a
# "verify error" line after it when the certificate does not verify.
client_cert_verified() {
    grep -q 'depth=0 CN = device-gnutls' "$SERVER_LOG" && ! grep -q '^verify error' "$SERVER_LOG"
}
check "the server verified the client certificate" client_cert_verified
check "server page shows the client certificate" \
    page_shows_client_cert "$T/gnutls.out" 'CN=device-gnutls'

e2e_summary
