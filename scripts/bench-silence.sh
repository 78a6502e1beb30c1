#!/usr/bin/env bash
# Time-to-silence: how long a silenced device can still use what it already holds, from the
# moment the silencing command returns to the last successful use, per mechanism:
#   - credentials already issued, used against the AWS IoT API (DescribeThing on its Thing,
#     through the local credentials provider's IAM gate, which evaluates the role's policies on
#     every call);
#   - the MQTT session it holds open (a QoS 1 publish on its own topic, echoed back by the
#     local AWS IoT broker, tests/iotcore/broker.py).
# "before": what `zkiot aws silence` did until now, UpdateCertificate INACTIVE alone (run here
# as the aws CLI call). "after": `zkiot aws silence`. Each device probes both continuously
# (every --interval s) while the command runs and for --watch s after it returns.
#
# Usage: scripts/bench-silence.sh [-n DEVICES] [--watch SECONDS] [--interval SECONDS]
#                                 [--profile debug|release] [--keep]
#
#   -n, --devices N     devices silenced at once (default: 5)
#   --watch S           how long to keep probing after the command returns (default: 10)
#   --interval S        time between two probes of one device (default: 0.05)
#   --profile PROFILE   cargo profile of the zkiot binary (default: debug)
#   --keep              keep the work folder (its path is printed)
#
# Prints a table: per mechanism, the last successful use after the command returned (or that
# it still worked when watching stopped, with how long it would last: the credentials'
# remaining lifetime), and before/after as a ratio. Figures are loopback stand-ins: IAM on AWS
# takes "a few minutes" (no bound documented) to apply the Deny that the gate here applies at
# once, so the "after" figure for credentials is the least AWS can do. Needs the test venv and
# mosquitto (scripts/install-deps.sh). Uses CARGO_TARGET_DIR when set, else ./target.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
VENV=${ZKIOT_VENV:-$REPO/.venv}

usage() { sed -n '2,/^set -euo/s/^# \{0,1\}//p' "$0"; }
die() { printf 'bench-silence: %s\n' "$*" >&2; exit 1; }

devices=5 watch=10 interval=0.05 profile=debug keep=0
while [ $# -gt 0 ]; do
    case $1 in
    -n | --devices) devices=${2:?$1 needs a value}; shift 2 ;;
    --watch) watch=${2:?--watch needs a value}; shift 2 ;;
    --interval) interval=${2:?--interval needs a value}; shift 2 ;;
    --profile) profile=${2:?--profile needs a value}; shift 2 ;;
    --keep) keep=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
    esac
