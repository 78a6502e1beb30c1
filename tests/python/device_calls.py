#!/usr/bin/env python3
"""Checks, from one process, which PKCS#11 calls reach the device.

Reads the emulator's trace file ($ZKIOT_EMU_TRACE: one "<operation> <slot>" line per
device operation) around each step. Object searches and attribute reads must cost
no device operation at all, and a signature (python-pkcs11 asks for the length
first, then signs) exactly one "sign" line; the first one also opens the device,
which nothing before it needed.

Usage: device_calls.py --module LIB [--token zymkey] [--label slot0]
"""

import argparse
import os
import sys

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass

FAILURES = []


def trace_lines():
    with open(os.environ["ZKIOT_EMU_TRACE"], encoding="utf-8") as f:
        return f.read().splitlines()


def expect_device_ops(what, action, expected):
    before = len(trace_lines())
    action()
    new = trace_lines()[before:]
    if new == expected:
        print(f"ok: {what}: device operations {new}")
    else:
        print(f"FAILED: {what}: expected device operations {expected}, got {new}")
        FAILURES.append(what)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--module", required=True)
    parser.add_argument("--token", default="zymkey")
    parser.add_argument("--label", default="slot0")
    args = parser.parse_args()

    token = pkcs11.lib(args.module).get_token(token_label=args.token)
    with token.open() as session:
        # First contact: the module may read the public keys from the device here.
        key = session.get_key(ObjectClass.PRIVATE_KEY, KeyType.EC, label=args.label)
        key_id = key[Attribute.ID]

        def searches_and_reads():
            for _ in range(10):
                objects = list(session.get_objects())
                for obj in objects:
                    for attribute in (Attribute.CLASS, Attribute.LABEL, Attribute.ID):
                        obj[attribute]
                for template in (
                    {Attribute.CLASS: ObjectClass.PRIVATE_KEY},
                    {Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.ID: key_id},
                    {Attribute.LABEL: args.label},
                    {
                        Attribute.CLASS: ObjectClass.PRIVATE_KEY,
                        Attribute.ID: key_id,
                        Attribute.LABEL: args.label,
                    },
                ):
                    if not list(session.get_objects(template)):
                        raise SystemExit(f"no object matches {template}")
                for attribute in (
                    Attribute.EC_PARAMS,
                    Attribute.EC_POINT,
                    Attribute.KEY_TYPE,
                    Attribute.SIGN,
                ):
                    key[attribute]

        expect_device_ops("object searches and attribute reads", searches_and_reads, [])

        slot = int.from_bytes(key_id, "big")
        digest = bytes(range(32))
        expect_device_ops(
            "CKM_ECDSA sign (length query, then sign), the first device call",
            lambda: key.sign(digest, mechanism=Mechanism.ECDSA),
            ["open -", f"sign {slot}"],
        )
        expect_device_ops(
            "CKM_ECDSA_SHA256 multi-part sign",
            lambda: key.sign(
                iter([b"a" * 1000, b"b" * 1000]), mechanism=Mechanism.ECDSA_SHA256
            ),
            [f"sign {slot}"],
        )

    if FAILURES:
        sys.exit(f"{len(FAILURES)} check(s) failed: {', '.join(FAILURES)}")


if __name__ == "__main__":
    main()
