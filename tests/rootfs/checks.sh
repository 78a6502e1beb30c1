#!/usr/bin/env bash
# Runs inside a root file system of a supported platform (see run.sh beside this
# file): installs the zkiot-device and zkiot-emulator packages with dpkg -i, then
# checks with the platform's stock tools, with no module path and no zkiot variable
# in the environment, that openssl (libp11 engine), curl, pkcs11-tool and GnuTLS
# find the token through p11-kit; on platforms with pkcs11-provider, the OpenSSL 3
# provider path too; that the device package installs and enables the device
# agent's unit (and, where the root file system has systemd-analyze, that it
# verifies with no warning); then that removing keeps the token's store and purging
# leaves nothing behind, the unit's enablement included. Each signature is counted in the emulator's trace. The emulated model
# is $ZKIOT_ROOTFS_MODEL (ZYMKEY4i by default); one with a key store also generates a key
# through pkcs11-tool that signs a CSR.
# shellcheck disable=SC2016 # single-quoted bash -c bodies expand later, on purpose
set -uo pipefail

triplet=$(dpkg --print-architecture | sed 's/^amd64$/x86_64-linux-gnu/; s/^arm64$/aarch64-linux-gnu/')
export ZKIOT_E2E_MODULE=/usr/lib/$triplet/pkcs11/libzkpkcs11.so
export ZKIOT_E2E_EMULATOR=/usr/lib/$triplet/zkiot/libzkemu.so
debs=(/opt/zkiot-tests/debs/zkiot-device_*.deb /opt/zkiot-tests/debs/zkiot-emulator_*.deb)
provider=/usr/lib/$triplet/ossl-modules/pkcs11.so

# shellcheck source=tests/e2e/lib.sh
source /opt/zkiot-tests/e2e/lib.sh

# The files of the system before installation (what purge must return to).
system_files() {
    find / -xdev \( -path /proc -o -path /dev -o -path /tmp -o -path /opt/zkiot-tests \
        -o -path /var/lib/dpkg -o -path /var/log -o -path /var/cache -o -path /root \) -prune \
        -o -print | sort
}
# A Raspberry Pi has a machine ID (the device ID hashes it); a fresh root file system not yet.
[ -s /etc/machine-id ] || od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >/etc/machine-id
system_files >/tmp/files-before

echo "      platform: ${ZKIOT_PLATFORM:-?} ($(. /etc/os-release && echo "$PRETTY_NAME"), $(uname -m))"
echo "      $(openssl version); $(curl --version | head -n1 | cut -d' ' -f1-2);" \
    "libp11 $(dpkg-query -W -f='${Version}' 'libengine-pkcs11-openssl:*' 2>/dev/null)"

if dpkg -i "${debs[@]}" >/tmp/dpkg-i.log 2>&1; then
    pass "dpkg -i zkiot-device zkiot-emulator"
else
    fail "dpkg -i zkiot-device zkiot-emulator"
    sed 's/^/      | /' /tmp/dpkg-i.log
    exit 1
fi
e2e_init
# e2e_init points libp11 at the module: take that away again. Only the emulator's
# state and trace folders stay in the environment (where a Zymkey has hardware).
unset PKCS11_MODULE_PATH
model=${ZKIOT_ROOTFS_MODEL:-ZYMKEY4i}
new_token "$model"
unset ZKIOT_ZKLIB ZKIOT_CONF
make_pki

check "p11-kit list-modules shows module zkiot with token $TOKEN_LABEL" \
    p11kit_lists_zkiot "$TOKEN_LABEL"

before=$(device_signs)
check "openssl req -engine pkcs11 (libp11 finds the module through p11-kit)" \
    token_csr "$T/dev.csr" '/CN=device-platform/O=zkiot'
check_csr "the CSR verifies" "$T/dev.csr"
expect_signs "one device signature for the CSR" "$before" 1
check "test CA issues the client certificate" issue_cert "$T/dev.csr" "$T/dev.crt"
start_s_server

for tls in --tlsv1.3 "--tls-max 1.2"; do
    page=$T/page.$RANDOM
    before=$(device_signs)
    # shellcheck disable=SC2086 # $tls is one or two words on purpose
    check "curl $tls --key $KEY_URI --cert dev.crt" \
        curl -sS --fail $tls --key "$KEY_URI" --cert "$T/dev.crt" --cacert "$CA_CRT" \
        -o "$page" "$SERVER_URL"
    expect_signs "one device signature for the $tls handshake" "$before" 1
    check "server page shows the client certificate ($tls)" \
        page_shows_client_cert "$page" 'CN=device-platform'
