#!/usr/bin/env bash
# The optional user PIN (`pin` in the module configuration): private keys appear only
# after login; the PIN reaches the token from the URI (pin-value), curl --pass and
# pkcs11-tool --pin; a wrong or missing PIN fails cleanly.
# shellcheck source=tests/e2e/lib.sh
source "$(dirname "$0")/lib.sh"
e2e_init
if [ "$BACKEND" != zkiot ]; then
    skip "configured PIN (only with the zkiot backend)"
    e2e_summary
    exit
fi
new_token
make_pki
user_pin=4931
echo "pin = \"$user_pin\"" >>"$ZKIOT_CONF"
key_uri="pkcs11:token=$TOKEN_LABEL;object=slot0;type=private"

check "token info says login required" \
    bash -c "pkcs11-tool --module '$MODULE' -L | grep -q 'token flags *: login required'"
check "no private key visible without login" \
    output_lacks '^Private Key Object' pkcs11-tool --module "$MODULE" -O
check "private key visible after login with the PIN" \
    bash -c "pkcs11-tool --module '$MODULE' --login --pin $user_pin -O | grep -q '^Private Key Object'"
check "a wrong PIN is refused (CKR_PIN_INCORRECT)" \
    bash -c "! pkcs11-tool --module '$MODULE' --login --pin 0000 -O 2>&1 | grep -q '^Private Key Object' &&
             pkcs11-tool --module '$MODULE' --login --pin 0000 -O 2>&1 | grep -q CKR_PIN_INCORRECT"

check "openssl req with pin-value in the URI" \
    token_csr "$T/dev.csr" '/CN=device-pin/O=zkiot e2e' "$key_uri;pin-value=$user_pin"
check_csr "the CSR verifies" "$T/dev.csr"
check "openssl req without a PIN (no terminal) fails cleanly, no crash" \
    bash -c "openssl req -new -engine pkcs11 -keyform engine -key '$key_uri' -subj /CN=x -out '$T/none.csr' </dev/null
             rc=\$?; echo rc=\$rc; [ \$rc -ne 0 ] && [ \$rc -lt 128 ]"

check "test CA issues the client certificate" issue_cert "$T/dev.csr" "$T/dev.crt"
start_s_server
check "curl --key $key_uri --pass PIN" \
    curl -sS --fail --key "$key_uri" --pass "$user_pin" --cert "$T/dev.crt" --cacert "$CA_CRT" \
    -o "$T/page" "$SERVER_URL"
check "server page shows the client certificate" page_shows_client_cert "$T/page" 'CN=device-pin'
check "curl with a wrong PIN fails with exit 58" \
    bash -c "curl -sS --key '$key_uri' --pass 0000 --cert '$T/dev.crt' --cacert '$CA_CRT' -o /dev/null '$SERVER_URL' </dev/null; [ \$? = 58 ]"

e2e_summary
