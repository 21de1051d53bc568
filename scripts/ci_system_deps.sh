#!/usr/bin/env bash
# Debian packages that tests/deploy runs for real: nginx (the gateway), prometheus (and its promtool),
# docker-compose (v1.29 parses and validates the compose file; no Docker engine is needed) and openssl
# (dev certificates); and espeak-ng, the speech of the generated non-auscultation clips that export trains
# the sound-type classifier on (training/data/synthetic.py). Idempotent: a fast no-op when every binary is
# already on PATH. Non-interactive.
set -euo pipefail

declare -A PACKAGE_OF=(
    [nginx]=nginx
    [prometheus]=prometheus
    [promtool]=prometheus
    [docker-compose]=docker-compose
    [openssl]=openssl
    [espeak-ng]=espeak-ng
)

missing=()
for binary in "${!PACKAGE_OF[@]}"; do
    command -v "$binary" >/dev/null 2>&1 || missing+=("${PACKAGE_OF[$binary]}")
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
# Deduplicate (prometheus gives two binaries) and keep the order stable for the log line.
mapfile -t packages < <(printf '%s\n' "${missing[@]}" | sort -u)

if ! command -v apt-get >/dev/null 2>&1; then
    echo "ci_system_deps: apt-get not found; install by hand: ${packages[*]}" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if ! sudo -n true 2>/dev/null; then
        # Not root and no password-less sudo (a developer's laptop): say what is missing and carry on; the
        # deploy tests then skip with that reason, except under CI=true, where they fail.
        echo "ci_system_deps: not root; install by hand for the deploy tests: ${packages[*]}" >&2
        exit 0
    fi
    SUDO="sudo -n"
fi

echo "ci_system_deps: installing ${packages[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# --no-install-recommends keeps prometheus from pulling node-exporter and friends. The packages ship
# systemd units; with no init running here (containers, CI) nothing is started, and the tests start
# their own processes with temporary configs.
$SUDO apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
