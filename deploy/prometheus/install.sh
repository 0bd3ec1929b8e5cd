#!/usr/bin/env bash
# Puts `prometheus` and `promtool` on PATH from the distribution's package (Debian/Ubuntu), for the rule tests
# and the integration test. Idempotent: does nothing when both are already there.
# The package may also enable a system service; our tests never use it, they start their own process.
set -euo pipefail

if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install.sh: no apt-get here; install Prometheus (prometheus and promtool, 2.x or later) yourself" >&2
    exit 1
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        echo "install.sh: not root and no sudo; run 'apt-get install -y prometheus' as root" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
# A fresh container has empty package lists, so the package is "not found" until an update.
if ! apt-cache show prometheus >/dev/null 2>&1; then
    "${SUDO[@]}" apt-get update -q
fi
# policy-rc.d-less containers print a warning when the service cannot start; that is expected and harmless.
"${SUDO[@]}" apt-get install -y -q --no-install-recommends prometheus

for tool in prometheus promtool; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "install.sh: $tool still not on PATH after installing the prometheus package" >&2
        exit 1
    fi
done
echo "install.sh: $(prometheus --version 2>&1 | head -n 1)"
