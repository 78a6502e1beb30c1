#!/usr/bin/env bash
# sign_csr.sh: the CA issues a device certificate for a CSR.
#
# Usage: sign_csr.sh --csr FILE [--dir DIR] [--days DAYS] [--out FILE]
#
#   --csr FILE   the device's CSR (from device_csr.sh)
#   --dir DIR    the CA made by mk_ca.sh (default: $CA_DIR, else ./CA_files)
#   --days DAYS  validity of the certificate (default: 365)
#   --out FILE   the certificate (default: the CSR's path with .crt for .csr)
#
# The certificate is for TLS clients only (clientAuth, digitalSignature, not a CA). Serial
# numbers are random, so several of these may run at once without sharing a serial file.
set -euo pipefail

usage() { sed -n '2,/^set -euo/s/^# \{0,1\}//p' "$0"; }
die() { printf 'sign_csr.sh: %s\n' "$*" >&2; exit 1; }
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

csr=""
dir=${CA_DIR:-CA_files}
days=365
out=""
while [ $# -gt 0 ]; do
    case $1 in
    --csr) csr=${2:?--csr needs a value}; shift 2 ;;
    --dir) dir=${2:?--dir needs a value}; shift 2 ;;
    --days) days=${2:?--days needs a value}; shift 2 ;;
    --out) out=${2:?--out needs a value}; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
    esac
done
[ -n "$csr" ] || die "--csr is required"
[ -n "$out" ] || out=${csr%.csr}.crt

# Only a CSR signed by its own key proves the requester holds that key.
csr_verifies "$csr" || die "$csr: bad CSR signature"

extensions=$(mktemp)
trap 'rm -f "$extensions"' EXIT
cat >"$extensions" <<EXT
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EXT

openssl x509 -req -sha256 -days "$days" -in "$csr" \
    -CA "$dir/zk_ca.crt" -CAkey "$dir/zk_ca.key" -set_serial "0x$(openssl rand -hex 16)" \
    -extfile "$extensions" -out "$out" 2>/dev/null
echo "$out: $(openssl x509 -in "$out" -noout -subject)"
