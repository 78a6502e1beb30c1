#!/usr/bin/env bash
# Checks, on your own AWS account, what `zkiot aws silence` infers: that a Deny in the devices'
# role keyed by the condition key credentials-iot:AwsCertificateId refuses credentials the
# credentials provider already issued to that certificate. AWS documents the key as a policy
# variable only; no AWS document or example uses it as a condition key.
#
# Usage: scripts/check-deny.sh --role ROLE --thing THING --cert DEVICE.crt --credentials CREDS.json
#                              [--wait SECONDS]
#
#   --role         the devices' IAM role (zkiot aws setup's --role-name; default zkiot-device)
#   --thing        a spare device's Thing (its credentials are refused for a while)
#   --cert         that device's certificate (its id, SHA-256 of the DER, is the value denied)
#   --credentials  credentials that device just got: `zkiot device credentials --format json`
#                  on the device (or `--format json --no-cache`), copied here
#   --wait         how long to wait for IAM to apply each change (default 600)
#
# It puts a temporary inline policy, zkiot-deny-check, on the role: first an Allow of
# iot:DescribeThing on the Thing, until the device's credentials can call it; then, beside it,
# a Deny of the same call with Condition StringEquals credentials-iot:AwsCertificateId = the
# certificate's id, until the same credentials are refused with an explicit deny. It prints how
# long IAM took for each (a measure of IAM's propagation on your account), and removes the
# policy at the end, whatever happens. Run it with the operator's AWS credentials (iam:PutRolePolicy,
# iam:DeleteRolePolicy on the role) and the aws CLI.
set -euo pipefail

role=zkiot-device thing="" cert="" creds="" wait=600
while [ $# -gt 0 ]; do
    case $1 in
    --role) role=${2:?}; shift 2 ;;
    --thing) thing=${2:?}; shift 2 ;;
    --cert) cert=${2:?}; shift 2 ;;
    --credentials) creds=${2:?}; shift 2 ;;
    --wait) wait=${2:?}; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) echo "check-deny: unknown option $1" >&2; exit 2 ;;
    esac
done
[ -n "$thing" ] && [ -r "$cert" ] && [ -r "$creds" ] || {
    echo "check-deny: --thing, --cert and --credentials are needed (see --help)" >&2
    exit 2
}
cert_id=$(openssl x509 -in "$cert" -outform der | sha256sum | cut -d' ' -f1)
field() { python3 -c 'import json, sys; c = json.load(open(sys.argv[1])); print(c.get(sys.argv[2]) or c.get(sys.argv[3]))' "$creds" "$1" "$2"; }

# The device's call, with its credentials only (never printed).
as_device() {
    env -u AWS_PROFILE AWS_ACCESS_KEY_ID="$(field AccessKeyId accessKeyId)" \
        AWS_SECRET_ACCESS_KEY="$(field SecretAccessKey secretAccessKey)" \
        AWS_SESSION_TOKEN="$(field SessionToken sessionToken)" \
        aws iot describe-thing --thing-name "$thing" --output text --query thingName 2>&1
}

policy() {
    local deny=$1
    printf '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:DescribeThing","Resource":"arn:aws:iot:*:*:thing/%s"}' "$thing"
    if [ "$deny" = 1 ]; then
        printf ',{"Effect":"Deny","Action":"iot:DescribeThing","Resource":"*","Condition":{"StringEquals":{"credentials-iot:AwsCertificateId":"%s"}}}' "$cert_id"
    fi
    printf ']}'
}
cleanup() { aws iam delete-role-policy --role-name "$role" --policy-name zkiot-deny-check 2>/dev/null || true; }
trap cleanup EXIT

# wait_for PATTERN: polls the device's call until its answer matches; prints the seconds taken.
wait_for() {
    local started answer
    started=$(date +%s)
    while :; do
        answer=$(as_device || true)
        if grep -Eq "$1" <<<"$answer"; then
            echo $(($(date +%s) - started))
            return 0
        fi
        if [ $(($(date +%s) - started)) -ge "$wait" ]; then
            echo "check-deny: after $wait s the device's call still answers: $answer" >&2
            return 1
        fi
        sleep 5
    done
}

echo "certificate $cert_id, Thing $thing, role $role"
aws iam put-role-policy --role-name "$role" --policy-name zkiot-deny-check --policy-document "$(policy 0)"
if ! allowed=$(wait_for "^$thing\$"); then
    echo "check-deny: the Allow never took effect; are these credentials from role $role?" >&2
    exit 1
fi
echo "allow: the device's credentials call iot:DescribeThing ($allowed s after the Allow)"
aws iam put-role-policy --role-name "$role" --policy-name zkiot-deny-check --policy-document "$(policy 1)"
if denied=$(wait_for "explicit deny"); then
    echo "deny: WORKS on this account: the same credentials are refused with an explicit deny $denied s after the Deny keyed by credentials-iot:AwsCertificateId"
else
    echo "deny: DOES NOT WORK here: a silenced device's credentials already issued stay valid until they expire (the role alias's duration)"
    exit 1
fi
