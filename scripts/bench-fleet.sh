#!/usr/bin/env bash
# What the operator's fleet commands cost in AWS API calls, and how long those calls take at AWS's
# default quotas, for fleets of 1,000 and 10,000 devices in moto, in one run: a daily
# `zkiot fleet renew` with 1% of the devices due, `zkiot aws status`, and `zkiot aws audit`;
# before (a build of --before, which read every device one by one) and after (this tree).
#
# Usage: scripts/bench-fleet.sh [-n "1000 10000"] [--due PERCENT] [--before REF|none]
#                               [--before-bin FILE] [--profile release|debug] [--keep]
#        scripts/bench-fleet.sh --report RESULTS.jsonl
#
#   -n, --devices "N…"   fleet sizes (default: "1000 10000")
#   --due PERCENT        share of the devices whose certificate expires within 30 days (default: 1)
#   --before REF         the git commit to compare with (default: 4360bba, the last one before the
#                        limiter and the paged reads); "none": this tree only
#   --before-bin FILE    a zkiot binary already built at --before, instead of building it
#   --profile PROFILE    cargo profile of the zkiot binaries (default: release)
#   --keep               keep the work folder (its path is printed)
#   --report FILE        print the table of an earlier run's results.jsonl (kept with --keep)
#
# Each version gets its own moto per fleet size, set up and provisioned by that version (not
# measured; the devices due get 20-day certificates, the others 365 days), then each command runs
# once through tests/awsfault/proxy.py, which counts the requests per API (the old `aws status`,
# one device after another, only on the first fleet size). The commands run without
# zkiot's limiter (`--api-rate '*=off'`: moto has no quotas), so the wall-clock in moto is only the
# emulator's; the time at AWS's default quotas is computed from the counts: the busiest API's
# calls divided by its quota (the table in src/aws/limiter.rs, 10 a second for an API it does not
# name), after the pages (ListThings, ListCertificatesByCA, SearchIndex: read one after another
# before the rest): what the limiter makes the time on AWS, answer latency aside. The
# last lines project the largest fleet's counts to 100,000 devices (pages and devices due both grow
# with the fleet) against the target: a daily renewal in under 10 minutes.
#
# Needs the test venv (scripts/install-deps.sh; $ZKIOT_VENV overrides ./.venv). Uses
# CARGO_TARGET_DIR when set, else ./target.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
VENV=${ZKIOT_VENV:-$REPO/.venv}

usage() { sed -n '2,/^set -euo/s/^# \{0,1\}//p' "$0"; }
die() { printf 'bench-fleet: %s\n' "$*" >&2; exit 1; }

sizes="1000 10000"
due_percent=1
before=4360bba
before_bin=""
profile=release
keep=0
report=""
while [ $# -gt 0 ]; do
    case $1 in
    -n | --devices) sizes=${2:?$1 needs a value}; shift 2 ;;
    --due) due_percent=${2:?--due needs a value}; shift 2 ;;
    --before) before=${2:?--before needs a value}; shift 2 ;;
    --before-bin) before_bin=${2:?--before-bin needs a value}; shift 2 ;;
    --profile) profile=${2:?--profile needs a value}; shift 2 ;;
    --keep) keep=1; shift ;;
    --report) report=${2:?--report needs a file}; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
    esac
done
for n in $sizes; do [[ $n =~ ^[1-9][0-9]*$ ]] || die "-n needs positive numbers"; done
[[ $due_percent =~ ^[0-9]+$ ]] && [ "$due_percent" -le 100 ] || die "--due needs a percentage"
case $profile in release | debug) ;; *) die "--profile is release or debug" ;; esac
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import moto, cryptography' 2>/dev/null; then
    die "the venv $VENV with moto is missing: run scripts/install-deps.sh (or set ZKIOT_VENV)"
fi
PY=$VENV/bin/python

