#!/usr/bin/env bash
# The guide's shell scripts (scripts/guide/) end to end, as a user without zkiot runs them:
# openssl with the libp11 engine on the token, the aws CLI against a moto server, and curl
# against the local credentials provider (tests/credprov/server.py). The credentials the
# provider returns must work against moto. sign_csr.sh and device_csr.sh refuse a CSR with
# a flipped signature bit ("bad CSR signature"); provision_device.sh refuses a certificate
# of another CA before it creates anything.
# shellcheck source=tests/e2e/lib.sh
source "$(dirname "$0")/lib.sh"
e2e_init
new_token ZYMKEY4i

GUIDE=$REPO/scripts/guide
PYTHON=$VENV/bin/python
require_file "$PYTHON" "venv (run scripts/install-deps.sh)"
if ! "$PYTHON" -c 'import moto, boto3, awscli' 2>/dev/null; then
    fail "the venv $VENV lacks moto, boto3 or awscli (run scripts/install-deps.sh)"
    exit 1
fi
export PATH=$VENV/bin:$PATH # the aws CLI

# refuses MESSAGE COMMAND...: the command fails, says MESSAGE on stderr and writes nothing
# on stdout (a failure for another reason, such as a later step refusing, proves nothing).
refuses() {
    local message=$1 rc=0
    shift
    "$@" >"$T/refuses.out" 2>"$T/refuses.err" || rc=$?
    cat "$T/refuses.out" "$T/refuses.err"
    if [ "$rc" -eq 0 ]; then
        echo "exited 0"
        return 1
    fi
    [ ! -s "$T/refuses.out" ] && grep -q "$message" "$T/refuses.err"
}

# ---------------------------------------------------------------- moto

# moto with AWS-correct certificate ids (SHA-256 of DER), bound before it reports its port.
"$PYTHON" -c "import os, sys
from moto.core.config import default_user_config as c
c['iot']['use_valid_cert'] = True
from werkzeug.serving import make_server
from moto.server import DomainDispatcherApplication, create_backend_app
server = make_server('127.0.0.1', 0, DomainDispatcherApplication(create_backend_app), threaded=True)
open(sys.argv[1] + '.tmp', 'w').write(str(server.server_port))
os.replace(sys.argv[1] + '.tmp', sys.argv[1])
server.serve_forever()" "$T/moto.port" >"$T/moto.log" 2>&1 </dev/null &
E2E_PIDS+=($!)
moto_up() {
    [ -s "$T/moto.port" ] && curl -sf -o /dev/null "http://127.0.0.1:$(cat "$T/moto.port")/moto-api/"
}
for _ in $(seq 1 300); do moto_up && break; sleep 0.1; done
if ! moto_up; then
    fail "moto did not start"
    sed -e 's/^/      | /' "$T/moto.log" | tail -n 20
    exit 1
fi
MOTO_URL=http://127.0.0.1:$(cat "$T/moto.port")

# The operator's AWS environment: moto, any credentials, no user configuration.
export AWS_ENDPOINT_URL=$MOTO_URL AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
export AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1
export AWS_CONFIG_FILE=$T/aws-config AWS_SHARED_CREDENTIALS_FILE=$T/aws-config
: >"$AWS_CONFIG_FILE"
unset AWS_PROFILE AWS_SESSION_TOKEN

# ---------------------------------------------------------------- operator: CA, role

OPERATOR=$T/operator
DEVICE=$T/device
mkdir -p "$OPERATOR" "$DEVICE"
cd "$OPERATOR" || exit 1

check "mk_ca.sh" "$GUIDE/mk_ca.sh"
expect_eq "CA key is mode 0600" 600 "$(stat -c %a CA_files/zk_ca.key 2>/dev/null)"
check "CA certificate is a CA (basicConstraints CA:TRUE)" \
    sh -c 'openssl x509 -in CA_files/zk_ca.crt -noout -ext basicConstraints | grep -q "CA:TRUE"'
check "mk_ca.sh refuses to replace the CA key" refuses 'zk_ca.key exists' "$GUIDE/mk_ca.sh"

