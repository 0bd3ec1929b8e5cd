#!/usr/bin/env bash
# apt-install.sh PACKAGE COMMAND...: installs Debian's PACKAGE when any COMMAND is missing from PATH, then checks
# that every COMMAND is there. Idempotent and quiet when they already are. The one way `make test` installs a
# Debian package (Prometheus, Chromium), so root/sudo handling and the empty-package-list case live in one place.
set -euo pipefail

package=$1
shift
missing=0
for cmd in "$@"; do
    command -v "$cmd" >/dev/null 2>&1 || missing=1
done
[ "$missing" -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
    echo "apt-install.sh: no apt-get here; install Debian's '$package' yourself (it provides: $*)" >&2
    exit 1
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        echo "apt-install.sh: not root and no sudo; run 'apt-get install -y $package' as root" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
# A fresh container has empty package lists, so the package is "not found" until an update.
if ! apt-cache show "$package" >/dev/null 2>&1; then
    "${SUDO[@]}" apt-get update -q
fi
echo "apt-install.sh: installing Debian's $package (first time only) ..." >&2
# policy-rc.d-less containers print a warning when a packaged service cannot start; expected and harmless.
"${SUDO[@]}" apt-get install -y -q --no-install-recommends "$package" >/dev/null

for cmd in "$@"; do
    if ! command -v "$cmd" >/dev/null 2>&1; then
        echo "apt-install.sh: $cmd still not on PATH after installing the $package package" >&2
        exit 1
    fi
done
