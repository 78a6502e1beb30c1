#!/usr/bin/env bash
# Provisioning throughput on the operator's side: `zkiot fleet provision` beside the guide's shell
# scripts (scripts/guide/: sign_csr.sh + provision_device.sh per device, over openssl and the aws
# CLI), for the same N devices, in one run. Each method gets a fresh moto server with its own CA,
# role and policy made beforehand (not timed); what is timed is, per device: sign the CSR,
# register the certificate ACTIVE with its CA, create the Thing, attach Thing and policy.
# The CSRs are made once, from key files, and shared by every method.
#
# Usage: scripts/bench-provisioning.sh [-n DEVICES] [--concurrency C] [--parallel P]
#                                      [--profile release|debug] [--keep]
#
#   -n, --devices N    devices per method (default: 50)
#   --concurrency C    zkiot fleet provision --concurrency (default: 8, zkiot's default)
#   --parallel P       also run the guide's scripts P at a time with xargs -P (default: 8; 0: don't)
#   --profile PROFILE  cargo profile of the zkiot binary (default: release)
#   --keep             keep the work folder (its path is printed)
#
# Prints a table of devices per second and the ratio to the guide run sequentially, as the
# guide does it. Each run is checked afterwards (N certificates ACTIVE, N Things) so that a
# fast failure cannot pass for throughput. Needs the test venv (scripts/install-deps.sh;
# $ZKIOT_VENV overrides ./.venv). Uses CARGO_TARGET_DIR when set, else ./target.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
VENV=${ZKIOT_VENV:-$REPO/.venv}
GUIDE=$REPO/scripts/guide

usage() { sed -n '2,/^set -euo/s/^# \{0,1\}//p' "$0"; }
die() { printf 'bench-provisioning: %s\n' "$*" >&2; exit 1; }

devices=50
concurrency=8
parallel=8
profile=release
keep=0
while [ $# -gt 0 ]; do
    case $1 in
    -n | --devices) devices=${2:?$1 needs a value}; shift 2 ;;
    --concurrency) concurrency=${2:?--concurrency needs a value}; shift 2 ;;
    --parallel) parallel=${2:?--parallel needs a value}; shift 2 ;;
    --profile) profile=${2:?--profile needs a value}; shift 2 ;;
    --keep) keep=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
    esac
done
[[ $devices =~ ^[1-9][0-9]*$ ]] || die "-n needs a positive number"
[[ $concurrency =~ ^[1-9][0-9]*$ ]] || die "--concurrency needs a positive number"
[[ $parallel =~ ^[0-9]+$ ]] || die "--parallel needs a number"
case $profile in release | debug) ;; *) die "--profile is release or debug" ;; esac

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import moto, awscli' 2>/dev/null; then
    die "the venv $VENV with moto and awscli is missing: run scripts/install-deps.sh (or set ZKIOT_VENV)"
fi
export PATH=$VENV/bin:$PATH # the aws CLI the guide's scripts call

build_flags=(--quiet -p zkiot)
[ "$profile" = release ] && build_flags+=(--release)
cargo build "${build_flags[@]}"
ZKIOT=$CARGO_TARGET_DIR/$profile/zkiot

