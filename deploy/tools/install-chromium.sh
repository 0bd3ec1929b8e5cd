#!/usr/bin/env bash
# Puts Debian's Chromium at /usr/bin/chromium for the browser tests of `stampflow view`
# (tests/unit/test_view_browser.py drives it through Playwright's Python package; Playwright never downloads a
# browser of its own here). Idempotent and quiet: does nothing when chromium is already installed.
set -euo pipefail
exec bash "$(dirname "$0")/apt-install.sh" chromium chromium
