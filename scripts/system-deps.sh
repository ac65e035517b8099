#!/usr/bin/env bash
# The system packages the test suite drives for real: Debian's chromium (the dashboard test,
# through playwright's Python API; playwright downloads no browser here) and redis-server (the
# shared-state tests start their own on a free loopback port). Installed with apt-get when
# missing; nothing happens when they are there.
set -euo pipefail
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
    echo "system-deps: ${missing[*]} missing and no apt-get here: install them, or the tests" \
         "that need them fail (CI) or skip with a reason (elsewhere)" >&2
    exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
        echo "system-deps: ${missing[*]} missing; run as root or install them yourself" >&2
        exit 0
    fi
fi
echo "system-deps: installing ${missing[*]} (apt-get)"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
