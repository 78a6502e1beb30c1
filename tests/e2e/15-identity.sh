#!/usr/bin/env bash
# One device, one identity: the token never shows another Zymkey's serial number or keys.
# - The README's "Without installing anything": three fresh emulated Zymkeys in a row,
#   with the default store folder and device cache.
# - A Zymkey swapped under a configured store: a new emulator state, the same store folder.
# - A golden SD image: the store folder and device cache of one emulated device copied to
#   another, as a cloned image carries them.
# In each case the token shows the device's own serial number, its first CSR verifies,
# the device IDs differ, and no device shows another's certificate. The emulator tells
# its devices apart by state directory (zkemu_state_fingerprint); on hardware, the module
# does so by the boot id, which the Rust tests of the token cover (token/tests/module.rs).
# shellcheck source=tests/e2e/lib.sh
source "$(dirname "$0")/lib.sh"
e2e_init
if [ "$BACKEND" != zkiot ]; then
    skip "emulated Zymkeys only"
    e2e_summary
    exit
fi
ZKIOT=$TARGET_DIR/$PROFILE/zkiot
require_file "$ZKIOT" "the zkiot tool"

export ZKIOT_ZKLIB=$EMULATOR ZKIOT_PKCS11_MODULE=$MODULE
unset ZKIOT_CONF ZKIOT_EMU_MODEL ZKIOT_EMU_TRACE XDG_DATA_HOME ZKIOT_TOKEN_LABEL

# The default store folder: ~/.local/share/zkiot, or /var/lib/zkiot for root. As root,
# each command runs in its own mount namespace with $T/system bound over /var/lib/zkiot,
# so the machine's own folder is never touched.
mkdir -p "$T/home" "$T/system"
export HOME=$T/home
if [ "$(id -u)" -eq 0 ] && [ ! -e /var/lib/zkiot ]; then
    mkdir -p /var/lib/zkiot
    on_exit "rmdir /var/lib/zkiot"
fi
with_default_folder() {
    if [ "$(id -u)" -ne 0 ]; then
        "$@"
        return
    fi
    unshare --mount --propagation private sh -c \
        'mount --bind "$0" /var/lib/zkiot && exec "$@"' "$T/system" "$@"
}
if [ "$(id -u)" -eq 0 ] && ! with_default_folder true 2>/dev/null; then
    skip "the default-folder cases (root without mount namespaces)"
    DEFAULT_FOLDER=0
else
    DEFAULT_FOLDER=1
fi

# The serial number the emulated device at $1 was created with.
emulated_serial() { sed -n 's/.*"serial": *"\([^"]*\)".*/\1/p' "$1/device.json" 2>/dev/null; }
# expected_id SERIAL: the device ID of the Zymkey SERIAL on this host (src/device/id.rs).
expected_id() {
    local source host=""
    for source in /proc/device-tree/serial-number /sys/firmware/devicetree/base/serial-number \
        /etc/machine-id; do
        [ -r "$source" ] || continue
        host=$(tr -d '\0' <"$source" | tr -d '[:space:]')
        [ -n "$host" ] && break
    done
    [ -n "$1" ] || return
    printf 'zkiot-device-id-v1\nzymkey-serial=%s\nhost-serial=%s\n' "$1" "$host" |
        sha256sum | cut -d' ' -f1
}

# token_serial [RUN...]: the serial number pkcs11-tool -L shows, run through RUN.
token_serial() { "$@" pkcs11-tool --module "$MODULE" -L 2>/dev/null | sed -n 's/^ *serial num *: *//p'; }

# check_device NAME RUN...: the device of $ZKIOT_EMU_DIR, through RUN (a prefix such as
# with_default_folder, or nothing), shows its own serial, and its first CSR verifies.
# Leaves its device ID in $DEVICE_ID.
check_device() {
    local name=$1
    shift
    local shown
    # The ID first: a signature that does not verify against a stale cache drops it,
    # which would hide the defect from the commands after it.
    DEVICE_ID=$("$@" "$ZKIOT" device id --hex 2>"$T/$name.id.err")
    expect_eq "$name: zkiot device id hashes this Zymkey's serial number" \
        "$(expected_id "$(emulated_serial "$ZKIOT_EMU_DIR")")" "$DEVICE_ID"
    shown=$(token_serial "$@")
    check "$name: the module opened this emulated Zymkey" test -s "$ZKIOT_EMU_DIR/device.json"
    expect_eq "$name: pkcs11-tool -L shows its own serial number" \
        "$(emulated_serial "$ZKIOT_EMU_DIR")" "$shown"
    check "$name: openssl req makes its first CSR" "$@" openssl req -new -engine pkcs11 \
        -keyform engine -key "$KEY_URI" -subj "/CN=$name" -out "$T/$name.csr"
    check_csr "$name: that CSR's self-signature verifies" "$T/$name.csr"
}