done
[[ $devices =~ ^[1-9][0-9]*$ ]] || die "-n needs a positive number"
[[ $watch =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "--watch needs a number of seconds"
[[ $interval =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "--interval needs a number of seconds"
case $profile in release | debug) ;; *) die "--profile is release or debug" ;; esac
"$VENV/bin/python" -c 'import moto, awscli' 2>/dev/null ||
    die "the venv $VENV with moto and awscli is missing: run scripts/install-deps.sh (or set ZKIOT_VENV)"
[ -x "${ZKIOT_MOSQUITTO:-/usr/sbin/mosquitto}" ] || die "mosquitto is missing: run scripts/install-deps.sh"
export PATH=$VENV/bin:$PATH

build_flags=(--quiet -p zkiot)
[ "$profile" = release ] && build_flags+=(--release)
cargo build "${build_flags[@]}"
ZKIOT=$CARGO_TARGET_DIR/$profile/zkiot

WORK=$(mktemp -d "${TMPDIR:-/tmp}/zkiot-bench-silence.XXXXXX")
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ "$keep" = 1 ]; then echo "work folder: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
export AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1
export AWS_CONFIG_FILE=$WORK/aws-config AWS_SHARED_CREDENTIALS_FILE=$WORK/aws-config
: >"$AWS_CONFIG_FILE"
unset AWS_PROFILE AWS_SESSION_TOKEN
export ZKIOT_HOME=$WORK/operator

# wait_file FILE WHAT: waits for a port file a stand-in writes once it listens.
wait_file() {
    for _ in $(seq 1 300); do [ -s "$1" ] && return 0; sleep 0.1; done
    die "$2 did not start"
}

# ---------------------------------------------------------------- the stand-ins

"$VENV/bin/python" -c "import os, sys
from moto.core.config import default_user_config as c
c['iot']['use_valid_cert'] = True
from werkzeug.serving import make_server
from moto.server import DomainDispatcherApplication, create_backend_app
server = make_server('127.0.0.1', 0, DomainDispatcherApplication(create_backend_app), threaded=True)
open(sys.argv[1] + '.tmp', 'w').write(str(server.server_port))
os.replace(sys.argv[1] + '.tmp', sys.argv[1])
server.serve_forever()" "$WORK/moto.port" >"$WORK/moto.log" 2>&1 </dev/null &
pids+=($!)
wait_file "$WORK/moto.port" moto
export AWS_ENDPOINT_URL=http://127.0.0.1:$(cat "$WORK/moto.port")

echo "Setting up: CA, role (devices may DescribeThing their own Thing), $devices devices…" >&2
cat >"$WORK/permissions.json" <<'EOF'
{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:DescribeThing",
  "Resource": "arn:aws:iot:*:*:thing/${credentials-iot:ThingName}"}]}
EOF
{
    "$ZKIOT" ca init && "$ZKIOT" aws register-ca &&
        "$ZKIOT" aws setup --permissions-policy "$WORK/permissions.json"
} >"$WORK/setup.log" 2>&1 || die "set-up failed: $(tail -n 20 "$WORK/setup.log")"
ENDPOINT=$("$VENV/bin/python" -c 'import json, sys; print(json.load(open(sys.argv[1]))["credentials_endpoint"])' "$ZKIOT_HOME/aws.json")
BROKER_HOST=bench-ats.iot.us-east-1.amazonaws.com

# One test root (standing in for Amazon's) for both endpoints' certificates.
mkdir -p "$WORK/pki"
openssl ecparam -name prime256v1 -genkey -noout -out "$WORK/pki/root.key"
openssl req -x509 -new -key "$WORK/pki/root.key" -sha256 -days 2 -subj '/CN=Bench stand-in root' \
    -addext 'basicConstraints=critical,CA:TRUE' -addext 'keyUsage=critical,keyCertSign' \
    -out "$WORK/pki/root.pem" 2>/dev/null
server_cert() {
    openssl ecparam -name prime256v1 -genkey -noout -out "$WORK/pki/$1.key"
    openssl req -new -key "$WORK/pki/$1.key" -subj "/CN=$2" -out "$WORK/pki/$1.csr"
    printf 'subjectAltName=DNS:%s\nextendedKeyUsage=serverAuth\n' "$2" >"$WORK/pki/$1.ext"
    openssl x509 -req -in "$WORK/pki/$1.csr" -CA "$WORK/pki/root.pem" -CAkey "$WORK/pki/root.key" \
        -CAcreateserial -days 2 -sha256 -extfile "$WORK/pki/$1.ext" -out "$WORK/pki/$1.crt" 2>/dev/null
}
server_cert provider "$ENDPOINT"
server_cert broker "$BROKER_HOST"
"$VENV/bin/python" tests/credprov/server.py --moto-url "$AWS_ENDPOINT_URL" --host "$ENDPOINT" \
    --port 0 --port-file "$WORK/provider.port" --iot-port-file "$WORK/gate.port" \
    --cert "$WORK/pki/provider.crt" --key "$WORK/pki/provider.key" --log-file "$WORK/provider.log" \
    >/dev/null 2>"$WORK/provider.stderr" &
