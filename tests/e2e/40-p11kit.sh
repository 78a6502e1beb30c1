#!/usr/bin/env bash
# The install step (install-module.sh --emulator) registers the module with p11-kit
# (p11-kit list-modules shows it); then libp11's default module (p11-kit-proxy)
# reaches the token, and curl and openssl work with no PKCS11_MODULE_PATH and no
# module configuration in the environment; a PIN in the system configuration it
# writes guards the token, and zkiot logs in with it. Uninstalling removes it all.
# Root only.
# shellcheck source=tests/e2e/lib.sh
source "$(dirname "$0")/lib.sh"
e2e_init
ZKIOT=$TARGET_DIR/$PROFILE/zkiot
require_file "$ZKIOT" "zkiot tool (cargo build -p zkiot)"
new_token
make_pki

if [ "$(id -u)" -ne 0 ]; then
    skip "p11-kit system registration (needs root: /etc/pkcs11/modules, /etc/zkiot)"
    e2e_summary
    exit
fi
if [ -e /usr/local/lib/zkiot/install-manifest ]; then
    skip "p11-kit system registration (zkiot is already installed here; not touching it)"
    e2e_summary
    exit
fi

if [ "$BACKEND" = softhsm ]; then
    skip "p11-kit system registration (SoftHSM is registered with p11-kit already)"
    e2e_summary
    exit
fi
install_args=(--lib-dir "$(dirname "$MODULE")" --emulator)

# The module writes its store under /var/lib/zkiot when no configuration names one:
# remove what this test adds there.
store_dir=/var/lib/zkiot
store_dir_existed=0
[ -d "$store_dir" ] && store_dir_existed=1
ls -1 "$store_dir" 2>/dev/null | sort >"$T/store-before"
remove_new_store_files() {
    [ -d "$store_dir" ] || return 0
    ls -1 "$store_dir" | sort | comm -13 "$T/store-before" - | while IFS= read -r f; do
        rm -f -- "$store_dir/$f"
    done
    [ $store_dir_existed = 1 ] || rmdir "$store_dir" 2>/dev/null || true
}
on_exit remove_new_store_files
on_exit "'$REPO/scripts/install-module.sh' --uninstall"

check "install-module.sh ${install_args[*]}" \
    "$REPO/scripts/install-module.sh" "${install_args[@]}"
check "/etc/pkcs11/modules/zkiot.module names the installed module" \
    grep -qx 'module: /usr/local/lib/zkiot/libzkpkcs11.so' /etc/pkcs11/modules/zkiot.module

# From here on: no module path, no zkiot configuration in the environment. Only the
# emulator's own state (a temporary directory) and trace are set.
unset PKCS11_MODULE_PATH ZKIOT_ZKLIB ZKIOT_CONF

check "p11-kit list-modules shows module zkiot with token $TOKEN_LABEL" \
    p11kit_lists_zkiot "$TOKEN_LABEL"
check "p11tool --list-tokens (through p11-kit) shows token=$TOKEN_LABEL" \
    bash -c "p11tool --list-tokens | grep -q 'URL: pkcs11:.*token=$TOKEN_LABEL'"

check "openssl req with no PKCS11_MODULE_PATH" \
    token_csr "$T/dev.csr" '/CN=device-p11kit/O=zkiot e2e'
check "test CA issues the client certificate" issue_cert "$T/dev.csr" "$T/dev.crt"
start_s_server

before=$(device_signs)
check "curl --key $KEY_URI --cert dev.crt with no PKCS11_MODULE_PATH" \
    curl -sS --fail --key "$KEY_URI" --cert "$T/dev.crt" --cacert "$CA_CRT" \
    -o "$T/page" "$SERVER_URL"
expect_signs "one device signature for the handshake" "$before" 1
check "server page shows the client certificate" \
    page_shows_client_cert "$T/page" 'CN=device-p11kit'

# One configuration for the module and the tool: a PIN only in the system file
# install-module.sh wrote guards the token, and `zkiot device csr` logs in with it
# (no ZKIOT_PIN, no ZKIOT_CONF).
installed_module=/usr/local/lib/zkiot/libzkpkcs11.so
system_config=/etc/zkiot/zkiot.toml
cp "$system_config" "$T/zkiot.toml.installed"
on_exit "[ -e '$system_config' ] && cp '$T/zkiot.toml.installed' '$system_config'"
echo 'pin = "2468"' >>"$system_config"
check "pin in $system_config: the token requires a login" \
    bash -c "pkcs11-tool --module '$installed_module' -L | grep -q 'token flags *: login required'"
check "pin in $system_config: no private key visible without it" \
    output_lacks '^Private Key Object' pkcs11-tool --module "$installed_module" -O
check "zkiot device csr logs in with the pin of $system_config" \
    env -u ZKIOT_PIN "$ZKIOT" --home "$T/operator" --module "$installed_module" \
    device csr --thing system-pin --dir "$T/device-system-pin" --out "$T/system-pin.csr"
check_csr "the CSR verifies" "$T/system-pin.csr"
cp "$T/zkiot.toml.installed" "$system_config"

check "install-module.sh --uninstall" "$REPO/scripts/install-module.sh" --uninstall
check "after uninstall: no zkiot.module, no installed files" \
    bash -c "[ ! -e /etc/pkcs11/modules/zkiot.module ] && [ ! -e /usr/local/lib/zkiot ] && [ ! -e /etc/zkiot/zkiot.toml ]"
check "after uninstall: p11-kit no longer lists zkiot" p11kit_lists_no_zkiot

e2e_summary
