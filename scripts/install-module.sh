#!/usr/bin/env bash
# Installs the zkiot PKCS#11 module and registers it with p11-kit, so that libp11
# (openssl, curl), GnuTLS and every other p11-kit aware program find the Zymkey token
# with no environment variable or module path.
#
#   scripts/install-module.sh [--prefix DIR] [--lib-dir DIR] [--emulator]
#   scripts/install-module.sh --uninstall [--prefix DIR]
#
#   --prefix DIR   install under DIR/lib/zkiot (default /usr/local)
#   --lib-dir DIR  take the built libraries from DIR (default: the release build in
#                  $CARGO_TARGET_DIR or ./target, built first if it is missing)
#   --emulator     also install the emulator (libzkemu.so) and write the module's
#                  system configuration /etc/zkiot/zkiot.toml pointing at it
#                  (for development machines without a Zymkey)
#   --uninstall    remove exactly the files a previous install wrote
#
# Registration: as root, /etc/pkcs11/modules/zkiot.module (p11-kit ignores the
# per-user folder in programs running as root); otherwise
# ~/.config/pkcs11/modules/zkiot.module. The list of written files is kept in
# DIR/lib/zkiot/install-manifest, which --uninstall reads.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
prefix=/usr/local
lib_dir=""
emulator=0
uninstall=0

usage() { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
    case $1 in
    --prefix) prefix=$2; shift 2 ;;
    --prefix=*) prefix=${1#*=}; shift ;;
    --lib-dir) lib_dir=$2; shift 2 ;;
    --lib-dir=*) lib_dir=${1#*=}; shift ;;
    --emulator) emulator=1; shift ;;
    --uninstall) uninstall=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "install-module: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
done

log() { printf 'install-module: %s\n' "$*"; }

install_dir=$prefix/lib/zkiot
manifest=$install_dir/install-manifest
if [ "$(id -u)" -eq 0 ]; then
    p11kit_dir=/etc/pkcs11/modules
else
    p11kit_dir=${XDG_CONFIG_HOME:-$HOME/.config}/pkcs11/modules
fi
module_file=$p11kit_dir/zkiot.module
config_file=/etc/zkiot/zkiot.toml

# The manifest lists every file written, then every folder created (ending in /),
# deepest first; uninstall removes the files, then those folders if they are empty.
remove_installed() {
    [ -f "$manifest" ] || return 0
    local entries path
    mapfile -t entries <"$manifest"
    rm -f -- "$manifest"
    for path in "${entries[@]}"; do
        case $path in
        "") ;;
        */) rmdir -- "$path" 2>/dev/null && log "removed folder $path" ;;
        *)
            if [ -e "$path" ] || [ -L "$path" ]; then
                rm -f -- "$path"
                log "removed $path"
            fi
            ;;
        esac
    done
    return 0
}

if [ $uninstall = 1 ]; then
    if [ ! -f "$manifest" ]; then
        log "nothing installed under $install_dir"
        exit 0
    fi
    remove_installed
    log "uninstalled"
    exit 0
fi

# Which files a previous install of ours wrote: only those may be overwritten.
previously_installed() { [ -f "$manifest" ] && grep -qxF -- "$1" "$manifest"; }
refuse_foreign() {
    if [ -e "$1" ] && ! previously_installed "$1"; then
        echo "install-module: $1 exists and was not written by this script; move it away first" >&2
        exit 1
    fi
}

if [ -z "$lib_dir" ]; then
    target=${CARGO_TARGET_DIR:-$REPO/target}
    lib_dir=$target/release
    packages=(-p zkpkcs11)
    if [ $emulator = 1 ]; then packages+=(-p zkemu); fi
    if [ ! -f "$lib_dir/libzkpkcs11.so" ] || { [ $emulator = 1 ] && [ ! -f "$lib_dir/libzkemu.so" ]; }; then
        log "building ${packages[*]} (release)"
        (cd "$REPO" && cargo build --release "${packages[@]}")
    fi
fi
libs=(libzkpkcs11.so)
if [ $emulator = 1 ]; then libs+=(libzkemu.so); fi
for lib in "${libs[@]}"; do
    if [ ! -f "$lib_dir/$lib" ]; then
        echo "install-module: $lib_dir/$lib not found (build it with cargo build)" >&2
        exit 1
    fi
done

refuse_foreign "$module_file"
if [ $emulator = 1 ]; then refuse_foreign "$config_file"; fi

# Start from a clean slate: a re-install replaces what the previous one wrote.
remove_installed

written=()
created_dirs=()
# make_dir DIR: mkdir -p, remembering each folder it creates.
make_dir() {
    local line
    while IFS= read -r line; do
        line=${line#*created directory }
        line=${line#[\'\"]}
        line=${line%[\'\"]}
        created_dirs=("$line/" "${created_dirs[@]}")
    done < <(mkdir -pv -- "$1")
}

make_dir "$install_dir"
install -m 0755 "$lib_dir/libzkpkcs11.so" "$install_dir/libzkpkcs11.so"
written+=("$install_dir/libzkpkcs11.so")
log "installed $install_dir/libzkpkcs11.so"

make_dir "$p11kit_dir"
printf '# zkiot: the Zymkey as a PKCS#11 token\nmodule: %s\n' "$install_dir/libzkpkcs11.so" >"$module_file"
chmod 0644 "$module_file"
written+=("$module_file")
log "registered with p11-kit: $module_file"

if [ $emulator = 1 ]; then
    install -m 0755 "$lib_dir/libzkemu.so" "$install_dir/libzkemu.so"
    written+=("$install_dir/libzkemu.so")
    log "installed $install_dir/libzkemu.so (emulator: no security boundary)"
    make_dir "$(dirname "$config_file")"
    printf '# Written by scripts/install-module.sh --emulator: the token runs on the\n# emulator, not on a Zymkey. Remove zklib to use /usr/lib/libzk_app_utils.so.\nzklib = "%s"\n' \
        "$install_dir/libzkemu.so" >"$config_file"
    chmod 0644 "$config_file"
    written+=("$config_file")
    log "wrote $config_file (zklib = $install_dir/libzkemu.so)"
fi

printf '%s\n' "${written[@]}" "${created_dirs[@]}" >"$manifest"
log "done; check with: p11-kit list-modules"
