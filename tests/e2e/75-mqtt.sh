#!/usr/bin/env bash
# MQTT through the AWS IoT Device SDK v2 for Python (awsiotsdk/awscrt, which loads the
# module itself): a device publishes and subscribes over MQTT 3.1.1 and MQTT 5 with
# mtls_with_pkcs11 (token label, key label, the certificate `zkiot ca sign` issued, from
# a file) to Debian's mosquitto (TLS on 127.0.0.1, require_certificate, our CA, each
# device on its own topics things/<CN>/..., as the IoT policy allows), and receives its
# own message back; one device signature per connection; on ZYMKEY4i and HSM6, and with
# a PIN. A wrong token or key label, a missing Zymkey library, a wrong module path, a
# wrong PIN, a certificate for another key, a message to another device's topic and a
# TLS 1.3-only broker each fail with exit 1 and one error line.
# shellcheck source=tests/e2e/lib.sh
source "$(dirname "$0")/lib.sh"
e2e_init

PYTHON=$VENV/bin/python
MOSQUITTO=${ZKIOT_E2E_MOSQUITTO:-/usr/sbin/mosquitto}
ZKIOT=$TARGET_DIR/$PROFILE/zkiot
require_file "$PYTHON" "venv (run scripts/install-deps.sh)"
require_file "$MOSQUITTO" "mosquitto (run scripts/install-deps.sh)"
if [ "$BACKEND" = zkiot ]; then
    require_file "$ZKIOT" "zkiot tool (cargo build -p zkiot)"
fi
note "$("$PYTHON" -c 'import awscrt, importlib.metadata as m; print("awsiotsdk", m.version("awsiotsdk"), "awscrt", awscrt.__version__)')," \
    "$("$MOSQUITTO" -h | head -n 1)"

# The broker's own certificate comes from the e2e test root; devices' from our CA.
make_pki

free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_mosquitto NAME DEVICE_CA MIN_TLS: a broker on 127.0.0.1 at a free port that accepts
# only clients with a certificate from DEVICE_CA, each on its own topics (things/<CN>/...,
# as the IoT policy of `zkiot aws setup` allows on AWS IoT).
# Sets BROKER_PORT and BROKER_LOG.
start_mosquitto() {
    local name=$1 dir=$T/$1
    mkdir -p "$dir"
    printf 'pattern readwrite things/%%u/#\n' >"$dir/acl"
    BROKER_LOG=$dir/mosquitto.log
    local attempt
    for attempt in 1 2 3 4 5; do
        BROKER_PORT=$(free_port)
        cat >"$dir/mosquitto.conf" <<EOF
user $(id -un)
persistence false
log_dest file $BROKER_LOG
log_type all
per_listener_settings true
listener $BROKER_PORT 127.0.0.1
cafile $2
certfile $SERVER_CRT
keyfile $SERVER_KEY
tls_version $3
require_certificate true
use_identity_as_username true
allow_anonymous false
acl_file $dir/acl
EOF
        : >"$BROKER_LOG"
        "$MOSQUITTO" -c "$dir/mosquitto.conf" </dev/null >"$dir/stdout" 2>&1 &
        local pid=$! i
        for i in $(seq 1 100); do
            if grep -q "Opening ipv4 listen socket on port $BROKER_PORT" "$BROKER_LOG" &&
                (: </dev/tcp/127.0.0.1/"$BROKER_PORT") 2>/dev/null; then
                E2E_PIDS+=("$pid")
                return 0
            fi
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.05
        done
        kill "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null # the port was taken meanwhile: try another
    done
    fail "mosquitto ($name) did not start"
    sed -e 's/^/      | /' "$BROKER_LOG" "$dir/stdout" | tail -n 20
    exit 1
}

