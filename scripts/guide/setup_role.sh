#!/usr/bin/env bash
# setup_role.sh: what the AWS IoT credentials provider needs, created once per fleet.
#
# Usage: setup_role.sh [--role-name NAME] [--role-alias ALIAS] [--policy-name NAME]
#                      [--duration SECONDS] [--permissions-policy FILE]
#                      [--endpoint-url URL] [--region REGION]
#
#   --role-name NAME           IAM role the devices' credentials act as (default: credential_helper)
#   --role-alias ALIAS         role alias the devices name (default: deviceRoleAlias)
#   --policy-name NAME         IoT policy for the device certificates (default: credentialHelper)
#   --duration SECONDS         lifetime of the credentials, 900-43200 (default: 900, as zkiot aws setup)
#   --permissions-policy FILE  IAM policy (JSON) granting the role what devices may do; without
#                              it the credentials only prove identity (sts:GetCallerIdentity)
#   --endpoint-url URL         AWS API endpoint, e.g. a local moto (default: $AWS_ENDPOINT_URL)
#   --region REGION            AWS region (default: the aws CLI's configuration)
#
# Creates: the IAM role, trusting credentials.iot.amazonaws.com (policies/role-trust-policy.json);
# the role alias; the IoT policy allowing iot:AssumeRoleWithCertificate on the alias
# (policies/iot-role-policy.json). The identity running this needs iam:GetRole and iam:PassRole
# on the role (policies/user-pass-permissions.json). Prints, as NAME=value lines, what the
# devices need: the credentials endpoint, the role alias and the policy name.
set -euo pipefail

usage() { sed -n '2,/^set -euo/s/^# \{0,1\}//p' "$0"; }
die() { printf 'setup_role.sh: %s\n' "$*" >&2; exit 1; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
role_name=credential_helper
role_alias=deviceRoleAlias
policy_name=credentialHelper
duration=900
permissions_policy=""
endpoint=${AWS_ENDPOINT_URL:-}
region=""
while [ $# -gt 0 ]; do
    case $1 in
    --role-name) role_name=${2:?--role-name needs a value}; shift 2 ;;
    --role-alias) role_alias=${2:?--role-alias needs a value}; shift 2 ;;
    --policy-name) policy_name=${2:?--policy-name needs a value}; shift 2 ;;
    --duration) duration=${2:?--duration needs a value}; shift 2 ;;
    --permissions-policy) permissions_policy=${2:?--permissions-policy needs a value}; shift 2 ;;
    --endpoint-url) endpoint=${2:?--endpoint-url needs a value}; shift 2 ;;
    --region) region=${2:?--region needs a value}; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
    esac
done
aws_args=()
[ -n "$endpoint" ] && aws_args+=(--endpoint-url "$endpoint")
[ -n "$region" ] && aws_args+=(--region "$region")

if ! [[ $duration =~ ^[0-9]+$ ]] || [ "$duration" -lt 900 ] || [ "$duration" -gt 43200 ]; then
    die "--duration must be 900-43200 seconds"
fi

role_arn=$(aws "${aws_args[@]}" iam create-role --role-name "$role_name" \
    --assume-role-policy-document "file://$here/policies/role-trust-policy.json" \
    --query Role.Arn --output text)
echo "role: $role_arn" >&2
if [ -n "$permissions_policy" ]; then
    aws "${aws_args[@]}" iam put-role-policy --role-name "$role_name" \
        --policy-name "$role_name-permissions" --policy-document "file://$permissions_policy"
    echo "role permissions: $permissions_policy" >&2
fi

alias_arn=$(aws "${aws_args[@]}" iot create-role-alias --role-alias "$role_alias" \
    --role-arn "$role_arn" --credential-duration-seconds "$duration" \
    --query roleAliasArn --output text)
echo "role alias: $alias_arn" >&2

policy=$(mktemp)
trap 'rm -f "$policy"' EXIT
sed "s|ROLE_ALIAS_ARN|$alias_arn|" "$here/policies/iot-role-policy.json" >"$policy"
aws "${aws_args[@]}" iot create-policy --policy-name "$policy_name" \
    --policy-document "file://$policy" >/dev/null
echo "IoT policy: $policy_name" >&2

credentials_endpoint=$(aws "${aws_args[@]}" iot describe-endpoint \
    --endpoint-type iot:CredentialProvider --query endpointAddress --output text)

echo "ENDPOINT=$credentials_endpoint"
echo "ROLE_ALIAS=$role_alias"
echo "POLICY=$policy_name"
