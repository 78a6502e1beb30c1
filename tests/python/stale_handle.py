#!/usr/bin/env python3
"""Holds a key through python-pkcs11 while another process replaces it, then signs again.

Usage: stale_handle.py --module LIB --label LABEL [--token zymkey] -- COMMAND...

Finds the private key LABEL and signs with it (the token verifies the signature), then
runs COMMAND (another process, which destroys that key and generates another one in
its slot) and signs with the handle it still holds. That signature must fail with
CKR_KEY_HANDLE_INVALID or CKR_OBJECT_HANDLE_INVALID, at C_SignInit or C_Sign, and so
must a second try: a stale handle never signs with a key its holder did not choose.
Exits 0 only then.
"""

import argparse
import subprocess
import sys

import pkcs11
from pkcs11 import KeyType, Mechanism, ObjectClass
from pkcs11.exceptions import KeyHandleInvalid, ObjectHandleInvalid

DIGEST = bytes(range(32))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--module", required=True)
    parser.add_argument("--token", default="zymkey")
    parser.add_argument("--label", required=True)
    parser.add_argument("command", nargs="+")
    args = parser.parse_args()

    lib = pkcs11.lib(args.module)
    token = lib.get_token(token_label=args.token)
    with token.open(rw=True) as session:
        private = session.get_key(
            object_class=ObjectClass.PRIVATE_KEY, key_type=KeyType.EC, label=args.label
        )
        public = session.get_key(
            object_class=ObjectClass.PUBLIC_KEY, key_type=KeyType.EC, label=args.label
        )
        signature = private.sign(DIGEST, mechanism=Mechanism.ECDSA)
        if not public.verify(DIGEST, signature, mechanism=Mechanism.ECDSA):
            sys.exit("the first signature does not verify")
        print(f"signed with {args.label}")

        subprocess.run(args.command, check=True, stdout=subprocess.DEVNULL)
        print(f"another process ran: {' '.join(args.command)}")

        for attempt in (1, 2):
            try:
                private.sign(DIGEST, mechanism=Mechanism.ECDSA)
            except (KeyHandleInvalid, ObjectHandleInvalid) as e:
                print(f"attempt {attempt}: the stale handle fails ({type(e).__name__})")
                continue
            sys.exit(f"attempt {attempt}: the stale handle signed with another key")


if __name__ == "__main__":
    main()
