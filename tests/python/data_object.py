#!/usr/bin/env python3
"""Writes, reads or tries to write a token data object through python-pkcs11.

Usage: data_object.py --module LIB [--token zymkey] [--pin PIN] write LABEL FILE
       data_object.py --module LIB [--token zymkey] [--pin PIN] read LABEL FILE
       data_object.py --module LIB [--token zymkey] [--pin PIN] refuse LABEL SIZE

  write   a token object of class CKO_DATA labelled LABEL, its CKA_VALUE the bytes of FILE
  read    the CKA_VALUE of the one data object labelled LABEL into FILE (the length is
          asked for first, then the value, as python-pkcs11 does)
  refuse  a data object of SIZE bytes must be refused with CKR_ATTRIBUTE_VALUE_INVALID,
          and no object labelled LABEL may be left behind; exits 0 only then
"""

import argparse
import os
import sys

import pkcs11
from pkcs11 import Attribute, ObjectClass
from pkcs11.exceptions import AttributeValueInvalid, PKCS11Error

APPLICATION = "zkiot e2e"


def data_objects(session, label):
    return list(
        session.get_objects({Attribute.CLASS: ObjectClass.DATA, Attribute.LABEL: label})
    )


def create(session, label, value):
    return session.create_object(
        {
            Attribute.CLASS: ObjectClass.DATA,
            Attribute.TOKEN: True,
            Attribute.LABEL: label,
            Attribute.APPLICATION: APPLICATION,
            Attribute.VALUE: value,
        }
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--module", required=True)
    parser.add_argument("--token", default="zymkey")
    parser.add_argument("--pin", default=None)
    parser.add_argument("action", choices=("write", "read", "refuse"))
    parser.add_argument("label")
    parser.add_argument("arg", help="FILE (write, read) or SIZE (refuse)")
    args = parser.parse_args()

    lib = pkcs11.lib(args.module)
    token = lib.get_token(token_label=args.token)
    with token.open(rw=True, user_pin=args.pin) as session:
        if args.action == "write":
            with open(args.arg, "rb") as f:
                value = f.read()
            create(session, args.label, value)
            print(f"{args.label}: wrote a data object of {len(value)} bytes")
        elif args.action == "read":
            found = data_objects(session, args.label)
            if len(found) != 1:
                sys.exit(f"{args.label}: {len(found)} data objects, expected one")
            value = found[0][Attribute.VALUE]
            with open(args.arg, "wb") as f:
                f.write(value)
            print(f"{args.label}: read a data object of {len(value)} bytes")
        else:
            size = int(args.arg)
            try:
                create(session, args.label, os.urandom(size))
            except AttributeValueInvalid:
                print(f"{args.label}: {size} bytes refused: CKR_ATTRIBUTE_VALUE_INVALID")
            except PKCS11Error as e:
                sys.exit(
                    f"{args.label}: {size} bytes refused with {type(e).__name__}, "
                    "expected CKR_ATTRIBUTE_VALUE_INVALID"
                )
            else:
                sys.exit(f"{args.label}: a data object of {size} bytes was accepted")
            left = data_objects(session, args.label)
            if left:
                sys.exit(f"{args.label}: {len(left)} objects left behind by the refusal")


if __name__ == "__main__":
    main()
