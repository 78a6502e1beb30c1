#!/usr/bin/env bash
# credentials.sh: on the device, temporary AWS credentials from the AWS IoT credentials provider,
# printed in the AWS CLI/SDK credential_process format.
#
# Usage: credentials.sh [--thing NAME] [--endpoint HOST] [--role-alias ALIAS] [--cert FILE]
#                       [--cacert FILE] [--key URI] [--module PATH] [--connect HOST:PORT]
#
#   --thing NAME       the device's Thing (default: $THING)
#   --endpoint HOST    the credentials endpoint, <prefix>.credentials.iot.<region>.amazonaws.com,
#                      as setup_role.sh printed it (default: $ENDPOINT)
#   --role-alias NAME  the role alias (default: $ROLE_ALIAS, else deviceRoleAlias)
#   --cert FILE        the device certificate (default: /opt/zymbit/device.crt)
#   --cacert FILE      the CA bundle the endpoint's certificate chains to, Amazon's root CAs
#                      (default: /opt/zymbit/root.ca.pem)
#   --key URI          the private key on the PKCS#11 token
#                      (default: $KEY_URI, else pkcs11:token=zymkey;object=slot0;type=private)
#   --module PATH      the PKCS#11 module the libp11 engine loads (default: $PKCS11_MODULE_PATH)
#   --connect HOST:PORT  connect there instead of to the endpoint's address, still naming the
#                      endpoint in SNI and Host (a local stand-in of the credentials provider)
#
# As an AWS profile:   credential_process = /opt/zymbit/credentials.sh --thing my-thing ...
# The TLS handshake signs with the module's key (curl through the libp11 "pkcs11" engine).
set -euo pipefail

usage() { sed -n '2,/^set -euo/s/^# \{0,1\}//p' "$0"; }
die() { printf 'credentials.sh: %s\n' "$*" >&2; exit 1; }

thing=${THING:-}
endpoint=${ENDPOINT:-}
role_alias=${ROLE_ALIAS:-deviceRoleAlias}
cert=/opt/zymbit/device.crt
cacert=/opt/zymbit/root.ca.pem
key_uri=${KEY_URI:-"pkcs11:token=zymkey;object=slot0;type=private"}
connect=()
while [ $# -gt 0 ]; do
    case $1 in
    --thing) thing=${2:?--thing needs a value}; shift 2 ;;
    --endpoint) endpoint=${2:?--endpoint needs a value}; shift 2 ;;
    --role-alias) role_alias=${2:?--role-alias needs a value}; shift 2 ;;
    --cert) cert=${2:?--cert needs a value}; shift 2 ;;
    --cacert) cacert=${2:?--cacert needs a value}; shift 2 ;;
    --key) key_uri=${2:?--key needs a value}; shift 2 ;;
    --module) export PKCS11_MODULE_PATH=${2:?--module needs a value}; shift 2 ;;
    --connect) connect=(--connect-to "::${2:?--connect needs HOST:PORT}"); shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
    esac
done
[ -n "$thing" ] || die "--thing is required"
[ -n "$endpoint" ] || die "--endpoint is required"

# The HTTP status goes on a last line of its own; the body (credentials) stays in memory.
response=$(curl --silent --show-error --tlsv1.2 --write-out '\n%{http_code}' \
    --engine pkcs11 --key-type ENG --key "$key_uri" --cert "$cert" --cacert "$cacert" \
    "${connect[@]}" -H "x-amzn-iot-thingname: $thing" \
    "https://$endpoint/role-aliases/$role_alias/credentials") ||
    die "no answer from https://$endpoint"
status=${response##*$'\n'}
response=${response%$'\n'*}
[ "$status" = 200 ] || die "the credentials provider refused ($status): $response"

# {"credentials":{"accessKeyId",…}} → {"Version":1,"AccessKeyId",…}
python3 -c '
import json, sys
c = json.load(sys.stdin)["credentials"]
json.dump({"Version": 1, "AccessKeyId": c["accessKeyId"], "SecretAccessKey": c["secretAccessKey"],
           "SessionToken": c["sessionToken"], "Expiration": c["expiration"]}, sys.stdout)
print()' <<<"$response"