# AWS's default quotas, as the limiter holds them, as JSON on stdout.
quotas_json() {
    "$PY" - "$REPO/src/aws/limiter.rs" <<'EOF'
import json, re, sys
text = open(sys.argv[1]).read()
table = text[text.index("pub const AWS_DEFAULT_QUOTAS"):]
table = table[: table.index("];")]
quotas = {name: float(rate) for name, rate in re.findall(r'\("(\w+)", ([0-9.]+)\)', table)}
default = float(re.search(r"pub const DEFAULT_RATE: f64 = ([0-9.]+);", text).group(1))
print(json.dumps({"quotas": quotas, "default": default}))
EOF
}

# ---------------------------------------------------------------- the table

# print_table RESULTS QUOTAS
print_table() {
"$PY" - "$1" "$2" "$due_percent" "$profile" <<'EOF'
import json, sys, datetime, os, platform
results = [json.loads(l) for l in open(sys.argv[1])]
table = json.load(open(sys.argv[2]))
quotas, default = table["quotas"], table["default"]
due, profile = sys.argv[3], sys.argv[4]

# Listings read a page after another, before the work they lead to.
PAGES = {"ListThings", "ListCertificatesByCA", "SearchIndex"}

def time_of(api, calls):
    return calls / quotas.get(api, default)

def at_quotas(requests):
    """The busiest API after the pages (its name and calls), and the time at AWS's quotas: the
    pages one after another, then the busiest API."""
    pages = sum(time_of(api, n) for api, n in requests.items() if api in PAGES)
    rest = {api: n for api, n in requests.items() if api not in PAGES}
    worst = max(rest.items(), key=lambda kv: time_of(*kv), default=("-", 0))
    return worst[0], worst[1], pages + time_of(*worst)

def duration(s):
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"

print()
when = datetime.datetime.fromtimestamp(results[0].get("at", 0) or datetime.datetime.now().timestamp(),
                                      datetime.timezone.utc)
print(f"Fleet commands in moto, {due}% of the devices due for renewal ({profile} zkiot, "
      f"{os.cpu_count()} CPUs, run of {when:%Y-%m-%d %H:%M} UTC)")
print("at AWS quotas: the pages one after another, then the busiest API's calls / its default quota")
print()
print(f"{'devices':>8} {'command':<12} {'version':<7} {'calls':>8} {'per device':>11} "
      f"{'busiest API after pages (calls)':<34} {'at AWS quotas':>13} {'in moto':>9}")
for r in results:
    calls = sum(r["requests"].values())
    api, api_calls, seconds = at_quotas(r["requests"])
    print(f"{r['devices']:>8} {r['command']:<12} {r['version']:<7} {calls:>8} "
          f"{calls / r['devices']:>11.3f} {f'{api} ({api_calls})':<34} {duration(seconds):>13} "
          f"{duration(r['wall']):>9}")

# Calls a run makes once whatever the fleet (the CA, the policy, the role): not scaled.
ONCE = {"DescribeCACertificate", "GetPolicy", "GetRole", "DescribeRoleAlias", "DescribeEndpoint",
        "GetIndexingConfiguration", "DescribeThingType", "CreateThingType"}
print()
print(f"projected to 100,000 devices ({due}% due), from each command's largest run:")
for label in sorted({(r["command"], r["version"]) for r in results}, key=lambda k: (k[0], k[1] != "before")):
    r = max((r for r in results if (r["command"], r["version"]) == label), key=lambda r: r["devices"])
    scale = 100_000 / r["devices"]
    projected = {api: n if api in ONCE else n * scale for api, n in r["requests"].items()}
    api, _, seconds = at_quotas(projected)
    line = (f"  {r['command']:<12} {r['version']:<7} {duration(seconds):>10} "
            f"(busiest: {api}; from {r['devices']:,} devices)")
    if r["command"] == "fleet renew" and r["version"] == "after":
        line += f"   target < 10 min: {'met' if seconds < 600 else 'NOT MET'}"
    print(line)
EOF
}