WORK=$(mktemp -d "${TMPDIR:-/tmp}/zkiot-bench-provisioning.XXXXXX")
moto_pid=""
cleanup() {
    stop_moto
    if [ "$keep" = 1 ]; then echo "work folder: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# AWS credentials and region for moto; no user configuration.
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
export AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1
export AWS_CONFIG_FILE=$WORK/aws-config AWS_SHARED_CREDENTIALS_FILE=$WORK/aws-config
: >"$AWS_CONFIG_FILE"
unset AWS_PROFILE AWS_SESSION_TOKEN

# A fresh moto with AWS-correct certificate ids (SHA-256 of DER), bound before it reports its port.
start_moto() {
    local port_file=$WORK/moto.$RANDOM.port
    "$VENV/bin/python" -c "import os, sys
from moto.core.config import default_user_config as c
c['iot']['use_valid_cert'] = True
from werkzeug.serving import make_server
from moto.server import DomainDispatcherApplication, create_backend_app
server = make_server('127.0.0.1', 0, DomainDispatcherApplication(create_backend_app), threaded=True)
open(sys.argv[1] + '.tmp', 'w').write(str(server.server_port))
os.replace(sys.argv[1] + '.tmp', sys.argv[1])
server.serve_forever()" "$port_file" >"$WORK/moto.log" 2>&1 </dev/null &
    moto_pid=$!
    for _ in $(seq 1 300); do
        [ -s "$port_file" ] && curl -sf -o /dev/null "http://127.0.0.1:$(cat "$port_file")/moto-api/" && break
        sleep 0.1
    done
    [ -s "$port_file" ] || die "moto did not start: $(cat "$WORK/moto.log")"
    AWS_ENDPOINT_URL=http://127.0.0.1:$(cat "$port_file")
    export AWS_ENDPOINT_URL
}
stop_moto() {
    if [ -n "$moto_pid" ]; then
        kill "$moto_pid" 2>/dev/null || true
        wait "$moto_pid" 2>/dev/null || true
        moto_pid=""
    fi
}

# The run registered every device: N certificates ACTIVE and N Things.
check_registered() {
    local active things
    # shellcheck disable=SC2016 # a JMESPath literal, not a shell expansion
    active=$(aws iot list-certificates --query 'length(certificates[?status==`ACTIVE`])' --output text)
    things=$(aws iot list-things --query 'length(things)' --output text)
    if [ "$active" != "$devices" ] || [ "$things" != "$devices" ]; then
        die "$1: $active certificates ACTIVE and $things Things, expected $devices of each"
    fi
}

now() { date +%s.%N; }
labels=()
seconds=()
# timed LABEL COMMAND...: runs the command, records its wall-clock time under LABEL.
timed() {
    local label=$1 t0 t1
    shift
    printf '  %-48s' "$label" >&2
    t0=$(now)
    "$@"
    t1=$(now)
    labels+=("$label")
    seconds+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')")
    echo " ${seconds[-1]} s" >&2
}

# ---------------------------------------------------------------- the CSRs, once

echo "Making $devices CSRs (P-256 key files, CN = Thing name)…" >&2
mkdir -p "$WORK/csrs" "$WORK/keys"
for i in $(seq -f '%03g' 1 "$devices"); do
    (umask 077 && openssl ecparam -name prime256v1 -genkey -noout -out "$WORK/keys/bench-device-$i.key")
    openssl req -new -key "$WORK/keys/bench-device-$i.key" -subj "/CN=bench-device-$i" \
        -out "$WORK/csrs/bench-device-$i.csr"
done

# ---------------------------------------------------------------- zkiot

zkiot_fleet() {
    "$ZKIOT" fleet provision --csr-dir "$WORK/csrs" --concurrency "$1" >"$ZKIOT_HOME/fleet.log" 2>&1 ||
        die "zkiot fleet provision failed: $(tail -n 20 "$ZKIOT_HOME/fleet.log")"
}
bench_zkiot() {
    local c=$1
    start_moto
    export ZKIOT_HOME=$WORK/zkiot-c$c
    {
        "$ZKIOT" ca init && "$ZKIOT" aws register-ca && "$ZKIOT" aws setup
    } >"$WORK/zkiot-c$c.setup.log" 2>&1 || die "zkiot set-up failed: $(tail -n 20 "$WORK/zkiot-c$c.setup.log")"
    timed "zkiot fleet provision --concurrency $c" zkiot_fleet "$c"
    check_registered "zkiot --concurrency $c"
    stop_moto
}

# ---------------------------------------------------------------- the guide's scripts

# One device as the guide does it: the CA signs the CSR, then the certificate is registered.
guide_one() {
    local csr=$1 name
    name=$(basename "$csr" .csr)
    "$GUIDE/sign_csr.sh" --csr "$csr" --out "certs/$name.crt" >/dev/null &&
        "$GUIDE/provision_device.sh" --cert "certs/$name.crt" >/dev/null
}
export -f guide_one
export GUIDE
guide_sequential() {
    local csr
    for csr in "$WORK"/csrs/*.csr; do guide_one "$csr" || die "the guide's scripts failed for $csr"; done
}
guide_parallel() {
    # shellcheck disable=SC2016 # $1 is expanded by the bash that xargs starts
    printf '%s\n' "$WORK"/csrs/*.csr | xargs -P "$1" -n 1 bash -c 'guide_one "$1"' _ ||
        die "the guide's scripts failed"
}
bench_guide() {
    local mode=$1 p=${2:-1} dir=$WORK/guide-$1
    start_moto
    mkdir -p "$dir/certs"
    cd "$dir"
    {
        "$GUIDE/mk_ca.sh" && "$GUIDE/register_ca.sh" && "$GUIDE/setup_role.sh"
    } >setup.log 2>&1 || die "the guide's set-up failed: $(tail -n 20 setup.log)"
    if [ "$mode" = sequential ]; then
        timed "guide scripts, one after another" guide_sequential
    else
        timed "guide scripts, xargs -P $p" guide_parallel "$p"
    fi
    check_registered "guide $mode"
    cd "$REPO"
    stop_moto
}

echo "Provisioning $devices devices per method, each against a fresh moto:" >&2
bench_zkiot "$concurrency"
[ "$concurrency" -ne 1 ] && bench_zkiot 1
bench_guide sequential
[ "$parallel" -gt 0 ] && bench_guide parallel "$parallel"

# ---------------------------------------------------------------- the table

baseline=""
for i in "${!labels[@]}"; do
    [ "${labels[i]}" = "guide scripts, one after another" ] && baseline=${seconds[i]}
done
echo
printf 'Provisioning %d devices: sign the CSR, register the certificate (ACTIVE, with its CA), Thing, policy\n' "$devices"
printf '(%s zkiot, moto %s, %s CPUs, %s)\n\n' "$profile" \
    "$("$VENV/bin/python" -c 'import moto; print(moto.__version__)')" "$(nproc)" "$(date -u '+%Y-%m-%d %H:%M UTC')"
printf '%-48s %9s %11s %13s\n' method seconds devices/s "vs the guide"
for i in "${!labels[@]}"; do
    awk -v label="${labels[i]}" -v s="${seconds[i]}" -v n="$devices" -v base="$baseline" \
        'BEGIN { printf "%-48s %9.2f %11.2f %12.2fx\n", label, s, n / s, base / s }'
done