done

# The certificate on the token, in the store the package leaves to the module
# (/var/lib/zkiot for root).
check "pkcs11-tool --write-object dev.crt (certificate on the token)" \
    pkcs11-tool --module "$MODULE" --write-object "$T/dev.crt" --type cert --id 0000 --label slot0
if [ "$model" != ZYMKEY4i ]; then
    check "$model: the token shows the model string the device reports" \
        bash -c "pkcs11-tool --module '$MODULE' -L | grep -q 'token model *: *$model\$'"
    check "$model: pkcs11-tool --keypairgen (the key store found through the slot list)" \
        pkcs11-tool --module "$MODULE" --keypairgen --key-type EC:prime256v1 --label gen1
    check "$model: CSR signed by the generated key" \
        token_csr "$T/gen1.csr" '/CN=device-gen1' "pkcs11:token=$TOKEN_LABEL;object=gen1;type=private"
    check_csr "$model: the generated key's CSR verifies" "$T/gen1.csr"
fi
check "the token's store is under /var/lib/zkiot" bash -c 'ls /var/lib/zkiot/*.sqlite3'
before=$(device_signs)
check "curl with key and certificate from the token" \
    curl -sS --fail --cert "$CERT_URI" --key "$KEY_URI" --cacert "$CA_CRT" -o "$T/page-cert" "$SERVER_URL"
expect_signs "one device signature for that handshake" "$before" 1
check "p11tool --list-all (GnuTLS through p11-kit) shows the certificate" \
    bash -c "p11tool --list-all 'pkcs11:token=$TOKEN_LABEL' | grep -q 'Type: X.509 Certificate'"
check "pkcs11-tool --test: No errors" pkcs11_tool_test --module "$MODULE"
check "zkiot device id (the package's device tool)" zkiot device id

# ---------------------------------------------------------------- the device agent's unit
unit=/usr/lib/systemd/system/zkiot-agent.service
check "the package installs the agent's unit $unit" test -f "$unit"
if [ -x /usr/bin/deb-systemd-helper ]; then
    check "the package enables it (multi-user.target.wants)" \
        test -L /etc/systemd/system/multi-user.target.wants/zkiot-agent.service
else
    skip "enabling the unit: no deb-systemd-helper in this root file system"
fi
if command -v systemd-analyze >/dev/null; then
    unit_verifies() {
        local out
        out=$(systemd-analyze verify "$unit" 2>&1) || { echo "$out"; return 1; }
        # Unknown keys and bad values are only warnings: none may be printed.
        [ -z "$out" ] || { echo "$out"; return 1; }
    }
    check "systemd-analyze verify accepts the unit, with no warning" unit_verifies
else
    skip "systemd-analyze verify: not in this root file system"
fi
check "zkiot device agent --help (the package's tool has the agent)" \
    bash -c 'zkiot device agent --help | grep -q -- --once'
check "zkiot device check runs its checks by name (not every one can pass here)" \
    bash -c 'zkiot device check --json | grep -q "\"name\": \"zymkey-library\""' 
check "zkiot device selftest (library from the emulator's conffile, module through p11-kit)" \
    zkiot device selftest