pids+=($!)
"$VENV/bin/python" tests/iotcore/broker.py --moto-url "$AWS_ENDPOINT_URL" \
    --cert "$WORK/pki/broker.crt" --key "$WORK/pki/broker.key" --work-dir "$WORK/mosquitto" \
    --mqtt-port-file "$WORK/mqtt.port" --data-port-file "$WORK/data.port" --log-file "$WORK/broker.log" \
    >/dev/null 2>"$WORK/broker.stderr" &
pids+=($!)
wait_file "$WORK/gate.port" "the credentials provider"
wait_file "$WORK/provider.port" "the credentials provider"
wait_file "$WORK/data.port" "the broker"
export ZKIOT_IOT_DATA_ENDPOINT=http://127.0.0.1:$(cat "$WORK/data.port")

mkdir -p "$WORK/csrs" "$WORK/keys"
for i in $(seq -f '%03g' 1 "$devices"); do
    (umask 077 && openssl ecparam -name prime256v1 -genkey -noout -out "$WORK/keys/silence-$i.key")
    openssl req -new -key "$WORK/keys/silence-$i.key" -subj "/CN=silence-$i" -out "$WORK/csrs/silence-$i.csr"
    echo "silence-$i" >>"$WORK/things.txt"
done
"$ZKIOT" fleet provision --csr-dir "$WORK/csrs" >"$WORK/provision.log" 2>&1 ||
    die "fleet provision failed: $(tail -n 20 "$WORK/provision.log")"

"$VENV/bin/python" - "$WORK" "$ENDPOINT" "$BROKER_HOST" <<'EOF'
import json, os, sys
work, endpoint, broker = sys.argv[1:4]
port = lambda name: int(open(os.path.join(work, name)).read())
things = open(os.path.join(work, "things.txt")).read().split()
json.dump({
    "region": "us-east-1",
    "provider": {"connect": f"127.0.0.1:{port('provider.port')}", "host": endpoint,
                 "ca": f"{work}/pki/root.pem", "alias": "zkiot-device-alias"},
    "gate": f"http://127.0.0.1:{port('gate.port')}",
    "broker": {"port": port("mqtt.port"), "host": broker, "ca": f"{work}/pki/root.pem"},
    "devices": [{"thing": t, "cert": f"{work}/operator/devices/{t}/device.crt",
                 "key": f"{work}/keys/{t}.key"} for t in things],
}, open(os.path.join(work, "fleet.json"), "w"))
EOF

# The "before" command: UpdateCertificate INACTIVE for each device's certificate, nothing more.
cat >"$WORK/before.sh" <<'EOF'
#!/usr/bin/env bash
set -e
while read -r thing; do
    for arn in $(aws iot list-thing-principals --thing-name "$thing" --query 'principals[]' --output text); do
        aws iot update-certificate --certificate-id "${arn##*/}" --new-status INACTIVE
    done
done <"$1"
EOF
chmod +x "$WORK/before.sh"

# ---------------------------------------------------------------- the runs

echo "Running: before (UpdateCertificate only), then after (zkiot aws silence), watching $watch s each…" >&2
watch_cmd() {
    "$VENV/bin/python" -c 'import json, sys; print(json.dumps({"cmd": "watch", "run": sys.argv[3:], "seconds": float(sys.argv[1]), "interval": float(sys.argv[2])}))' \
        "$watch" "$interval" "$@"
}
{
    echo '{"cmd": "credentials"}'
    echo '{"cmd": "connect"}'
    watch_cmd "$WORK/before.sh" "$WORK/things.txt"
    echo '{"cmd": "quit"}'
} | "$VENV/bin/python" tests/python/fleet_devices.py "$WORK/fleet.json" >"$WORK/before.json" 2>"$WORK/fleet-before.stderr" ||
    die "the devices failed: $(tail -n 5 "$WORK/fleet-before.stderr")"
