#!/usr/bin/env bash
# Installs the deployment validators the unit tests run (tests/unit/test_deploy_*.py):
#   kustomize  -> $STAMPFLOW_TOOLS_DIR/bin/kustomize  (go install through the Go module proxy)
# hadolint, jsonschema and kubernetes-validate come with the dev extra from PyPI; the compose-spec and CRD
# schemas are vendored in deploy/tools/schemas/, so nothing here or in the tests needs the network after this.
# Idempotent: a no-op (well under a second) once the pinned version is in place.
set -euo pipefail

KUSTOMIZE_VERSION="${KUSTOMIZE_VERSION:-v5.8.1}"
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd -P)"
TOOLS_DIR="${STAMPFLOW_TOOLS_DIR:-$REPO_ROOT/.cache/tools}"
BIN="$TOOLS_DIR/bin"

log() { printf '[install-validators] %s\n' "$*" >&2; }

kustomize_ok() {
  [[ -x "$BIN/kustomize" ]] && "$BIN/kustomize" version 2>/dev/null | grep -qx "$KUSTOMIZE_VERSION"
}

mkdir -p "$BIN"
if kustomize_ok; then
  exit 0
fi
if ! command -v go >/dev/null 2>&1; then
  log "ERROR: go not found on PATH (needed once, to install kustomize $KUSTOMIZE_VERSION)"
  exit 1
fi
(
  # make test and a developer's pytest may both get here; one build is enough.
  exec 9>"$TOOLS_DIR/.install.lock"
  command -v flock >/dev/null 2>&1 && flock 9
  if kustomize_ok; then exit 0; fi
  log "installing kustomize $KUSTOMIZE_VERSION into $BIN (go install, first time only) ..."
  t0=$SECONDS
  # -trimpath/-buildvcs=false: the binary must not depend on where or in which checkout it was built.
  GOBIN="$BIN" GOFLAGS="-buildvcs=false -trimpath" \
    go install "sigs.k8s.io/kustomize/kustomize/v5@${KUSTOMIZE_VERSION}"
  kustomize_ok || { log "ERROR: $BIN/kustomize does not report $KUSTOMIZE_VERSION"; exit 1; }
  log "kustomize $KUSTOMIZE_VERSION ready in $((SECONDS - t0)) s"
)