# device_cert MODEL THING: the device key's CSR and its certificate, issued by our CA
# (zkiot device csr / zkiot ca sign). Sets DEVICE_CA, DEVICE_CRT and DEVICE_THING.
device_cert() {
    local dir=$T/device-$1
    DEVICE_THING=$2
    if [ "$BACKEND" = zkiot ]; then
        local home=$T/operator
        DEVICE_CA=$home/ca/ca.crt
        DEVICE_CRT=$dir/device.crt
        [ -e "$DEVICE_CA" ] ||
            check "our CA (zkiot ca init)" "$ZKIOT" --home "$home" ca init --subject '/CN=zkiot e2e fleet CA'
        local before
        before=$(device_signs)
        check "$1: CSR from the token (zkiot device csr --thing $2)" \
            "$ZKIOT" --home "$home" --module "$MODULE" device csr --thing "$2" --dir "$dir" --out "$dir/device.csr"
        expect_signs "$1: one device signature for the CSR" "$before" 1
        check "$1: our CA issues the certificate (zkiot ca sign)" \
            "$ZKIOT" --home "$home" ca sign --csr "$dir/device.csr" --expect-cn "$2" --out "$DEVICE_CRT"
    else
        DEVICE_CA=$CA_CRT
        DEVICE_CRT=$dir/device.crt
        mkdir -p "$dir"
        check "$1: CSR from the token" token_csr "$dir/device.csr" "/CN=$2"
        check "$1: the test CA issues the certificate" issue_cert "$dir/device.csr" "$DEVICE_CRT"
    fi
}

# mqtt_device ARGS...: the SDK client against the broker, as the device (client id = thing).
mqtt_device() {
    "$PYTHON" "$REPO/tests/python/mqtt_device.py" --module "$MODULE" --token "$TOKEN_LABEL" \
        --key slot0 ${PIN:+--pin "$PIN"} --ca "$CA_CRT" --endpoint 127.0.0.1 --port "$BROKER_PORT" "$@"
}

# expect_clean_failure NAME ERROR_PATTERN ARGS...: the client exits with status 1 (no
# crash, no traceback) and prints one error line naming the cause.
expect_clean_failure() {
    local name=$1 pattern=$2 rc
    shift 2
    mqtt_device "$@" >"$T/fail.out" 2>"$T/fail.err"
    rc=$?
    if [ "$rc" = 1 ] && grep -q "^mqtt_device: error: .*$pattern" "$T/fail.err" &&
        ! grep -q Traceback "$T/fail.err"; then
        pass "$name: exit 1, $(grep '^mqtt_device: error' "$T/fail.err" | head -n 1)"
    else
        fail "$name: expected exit 1 and an error matching '$pattern', got exit $rc"
        sed -e 's/^/      | /' "$T/fail.out" "$T/fail.err" | tail -n 20
    fi
}

# round_trips MODEL THING: both protocols, two connections each, one signature apiece.
round_trips() {
    local model=$1 thing=$2 protocol before t0
    for protocol in 3 5; do
        before=$(device_signs)
        t0=$(date +%s%N)
        check "$model: MQTT $protocol, two connections: subscribe, publish, own message received" \
            mqtt_device --cert "$DEVICE_CRT" --client-id "$thing" --protocol "$protocol" --connections 2
        note "$model: MQTT $protocol: $((($(date +%s%N) - t0) / 1000000)) ms for the process (two connections)"
        expect_signs "$model: MQTT $protocol: one device signature per connection" "$before" 2
    done
    check "$model: the broker saw $thing connect with its certificate's CN as user" \
        grep -q "New client connected from 127.0.0.1:[0-9]* as $thing (p[0-9], c1, k[0-9]*, u'$thing')" "$BROKER_LOG"
    check "$model: MQTT 5 connection on the broker (protocol level 5)" \
        grep -q "New client connected .* as $thing (p5," "$BROKER_LOG"
}

# ---- ZYMKEY4i
new_token ZYMKEY4i
device_cert ZYMKEY4i device-zymkey4i
start_mosquitto broker "$DEVICE_CA" tlsv1.2
round_trips ZYMKEY4i device-zymkey4i

# ---- clean failures (on the ZYMKEY4i token)
expect_clean_failure "no token with that label" "AWS_ERROR_PKCS11_TOKEN_NOT_FOUND" \
    --cert "$DEVICE_CRT" --client-id "$DEVICE_THING" --token no-such-token
expect_clean_failure "no key with that label" "AWS_ERROR_PKCS11_KEY_NOT_FOUND" \
    --cert "$DEVICE_CRT" --client-id "$DEVICE_THING" --key no-such-key