"$ZKIOT" aws unsilence --things-file "$WORK/things.txt" >"$WORK/unsilence.log" 2>&1 ||
    die "unsilence failed: $(tail -n 5 "$WORK/unsilence.log")"
{
    echo '{"cmd": "credentials"}'
    echo '{"cmd": "connect"}'
    watch_cmd "$ZKIOT" aws silence --things-file "$WORK/things.txt"
    echo '{"cmd": "quit"}'
} | "$VENV/bin/python" tests/python/fleet_devices.py "$WORK/fleet.json" >"$WORK/after.json" 2>"$WORK/fleet-after.stderr" ||
    die "the devices failed: $(tail -n 5 "$WORK/fleet-after.stderr")"

# ---------------------------------------------------------------- the table

"$VENV/bin/python" - "$WORK" "$devices" "$watch" "$interval" "$profile" <<'EOF'
import datetime, json, sys
work, devices, watch, interval, profile = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]

def load(name):
    lines = [json.loads(l) for l in open(f"{work}/{name}.json") if l.strip()]
    fetched, connected, watched = lines[0], lines[1], lines[2]
    bad = [t for t, s in fetched.items() if s != 200] + [t for t, s in connected.items() if s != "connected"]
    if bad or watched["exit"] != 0:
        sys.exit(f"bench-silence: {name}: devices {bad} not ready, or the command failed: {watched['stderr']}")
    return watched

def figure(run, mechanism):
    """(seconds from return to the last success, or None if it still worked at the end; how
    long it would last)"""
    lasts = []
    worst = 0.0
    for thing, per in run["things"].items():
        e = per[mechanism]
        if e["last_ok"] is None:
            sys.exit(f"bench-silence: {thing} never used its {mechanism} successfully")
        if e["first_fail"] is None or e["last_ok"] > e["first_fail"]:
            still = True
        else:
            still = False
        if still:
            if mechanism == "credentials":
                exp = datetime.datetime.strptime(run["expiration"][thing], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
                lasts.append(exp.timestamp() - run["returned_at"])
            else:
                lasts.append(None)
            worst = None
        elif worst is not None:
            worst = max(worst, max(e["last_ok"], 0.0))
    return worst, lasts

before, after = load("before"), load("after")
print(f"Time to silence, {devices} devices: from the command's return to the last successful use of what a device already holds")
print(f"(zkiot {profile}, loopback stand-ins: moto, tests/credprov, tests/iotcore over mosquitto; probes every {interval} s, watched {watch} s after return; {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC})")
print()
print(f"{'mechanism':<28} {'before: UpdateCertificate only':<50} {'after: zkiot aws silence':<26} ratio")
for mechanism, label in (("credentials", "credentials already issued"), ("mqtt", "open MQTT session")):
    b, blasts = figure(before, mechanism)
    a, _ = figure(after, mechanism)
    if b is None:
        if mechanism == "credentials":
            left = min(x for x in blasts)
            btext = f"still valid at +{watch:g} s; until expiry, {left:.0f} s"
            bvalue = left
        else:
            btext = f'still open at +{watch:g} s; AWS: "within a few minutes"'
            bvalue = watch
    else:
        btext, bvalue = f"{b:.3f} s", b
    if a is None:
        atext, ratio = f"still working at +{watch:g} s", "-"
    else:
        atext = f"{a:.3f} s"
        floor = max(a, interval)
        ratio = f"{'>= ' if a < interval or b is None else ''}{bvalue / floor:,.0f}x"
    print(f"{label:<28} {btext:<50} {atext:<26} {ratio}")
btime = f"{before['command_seconds']:.3f} s"
print(f"{'command wall time':<28} {btime:<50} {after['command_seconds']:.3f} s")
print()
print("after: 0.000 s means no use succeeded once the command had returned (the cut happens inside it);")
print(f"the ratio then divides by the probe interval ({interval} s), the resolution of the measurement.")
print('On AWS, the Deny takes effect when IAM applies it ("a few minutes", no bound documented), and the')
print("condition key it uses is an inference (scripts/check-deny.sh checks it on an account).")
EOF
