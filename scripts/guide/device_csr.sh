#!/usr/bin/env bash
# device_csr.sh: on the device, a CSR signed by the key inside the security module.
#
# Usage: device_csr.sh --thing NAME [--key URI] [--module PATH] [--out FILE]
#
#   --thing NAME     the device's Thing name, which becomes the CN (default: $THING)
#   --key URI        the private key on the PKCS#11 token
#                    (default: $KEY_URI, else pkcs11:token=zymkey;object=slot0;type=private)
#   --module PATH    the PKCS#11 module the libp11 engine loads (default: $PKCS11_MODULE_PATH,
#                    else p11-kit's proxy, i.e. every module p11-kit knows)
#   --out FILE       where the CSR goes (default: ./device.csr)
#
# openssl signs through the libp11 "pkcs11" engine: the private key never leaves the module.
set -euo pipefail

usage() { sed -n '2,/^set -euo/s/^# \{0,1\}//p' "$0"; }
die() { printf 'device_csr.sh: %s\n' "$*" >&2; exit 1; }
# Whether a CSR's self-signature verifies, by what openssl says: OpenSSL 3.0 (Debian 12)
# prints "Certificate request self-signature verify failure" and still exits 0.
csr_verifies() {
    local said
    said=$(openssl req -in "$1" -noout -verify 2>&1) || return 1
    case $said in
    *"verify failure"*) return 1 ;;
    *"verify OK") return 0 ;;
    *) return 1 ;;
    esac
}

thing=${THING:-}
key_uri=${KEY_URI:-"pkcs11:token=zymkey;object=slot0;type=private"}
out=device.csr
while [ $# -gt 0 ]; do
    case $1 in
    --thing) thing=${2:?--thing needs a value}; shift 2 ;;
    --key) key_uri=${2:?--key needs a value}; shift 2 ;;
    --module) export PKCS11_MODULE_PATH=${2:?--module needs a value}; shift 2 ;;
    --out) out=${2:?--out needs a value}; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
    esac
done
[ -n "$thing" ] || die "--thing is required"
[[ $thing =~ ^[a-zA-Z0-9:_-]{1,128}$ ]] || die "a Thing name is 1-128 of [a-zA-Z0-9:_-]"

openssl req -new -sha256 -engine pkcs11 -keyform engine -key "$key_uri" \
    -subj "/CN=$thing" -out "$out"
# A signature that does not match the public key in the CSR means the token signed with
# another key than the one it shows: no CA should certify that.
csr_verifies "$out" || die "$out: bad CSR signature (the key that signed it is not the public key in it)"
echo "CSR for $thing: $out (self-signature verified)"
