#!/usr/bin/env bash
# Builds the Debian packages of zkiot into target/debian/ (or $CARGO_TARGET_DIR/debian/):
#
#   zkiot-device     the PKCS#11 module, registered with p11-kit, the device build of
#                    the zkiot tool (no AWS SDK) and the device agent's systemd unit,
#                    enabled on installation (scripts/debian/); for a Raspberry Pi with
#                    a Zymkey
#   zkiot-emulator   the emulator of Zymbit's library and a configuration file
#                    (/etc/zkiot/zkiot.toml) that points the module at it
#   zkiot            the operator's flavour: the same module and the full zkiot tool
#                    (with the AWS SDK); it replaces zkiot-device (built for amd64 only)
#
#   scripts/package.sh [--arch amd64|arm64] [--no-operator]
#
#   --arch ARCH     Debian architecture to build for (default: this machine's).
#                   arm64 cross-builds with rustup's aarch64-unknown-linux-gnu target and
#                   Debian's gcc-aarch64-linux-gnu, linking against the arm64 root file
#                   system of scripts/rootfs.sh (its libssl-dev) as sysroot.
#   --no-operator   skip the operator package (its AWS SDK takes long to build)
#
# Binaries are stripped; their debug information is kept beside the packages in
# debian/debug/ARCH/ (linked from the binaries with .gnu_debuglink).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}

arch=$(dpkg --print-architecture)
operator=1
while [ $# -gt 0 ]; do
    case $1 in
    --arch) arch=$2; shift 2 ;;
    --arch=*) arch=${1#*=}; shift ;;
    --no-operator) operator=0; shift ;;
    -h | --help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "package: unknown argument $1" >&2; exit 2 ;;
    esac
done

log() { printf 'package: %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
need_debs() {
    local missing=() pkg
    for pkg in "$@"; do
        [ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" = "install ok installed" ] ||
            missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" </dev/null >/dev/null
}

native=$(dpkg --print-architecture)
cargo_target=()
case $arch in
amd64) triplet=x86_64-linux-gnu rust_target=x86_64-unknown-linux-gnu ;;
arm64) triplet=aarch64-linux-gnu rust_target=aarch64-unknown-linux-gnu ;;
*) echo "package: unsupported architecture $arch (amd64 | arm64)" >&2; exit 2 ;;
esac
[ "$arch" = amd64 ] || operator=0
binutils_prefix=""
need_debs dpkg-dev binutils
if [ "$arch" != "$native" ]; then
    [ "$arch" = arm64 ] || { echo "package: cross-building only to arm64" >&2; exit 2; }
    need_debs gcc-aarch64-linux-gnu libc6-dev-arm64-cross
    if ! rustup target list --installed | grep -qx "$rust_target"; then
        log "rustup target add $rust_target"
        rustup target add "$rust_target"
    fi
    sysroot=$("$REPO/scripts/rootfs.sh" sysroot bookworm-arm64)
    binutils_prefix=$triplet-
    cargo_target=(--target "$rust_target")
    export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=$triplet-gcc
    export CC_aarch64_unknown_linux_gnu=$triplet-gcc AR_aarch64_unknown_linux_gnu=$triplet-ar
    export AARCH64_UNKNOWN_LINUX_GNU_OPENSSL_LIB_DIR=$sysroot/usr/lib/$triplet
    export AARCH64_UNKNOWN_LINUX_GNU_OPENSSL_INCLUDE_DIR=$sysroot/usr/include
    # Debian keeps OpenSSL's configuration.h in the multiarch include folder.
    export CFLAGS_aarch64_unknown_linux_gnu="-I$sysroot/usr/include/$triplet"
    export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C link-arg=-Wl,-rpath-link,$sysroot/usr/lib/$triplet"
    built=$CARGO_TARGET_DIR/$rust_target/release
else
    built=$CARGO_TARGET_DIR/release
fi

