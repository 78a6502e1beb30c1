#!/usr/bin/env bash
# The device certificate stored on the token as a certificate object (written
# with pkcs11-tool and read back), then used by curl straight from the token:
# --cert 'pkcs11:…;type=cert'.
# shellcheck source=tests/e2e/lib.sh
source "$(dirname "$0")/lib.sh"
e2e_init
new_token
make_pki

check "CSR from the token" token_csr "$T/dev.csr" '/CN=device-01/O=zkiot e2e'
check "test CA issues the client certificate" issue_cert "$T/dev.csr" "$T/dev.crt"
start_s_server

check "curl --cert $CERT_URI fails before the certificate is on the token (not found)" \
    fails_saying 'cannot load client cert.*not found' \
    curl -sS --fail --cert "$CERT_URI" --key "$KEY_URI" --cacert "$CA_CRT" -o /dev/null "$SERVER_URL"

check "pkcs11-tool --write-object dev.crt --type cert --id 0000 --label slot0" \
    pkcs11-tool --module "$MODULE" "${P11TOOL_LOGIN[@]}" --write-object "$T/dev.crt" \
    --type cert --id 0000 --label slot0
check "pkcs11-tool lists the certificate object" \
    bash -c "pkcs11-tool --module '$MODULE' ${P11TOOL_LOGIN[*]} -O --type cert | grep -q 'label: *slot0'"

openssl x509 -in "$T/dev.crt" -outform DER -out "$T/dev.der"
check "pkcs11-tool --read-object --type cert returns the same DER" \
    bash -c "pkcs11-tool --module '$MODULE' ${P11TOOL_LOGIN[*]} --read-object --type cert --id 0000 -o '$T/read.der' && cmp '$T/dev.der' '$T/read.der'"

before=$(device_signs)
check "curl --cert $CERT_URI --key $KEY_URI" \
    curl -sS --fail --cert "$CERT_URI" --key "$KEY_URI" --cacert "$CA_CRT" -o "$T/page" "$SERVER_URL"
expect_signs "one device signature for the handshake" "$before" 1
check "server page shows the client certificate" page_shows_client_cert "$T/page" 'CN=device-01'

check "curl --cert $CERT_URI alone (the key found from the same URI)" \
    curl -sS --fail --cert "$CERT_URI" --cacert "$CA_CRT" -o "$T/page2" "$SERVER_URL"

# The certificate is durable: a new process (new module load) still finds it.
check "a second process still sees the certificate" \
    bash -c "pkcs11-tool --module '$MODULE' ${P11TOOL_LOGIN[*]} --read-object --type cert --label slot0 -o '$T/read2.der' && cmp '$T/dev.der' '$T/read2.der'"

e2e_summary