check "register_ca.sh" sh -c "'$GUIDE/register_ca.sh' >'$T/register_ca.out'"
ca_id=$(cat CA_files/ca-certificate-id 2>/dev/null)
expect_eq "CA registered ACTIVE" ACTIVE \
    "$(aws iot describe-ca-certificate --certificate-id "$ca_id" --query certificateDescription.status --output text 2>&1)"
# (moto keeps no auto-registration status, so --allow-auto-registration cannot be checked here.)
expect_eq "CA id is the SHA-256 of its DER" \
    "$(openssl x509 -in CA_files/zk_ca.crt -outform DER | sha256sum | cut -d' ' -f1)" "$ca_id"
check "verification certificate is signed by the CA" \
    openssl verify -partial_chain -CAfile CA_files/zk_ca.crt CA_files/verification.crt
# moto ignores the verification certificate, so check the one that was sent: CN = the code.
registration_code=$(sed -n 's/^registration code: //p' "$T/register_ca.out")
check "register_ca.sh printed the registration code" test -n "$registration_code"
expect_eq "verification certificate's CN is the registration code" "$registration_code" \
    "$(openssl x509 -in CA_files/verification.crt -noout -subject -nameopt multiline 2>&1 | sed -n 's/^ *commonName *= *//p')"

check "setup_role.sh" sh -c "'$GUIDE/setup_role.sh' >'$T/setup.env'"
ENDPOINT=$(sed -n 's/^ENDPOINT=//p' "$T/setup.env")
ROLE_ALIAS=$(sed -n 's/^ROLE_ALIAS=//p' "$T/setup.env")
POLICY=$(sed -n 's/^POLICY=//p' "$T/setup.env")
check "credentials endpoint printed ($ENDPOINT)" \
    sh -c "printf '%s' '$ENDPOINT' | grep -Eq '^[a-z0-9]+\.credentials\.iot\.us-east-1\.amazonaws\.com$'"
check "role trusts credentials.iot.amazonaws.com" sh -c \
    "aws iam get-role --role-name credential_helper --output json | grep -q credentials.iot.amazonaws.com"
expect_eq "role alias points at the role" "arn:aws:iam::123456789012:role/credential_helper" \
    "$(aws iot describe-role-alias --role-alias "$ROLE_ALIAS" --query roleAliasDescription.roleArn --output text 2>&1)"
check "IoT policy allows iot:AssumeRoleWithCertificate on the alias" sh -c \
    "aws iot get-policy --policy-name '$POLICY' --query policyDocument --output text |
     grep -q 'arn:aws:iot:us-east-1:123456789012:rolealias/$ROLE_ALIAS'"

# ---------------------------------------------------------------- credentials provider

# Its TLS certificate comes from a test root standing in for Amazon's root CA.
E=$T/endpoint
mkdir -p "$E"
openssl ecparam -name prime256v1 -genkey -noout -out "$E/root.key"
openssl req -x509 -new -key "$E/root.key" -sha256 -days 2 -subj '/CN=Local stand-in for Amazon Root CA' \
    -addext 'basicConstraints=critical,CA:TRUE' -addext 'keyUsage=critical,keyCertSign' -out "$E/root.pem"
openssl ecparam -name prime256v1 -genkey -noout -out "$E/server.key"
openssl req -new -key "$E/server.key" -subj "/CN=$ENDPOINT" -out "$E/server.csr"
printf 'subjectAltName=DNS:%s\nextendedKeyUsage=serverAuth\n' "$ENDPOINT" >"$E/server.ext"
openssl x509 -req -in "$E/server.csr" -CA "$E/root.pem" -CAkey "$E/root.key" -CAcreateserial \
    -days 2 -sha256 -extfile "$E/server.ext" -out "$E/server.crt" 2>/dev/null
"$PYTHON" "$REPO/tests/credprov/server.py" --moto-url "$MOTO_URL" --host "$ENDPOINT" \
    --port 0 --port-file "$E/port" --cert "$E/server.crt" --key "$E/server.key" \
    --region us-east-1 --log-file "$T/credprov.log" >/dev/null 2>"$T/credprov.stderr" </dev/null &