expect_distinct() {
    local name=$1
    shift
    local n
    n=$(printf '%s\n' "$@" | sort -u | grep -c .)
    expect_eq "$name" "$#" "$n"
}

# 1. The README: a fresh emulated Zymkey, three times in a row.
if [ "$DEFAULT_FOLDER" = 1 ]; then
    ids=()
    for n in 1 2 3; do
        export ZKIOT_EMU_DIR
        ZKIOT_EMU_DIR=$(mktemp -d "$T/fresh$n.XXXXXX")
        check_device "fresh$n" with_default_folder
        ids+=("$DEVICE_ID")
    done
    expect_distinct "three fresh emulated Zymkeys have three device IDs" "${ids[@]}"
fi

# 2. A Zymkey swapped under a configured store: the certificate written for the first
# one is not shown beside the second one's key, and comes back with the first one.
export ZKIOT_CONF=$T/swap.toml
printf 'store = "%s"\n' "$T/swap/token.sqlite3" >"$ZKIOT_CONF"
export ZKIOT_EMU_DIR=$T/swap-first
check_device swap-first
first_id=$DEVICE_ID
issue_cert_self() {
    openssl req -x509 -in "$T/swap-first.csr" -engine pkcs11 -keyform engine -key "$KEY_URI" \
        -days 1 -outform DER -out "$T/swap-first.der"
}
check "swap-first: a certificate for its key" issue_cert_self
check "swap-first: the certificate written to the token" \
    pkcs11-tool --module "$MODULE" --write-object "$T/swap-first.der" --type cert \
    --id 0000 --label slot0
certs() { pkcs11-tool --module "$MODULE" -O --type cert 2>/dev/null | grep -c '^Certificate Object' || true; }
expect_eq "swap-first: the token shows one certificate" 1 "$(certs)"
export ZKIOT_EMU_DIR=$T/swap-second
check_device swap-second
expect_eq "swap-second: the first Zymkey's certificate is not shown" 0 "$(certs)"
expect_distinct "the swapped Zymkeys have two device IDs" "$first_id" "$DEVICE_ID"
check "swap-second: the first Zymkey's store is kept aside" \
    test -s "$T/swap/token.sqlite3.$(emulated_serial "$T/swap-first")"
export ZKIOT_EMU_DIR=$T/swap-first
expect_eq "swap-first again: its own serial number" \
    "$(emulated_serial "$ZKIOT_EMU_DIR")" "$(token_serial)"
expect_eq "swap-first again: its certificate is back" 1 "$(certs)"

# 3. A golden image: the store folder and device cache of a device that signed and
# holds a certificate, copied beside another device.
export ZKIOT_CONF=$T/golden.toml
printf 'store = "%s"\n' "$T/golden/token.sqlite3" >"$ZKIOT_CONF"
export ZKIOT_EMU_DIR=$T/golden-emu
check_device golden
golden_id=$DEVICE_ID
check "golden: a certificate written to the token" \
    pkcs11-tool --module "$MODULE" --write-object "$T/swap-first.der" --type cert \
    --id 0000 --label slot0
check "golden: its store folder and device cache are there" \
    test -s "$T/golden/token.sqlite3.device.toml"
clone_ids=()
for n in 1 2; do
    cp -a "$T/golden" "$T/clone$n"
    export ZKIOT_CONF=$T/clone$n.toml
    printf 'store = "%s"\n' "$T/clone$n/token.sqlite3" >"$ZKIOT_CONF"
    export ZKIOT_EMU_DIR=$T/clone$n-emu
    check_device "clone$n"
    clone_ids+=("$DEVICE_ID")
    expect_eq "clone$n: the golden device's certificate is not shown" 0 "$(certs)"
done
expect_distinct "the golden device and two clones have three device IDs" \
    "$golden_id" "${clone_ids[@]}"

e2e_summary
