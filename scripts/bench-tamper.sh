#!/usr/bin/env bash
# Breach to report: how long from a perimeter breach on N devices at once (injected into their
# emulated Zymkeys, each with its agent running and its channels set to notify) to the report
# on each device's Thing (zkiot_tamper), through the local credentials provider's IAM gate and
# moto, over several rounds; and, as the peer measured in the same run, one UpdateThing of the
# same attribute through the same gate with a device's credentials (boto3): what the path to
# AWS costs at least. Prints the median and worst delay and their ratio to the peer.
#
# Usage: scripts/bench-tamper.sh [-n DEVICES] [--rounds N]
#
#   -n, --devices N   devices breached at once (default: 10)
#   --rounds N        rounds, each a clear then a breach on every device (default: 3)
#
# The figures are loopback stand-ins: AWS's own latency comes on top of both. Needs the test
# venv (scripts/install-deps.sh) and a workspace build (`cargo build --workspace`, the same
# CARGO_TARGET_DIR). Runs tests/device_tamper.rs's ignored benchmark.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

usage() { sed -n '2,/^set -euo/s/^# \{0,1\}//p' "$0" | sed '$d'; }
die() { printf 'bench-tamper: %s\n' "$*" >&2; exit 1; }

devices=10 rounds=3
while [ $# -gt 0 ]; do
    case $1 in
    -n | --devices) devices=${2:?$1 needs a value}; shift 2 ;;
    --rounds) rounds=${2:?--rounds needs a value}; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
    esac
done
[[ $devices =~ ^[1-9][0-9]*$ ]] || die "-n needs a positive number"
[[ $rounds =~ ^[1-9][0-9]*$ ]] || die "--rounds needs a positive number"

cargo build --quiet --workspace
ZKIOT_BENCH_DEVICES=$devices ZKIOT_BENCH_ROUNDS=$rounds \
    cargo test --quiet -p zkiot --test device_tamper -- --ignored --exact bench_breach_to_report --nocapture 2>&1 |
    sed -n '/^breach to report/,/ratio/p'
