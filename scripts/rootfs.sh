#!/usr/bin/env bash
# Root file systems of the platforms the packages are tested on, built with
# mmdebstrap from Debian's archive and cached as tar files outside the clone.
#
#   scripts/rootfs.sh build NAME          make sure NAME's cached tar exists (builds it if not)
#   scripts/rootfs.sh unpack NAME DIR     a fresh copy of NAME in DIR (builds it first if needed)
#   scripts/rootfs.sh sysroot NAME        print the folder of an unpacked copy kept in the cache,
#                                         for cross-linking (headers and libraries of NAME)
#   scripts/rootfs.sh host-tools          install mmdebstrap, arch-test, qemu-user-static; enable binfmt
#   scripts/rootfs.sh list                the names
#
# NAME is bookworm-arm64 (Raspberry Pi OS 12's base, run under qemu-user) or
# trixie-amd64 (Debian 13 with its OpenSSL 3.5, curl 8.14, libp11 0.4.13 and
# pkcs11-provider). Cache folder: $ZKIOT_ROOTFS_CACHE (default /var/tmp/zkiot-rootfs).
# A cached tar is rebuilt when its stamp (suite, architecture, package list) changes.
# Run as root.
set -euo pipefail

CACHE=${ZKIOT_ROOTFS_CACHE:-/var/tmp/zkiot-rootfs}
MIRROR=${ZKIOT_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${ZKIOT_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}

# What the checks inside run: the libp11 engine with openssl, curl, OpenSC's
# pkcs11-tool, p11-kit and GnuTLS; the packages under test bring nothing else.
COMMON_PACKAGES=openssl,curl,libengine-pkcs11-openssl,opensc,p11-kit,p11-kit-modules,gnutls-bin

log() { printf 'rootfs: %s\n' "$*" >&2; }

usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; }

# suite, architecture and extra packages of each NAME.
describe() {
    case $1 in
    # libssl-dev: the rootfs doubles as the sysroot the arm64 build links against.
    bookworm-arm64) echo "bookworm arm64 $COMMON_PACKAGES,libssl-dev" ;;
    trixie-amd64) echo "trixie amd64 $COMMON_PACKAGES,pkcs11-provider" ;;
    *)
        echo "rootfs: unknown root file system '$1' (bookworm-arm64 | trixie-amd64)" >&2
        return 2
        ;;
    esac
}

host_tools() {
    local missing=() pkg
    # arch-test is only recommended by mmdebstrap, which needs it for a foreign
    # architecture (arm64 on amd64).
    for pkg in mmdebstrap arch-test qemu-user-static binfmt-support; do
        [ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" = "install ok installed" ] ||
            missing+=("$pkg")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" </dev/null >/dev/null
    fi
    enable_qemu_aarch64
}

# Foreign binaries run through the kernel's binfmt_misc and qemu-aarch64-static
# (registered with the F flag, so it works inside a chroot too).
enable_qemu_aarch64() {
    [ "$(uname -m)" = aarch64 ] && return 0
    if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    fi
    if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
        update-binfmts --enable qemu-aarch64
    fi
    grep -qx enabled /proc/sys/fs/binfmt_misc/qemu-aarch64
}

stamp_of() { printf '%s\n' "$(describe "$1")" "$MIRROR" "$SECURITY_MIRROR" | sha256sum | cut -d' ' -f1; }

build() {
    local name=$1 suite arch packages tar=$CACHE/$1.tar stamp=$CACHE/$1.stamp want
    read -r suite arch packages < <(describe "$name")
    want=$(stamp_of "$name")
    mkdir -p "$CACHE"
    # One builder at a time per root file system; the others wait and reuse its tar.
    exec {lock}>"$CACHE/$name.lock"
    flock "$lock"
    if [ -f "$tar" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        log "$name: cached ($tar)"
        return 0
    fi
    host_tools
    log "$name: building with mmdebstrap (Debian $suite, $arch)"
    local started=$SECONDS
    rm -f "$stamp" "$tar.partial"
    mmdebstrap --quiet --format=tar --variant=apt --architectures="$arch" --include="$packages" \
        --aptopt='Acquire::Retries "3"' \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        "$suite" "$tar.partial" \
        "deb $MIRROR $suite main" "deb $MIRROR $suite-updates main" \
        "deb $SECURITY_MIRROR $suite-security main"
    mv "$tar.partial" "$tar"
    echo "$want" >"$stamp"
    log "$name: built in $((SECONDS - started)) s ($(du -h "$tar" | cut -f1))"
}

unpack() {
    local name=$1 dir=$2
    build "$name"
    [ "${name#*-}" = arm64 ] && enable_qemu_aarch64
    mkdir -p "$dir"
    tar -C "$dir" -xf "$CACHE/$name.tar"
}

# An unpacked copy, kept until the tar changes: the arm64 build links against it.
sysroot() {
    local name=$1 dir=$CACHE/$1.sysroot
    build "$name"
    if [ ! -f "$dir/.stamp" ] || ! cmp -s "$dir/.stamp" "$CACHE/$name.stamp"; then
        rm -rf "$dir"
        mkdir -p "$dir"
        tar -C "$dir" -xf "$CACHE/$name.tar"
        cp "$CACHE/$name.stamp" "$dir/.stamp"
    fi
    echo "$dir"
}

case ${1:-} in
build) build "${2:?name}" ;;
sysroot) sysroot "${2:?name}" ;;
unpack) unpack "${2:?name}" "${3:?folder}" ;;
host-tools) host_tools ;;
list) printf '%s\n' bookworm-arm64 trixie-amd64 ;;
-h | --help | "") usage ;;
*)
    usage >&2
    exit 2
    ;;
esac
