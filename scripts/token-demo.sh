#!/usr/bin/env bash
# The device half of the guide with stock tools only, on the emulator: the Zymkey's slot 0 key becomes the
# device identity through the PKCS#11 module, with stock tools only.
#
#   1. build the module (libzkpkcs11.so) and the emulator (libzkemu.so)
#   2. configure an emulated Zymkey in a fresh state folder (created on first use)
#   3. list the token with pkcs11-tool
#   4. make a CSR signed by the token key (openssl + libp11 engine)
#   5. sign it with a local test CA
#   6. store the device certificate on the token
#   7. mutual TLS with curl against a local openssl s_server, key and certificate
#      both taken from the token
#
# Everything it writes goes to $ZKIOT_DEMO_DIR (default ./demo), recreated on each run.
# Uses CARGO_TARGET_DIR when set, else ./target.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
WORK=${ZKIOT_DEMO_DIR:-$REPO/demo}

bold="" normal=""
if [ -t 1 ]; then
    bold=$(tput bold 2>/dev/null || true)
    normal=$(tput sgr0 2>/dev/null || true)
fi
step_no=0
step() { step_no=$((step_no + 1)); printf '\n%s%d. %s%s\n' "$bold" "$step_no" "$*" "$normal"; }
indent() { sed 's/^/     /'; }
# quote ARG: the argument as a user would type it in a shell.
quote() {
    if [[ $1 =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
        printf '%s' "$1"
    else
        printf "'%s'" "${1//\'/\'\\\'\'}"
    fi
}
# show COMMAND...: prints the command as a user would type it, then runs it with
# its output indented.
show() {
    local arg line="   \$"
    for arg in "$@"; do line+=" $(quote "$arg")"; done
    printf '%s\n' "$line"
    "$@" 2>&1 | indent
}

server_pid=""
cleanup() { if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; fi; }
trap cleanup EXIT

step "Dependencies (Debian packages, Python venv)"
scripts/install-deps.sh | indent

step "Build the PKCS#11 module and the Zymkey emulator"
show cargo build --quiet -p zkpkcs11 -p zkemu
MODULE=$CARGO_TARGET_DIR/debug/libzkpkcs11.so
EMULATOR=$CARGO_TARGET_DIR/debug/libzkemu.so
echo "   module:   $MODULE"
echo "   emulator: $EMULATOR"

step "An emulated Zymkey 4i in $WORK/emulator (created with its factory keys on first use)"
rm -rf "$WORK"
mkdir -p "$WORK/emulator"
cat >"$WORK/zkiot.toml" <<EOF
# Module configuration for this demo: the emulator instead of Zymbit's library,
# and a certificate store inside the demo folder.
zklib = "$EMULATOR"
store = "$WORK/token-store.sqlite3"
EOF
export PKCS11_MODULE_PATH=$MODULE   # which module libp11 (openssl, curl) loads
export ZKIOT_CONF=$WORK/zkiot.toml  # the module's configuration
export ZKIOT_EMU_DIR=$WORK/emulator # the emulator's state
export ZKIOT_EMU_MODEL=ZYMKEY4i
export ZKIOT_EMU_TRACE=$WORK/device-operations.log
echo "   PKCS11_MODULE_PATH=$PKCS11_MODULE_PATH"
echo "   ZKIOT_CONF=$ZKIOT_CONF"
echo "   ZKIOT_EMU_DIR=$ZKIOT_EMU_DIR ZKIOT_EMU_MODEL=$ZKIOT_EMU_MODEL"
echo "   ZKIOT_EMU_TRACE=$ZKIOT_EMU_TRACE"
device_signs() { grep -c '^sign ' "$ZKIOT_EMU_TRACE" 2>/dev/null || true; }

step "The token, its keys and mechanisms"
show pkcs11-tool --module "$MODULE" --list-token-slots 2>&1
show pkcs11-tool --module "$MODULE" --list-objects --type privkey 2>&1
show pkcs11-tool --module "$MODULE" --list-mechanisms 2>&1

KEY='pkcs11:token=zymkey;object=slot0;type=private'
CERT_ON_TOKEN='pkcs11:token=zymkey;object=slot0;type=cert'

step "A CSR signed inside the Zymkey by slot 0"
before=$(device_signs)
show openssl req -new -engine pkcs11 -keyform engine -key "$KEY" \
    -subj '/CN=demo-device-0001/O=zkiot demo' -out "$WORK/device.csr" 2>&1
show openssl req -in "$WORK/device.csr" -noout -verify -subject 2>&1
# OpenSSL 3.0 exits 0 on a bad self-signature too: go by what it says.
openssl req -in "$WORK/device.csr" -noout -verify 2>&1 | grep -q 'verify OK$' ||
    { echo "token-demo: the CSR's self-signature does not verify" >&2; exit 1; }
echo "   device signatures: $(($(device_signs) - before))"

step "A local test CA signs the device certificate (P-256, clientAuth)"
show openssl ecparam -name prime256v1 -genkey -noout -out "$WORK/ca.key"
chmod 600 "$WORK/ca.key"
show openssl req -x509 -new -key "$WORK/ca.key" -sha256 -days 30 -subj '/CN=zkiot demo CA' \
    -addext 'basicConstraints=critical,CA:TRUE' -addext 'keyUsage=critical,keyCertSign,cRLSign' \
    -out "$WORK/ca.crt"
printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n' >"$WORK/client.ext"
show openssl x509 -req -in "$WORK/device.csr" -CA "$WORK/ca.crt" -CAkey "$WORK/ca.key" \
    -CAcreateserial -days 30 -sha256 -extfile "$WORK/client.ext" -out "$WORK/device.crt" 2>&1
show openssl verify -CAfile "$WORK/ca.crt" "$WORK/device.crt"

step "Store the device certificate on the token"
show pkcs11-tool --module "$MODULE" --write-object "$WORK/device.crt" --type cert \
    --id 0000 --label slot0 2>&1
show pkcs11-tool --module "$MODULE" --list-objects --type cert 2>&1

step "Mutual TLS: curl with the token's key and certificate against openssl s_server"
openssl ecparam -name prime256v1 -genkey -noout -out "$WORK/server.key"
openssl req -new -key "$WORK/server.key" -subj '/CN=localhost' -out "$WORK/server.csr"
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >"$WORK/server.ext"
openssl x509 -req -in "$WORK/server.csr" -CA "$WORK/ca.crt" -CAkey "$WORK/ca.key" \
    -CAcreateserial -days 30 -sha256 -extfile "$WORK/server.ext" -out "$WORK/server.crt" 2>/dev/null
: >"$WORK/s_server.log" # exists before the server writes its port into it
openssl s_server -accept 127.0.0.1:0 -cert "$WORK/server.crt" -key "$WORK/server.key" \
    -Verify 1 -CAfile "$WORK/ca.crt" -www >"$WORK/s_server.log" 2>&1 </dev/null &
server_pid=$!
port=""
for _ in $(seq 1 100); do
    port=$(sed -n 's/^ACCEPT 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$WORK/s_server.log" || true)
    [ -n "$port" ] && break
    sleep 0.05
done
[ -n "$port" ] || { echo "s_server did not start:"; cat "$WORK/s_server.log"; exit 1; }
echo "   s_server (requires a client certificate from the demo CA) on 127.0.0.1:$port"
before=$(device_signs)
show curl -sS --fail --cert "$CERT_ON_TOKEN" --key "$KEY" --cacert "$WORK/ca.crt" \
    -o "$WORK/page.html" "https://127.0.0.1:$port/"
echo "   the server's page ($WORK/page.html) says:"
grep -E '^New, |^Client certificate|Subject:' "$WORK/page.html" | indent
echo "   device signatures for the handshake: $(($(device_signs) - before))"

printf '\n%sDone.%s The device identity never left the (emulated) Zymkey. Files: %s\n' \
    "$bold" "$normal" "$WORK"
