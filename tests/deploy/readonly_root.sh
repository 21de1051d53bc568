#!/usr/bin/env bash
# Run a command the way the containers run it: every mount read-only, one tmpfs writable (the container's
# /tmp). Used under `unshare --mount` by tests/deploy/test_readonly_root.py, so nothing outside this private
# mount namespace changes.  Usage: readonly_root.sh WRITABLE_DIR PROBE_FILE COMMAND...
set -euo pipefail
writable="$1"
probe="$2"
shift 2
mount --make-rprivate /
# Read-only first, then the tmpfs on top (a tmpfs mounted before would be remounted read-only too).
awk '{print $2}' /proc/self/mounts | sort -u | while read -r point; do
    case "$point" in /proc* | /sys* | /dev*) continue ;; esac
    mount -o remount,bind,ro "$point" 2>/dev/null || true
done
mount -t tmpfs -o size=64m,mode=1777 tmpfs "$writable"
# Prove the remount took: a write next to the code must fail, else the test would prove nothing.
if touch "$probe" 2>/dev/null; then
    rm -f "$probe"
    echo "readonly_root: $probe is still writable" >&2
    exit 3
fi
exec "$@"