# ---------------------------------------------------------------- OpenSSL 3 providers
if [ -f "$provider" ]; then
    echo "      pkcs11-provider $(dpkg-query -W -f='${Version}' 'pkcs11-provider:*')"
    # The command-line form: no configuration file, the provider's default module
    # (p11-kit-proxy) finds ours through p11-kit.
    prov=(-provider default -provider pkcs11)
    before=$(device_signs)
    check "openssl req -new ${prov[*]} -key $KEY_URI" \
        openssl req -new "${prov[@]}" -key "$KEY_URI" -subj '/CN=device-provider' -out "$T/prov.csr"
    check_csr "that CSR verifies" "$T/prov.csr"
    expect_signs "one device signature for the provider CSR" "$before" 1

    token_pubkey "$T/slot0.pem"
    openssl dgst -sha256 -binary -out "$T/digest" "$T/dev.csr"
    before=$(device_signs)
    check "openssl pkeyutl -sign ${prov[*]} -inkey $KEY_URI" \
        openssl pkeyutl -sign "${prov[@]}" -inkey "$KEY_URI" -in "$T/digest" -out "$T/digest.sig"
    expect_signs "one device signature for pkeyutl" "$before" 1
    check "the signature verifies with the slot's public key" \
        openssl pkeyutl -verify -pubin -inkey "$T/slot0.pem" -in "$T/digest" -sigfile "$T/digest.sig"

    s_client_provider() {
        echo Q | timeout 60 openssl s_client "$@" -cert "$T/dev.crt" -CAfile "$CA_CRT" -verify_return_error \
            -connect "127.0.0.1:$SERVER_PORT" >"$T/s_client.out" 2>&1
        local rc=$?
        cat "$T/s_client.out"
        [ $rc -eq 0 ] && grep -q 'Verify return code: 0 (ok)' "$T/s_client.out"
    }
    for tls in -tls1_3 -tls1_2; do
        before=$(device_signs)
        check "openssl s_client $tls ${prov[*]} -key $KEY_URI" \
            s_client_provider "$tls" "${prov[@]}" -key "$KEY_URI"
        expect_signs "one device signature for the s_client $tls handshake" "$before" 1
    done

    for tls in --tlsv1.3 "--tls-max 1.2"; do
        before=$(device_signs)
        # shellcheck disable=SC2086 # $tls is one or two words on purpose
        check "curl $tls --key-type PROV --key $KEY_URI" \
            curl -sS --fail $tls --key-type PROV --key "$KEY_URI" --cert "$T/dev.crt" \
            --cacert "$CA_CRT" -o "$T/page-prov" "$SERVER_URL"
        expect_signs "one device signature for the curl provider $tls handshake" "$before" 1
    done

    # The configuration-file form, as the README shows it: both providers activated
    # from openssl.cnf, default first, the module named explicitly, loaded early
    # (at start-up, inside OpenSSL's own initialisation, where a module that called
    # back into OpenSSL's provider layer would hang).
    cat >"$T/openssl-pkcs11.cnf" <<EOF
openssl_conf = openssl_init
[openssl_init]
providers = provider_sect
[provider_sect]
default = default_sect
pkcs11 = pkcs11_sect
[default_sect]
activate = 1
[pkcs11_sect]
module = $provider
pkcs11-module-path = $MODULE
pkcs11-module-load-behavior = early
activate = 1
[req]
distinguished_name = req_dn
[req_dn]
EOF
    before=$(device_signs)
    with_conf() { OPENSSL_CONF=$T/openssl-pkcs11.cnf "$@"; }
    check "OPENSSL_CONF with both providers: openssl req -key $KEY_URI (within 60 s)" \
        with_conf timeout 60 \
        openssl req -new -key "$KEY_URI" -subj '/CN=device-provider-conf' -out "$T/conf.csr"
    check_csr "that CSR verifies" "$T/conf.csr"
    expect_signs "one device signature for the configured-provider CSR" "$before" 1
    before=$(device_signs)
    check "OPENSSL_CONF with both providers: s_client mutual TLS (within 60 s)" \
        with_conf s_client_provider -key "$KEY_URI"
    expect_signs "one device signature for that handshake" "$before" 1
else
    skip "OpenSSL 3 provider path: no pkcs11-provider on this platform"
fi

# ---------------------------------------------------------------- upgrade, remove, purge
ls /var/lib/zkiot >"$T/store-files"
check "dpkg -i again (upgrade in place)" dpkg -i "${debs[@]}"
check "the token's store survives the upgrade" \
    bash -c "ls /var/lib/zkiot | cmp -s - '$T/store-files'"
check "dpkg -r zkiot-emulator zkiot-device" dpkg -r zkiot-emulator zkiot-device
check "after removal: module, module file, tool and the agent's unit are gone" \
    bash -c "[ ! -e '$MODULE' ] && [ ! -e /usr/share/p11-kit/modules/zkiot.module ] && [ ! -e /usr/bin/zkiot ] && [ ! -e '$unit' ]"
check "after removal: p11-kit lists no zkiot module" p11kit_lists_no_zkiot
check "after removal: the token's store is kept" \
    bash -c "ls /var/lib/zkiot | cmp -s - '$T/store-files'"
check "after removal: the emulator's conffile is kept" test -f /etc/zkiot/zkiot.toml
check "dpkg --purge zkiot-emulator zkiot-device" dpkg --purge zkiot-emulator zkiot-device
left_behind() {
    system_files >/tmp/files-after
    diff /tmp/files-before /tmp/files-after
}
check "after purge: no file of the packages, their configuration, the store or the unit's enablement is left" left_behind

e2e_summary