version=$(cargo metadata --no-deps --format-version 1 |
    python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"]=="zkiot"))')
out=$CARGO_TARGET_DIR/debian
debug_dir=$out/debug/$arch
work=$out/work/$arch
rm -rf "$work"
mkdir -p "$out" "$debug_dir" "$work"

step_started=$SECONDS
log "building for $arch ($rust_target), release"
cargo build --release "${cargo_target[@]}" -p zkpkcs11 -p zkemu
# The device tool: no AWS SDK. Built before the operator's, which overwrites the binary.
cargo build --release "${cargo_target[@]}" -p zkiot --no-default-features --bin zkiot
cp "$built/zkiot" "$work/zkiot.device"
if [ $operator = 1 ]; then
    cargo build --release "${cargo_target[@]}" -p zkiot --bin zkiot
    cp "$built/zkiot" "$work/zkiot.operator"
fi
log "built in $((SECONDS - step_started)) s"

# install_stripped SRC DEST MODE: DEST gets SRC without debug information; the debug
# information goes to debug_dir, named after $package and DEST's file name.
install_stripped() {
    local src=$1 dest=$2 mode=$3 debug
    debug=$debug_dir/$package-$(basename "$dest").debug
    install -D -m "$mode" "$src" "$dest"
    "${binutils_prefix}objcopy" --only-keep-debug "$dest" "$debug"
    "${binutils_prefix}objcopy" --strip-unneeded --remove-section=.comment \
        --add-gnu-debuglink="$debug" "$dest"
    log "$(basename "$dest"): $(stat -c %s "$src") bytes, $(stat -c %s "$dest") stripped"
}

# Debian dependencies of the ELF files under a package root: libc6 at the newest
# GLIBC symbol version used, libssl3 (libssl3t64 on Debian 13) when OpenSSL is linked.
elf_depends() {
    local root=$1 files glibc needed deps=()
    mapfile -t files < <(find "$root" -path "$root/DEBIAN" -prune -o -type f -print |
        while IFS= read -r f; do [ "$(head -c4 "$f" | od -An -c | tr -d ' ')" = '177ELF' ] && echo "$f"; done)
    [ ${#files[@]} -gt 0 ] || return 0
    # Read whole outputs first: grep -q on a pipe would end readelf early (SIGPIPE).
    glibc=$(readelf -W --dyn-syms "${files[@]}" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n1)
    needed=$(readelf -d "${files[@]}" | grep NEEDED || true)
    [ -n "$glibc" ] && deps+=("libc6 (>= $glibc)")
    grep -q 'lib\(ssl\|crypto\)\.so\.3' <<<"$needed" && deps+=("libssl3 (>= 3.0.0) | libssl3t64")
    grep -q 'libgcc_s\.so\.1' <<<"$needed" && deps+=("libgcc-s1")
    local IFS=,
    echo "${deps[*]}" | sed 's/,/, /g'
}

# write_control ROOT NAME DESCRIPTION FIELDS...: DEBIAN/control, with Depends computed
# from the ELF files plus the extra dependencies in $extra_depends.
write_control() {
    local root=$1 name=$2 summary=$3 description=$4
    shift 4
    local depends size
    depends=$(elf_depends "$root")
    [ -n "${extra_depends:-}" ] && depends="$depends, $extra_depends"
    size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
    mkdir -p "$root/DEBIAN"
    {
        echo "Package: $name"
        echo "Version: $version"
        echo "Architecture: $arch"
        echo "Maintainer: zkiot <zkiot@example.invalid>"
        echo "Installed-Size: $size"
        echo "Depends: $depends"
        [ $# -eq 0 ] || printf '%s\n' "$@"
        echo "Section: admin"
        echo "Priority: optional"
        echo "Homepage: https://example.invalid/zkiot"
        echo "Description: $summary"
        # Continuation lines of the long description: one space in front, "." for a blank line.
        sed -e 's/^$/./' -e 's/^/ /' <<<"$description"
    } >"$root/DEBIAN/control"
}

copyright() {
    install -D -m 0644 /dev/stdin "$1/usr/share/doc/$2/copyright" <<'EOF'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: zkiot

Files: *
License: Apache-2.0
 On Debian systems, the full text of the Apache License 2.0 is in
 /usr/share/common-licenses/Apache-2.0.
EOF
}

build_deb() {
    local root=$1 name=$2 deb
    deb=$out/${name}_${version}_$arch.deb
    find "$root" -type d -exec chmod 0755 {} +
    dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
    log "$deb: installed size $(dpkg-deb -f "$deb" Installed-Size) KiB, file $(stat -c %s "$deb") bytes"
}

module_dir=usr/lib/$triplet/pkcs11
# The module's files, shared by zkiot-device and the operator's zkiot.
stage_module() {
    local root=$1
    install_stripped "$built/libzkpkcs11.so" "$root/$module_dir/libzkpkcs11.so" 0644
    # p11-kit resolves a relative module name in its own module folder, /usr/lib/<triplet>/pkcs11.
    install -D -m 0644 /dev/stdin "$root/usr/share/p11-kit/modules/zkiot.module" <<'EOF'
# zkiot: the Zymkey as a PKCS#11 token
module: libzkpkcs11.so
EOF
}

# Purge removes the token's store (certificates and data objects written to the token); a
# removal or an upgrade keeps it. The keys themselves live in the Zymkey. (zkiot-device's
# maintainer scripts in scripts/debian/ do the same, and look after the agent's unit.)
operator_postrm() {
    install -D -m 0755 /dev/stdin "$1/DEBIAN/postrm" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = purge ]; then
    rm -rf /var/lib/zkiot
fi
EOF
}

module_description="libzkpkcs11.so presents a Zymbit security module (Zymkey 4i, HSM4, HSM6, SCM)
as a PKCS#11 token, so that OpenSSL (libp11 engine or pkcs11-provider), curl,
GnuTLS, p11-kit and OpenSC's pkcs11-tool sign with its hardware keys. The
module is registered with p11-kit, so these find the token with no module
path. It loads Zymbit's library /usr/lib/libzk_app_utils.so at run time:
Zymbit's own packages (zkapputilslib, zkifc) provide it and talk to the device.
Check the device with: zkiot device selftest"

# ---------------------------------------------------------------- zkiot-device
package=zkiot-device root=$work/zkiot-device
stage_module "$root"
install_stripped "$work/zkiot.device" "$root/usr/bin/zkiot" 0755
# The device agent: its unit, enabled by postinst; stopped by prerm; masked on removal and
# forgotten on purge by postrm (what debhelper's dh_installsystemd does).
install -D -m 0644 "$REPO/scripts/debian/zkiot-agent.service" \
    "$root/usr/lib/systemd/system/zkiot-agent.service"
for script in postinst prerm postrm; do
    install -D -m 0755 "$REPO/scripts/debian/zkiot-device.$script" "$root/DEBIAN/$script"
done
copyright "$root" zkiot-device
extra_depends="p11-kit-modules"
write_control "$root" zkiot-device "Zymbit security module as a PKCS#11 token, device tools" \
    "$module_description

The zkiot tool of this package has the device commands (device id, csr,
install-cert, credentials, agent, check, selftest); the operator's commands
are in the package zkiot. The unit zkiot-agent.service, enabled here, runs
the device agent once the device has a certificate: it renews it and serves
AWS credentials to the device's apps on 127.0.0.1." \
    "Recommends: p11-kit, libengine-pkcs11-openssl | pkcs11-provider" \
    "Conflicts: zkiot" "Replaces: zkiot"
build_deb "$root" zkiot-device

# ---------------------------------------------------------------- zkiot-emulator
package=zkiot-emulator root=$work/zkiot-emulator
install_stripped "$built/libzkemu.so" "$root/usr/lib/$triplet/zkiot/libzkemu.so" 0644
install -D -m 0644 /dev/stdin "$root/etc/zkiot/zkiot.toml" <<EOF
# Installed by zkiot-emulator: the token runs on the emulator of Zymbit's
# library, not on a Zymkey. Its keys are files (in ~/.local/state/zkiot-emu,
# or \$ZKIOT_EMU_DIR): it is no security boundary. Remove the package (or this
# line) to use the real library, /usr/lib/libzk_app_utils.so.
zklib = "/usr/lib/$triplet/zkiot/libzkemu.so"
EOF
mkdir -p "$root/DEBIAN"
echo /etc/zkiot/zkiot.toml >"$root/DEBIAN/conffiles"
copyright "$root" zkiot-emulator
extra_depends="zkiot-device (= $version)"
write_control "$root" zkiot-emulator "emulated Zymkey for zkiot, for development and tests" \
    "libzkemu.so implements the C interface of Zymbit's libzk_app_utils over keys
kept in files, and /etc/zkiot/zkiot.toml points the zkiot PKCS#11 module at
it, so the token works on machines without a Zymkey. For development and
tests only: it is no security boundary. Never install it on a device whose
keys must stay in hardware."
build_deb "$root" zkiot-emulator

# ---------------------------------------------------------------- zkiot (operator)
if [ $operator = 1 ]; then
    package=zkiot root=$work/zkiot
    stage_module "$root"
    operator_postrm "$root"
    install_stripped "$work/zkiot.operator" "$root/usr/bin/zkiot" 0755
    copyright "$root" zkiot
    extra_depends="p11-kit-modules"
    write_control "$root" zkiot "Zymbit security module as a PKCS#11 token, operator tools" \
        "$module_description

This is the operator's flavour: its zkiot tool also has the commands that
talk to AWS IoT (ca, aws, fleet). It replaces zkiot-device." \
        "Recommends: p11-kit, libengine-pkcs11-openssl | pkcs11-provider" \
        "Conflicts: zkiot-device" "Replaces: zkiot-device" "Provides: zkiot-device (= $version)"
    build_deb "$root" zkiot
fi
rm -rf "$work"
ls -1 "$out"/*_"$version"_"$arch".deb