if [ -n "$report" ]; then
    quotas=$(mktemp "${TMPDIR:-/tmp}/zkiot-bench-fleet-quotas.XXXXXX")
    quotas_json >"$quotas"
    print_table "$report" "$quotas"
    rm -f "$quotas"
    exit 0
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/zkiot-bench-fleet.XXXXXX")
pids=()
before_tree=""
cleanup() {
    stop_servers
    if [ -n "$before_tree" ]; then git worktree remove --force "$before_tree" >/dev/null 2>&1 || true; fi
    if [ "$keep" = 1 ]; then echo "work folder: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# ---------------------------------------------------------------- the binaries

build_flags=(--quiet -p zkiot)
[ "$profile" = release ] && build_flags+=(--release)
versions=()
if [ -n "$before_bin" ]; then
    [ -x "$before_bin" ] || die "--before-bin $before_bin is not an executable"
    cp "$before_bin" "$WORK/zkiot-before"
    versions+=(before)
elif [ "$before" != none ]; then
    echo "Building zkiot at $before (before)…" >&2
    before_tree=$WORK/before-src
    git worktree add --detach --quiet "$before_tree" "$before" || die "no commit $before"
    (cd "$before_tree" && cargo build "${build_flags[@]}") || die "cannot build $before"
    cp "$CARGO_TARGET_DIR/$profile/zkiot" "$WORK/zkiot-before"
    git worktree remove --force "$before_tree"
    before_tree=""
    versions+=(before)
fi
echo "Building zkiot from this tree (after)…" >&2
cargo build "${build_flags[@]}"
cp "$CARGO_TARGET_DIR/$profile/zkiot" "$WORK/zkiot-after"
versions+=(after)

QUOTAS=$WORK/quotas.json
quotas_json >"$QUOTAS"

# AWS credentials and region for moto; no user configuration.
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
export AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1
export AWS_CONFIG_FILE=$WORK/aws-config AWS_SHARED_CREDENTIALS_FILE=$WORK/aws-config
: >"$AWS_CONFIG_FILE"
unset AWS_PROFILE AWS_SESSION_TOKEN ZKIOT_API_RATE ZKIOT_THROTTLE_WAIT

# ---------------------------------------------------------------- moto and the counting proxy

wait_port() { # FILE: waits for a server to write its port there
    for _ in $(seq 1 300); do
        [ -s "$1" ] && return 0
        sleep 0.1
    done
    die "no server wrote $1"
}
start_servers() { # DIR
    local dir=$1
    "$PY" -c "import os, sys
from moto.core.config import default_user_config as c
c['iot']['use_valid_cert'] = True
from werkzeug.serving import make_server
from moto.server import DomainDispatcherApplication, create_backend_app
server = make_server('127.0.0.1', 0, DomainDispatcherApplication(create_backend_app), threaded=True)
open(sys.argv[1] + '.tmp', 'w').write(str(server.server_port))
os.replace(sys.argv[1] + '.tmp', sys.argv[1])
server.serve_forever()" "$dir/moto.port" >"$dir/moto.log" 2>&1 </dev/null &
    pids+=($!)
    wait_port "$dir/moto.port"
    MOTO=http://127.0.0.1:$(cat "$dir/moto.port")
    "$PY" "$REPO/tests/awsfault/proxy.py" --moto-url "$MOTO" --port-file "$dir/proxy.port" \
        >"$dir/proxy.log" 2>&1 </dev/null &
    pids+=($!)
    wait_port "$dir/proxy.port"
    PROXY=http://127.0.0.1:$(cat "$dir/proxy.port")
}
stop_servers() {
    local pid
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    pids=()
}

# ---------------------------------------------------------------- the CSRs, once per size

make_csrs() { # N DIR: N CSRs, the first due_percent% in DIR/due, the rest in DIR/lasting
    "$PY" - "$1" "$due_percent" "$2" <<'EOF'
import os, sys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
n, due, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
due_count = n * due // 100
for sub in ("due", "lasting"):
    os.makedirs(os.path.join(out, sub), exist_ok=True)
for i in range(n):
    name = f"fleet-{i:06d}"
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])).sign(key, hashes.SHA256())
    sub = "due" if i < due_count else "lasting"
    with open(os.path.join(out, sub, name + ".csr"), "wb") as f:
        f.write(csr.public_bytes(serialization.Encoding.PEM))
EOF
}

