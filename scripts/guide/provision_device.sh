#!/usr/bin/env bash
# provision_device.sh: register a device certificate with AWS IoT and give it its Thing and policy.
#
# Usage: provision_device.sh --cert FILE [--thing NAME] [--policy-name NAME] [--dir DIR]
#                            [--endpoint-url URL] [--region REGION]
#
#   --cert FILE         the device certificate (from sign_csr.sh)
#   --thing NAME        the Thing (default: the certificate's CN)
#   --policy-name NAME  the IoT policy from setup_role.sh (default: credentialHelper)
#   --dir DIR           the CA made by mk_ca.sh and registered by register_ca.sh
#                       (default: $CA_DIR, else ./CA_files)
#   --endpoint-url URL  AWS API endpoint, e.g. a local moto (default: $AWS_ENDPOINT_URL)
#   --region REGION     AWS region (default: the aws CLI's configuration)
#
# register-certificate (ACTIVE, with its CA) → create-thing → attach-thing-principal →
# attach-policy. Prints the certificate's ARN.
set -euo pipefail

usage() { sed -n '2,/^set -euo/s/^# \{0,1\}//p' "$0"; }
die() { printf 'provision_device.sh: %s\n' "$*" >&2; exit 1; }

cert=""
thing=""
policy_name=credentialHelper
dir=${CA_DIR:-CA_files}
endpoint=${AWS_ENDPOINT_URL:-}
region=""
while [ $# -gt 0 ]; do
    case $1 in
    --cert) cert=${2:?--cert needs a value}; shift 2 ;;
    --thing) thing=${2:?--thing needs a value}; shift 2 ;;
    --policy-name) policy_name=${2:?--policy-name needs a value}; shift 2 ;;
    --dir) dir=${2:?--dir needs a value}; shift 2 ;;
    --endpoint-url) endpoint=${2:?--endpoint-url needs a value}; shift 2 ;;
    --region) region=${2:?--region needs a value}; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
    esac
done
aws_args=()
[ -n "$endpoint" ] && aws_args+=(--endpoint-url "$endpoint")
[ -n "$region" ] && aws_args+=(--region "$region")
[ -n "$cert" ] || die "--cert is required"
if [ -z "$thing" ]; then
    thing=$(openssl x509 -in "$cert" -noout -subject -nameopt RFC2253 | sed -n 's/^subject=.*CN=\([^,]*\).*/\1/p')
    [ -n "$thing" ] || die "$cert has no CN; pass --thing"
fi
# Stop before anything is created in AWS if the certificate is not the CA's.
openssl verify -CAfile "$dir/zk_ca.crt" "$cert" >/dev/null || die "$cert is not signed by $dir/zk_ca.crt"

cert_arn=$(aws "${aws_args[@]}" iot register-certificate \
    --certificate-pem "file://$cert" --ca-certificate-pem "file://$dir/zk_ca.crt" \
    --set-as-active --query certificateArn --output text)
aws "${aws_args[@]}" iot create-thing --thing-name "$thing" >/dev/null
aws "${aws_args[@]}" iot attach-thing-principal --thing-name "$thing" --principal "$cert_arn"
aws "${aws_args[@]}" iot attach-policy --policy-name "$policy_name" --target "$cert_arn"
echo "$thing: $cert_arn"
