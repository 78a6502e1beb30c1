#!/usr/bin/env python3
"""A device talking MQTT through the AWS IoT Device SDK v2, its TLS key on a PKCS#11 token.

Usage: mqtt_device.py --module LIB --cert device.crt --ca ca.crt --endpoint HOST --port N
                      --client-id ID [--protocol 3|5] [--connections N] [--topic T]
                      [--receive-timeout S]
                      [--token zymkey] [--key slot0] [--pin PIN]

For each of N connections (each its own TLS context, so its own PKCS#11 session and
handshake): connects with mtls_with_pkcs11 (MQTT 3.1.1 or MQTT 5), subscribes to the
topic (default things/<client id>/echo), publishes a fresh message there at QoS 1, waits
until the broker delivers it back, and disconnects. Prints one line per connection.

On any failure prints one line "mqtt_device: error: ..." (with awscrt's error name) on
stderr and exits with status 1.
"""

import argparse
import os
import sys
import threading
import time

from awscrt import io, mqtt, mqtt5
from awscrt.exceptions import AwsCrtError
from awsiot import mqtt5_client_builder, mqtt_connection_builder

TIMEOUT_S = 15


class DeviceError(Exception):
    pass


def describe(error):
    if isinstance(error, AwsCrtError):
        return f"{error.name}: {error.message}"
    if isinstance(error, mqtt.SubscribeError):
        return f"the broker refused the subscription to {error}"
    return str(error) or type(error).__name__


def connection_settings(args):
    """The arguments both builders take: the token, the certificate file and the broker."""
    return dict(
        pkcs11_lib=args.pkcs11_lib,
        user_pin=args.pin,
        token_label=args.token,
        private_key_label=args.key,
        cert_filepath=args.cert,
        ca_filepath=args.ca,
        endpoint=args.endpoint,
        port=args.port,
        client_id=args.client_id,
        # Without this the SDK sends its version as the MQTT user name, which brokers
        # other than AWS IoT take for a user.
        enable_metrics_collection=False,
    )


def round_trip_mqtt3(args, topic, payload):
    received = threading.Event()

    def on_message(topic, payload, **kwargs):
        if payload == expected:
            received.set()

    expected = payload
    connection = mqtt_connection_builder.mtls_with_pkcs11(
        **connection_settings(args), clean_session=True
    )
    connection.connect().result(TIMEOUT_S)
    try:
        subscribed, _ = connection.subscribe(topic, mqtt.QoS.AT_LEAST_ONCE, on_message)
        subscribed.result(TIMEOUT_S)
        published, _ = connection.publish(topic, payload, mqtt.QoS.AT_LEAST_ONCE)
        published.result(TIMEOUT_S)
        if not received.wait(args.receive_timeout):
            raise DeviceError(
                f"own message on {topic} not received in {args.receive_timeout} s"
            )
    finally:
        connection.disconnect().result(TIMEOUT_S)


def round_trip_mqtt5(args, topic, payload):
    connected = threading.Event()
    stopped = threading.Event()
    received = threading.Event()
    failure = []

    def on_success(data):
        connected.set()

    def on_failure(data):
        failure.append(data.exception)
        connected.set()

    def on_publish(data):
        if data.publish_packet.payload == payload:
            received.set()

    client = mqtt5_client_builder.mtls_with_pkcs11(
        **connection_settings(args),
        session_behavior=mqtt5.ClientSessionBehaviorType.CLEAN,
        on_lifecycle_connection_success=on_success,
        on_lifecycle_connection_failure=on_failure,
        on_lifecycle_stopped=lambda data: stopped.set(),
        on_publish_received=on_publish,
    )
    client.start()
    try:
        if not connected.wait(TIMEOUT_S):
            raise DeviceError(f"no connection in {TIMEOUT_S} s")
        if failure:
            raise failure[0]
        suback = client.subscribe(
            mqtt5.SubscribePacket(
                subscriptions=[mqtt5.Subscription(topic, mqtt5.QoS.AT_LEAST_ONCE)]
            )
        ).result(TIMEOUT_S)
        if suback.reason_codes[0] != mqtt5.SubackReasonCode.GRANTED_QOS_1:
            raise DeviceError(
                f"the broker refused the subscription to {topic}: {suback.reason_codes[0].name}"
            )
        published = client.publish(
            mqtt5.PublishPacket(
                topic=topic, payload=payload, qos=mqtt5.QoS.AT_LEAST_ONCE
            )
        ).result(TIMEOUT_S)
        if published.puback.reason_code != mqtt5.PubackReasonCode.SUCCESS:
            raise DeviceError(
                f"the broker did not accept the message: {published.puback.reason_code.name}"
            )
        if not received.wait(args.receive_timeout):
            raise DeviceError(
                f"own message on {topic} not received in {args.receive_timeout} s"
            )
    finally:
        client.stop()
        stopped.wait(TIMEOUT_S)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--module", required=True, help="the PKCS#11 module")
    parser.add_argument("--token", default="zymkey", help="token label")
    parser.add_argument("--key", default="slot0", help="private key label")
    parser.add_argument("--pin", default=None, help="user PIN (none: the token has none)")
    parser.add_argument("--cert", required=True, help="the device certificate (PEM file)")
    parser.add_argument("--ca", required=True, help="CA certificates that sign the broker's")
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--protocol", choices=("3", "5"), default="5")
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--topic", help="default: things/<client id>/echo")
    parser.add_argument("--receive-timeout", type=float, default=TIMEOUT_S)
    args = parser.parse_args()

    round_trip = round_trip_mqtt3 if args.protocol == "3" else round_trip_mqtt5
    topic = args.topic or f"things/{args.client_id}/echo"
    try:
        # One library handle for the whole process, as the SDK asks.
        args.pkcs11_lib = io.Pkcs11Lib(file=args.module)
        for n in range(1, args.connections + 1):
            payload = os.urandom(16).hex().encode()
            started = time.monotonic()
            round_trip(args, topic, payload)
            elapsed_ms = (time.monotonic() - started) * 1000
            print(
                f"mqtt{args.protocol} connection {n}: connected, subscribed, "
                f"published and received its own message on {topic} in {elapsed_ms:.0f} ms"
            )
    # awscrt raises RuntimeError ("1074 (AWS_ERROR_PKCS11_TOKEN_NOT_FOUND): ...") when a
    # native object (library, TLS context) cannot be made, AwsCrtError for failed operations.
    except (AwsCrtError, RuntimeError, mqtt.SubscribeError, DeviceError, OSError) as error:
        print(f"mqtt_device: error: MQTT {args.protocol}: {describe(error)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
