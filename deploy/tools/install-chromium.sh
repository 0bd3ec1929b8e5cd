#!/usr/bin/env bash
# Puts Debian's Chromium at /usr/bin/chromium for the browser tests of `stampflow view`
# (tests/*/test_view_browser.py drive it through Playwright's Python package; Playwright never downloads a
# browser of its own here). Idempotent and quiet: does nothing when chromium is already installed.
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-chromium.sh: no apt-get here; install Chromium yourself (the browser tests skip without it)" >&2
    exit 1
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        echo "install-chromium.sh: not root and no sudo; run 'apt-get install -y chromium' as root" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
# A fresh container has empty package lists, so the package is "not found" until an update.
if ! apt-cache show chromium >/dev/null 2>&1; then
    "${SUDO[@]}" apt-get update -q
fi
echo "install-chromium.sh: installing Debian's chromium (first time only) ..." >&2
"${SUDO[@]}" apt-get install -y -q --no-install-recommends chromium >/dev/null
command -v chromium >/dev/null 2>&1 || { echo "install-chromium.sh: chromium not on PATH after install" >&2; exit 1; }
