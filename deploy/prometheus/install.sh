#!/usr/bin/env bash
# Puts `prometheus` and `promtool` on PATH from the distribution's package (Debian/Ubuntu), for the rule tests
# and the integration test. Idempotent: does nothing when both are already there.
# The package may also enable a system service; our tests never use it, they start their own process.
set -euo pipefail
bash "$(dirname "$0")/../tools/apt-install.sh" prometheus prometheus promtool
echo "install.sh: $(prometheus --version 2>&1 | head -n 1)"
