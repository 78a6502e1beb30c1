#!/usr/bin/env bash
# Installs what building and testing zkiot needs on Debian 12: the Debian packages
# (only those missing) and a Python venv with the pinned test requirements.
# Idempotent: a second run does no work. Run as root (or with sudo available).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${ZKIOT_VENV:-$REPO/.venv}
REQUIREMENTS=$REPO/tests/python/requirements.txt

# mosquitto is the MQTT broker of tests/e2e/75-mqtt.sh, which runs its own instance on a
# free port; the package's system service, where it starts, listens on localhost only.
PACKAGES=(opensc libengine-pkcs11-openssl gnutls-bin p11-kit p11-kit-modules curl mosquitto
          softhsm2 python3-venv pkg-config build-essential)

log() { printf 'install-deps: %s\n' "$*"; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

is_installed() {
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}

missing=()
for pkg in "${PACKAGES[@]}"; do
    is_installed "$pkg" || missing+=("$pkg")
done
# Naming libssl-dev in an install line upgrades the system OpenSSL even when it is
# already installed, so it is named only when it is really missing.
is_installed libssl-dev || missing+=(libssl-dev)

if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -qq
    as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null
else
    log "Debian packages present"
fi

# The venv is rebuilt only when the requirements change (their hash is kept inside it).
stamp=$VENV/.requirements.sha256
want=$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)
if [ -x "$VENV/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    log "venv $VENV up to date"
else
    log "creating venv $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQUIREMENTS"
    echo "$want" >"$stamp"
fi

if ! command -v cargo >/dev/null 2>&1; then
    log "cargo not found: install Rust (https://rustup.rs) and re-run"
    exit 1
fi

# The fuzz targets and the sanitizer builds need the nightly toolchain.
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    log "installing the nightly Rust toolchain (fuzzing, sanitizers)"
    rustup toolchain install nightly --profile minimal
fi