expect_clean_failure "the module path is wrong" "AWS_IO_SHARED_LIBRARY_LOAD_FAILURE" \
    --cert "$DEVICE_CRT" --client-id "$DEVICE_THING" --module "$T/no-such-module.so"
if [ "$BACKEND" = zkiot ]; then
    for protocol in 3 5; do
        ZKIOT_ZKLIB=$T/no-such-libzk_app_utils.so expect_clean_failure \
            "MQTT $protocol: the Zymkey library is missing (no token)" "AWS_ERROR_PKCS11_TOKEN_NOT_FOUND" \
            --cert "$DEVICE_CRT" --client-id "$DEVICE_THING" --protocol "$protocol"
    done
fi
# Another device's topic: mosquitto drops an MQTT 3 message there and refuses it in an
# MQTT 5 PUBACK.
expect_clean_failure "MQTT 3: nothing passes on another device's topic" "not received" \
    --cert "$DEVICE_CRT" --client-id "$DEVICE_THING" --protocol 3 --topic things/other-device/echo \
    --receive-timeout 2
expect_clean_failure "MQTT 5: a message to another device's topic is refused" "NOT_AUTHORIZED" \
    --cert "$DEVICE_CRT" --client-id "$DEVICE_THING" --protocol 5 --topic things/other-device/echo
# A certificate from our CA for another key: the broker checks the token's signature
# against it and refuses the handshake.
openssl ecparam -name prime256v1 -genkey -noout -out "$T/other.key" 2>/dev/null
openssl req -new -key "$T/other.key" -subj "/CN=$DEVICE_THING" -out "$T/other.csr" 2>/dev/null
if [ "$BACKEND" = zkiot ]; then
    "$ZKIOT" --home "$T/operator" ca sign --csr "$T/other.csr" --out "$T/other.crt" >/dev/null 2>&1
else
    issue_cert "$T/other.csr" "$T/other.crt" 2>/dev/null
fi
for protocol in 3 5; do
    expect_clean_failure "MQTT $protocol: a certificate for another key is refused" \
        "AWS_IO_TLS_ERROR_NEGOTIATION_FAILURE" --cert "$T/other.crt" --client-id "$DEVICE_THING" --protocol "$protocol"
done
check "the broker refused the token's signature under the other key's certificate" \
    grep -q "SSL routines::bad signature" "$BROKER_LOG"

# ---- a token with a user PIN (`pin` in the module configuration): the SDK logs in
if [ "$BACKEND" = zkiot ]; then
    user_pin=4931
    echo "pin = \"$user_pin\"" >>"$ZKIOT_CONF"
    before=$(device_signs)
    check "PIN: MQTT 5 with --pin: own message received" \
        mqtt_device --cert "$DEVICE_CRT" --client-id "$DEVICE_THING" --protocol 5 --pin "$user_pin"
    expect_signs "PIN: one device signature for the connection" "$before" 1
    expect_clean_failure "PIN: a wrong PIN is refused" "PIN_INCORRECT" \
        --cert "$DEVICE_CRT" --client-id "$DEVICE_THING" --protocol 5 --pin 0000
    # user_pin=None asks for a protected authentication path (C_Login with no PIN).
    expect_clean_failure "PIN: a login without the PIN is refused" "CKR_ARGUMENTS_BAD" \
        --cert "$DEVICE_CRT" --client-id "$DEVICE_THING" --protocol 5
fi

# ---- HSM6
if [ "$BACKEND" = zkiot ]; then
    new_token HSM6
    device_cert HSM6 device-hsm6
    round_trips HSM6 device-hsm6
fi

# With PKCS#11 the SDK speaks TLS 1.2 only: a broker that wants TLS 1.3 refuses it.
start_mosquitto broker-tls13 "$DEVICE_CA" tlsv1.3
expect_clean_failure "a broker that requires TLS 1.3 refuses the SDK's PKCS#11 TLS 1.2" \
    "AWS_IO_TLS_ERROR_NEGOTIATION_FAILURE" --cert "$DEVICE_CRT" --client-id "$DEVICE_THING" --protocol 5

e2e_summary
