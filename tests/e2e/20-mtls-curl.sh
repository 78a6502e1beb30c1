#!/usr/bin/env bash
# (b) curl mutual TLS with the token key against openssl s_server, TLS 1.3 and 1.2,
# one device signature per handshake.
# shellcheck source=tests/e2e/lib.sh
source "$(dirname "$0")/lib.sh"
e2e_init
new_token
make_pki

check "CSR from the token" token_csr "$T/dev.csr" '/CN=device-01/O=zkiot e2e'
check "test CA issues the client certificate" issue_cert "$T/dev.csr" "$T/dev.crt"
start_s_server

for tls in --tlsv1.3 "--tls-max 1.2"; do
    page=$T/page.$RANDOM
    before=$(device_signs)
    # shellcheck disable=SC2086 # $tls is one or two words on purpose
    check "curl $tls --key $KEY_URI --cert dev.crt" \
        curl -sS --fail $tls --key "$KEY_URI" --cert "$T/dev.crt" --cacert "$CA_CRT" \
        -o "$page" "$SERVER_URL"
    expect_signs "one device signature for the $tls handshake" "$before" 1
    check "server page shows the client certificate ($tls)" \
        page_shows_client_cert "$page" 'CN=device-01'
    case $tls in
    --tlsv1.3) check "negotiated TLSv1.3" grep -q '^New, TLSv1.3,' "$page" ;;
    *) check "negotiated TLSv1.2" grep -q '^New, TLSv1.2,' "$page" ;;
    esac
done

# The explicit engine form works too.
before=$(device_signs)
check "curl --engine pkcs11 --key-type ENG" \
    curl -sS --fail --engine pkcs11 --key-type ENG --key "$KEY_URI" --cert "$T/dev.crt" \
    --cacert "$CA_CRT" -o "$T/page-eng" "$SERVER_URL"
expect_signs "one device signature for the engine-form handshake" "$before" 1

# A client without a certificate is refused, so the checks above mean something.
check "server refuses a client without a certificate" \
    bash -c "! curl -sS --fail --cacert '$CA_CRT' -o /dev/null '$SERVER_URL'"

e2e_summary