E2E_PIDS+=($!)
for _ in $(seq 1 300); do [ -s "$E/port" ] && break; sleep 0.1; done
if [ ! -s "$E/port" ]; then
    fail "the credentials provider did not start"
    sed -e 's/^/      | /' "$T/credprov.stderr" | tail -n 20
    exit 1
fi
PROVIDER=127.0.0.1:$(cat "$E/port")

# ---------------------------------------------------------------- device CSR, operator signs

THING=guide-device-01
before=$(device_signs)
check "device_csr.sh (key on the token)" \
    env -u AWS_ENDPOINT_URL "$GUIDE/device_csr.sh" --thing "$THING" --key "$KEY_URI" --out "$DEVICE/device.csr"
expect_signs "one device signature for the CSR" "$before" 1
check "pkcs11-tool reads the token's public key" token_pubkey "$T/pub.pem"
expect_same "token's public key is in the CSR" \
    "$(cat "$T/pub.pem" 2>/dev/null)" "$(openssl req -in "$DEVICE/device.csr" -noout -pubkey 2>/dev/null)"

check "sign_csr.sh" "$GUIDE/sign_csr.sh" --csr "$DEVICE/device.csr" --out "$OPERATOR/device.crt"
check "device certificate chains to the CA for TLS clients" \
    openssl verify -purpose sslclient -CAfile CA_files/zk_ca.crt device.crt
check "a copy of the device's CSR with one signature bit flipped" \
    tamper_csr "$DEVICE/device.csr" "$T/bad.csr"
check "sign_csr.sh refuses it with 'bad CSR signature'" \
    refuses 'bad CSR signature' "$GUIDE/sign_csr.sh" --csr "$T/bad.csr" --out "$T/bad.crt"
check "sign_csr.sh wrote no certificate for it" test ! -e "$T/bad.crt"

# device_csr.sh checks the CSR the token signed. A token signing with another key than the
# public key it shows makes a CSR that does not verify; here an openssl in front of the
# real one flips a bit of the signature in the CSR that "openssl req -new" writes.
mkdir -p "$T/tampering"
cat >"$T/tampering/openssl" <<SHIM
#!/usr/bin/env bash
# openssl, except that the CSR "openssl req -new ... -out FILE" writes gets a signature bit flipped.
export PATH='$PATH'
'$(command -v openssl)' "\$@" || exit
[ "\$1" = req ] && [[ " \$* " == *" -new "* ]] || exit 0
out="" prev=""
for arg in "\$@"; do [ "\$prev" = -out ] && out=\$arg; prev=\$arg; done
T='$T'
source '$E2E_DIR/lib.sh'
tamper_csr "\$out" "\$out.tampered" && mv "\$out.tampered" "\$out"
SHIM
chmod +x "$T/tampering/openssl"
check "device_csr.sh refuses a CSR whose signature bit was flipped, with 'bad CSR signature'" \
    refuses 'bad CSR signature' env -u AWS_ENDPOINT_URL PATH="$T/tampering:$PATH" \
    "$GUIDE/device_csr.sh" --thing "$THING" --key "$KEY_URI" --out "$T/tampered.csr"
tampered_csr_written() { [ -s "$T/tampered.csr" ] && ! csr_verifies "$T/tampered.csr"; }
check "(the token signed that CSR, and its signature does not verify)" tampered_csr_written

# ---------------------------------------------------------------- operator registers the device

check "provision_device.sh" "$GUIDE/provision_device.sh" --cert device.crt --policy-name "$POLICY"
cert_id=$(openssl x509 -in device.crt -outform DER | sha256sum | cut -d' ' -f1)
expect_eq "device certificate registered ACTIVE" ACTIVE \
    "$(aws iot describe-certificate --certificate-id "$cert_id" --query certificateDescription.status --output text 2>&1)"
expect_eq "device certificate registered under the CA" "$cert_id" \
    "$(aws iot list-certificates-by-ca --ca-certificate-id "$ca_id" --query 'certificates[0].certificateId' --output text 2>&1)"
cert_arn="arn:aws:iot:us-east-1:123456789012:cert/$cert_id"
expect_eq "Thing attached to the certificate" "$THING" \
    "$(aws iot list-principal-things --principal "$cert_arn" --query 'things[0]' --output text 2>&1)"