# ---------------------------------------------------------------- one measured command

RESULTS=$WORK/results.jsonl
: >"$RESULTS"
# measure N VERSION LABEL COMMAND...: runs it through the proxy, records calls and wall-clock.
measure() {
    local n=$1 version=$2 label=$3 t0 t1 status=0
    shift 3
    curl -sf -o /dev/null "$PROXY/zkiot-proxy/counts?reset=1"
    t0=$(date +%s.%N)
    AWS_ENDPOINT_URL=$PROXY "$@" >"$WORK/last.out" 2>&1 || status=$?
    t1=$(date +%s.%N)
    curl -sf "$PROXY/zkiot-proxy/counts" >"$WORK/counts.json"
    "$PY" - "$n" "$version" "$label" "$t0" "$t1" "$status" "$WORK/counts.json" >>"$RESULTS" <<'EOF'
import json, sys
n, version, label, t0, t1, status, counts = sys.argv[1:]
print(json.dumps({"devices": int(n), "version": version, "command": label, "wall": float(t1) - float(t0),
                  "at": float(t0),
                  "status": int(status), "requests": json.load(open(counts))["requests"]}))
EOF
    printf '  %-7s %-6s %-12s %8.1f s in moto (exit %s): %s\n' "$n" "$version" "$label" \
        "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" "$status" \
        "$(tail -n 1 "$RESULTS" | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["requests"])')" >&2
}

# provision ZKIOT ARGS…: fleet provision, run again (it resumes) when moto failed some devices
# (its server answers 500 now and then under concurrent writes).
provision() {
    local zkiot=$1 try
    shift
    for try in 1 2 3; do
        AWS_ENDPOINT_URL=$MOTO "$zkiot" fleet provision --concurrency 16 "$@" "${off[@]}" && return 0
        echo "(moto failed some devices; again, try $((try + 1)))"
    done
    return 1
}

check_renewed() { # EXPECTED: the last output says that many were renewed
    grep -q ": $1 renewed, " "$WORK/last.out" && grep -q " 0 failed" "$WORK/last.out" ||
        die "fleet renew did not renew $1 devices: $(tail -n 5 "$WORK/last.out")"
}

# ---------------------------------------------------------------- the runs

for n in $sizes; do
    csrs=$WORK/csrs-$n
    echo "Making $n CSRs ($due_percent% due)…" >&2
    make_csrs "$n" "$csrs"
    due_count=$((n * due_percent / 100))
    for version in "${versions[@]}"; do
        zkiot=$WORK/zkiot-$version
        dir=$WORK/$version-$n
        mkdir -p "$dir"
        export ZKIOT_HOME=$dir/home
        start_servers "$dir"
        # The limiter's switch, where the version has one.
        off=()
        [ "$version" = after ] && off=(--api-rate '*=off')
        echo "Setting up and provisioning $n devices with $version…" >&2
        {
            AWS_ENDPOINT_URL=$MOTO "$zkiot" ca init &&
                AWS_ENDPOINT_URL=$MOTO "$zkiot" aws register-ca &&
                AWS_ENDPOINT_URL=$MOTO "$zkiot" aws setup &&
                provision "$zkiot" --csr-dir "$csrs/lasting" &&
                if [ "$due_count" -gt 0 ]; then provision "$zkiot" --csr-dir "$csrs/due" --days 20; fi
        } >"$dir/setup.log" 2>&1 || die "$version: set-up failed: $(tail -n 20 "$dir/setup.log")"
        measure "$n" "$version" "fleet renew" "$zkiot" fleet renew "${off[@]}"
        check_renewed "$due_count"
        # The old status read every device one after another: measured on the smallest fleet.
        if [ "$version" = after ] || [ "$n" = "${sizes%% *}" ]; then
            measure "$n" "$version" "aws status" "$zkiot" aws status "${off[@]}"
        fi
        if [ "$version" = after ]; then
            measure "$n" "$version" "aws audit" "$zkiot" aws audit "${off[@]}"
        fi
        stop_servers
    done
done

print_table "$RESULTS" "$QUOTAS"
