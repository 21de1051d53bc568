#!/usr/bin/env bash
# Self-signed TLS certificate for the gateway, for development and tests only: no key is ever committed.
#   docker/nginx/make-dev-certs.sh [OUT_DIR] [HOSTNAME]   (defaults: docker/nginx/certs, localhost)
# Writes OUT_DIR/tls.crt and OUT_DIR/tls.key (valid 30 days, subjectAltName HOSTNAME, localhost, 127.0.0.1).
# Keeps an existing pair unless FORCE=1. In production mount the hospital's certificate instead.
set -euo pipefail

out_dir="${1:-$(dirname "$0")/certs}"
host="${2:-localhost}"
mkdir -p "$out_dir"
if [ -s "$out_dir/tls.crt" ] && [ -s "$out_dir/tls.key" ] && [ "${FORCE:-0}" != 1 ]; then
    echo "make-dev-certs: $out_dir/tls.crt exists (FORCE=1 to replace)"
    exit 0
fi
san="DNS:localhost,IP:127.0.0.1"
[ "$host" = localhost ] || san="DNS:$host,$san"
umask 077
openssl req -x509 -newkey rsa:2048 -sha256 -nodes -days 30 \
    -keyout "$out_dir/tls.key" -out "$out_dir/tls.crt" \
    -subj "/CN=$host" \
    -addext "subjectAltName=$san" \
    -addext "basicConstraints=critical,CA:FALSE" \
    -addext "extendedKeyUsage=serverAuth" 2>/dev/null
# The unprivileged nginx image runs as uid 101, not as the host user that owns these files, so it can only
# read a world-readable key. Acceptable for a throwaway 30-day dev key; production mounts a real secret.
chmod 644 "$out_dir/tls.crt" "$out_dir/tls.key"
echo "make-dev-certs: wrote $out_dir/tls.crt and $out_dir/tls.key for $host"
