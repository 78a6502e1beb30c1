#!/usr/bin/env bash
# The packages on the platforms users run: builds them (scripts/package.sh), installs
# them with dpkg -i in a fresh root file system of that platform (scripts/rootfs.sh)
# and runs checks.sh there with the platform's own openssl, curl, libp11,
# pkcs11-provider, OpenSC and p11-kit. Prints "N passed, M failed".
#
#   tests/rootfs/run.sh [--no-build] [NAME...]
#
#   NAME          bookworm-arm64 (under qemu-user), trixie-amd64; default: both
#
# Each platform runs one emulated model: a production ZYMKEY5 (its key store found
# through the slot list) on the Pi's Debian 12 arm64, the default ZYMKEY4i elsewhere.
#   --no-build    use the packages already in $CARGO_TARGET_DIR/debian
#
# Root only (chroot, mounts). Uses CARGO_TARGET_DIR like the other tests; the
# root file systems are cached in $ZKIOT_ROOTFS_CACHE (see scripts/rootfs.sh).
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$here/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
build=1
if [ "${1:-}" = --no-build ]; then
    build=0
    shift
fi
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(bookworm-arm64 trixie-amd64)

if [ "$(id -u)" -ne 0 ]; then
    echo "rootfs tests: need root (chroot)"
    echo "0 passed, 1 failed"
    exit 1
fi

passed=0
failed=0
started=$(date +%s)

run_one() {
    local name=$1 arch=${1#*-} root log t0 rc
    t0=$(date +%s)
    echo "== $name"
    if [ $build = 1 ] && ! "$REPO/scripts/package.sh" --arch "$arch" --no-operator >"$CARGO_TARGET_DIR/package-$arch.log" 2>&1; then
        echo "FAIL: scripts/package.sh --arch $arch (log: $CARGO_TARGET_DIR/package-$arch.log)"
        tail -n 25 "$CARGO_TARGET_DIR/package-$arch.log" | sed 's/^/      | /'
        failed=$((failed + 1))
        return
    fi
    root=$(mktemp -d "${TMPDIR:-/var/tmp}/zkiot-rootfs-$name.XXXXXX")
    # Unmount and delete the copy whatever happens (the mounts first: rm must not follow them).
    # shellcheck disable=SC2064 # expand $root now
    trap "umount -l '$root/proc' '$root/dev' 2>/dev/null; rm -rf --one-file-system '$root'" RETURN
    if ! "$REPO/scripts/rootfs.sh" unpack "$name" "$root"; then
        echo "FAIL: scripts/rootfs.sh unpack $name"
        failed=$((failed + 1))
        return
    fi
    mkdir -p "$root/opt/zkiot-tests/debs"
    cp "$CARGO_TARGET_DIR"/debian/zkiot-device_*_"$arch".deb \
        "$CARGO_TARGET_DIR"/debian/zkiot-emulator_*_"$arch".deb "$root/opt/zkiot-tests/debs/"
    cp -r "$REPO/tests/e2e" "$here/checks.sh" "$root/opt/zkiot-tests/"
    mount -t proc proc "$root/proc"
    # /dev alone (not its submounts), private: nothing done here reaches the host's /dev.
    mount --bind /dev "$root/dev"
    mount --make-private "$root/dev"
    log=$(mktemp)
    local model=ZYMKEY4i
    [ "$name" = bookworm-arm64 ] && model=ZYMKEY5
    # A clean environment: nothing tells the tools where the module is.
    timeout --kill-after=10 "${ZKIOT_ROOTFS_TIMEOUT:-900}" \
        chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
        LANG=C.UTF-8 TMPDIR=/tmp ZKIOT_PLATFORM="$name" ZKIOT_ROOTFS_MODEL="$model" \
        /bin/bash /opt/zkiot-tests/checks.sh 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    local p f
    p=$(grep -c '^PASS:' "$log")
    f=$(grep -c '^FAIL:' "$log")
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "FAIL: checks.sh on $name exited with status $rc"
        f=1
    fi
    rm -f "$log"
    passed=$((passed + p))
    failed=$((failed + f))
    echo "-- $name: $p passed, $f failed ($(($(date +%s) - t0)) s)"
}

for name in "${names[@]}"; do
    run_one "$name"
done
echo "== ${#names[@]} platforms in $(($(date +%s) - started)) s"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
