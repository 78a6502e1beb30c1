#!/usr/bin/env python3
"""Signs with a token key through python-pkcs11 and writes DER signatures for openssl.

Usage: sign.py --module LIB --out DIR [--token zymkey] [--label slot0] [--pin PIN]
               [--mechanism ECDSA] [--mechanism ECDSA_SHA256] [--mechanism ECDSA_SHA256_MULTIPART]

Writes into DIR: message, digest (its SHA-256), pub.der (the key's SubjectPublicKeyInfo,
from the public key object), and one sig-<mechanism>.der per mechanism:
  ECDSA                   CKM_ECDSA over the SHA-256 digest
  ECDSA_SHA256            CKM_ECDSA_SHA256 over the message, single-part
  ECDSA_SHA256_MULTIPART  CKM_ECDSA_SHA256 over the message, in chunks (C_SignUpdate)
Every signature is also checked by the token itself (C_Verify) when it offers that.
"""

import argparse
import hashlib
import os
import sys

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.util.ec import encode_ec_public_key, encode_ecdsa_signature

MECHANISMS = ("ECDSA", "ECDSA_SHA256", "ECDSA_SHA256_MULTIPART")


def chunks(data, size):
    for start in range(0, len(data), size):
        yield data[start : start + size]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--module", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--token", default="zymkey")
    parser.add_argument("--label", default="slot0")
    parser.add_argument("--pin", default=None)
    parser.add_argument("--mechanism", action="append", choices=MECHANISMS)
    args = parser.parse_args()
    mechanisms = args.mechanism or list(MECHANISMS)

    message = os.urandom(3000)
    digest = hashlib.sha256(message).digest()

    lib = pkcs11.lib(args.module)
    token = lib.get_token(token_label=args.token)
    with token.open(user_pin=args.pin) as session:
        private = session.get_key(
            object_class=ObjectClass.PRIVATE_KEY, key_type=KeyType.EC, label=args.label
        )
        public = session.get_key(
            object_class=ObjectClass.PUBLIC_KEY, key_type=KeyType.EC, label=args.label
        )
        if private[Attribute.ID] != public[Attribute.ID]:
            sys.exit("private and public key have different CKA_ID")

        signatures = {}
        for name in mechanisms:
            if name == "ECDSA":
                raw = private.sign(digest, mechanism=Mechanism.ECDSA)
                ok = public.verify(digest, raw, mechanism=Mechanism.ECDSA)
            elif name == "ECDSA_SHA256":
                raw = private.sign(message, mechanism=Mechanism.ECDSA_SHA256)
                ok = public.verify(message, raw, mechanism=Mechanism.ECDSA_SHA256)
            else:
                raw = private.sign(
                    chunks(message, 700), mechanism=Mechanism.ECDSA_SHA256
                )
                ok = public.verify(message, raw, mechanism=Mechanism.ECDSA_SHA256)
            if len(raw) != 64:
                sys.exit(
                    f"{name}: expected a 64-byte r||s signature, got {len(raw)} bytes"
                )
            if not ok:
                sys.exit(f"{name}: the token rejects its own signature")
            signatures[name] = encode_ecdsa_signature(raw)
            print(f"{name}: signed, {len(raw)} bytes r||s, token verify ok")

        spki = encode_ec_public_key(public)

    os.makedirs(args.out, exist_ok=True)

    def write(name, data):
        with open(os.path.join(args.out, name), "wb") as f:
            f.write(data)

    write("message", message)
    write("digest", digest)
    write("pub.der", spki)
    for name, der in signatures.items():
        write(f"sig-{name}.der", der)


if __name__ == "__main__":
    main()