expect_eq "policy attached to the certificate" "$POLICY" \
    "$(aws iot list-attached-policies --target "$cert_arn" --query 'policies[0].policyName' --output text 2>&1)"
check "provision_device.sh refuses a certificate of another CA" \
    refuses 'is not signed by' "$GUIDE/provision_device.sh" --cert "$E/server.crt" --thing stranger --policy-name "$POLICY"
check "(before creating anything in AWS: no Thing stranger)" \
    refuses 'ResourceNotFoundException' aws iot describe-thing --thing-name stranger

# ---------------------------------------------------------------- device: credentials

cp device.crt "$DEVICE/device.crt"
cp "$E/root.pem" "$DEVICE/root.ca.pem"
device_credentials() {
    env -u AWS_ENDPOINT_URL -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY \
        "$GUIDE/credentials.sh" --endpoint "$ENDPOINT" --role-alias "$ROLE_ALIAS" --key "$KEY_URI" \
        --cert "$DEVICE/device.crt" --cacert "$DEVICE/root.ca.pem" --connect "$PROVIDER" "$@"
}
device_credentials_to() {
    local out=$1
    shift
    device_credentials "$@" >"$out"
}
before=$(device_signs)
check "credentials.sh (mutual TLS with the token's key)" \
    device_credentials_to "$DEVICE/credentials.json" --thing "$THING"
expect_signs "one device signature for the handshake" "$before" 1
chmod 600 "$DEVICE/credentials.json"
credential() { "$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$@"; }
check "credential_process format (Version 1, all four fields)" "$PYTHON" -c '
import json, sys
c = json.load(open(sys.argv[1]))
assert c["Version"] == 1, c["Version"]
assert all(c[k] for k in ("AccessKeyId", "SecretAccessKey", "SessionToken", "Expiration"))' "$DEVICE/credentials.json"

# The credentials work against moto: STS names the role's session.
caller_arn() {
    AWS_ACCESS_KEY_ID=$(credential "$1" AccessKeyId) AWS_SECRET_ACCESS_KEY=$(credential "$1" SecretAccessKey) \
        AWS_SESSION_TOKEN=$(credential "$1" SessionToken) \
        aws sts get-caller-identity --query Arn --output text 2>&1
}
arn=$(caller_arn "$DEVICE/credentials.json")
check "aws sts get-caller-identity with the credentials: $arn" \
    grep -q '^arn:aws:sts::123456789012:assumed-role/credential_helper/' <<<"$arn"

# The same script as an AWS CLI profile's credential_process.
cat >"$DEVICE/aws-config" <<CONF
[profile device]
region = us-east-1
credential_process = $GUIDE/credentials.sh --thing $THING --endpoint $ENDPOINT --role-alias $ROLE_ALIAS --cert $DEVICE/device.crt --cacert $DEVICE/root.ca.pem --connect $PROVIDER --key '$KEY_URI'
CONF
arn=$(env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY AWS_CONFIG_FILE="$DEVICE/aws-config" \
    AWS_SHARED_CREDENTIALS_FILE="$DEVICE/aws-config" aws sts get-caller-identity --profile device \
    --query Arn --output text 2>&1)
check "aws --profile device (credential_process = credentials.sh): $arn" \
    grep -q '^arn:aws:sts::123456789012:assumed-role/credential_helper/' <<<"$arn"

# Refusals reach the user with the provider's message.
refused() {
    local expected=$1
    shift
    if device_credentials "$@" >"$T/refused.out" 2>"$T/refused.err"; then
        echo "credentials.sh succeeded"
        return 1
    fi
    cat "$T/refused.err"
    [ ! -s "$T/refused.out" ] && grep -q "$expected" "$T/refused.err"
}
check "credentials.sh for a Thing not attached: 'Invalid thing name passed'" \
    refused 'Invalid thing name passed' --thing other-thing
check "operator silences the certificate (INACTIVE)" \
    aws iot update-certificate --certificate-id "$cert_id" --new-status INACTIVE
check "credentials.sh for an INACTIVE certificate: 'Access Denied'" \
    refused 'Access Denied' --thing "$THING"

e2e_summary
