#!/usr/bin/env bash
# The whole guide, end to end, on this machine: the operator's steps against a local AWS
# stand-in (moto), the device's steps on an emulated Zymkey through the PKCS#11 module, and
# temporary AWS credentials from a local credentials provider that checks what AWS checks.
#
#   operator: zkiot ca init → aws register-ca → aws setup
#   device:   zkiot device csr (signed inside the Zymkey)
#   operator: zkiot ca sign → aws register-device
#   device:   zkiot device install-cert → device credentials
#   then:     aws sts get-caller-identity with those credentials, and through an AWS CLI
#             profile whose credential_process is `zkiot device credentials`
#   finally: aws silence (certificate, MQTT connection, credentials already issued) → aws unsilence
#   tamper:  the device agent reports a breach of the Zymkey's perimeter on its Thing →
#            aws status shows it → aws sweep silences the device
#
# moto, the credentials provider and the AWS IoT broker stand-in (tests/iotcore/) run on free
# loopback ports and are stopped at the end.
# Everything the run writes goes to $ZKIOT_FLOW_DIR (default ./flow), recreated each time.
# Needs the test venv (scripts/install-deps.sh; $ZKIOT_VENV overrides ./.venv).
# Uses CARGO_TARGET_DIR when set, else ./target.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
VENV=${ZKIOT_VENV:-$REPO/.venv}
WORK=${ZKIOT_FLOW_DIR:-$REPO/flow}
REGION=us-east-1

bold="" normal=""
if [ -t 1 ]; then
    bold=$(tput bold 2>/dev/null || true)
    normal=$(tput sgr0 2>/dev/null || true)
