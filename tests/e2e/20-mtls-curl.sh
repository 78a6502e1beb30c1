#!/usr/bin/env bash
# curl mutual TLS with the token key against openssl s_server (-Verify 1
# -verify_return_error), TLS 1.3 and 1.2, and openssl s_client: the server shows the
# client certificate and that it verified, at one device signature per handshake.
# Six handshakes from parallel processes; a device error during a handshake (libp11
# signs again and the handshake completes); the server refuses a client without a
# certificate or with one from another CA.
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

# openssl s_client with the engine key.
before=$(device_signs)
s_client_mtls() {
    echo Q | openssl s_client -engine pkcs11 -keyform engine -key "$KEY_URI" -cert "$T/dev.crt" \
        -CAfile "$CA_CRT" -verify_return_error -connect "127.0.0.1:$SERVER_PORT" >"$T/s_client.out" 2>&1
    local rc=$?
    cat "$T/s_client.out"
    [ $rc -eq 0 ] && grep -q 'Verify return code: 0 (ok)' "$T/s_client.out"
}
check "openssl s_client -engine pkcs11 -keyform engine -key $KEY_URI" s_client_mtls
expect_signs "one device signature for the s_client handshake" "$before" 1

# Several processes at once share the device; each handshake signs once.
parallel_handshakes() {
    local i pids=() rc=0
    for i in 1 2 3 4 5 6; do
        curl -sS --fail --key "$KEY_URI" --cert "$T/dev.crt" --cacert "$CA_CRT" \
            -o "$T/parallel.$i" "$SERVER_URL" &
        pids+=($!)
    done
    for i in "${pids[@]}"; do wait "$i" || rc=1; done
    for i in 1 2 3 4 5 6; do page_shows_client_cert "$T/parallel.$i" 'CN=device-01' || rc=1; done
    return $rc
}
if [ "$BACKEND" = softhsm ]; then
    skip "6 curl processes at once (SoftHSM's file store misses its token under concurrent loads)"
else
    before=$(device_signs)
    check "6 curl processes at once" parallel_handshakes
    expect_signs "one device signature per parallel handshake" "$before" 6
fi

# A device error during the handshake: the module answers CKR_DEVICE_ERROR, libp11
# signs again, and the second device signature completes the handshake.
if have_trace; then
    echo sign >"$ZKIOT_EMU_DIR/fail-next"
    before=$(device_signs)
    check "curl completes the handshake after one failed device signature" \
        curl -sS --fail --key "$KEY_URI" --cert "$T/dev.crt" --cacert "$CA_CRT" -o "$T/page-fault" "$SERVER_URL"
    expect_signs "two device signatures: the failed one and the retry" "$before" 2
fi

# A client without a certificate, or with one from another CA, is refused by the server
# itself (its TLS alert, not any failure of curl), so the checks above mean something.
refused_with() {
    local alert=$1 rc=0
    shift
    curl -sS --fail "$@" --cacert "$CA_CRT" -o /dev/null "$SERVER_URL" 2>"$T/refused.err" || rc=$?
    cat "$T/refused.err"
    [ "$rc" -ne 0 ] && grep -q "alert $alert" "$T/refused.err"
}
check "server refuses a client without a certificate (TLS 1.3: certificate required)" \
    refused_with 'certificate required' --tlsv1.3
check "server refuses a client without a certificate (TLS 1.2: handshake failure)" \
    refused_with 'handshake failure' --tls-max 1.2
mkdir -p "$T/other"
openssl ecparam -name prime256v1 -genkey -noout -out "$T/other/ca.key" 2>/dev/null
openssl req -x509 -new -key "$T/other/ca.key" -sha256 -days 2 -subj '/CN=another CA' \
    -addext 'basicConstraints=critical,CA:TRUE' -out "$T/other/ca.crt" 2>/dev/null
openssl ecparam -name prime256v1 -genkey -noout -out "$T/other/client.key" 2>/dev/null
openssl req -new -key "$T/other/client.key" -subj '/CN=device-01/O=zkiot e2e' 2>/dev/null |
    openssl x509 -req -CA "$T/other/ca.crt" -CAkey "$T/other/ca.key" -set_serial 1 -days 1 \
        -extfile "$CLIENT_EXT" -out "$T/other/client.crt" 2>/dev/null
for tls in --tlsv1.3 "--tls-max 1.2"; do
    # shellcheck disable=SC2086 # $tls is one or two words on purpose
    check "server refuses a client certificate from another CA ($tls: unknown ca)" \
        refused_with 'unknown ca' $tls --key "$T/other/client.key" --cert "$T/other/client.crt"
done

e2e_summary
