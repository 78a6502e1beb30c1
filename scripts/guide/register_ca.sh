#!/usr/bin/env bash
# register_ca.sh: register the CA with AWS IoT, active and with auto-registration on.
#
# Usage: register_ca.sh [--dir DIR] [--endpoint-url URL] [--region REGION]
#
#   --dir DIR           the CA made by mk_ca.sh (default: $CA_DIR, else ./CA_files)
#   --endpoint-url URL  AWS API endpoint, e.g. a local moto (default: $AWS_ENDPOINT_URL, else AWS)
#   --region REGION     AWS region (default: the aws CLI's configuration)
#
# AWS asks for proof that whoever registers the CA holds its key: a verification certificate
# whose CN is a registration code AWS hands out, signed by the CA. Writes DIR/verification.crt
# and DIR/ca-certificate-id (the CA's id in AWS IoT) and prints the id.
set -euo pipefail

usage() { sed -n '2,/^set -euo/s/^# \{0,1\}//p' "$0"; }
die() { printf 'register_ca.sh: %s\n' "$*" >&2; exit 1; }

dir=${CA_DIR:-CA_files}
endpoint=${AWS_ENDPOINT_URL:-}
region=""
while [ $# -gt 0 ]; do
    case $1 in
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

ca_key=$dir/zk_ca.key
ca_cert=$dir/zk_ca.crt
if [ ! -f "$ca_key" ] || [ ! -f "$ca_cert" ]; then die "no CA in $dir: run mk_ca.sh first"; fi

code=$(aws "${aws_args[@]}" iot get-registration-code --query registrationCode --output text)
echo "registration code: $code"

# A throwaway key for the verification certificate; only the CA's signature on it matters.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(umask 077 && openssl ecparam -name prime256v1 -genkey -noout -out "$work/verification.key")
openssl req -new -key "$work/verification.key" -subj "/CN=$code" -out "$work/verification.csr"
openssl x509 -req -sha256 -days 30 -in "$work/verification.csr" \
    -CA "$ca_cert" -CAkey "$ca_key" -set_serial "0x$(openssl rand -hex 16)" \
    -out "$dir/verification.crt" 2>/dev/null

ca_id=$(aws "${aws_args[@]}" iot register-ca-certificate \
    --ca-certificate "file://$ca_cert" \
    --verification-certificate "file://$dir/verification.crt" \
    --set-as-active --allow-auto-registration \
    --query certificateId --output text)
echo "$ca_id" >"$dir/ca-certificate-id"
echo "CA registered, ACTIVE, auto-registration on: $ca_id"
