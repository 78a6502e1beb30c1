#!/usr/bin/env bash
# Runs the end-to-end tests (the numbered scripts beside this file) and prints
# "N passed, M failed". Exits non-zero when any check fails.
#
#   tests/e2e/run.sh              all tests
#   tests/e2e/run.sh 20 python    only the scripts whose name contains 20 or python
#
# See lib.sh for the environment variables (module path, backend, target dir).
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
per_test_timeout=${ZKIOT_E2E_TIMEOUT:-600}

scripts=()
for script in "$here"/[0-9][0-9]-*.sh; do
    name=$(basename "$script")
    if [ $# -gt 0 ]; then
        match=0
        for pattern in "$@"; do
            [[ $name == *"$pattern"* ]] && match=1
        done
        [ $match = 1 ] || continue
    fi
    scripts+=("$script")
done

passed=0
failed=0
started=$(date +%s)
for script in "${scripts[@]}"; do
    name=$(basename "$script" .sh)
    echo "== $name"
    log=$(mktemp)
    t0=$(date +%s)
    timeout --kill-after=10 "$per_test_timeout" bash "$script" 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    p=$(grep -c '^PASS:' "$log")
    f=$(grep -c '^FAIL:' "$log")
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "FAIL: $name exited with status $rc"
        f=1
    fi
    rm -f "$log"
    passed=$((passed + p))
    failed=$((failed + f))
    echo "-- $name: $p passed, $f failed ($(($(date +%s) - t0)) s)"
done

echo "== ${#scripts[@]} test scripts in $(($(date +%s) - started)) s"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "${#scripts[@]}" -gt 0 ]
