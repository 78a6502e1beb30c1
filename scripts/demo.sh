#!/usr/bin/env bash
# The main job: the whole guide on this machine, from a fresh Debian 12 install.
#
# Installs what is missing (scripts/install-deps.sh: Debian packages, the Python venv with
# moto and the AWS CLI), then runs scripts/flow.sh: the operator's steps against a local AWS
# stand-in (moto), the device's steps on an emulated Zymkey through the PKCS#11 module, and
# temporary AWS credentials from a local credentials provider, which then work against moto.
# Its files stay in ./flow (or $ZKIOT_FLOW_DIR).
#
# scripts/token-demo.sh shows the device half with stock tools only (openssl, curl,
# pkcs11-tool).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$REPO/scripts/install-deps.sh"
exec "$REPO/scripts/flow.sh" "$@"