fi
step_no=0
step() { step_no=$((step_no + 1)); printf '\n%s%d. %s%s\n' "$bold" "$step_no" "$*" "$normal"; }
indent() { sed 's/^/     /'; }
quote() {
    if [[ $1 =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then printf '%s' "$1"; else printf "'%s'" "${1//\'/\'\\\'\'}"; fi
}
# show COMMAND...: prints the command as a user would type it, runs it with its output
# indented; the flow stops if it fails. `show device …` runs it in the device's environment.
show() {
    local arg line="   \$" shown=("$@")
    if [ "${shown[0]}" = device ]; then line="   [device] \$"; shown=("${shown[@]:1}"); fi
    for arg in "${shown[@]}"; do
        [ "$arg" = "${ZKIOT:-}" ] && arg=zkiot
        line+=" $(quote "$arg")"
    done
    printf '%s\n' "$line"
    "$@" 2>&1 | indent
    return "${PIPESTATUS[0]}"
}
die() { printf 'flow: %s\n' "$*" >&2; exit 1; }

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import moto, boto3, awscli' 2>/dev/null; then
    die "the venv $VENV with moto, boto3 and awscli is missing: run scripts/install-deps.sh (or set ZKIOT_VENV)"
fi

pids=() groups=()
cleanup() {
    local pid
    # The agent with its children (the perimeter watcher), as systemd stops its unit.
    for pid in "${groups[@]}"; do kill -- "-$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

free_port() { "$VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

step "Build zkiot, the PKCS#11 module and the Zymkey emulator"
show cargo build --quiet -p zkiot -p zkpkcs11 -p zkemu
BIN=$CARGO_TARGET_DIR/debug
ZKIOT=$BIN/zkiot
rm -rf "$WORK"
mkdir -p "$WORK/operator" "$WORK/device/emulator" "$WORK/endpoint"

step "Start moto (the AWS APIs: IoT, IAM, STS) on loopback"
MOTO_PORT=$(free_port)
"$VENV/bin/python" -c "import sys
from moto.core.config import default_user_config as c
c['iot']['use_valid_cert'] = True   # certificate ids = SHA-256 of DER, as in AWS
from moto.server import main
main(['-H', '127.0.0.1', '-p', sys.argv[1]])" "$MOTO_PORT" >"$WORK/moto.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 300); do
    curl -sf -o /dev/null "http://127.0.0.1:$MOTO_PORT/moto-api/" && break
    sleep 0.1
done
curl -sf -o /dev/null "http://127.0.0.1:$MOTO_PORT/moto-api/" || die "moto did not start: $(cat "$WORK/moto.log")"
echo "   moto on http://127.0.0.1:$MOTO_PORT (log $WORK/moto.log)"

# The operator's environment: AWS endpoint and (any) credentials for moto, and a home folder.
export AWS_ENDPOINT_URL=http://127.0.0.1:$MOTO_PORT
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=$REGION
export AWS_CONFIG_FILE=$WORK/aws-config AWS_SHARED_CREDENTIALS_FILE=$WORK/aws-config
: >"$AWS_CONFIG_FILE"
unset AWS_PROFILE AWS_SESSION_TOKEN
export ZKIOT_HOME=$WORK/operator
echo "   AWS_ENDPOINT_URL=$AWS_ENDPOINT_URL ZKIOT_HOME=$ZKIOT_HOME"

# The device's environment: the module, the emulator instead of Zymbit's library, its state.
cat >"$WORK/device/zkiot.toml" <<EOF
store = "$WORK/device/token-store.sqlite3"
EOF
device_env=(env -u AWS_ENDPOINT_URL -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY
    ZKIOT_PKCS11_MODULE="$BIN/libzkpkcs11.so" ZKIOT_ZKLIB="$BIN/libzkemu.so"
    ZKIOT_EMU_DIR="$WORK/device/emulator" ZKIOT_CONF="$WORK/device/zkiot.toml"
    ZKIOT_DEVICE_DIR="$WORK/device/files" ZKIOT_HOME="$WORK/device")
device() { "${device_env[@]}" "$@"; }

step "Operator: create the CA"
show "$ZKIOT" ca init

step "Operator: register the CA with AWS IoT (verification certificate CN = registration code)"
show "$ZKIOT" aws register-ca
show openssl x509 -in "$ZKIOT_HOME/aws/verification.crt" -noout -subject -issuer
show openssl verify -CAfile "$ZKIOT_HOME/ca/ca.crt" -partial_chain "$ZKIOT_HOME/aws/verification.crt"

step "Operator: IAM role, role alias and IoT policy for the credentials provider"
# --renewal: devices may also write on their own Thing (renewal, and the agent's reports).
show "$ZKIOT" aws setup --renewal
ENDPOINT=$("$VENV/bin/python" -c 'import json, sys; print(json.load(open(sys.argv[1]))["credentials_endpoint"])' "$ZKIOT_HOME/aws.json")
ALIAS=zkiot-device-alias

step "Start the local credentials provider for $ENDPOINT"
# Its TLS certificate comes from a test root standing in for Amazon's root CA.
openssl ecparam -name prime256v1 -genkey -noout -out "$WORK/endpoint/root.key"
openssl req -x509 -new -key "$WORK/endpoint/root.key" -sha256 -days 2 \
    -subj '/CN=Local stand-in for Amazon Root CA' \
    -addext 'basicConstraints=critical,CA:TRUE' -addext 'keyUsage=critical,keyCertSign' \
    -out "$WORK/endpoint/root.pem"
# server_cert NAME HOST: $WORK/endpoint/NAME.key and NAME.crt, a server certificate for HOST
# from that root.
server_cert() {
    local out=$WORK/endpoint/$1
    openssl ecparam -name prime256v1 -genkey -noout -out "$out.key"
    openssl req -new -key "$out.key" -subj "/CN=$2" -out "$out.csr"
    printf 'subjectAltName=DNS:%s\nextendedKeyUsage=serverAuth\n' "$2" >"$out.ext"
    openssl x509 -req -in "$out.csr" -CA "$WORK/endpoint/root.pem" \
        -CAkey "$WORK/endpoint/root.key" -CAcreateserial -days 2 -sha256 \
        -extfile "$out.ext" -out "$out.crt" 2>/dev/null
}
# wait_for_file FILE WHAT LOG: until a server wrote its port into FILE, else stop with its LOG.
wait_for_file() {
    for _ in $(seq 1 300); do [ -s "$1" ] && return; sleep 0.1; done
    die "$2 did not start: $(cat "$3")"
}
server_cert server "$ENDPOINT"
"$VENV/bin/python" tests/credprov/server.py --moto-url "$AWS_ENDPOINT_URL" --host "$ENDPOINT" \
    --port 0 --port-file "$WORK/endpoint/port" --cert "$WORK/endpoint/server.crt" \
    --key "$WORK/endpoint/server.key" --region "$REGION" --log-file "$WORK/credentials-provider.log" \
    --iot-port-file "$WORK/endpoint/iot-port" \
    >/dev/null 2>"$WORK/credentials-provider.stderr" &
pids+=($!)
wait_for_file "$WORK/endpoint/port" "the credentials provider" "$WORK/credentials-provider.stderr"
wait_for_file "$WORK/endpoint/iot-port" "the credentials provider's IoT API gate" "$WORK/credentials-provider.stderr"
PROVIDER=127.0.0.1:$(cat "$WORK/endpoint/port")
# The AWS IoT API the devices call with their credentials, judged by the role's policies.
IOT_API=http://127.0.0.1:$(cat "$WORK/endpoint/iot-port")
echo "   https://$ENDPOINT served on $PROVIDER (log $WORK/credentials-provider.log)"
echo "   the devices' AWS IoT API, with the role's IAM policies checked, on $IOT_API"

step "Start the local AWS IoT broker (MQTT over mosquitto, and iot-data DeleteConnection)"
# silence closes the device's MQTT connection through iot-data DeleteConnection, which moto
# does not implement: this stand-in serves it (tests/iotcore/), with the same test root.
BROKER_HOST=local-ats.iot.$REGION.amazonaws.com
server_cert broker "$BROKER_HOST"
"$VENV/bin/python" tests/iotcore/broker.py --moto-url "$AWS_ENDPOINT_URL" --region "$REGION" \
    --cert "$WORK/endpoint/broker.crt" --key "$WORK/endpoint/broker.key" \
    --mqtt-port-file "$WORK/endpoint/mqtt-port" --data-port-file "$WORK/endpoint/data-port" \
    --work-dir "$WORK/mosquitto" --log-file "$WORK/broker.log" >/dev/null 2>"$WORK/broker.stderr" &
pids+=($!)
wait_for_file "$WORK/endpoint/mqtt-port" "the broker" "$WORK/broker.stderr"
export ZKIOT_IOT_DATA_ENDPOINT=http://127.0.0.1:$(cat "$WORK/endpoint/data-port")
echo "   mqtts://$BROKER_HOST on 127.0.0.1:$(cat "$WORK/endpoint/mqtt-port"), iot-data on $ZKIOT_IOT_DATA_ENDPOINT (log $WORK/broker.log)"

step "Device: its ID, and a CSR signed inside the (emulated) Zymkey"
show device "$ZKIOT" device id
show device "$ZKIOT" device csr
THING=$(openssl req -in "$WORK/device/files/device.csr" -noout -subject -nameopt multiline | sed -n 's/^ *commonName *= *//p')
[ -n "$THING" ] || die "no CN in the device CSR"
echo "   thing name: $THING"

step "Operator: sign the device certificate"
show "$ZKIOT" ca sign --csr "$WORK/device/files/device.csr"
show openssl verify -CAfile "$ZKIOT_HOME/ca/ca.crt" "$ZKIOT_HOME/devices/$THING/device.crt"

step "Operator: register the device with AWS IoT (certificate, Thing, policy)"
show "$ZKIOT" aws register-device --thing "$THING"

step "Device: install the certificate (files and a certificate object on the token)"
show device "$ZKIOT" device install-cert --cert "$ZKIOT_HOME/devices/$THING/device.crt" \
    --ca "$ZKIOT_HOME/ca/ca.crt" --endpoint "$ENDPOINT" --role-alias "$ALIAS" \
    --ca-bundle "$WORK/endpoint/root.pem" --iot-api "$IOT_API"

step "Device: temporary AWS credentials (mutual TLS with the Zymkey's key)"
printf '   $ %s\n' "zkiot device credentials --connect $PROVIDER --format env"
device "$ZKIOT" device credentials --connect "$PROVIDER" --format env >"$WORK/device/credentials.env" \
    2>"$WORK/device/credentials.stderr" || die "device credentials failed: $(cat "$WORK/device/credentials.stderr")"
indent <"$WORK/device/credentials.stderr"
chmod 600 "$WORK/device/credentials.env"
sed -E 's/(AWS_SECRET_ACCESS_KEY=|AWS_SESSION_TOKEN=)(.{8}).*/\1\2…/' "$WORK/device/credentials.env" | indent

step "Use them: aws sts get-caller-identity against moto"
(
    unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
    # shellcheck disable=SC1091
    . "$WORK/device/credentials.env"
    show "$VENV/bin/aws" sts get-caller-identity --endpoint-url "$AWS_ENDPOINT_URL" --region "$REGION"
)

step "Or as an AWS profile: credential_process = zkiot device credentials"
cat >"$WORK/device/aws-config" <<EOF
[profile device]
region = $REGION
credential_process = $ZKIOT device credentials --connect $PROVIDER
EOF
indent <"$WORK/device/aws-config"
show device env AWS_CONFIG_FILE="$WORK/device/aws-config" AWS_SHARED_CREDENTIALS_FILE="$WORK/device/aws-config" \
    "$VENV/bin/aws" sts get-caller-identity --profile device --endpoint-url "http://127.0.0.1:$MOTO_PORT"

step "Operator: silence the device: its certificate, MQTT connection and credentials already issued are cut"
show "$ZKIOT" aws silence --thing "$THING"
printf '   [device] $ %s\n' "zkiot device credentials --connect $PROVIDER --no-cache"
if device "$ZKIOT" device credentials --connect "$PROVIDER" --no-cache >/dev/null 2>"$WORK/device/refused.stderr"; then
    die "the provider gave credentials to a silenced device"
fi
grep -v '^zkemu:' "$WORK/device/refused.stderr" | indent
echo "   (credentials issued before are refused by the role's Deny, zkiot-silenced, as the report above says)"
show "$ZKIOT" aws unsilence --thing "$THING"
printf '   [device] $ %s\n' "zkiot device credentials --connect $PROVIDER --no-cache"
device "$ZKIOT" device credentials --connect "$PROVIDER" --no-cache 2>/dev/null \
    | "$VENV/bin/python" -c 'import json, sys; c = json.load(sys.stdin); print("     credentials again:", c["AccessKeyId"], "expiring", c["Expiration"])'

step "Tamper: the device agent reports a breach of the Zymkey's perimeter; aws sweep silences the device"
show device "$ZKIOT" device tamper --set all=notify --yes
printf '   [device] $ %s\n' "zkiot device agent --connect $PROVIDER --listen off &"
# In a process group of its own ($! is its leader: setsid and env exec), stopped whole at the end.
setsid "${device_env[@]}" "$ZKIOT" device agent --connect "$PROVIDER" --listen off >"$WORK/device/agent.log" 2>&1 &
groups+=($!)
# thing_attribute NAME: the attribute of the device's Thing, empty while it has none.
thing_attribute() {
    "$VENV/bin/aws" iot describe-thing --region "$REGION" --thing-name "$THING" --query "attributes.$1" --output text 2>/dev/null |
        grep -v '^None$' || true
}
for _ in $(seq 1 300); do [ -n "$(thing_attribute zkiot_seen)" ] && break; sleep 0.1; done
[ -n "$(thing_attribute zkiot_seen)" ] || die "the agent sent no heartbeat: $(cat "$WORK/device/agent.log")"
echo "     heartbeat on the Thing: zkiot_seen = $(thing_attribute zkiot_seen)"
echo "   [device] the enclosure is opened: a breach of channel 0 (the emulator: a file perimeter-next)"
echo 0 >"$WORK/device/emulator/perimeter-next.new"
mv "$WORK/device/emulator/perimeter-next.new" "$WORK/device/emulator/perimeter-next"
for _ in $(seq 1 300); do [ -n "$(thing_attribute zkiot_tamper)" ] && break; sleep 0.1; done
[ -n "$(thing_attribute zkiot_tamper)" ] || die "the agent did not report the breach: $(cat "$WORK/device/agent.log")"
grep 'perimeter breach' "$WORK/device/agent.log" | indent
show "$ZKIOT" aws status
show "$ZKIOT" aws sweep
printf '   [device] $ %s\n' "zkiot device credentials --connect $PROVIDER --no-cache"
if device "$ZKIOT" device credentials --connect "$PROVIDER" --no-cache >/dev/null 2>"$WORK/device/swept.stderr"; then
    die "the provider gave credentials to a swept device"
fi
grep -v '^zkemu:' "$WORK/device/swept.stderr" | indent

printf '\n%sDone.%s The device got AWS credentials with a key that never left its (emulated) Zymkey.\n' "$bold" "$normal"
printf 'Files: %s\n' "$WORK"
