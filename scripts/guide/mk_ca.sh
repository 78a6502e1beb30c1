#!/usr/bin/env bash
# mk_ca.sh: create the CA that signs the device certificates.
#
# Usage: mk_ca.sh [--dir DIR] [--subject SUBJECT] [--days DAYS]
#
#   --dir DIR          where the CA files go (default: $CA_DIR, else ./CA_files):
#                      zk_ca.key (P-256 private key, mode 0600) and zk_ca.crt (self-signed)
#   --subject SUBJECT  subject of the CA certificate (default: "/CN=Device CA")
#   --days DAYS        validity of the CA certificate (default: 3650)
#
# An existing CA key is never overwritten: devices signed by it would stop chaining to the CA.
set -euo pipefail

usage() { sed -n '2,/^set -euo/s/^# \{0,1\}//p' "$0"; }
die() { printf 'mk_ca.sh: %s\n' "$*" >&2; exit 1; }

dir=${CA_DIR:-CA_files}
subject="/CN=Device CA"
days=3650
while [ $# -gt 0 ]; do
    case $1 in
    --dir) dir=${2:?--dir needs a value}; shift 2 ;;
    --subject) subject=${2:?--subject needs a value}; shift 2 ;;
    --days) days=${2:?--days needs a value}; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
    esac
done

key=$dir/zk_ca.key
cert=$dir/zk_ca.crt
[ -e "$key" ] && die "$key exists; remove it first to make a new CA"
mkdir -p "$dir"

# The key is created unreadable to others from its first byte, not chmod-ed afterwards.
(umask 077 && openssl ecparam -name prime256v1 -genkey -noout -out "$key")
chmod 600 "$key"

openssl req -x509 -new -key "$key" -sha256 -days "$days" -subj "$subject" \
    -addext 'basicConstraints=critical,CA:TRUE,pathlen:0' \
    -addext 'keyUsage=critical,keyCertSign,cRLSign' \
    -out "$cert"

echo "CA key:         $key"
echo "CA certificate: $cert"
openssl x509 -in "$cert" -noout -subject -enddate -fingerprint -sha256
