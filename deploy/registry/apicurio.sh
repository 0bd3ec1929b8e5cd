#!/usr/bin/env bash
# Local Apicurio Registry (in-memory storage) for stampflow development and tests: a real schema registry that
# serves the Confluent-compatible API under /apis/ccompat/v7, as Rubin's alert stream expects.
# Apicurio's own Quarkus distribution comes from Maven Central (io.apicurio:apicurio-registry-app, the "all"
# tar.gz: runner jar + lib/), fetched with mvn at a pinned version, like deploy/kafka/kafka.sh fetches Kafka.
#
#   apicurio.sh fetch              resolve + unpack the registry into $STAMPFLOW_REGISTRY_HOME (idempotent)
#   apicurio.sh start  [RUN_DIR]   start a fresh, empty registry on 127.0.0.1; last stdout line = its ccompat URL
#   apicurio.sh stop   [RUN_DIR]   stop it by its PID (TERM, then KILL after a grace period); safe if not running
#   apicurio.sh status [RUN_DIR]   print "running ..." (exit 0) or "not running" (exit 3)
#
# RUN_DIR defaults to <repo>/.cache/registry-run. Files there: pid, url (the ccompat base URL), base (the registry
# root URL), registry.log, tmp/. Load Rubin's schemas under Rubin's ids with
#   .venv/bin/python -m stream.rubin_registry "$(cat RUN_DIR/url)"
# See docs/rubin.md.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd -P)"

# Pinned. 3.0.9 (Quarkus 3.15) runs on Java 17, the machines' default JVM; 3.3.x needs Java 21+ (class files
# version 65), and neither lets ccompat clients choose ids (see stream/rubin_registry.py). The parent pom of apicurio-registry-app 3.0.9
# (io.apicurio:apicurio-registry:3.0.9) is missing from Maven Central, and maven-dependency-plugin 3.x reads it
# (and fails) even for a single artifact; 2.8's copy goal fetches just the artifact, checksums enforced (-C).
APICURIO_VERSION="3.0.9"
ARTIFACT="io.apicurio:apicurio-registry-app:${APICURIO_VERSION}:tar.gz:all"
DEPENDENCY_PLUGIN="org.apache.maven.plugins:maven-dependency-plugin:2.8"

REGISTRY_HOME="${STAMPFLOW_REGISTRY_HOME:-$REPO_ROOT/.cache/apicurio}"
DIST="$REGISTRY_HOME/apicurio-registry-app-$APICURIO_VERSION"
RUNNER="$DIST/apicurio-registry-app-$APICURIO_VERSION-runner.jar"
STAMP="$DIST/.stamp"
DEFAULT_RUN_DIR="$REPO_ROOT/.cache/registry-run"  # under .cache/: git-ignored

START_TIMEOUT="${STAMPFLOW_REGISTRY_START_TIMEOUT:-120}"
STOP_TIMEOUT="${STAMPFLOW_REGISTRY_STOP_TIMEOUT:-20}"
# The first clean stop dumps the class-data-sharing archive (~60 MB): seconds on an idle machine, over 40 s on
# the loaded 2-core one. A dump cut short is thrown away and the next run dumps again, so that stop may wait long.
CDS_DUMP_TIMEOUT="${STAMPFLOW_REGISTRY_CDS_DUMP_TIMEOUT:-180}"
# AppCDS, as kafka.sh does: the first run dumps a dynamic class-data-sharing archive at a clean exit, later
# starts map it. Measured here on the loaded 2-core machine: 22-25 s to answer without it, 8-13 s with it.
# 0 disables.
CDS="${STAMPFLOW_REGISTRY_CDS:-1}"
CDS_DIR="$REGISTRY_HOME/cds"
# Small, fast-starting JVM for a 2-core box: C1 only (a test registry answers a handful of requests).
JVM_OPTS="${STAMPFLOW_REGISTRY_JVM_OPTS:--Xmx384m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:+ExitOnOutOfMemoryError -XX:-UsePerfData -Djava.net.preferIPv4Stack=true}"

SERVICE_TAG="apicurio.sh"
JVM_MARK='apicurio-registry-app-*-runner.jar'
CDS_PREFIX="registry"
# shellcheck source=../lib/jvm-service.sh
source "$SCRIPT_DIR/../lib/jvm-service.sh"  # log, die, run dir, PID, stop and CDS helpers

usage() {
  cat >&2 <<EOF
usage: $(basename "$0") fetch
       $(basename "$0") start  [RUN_DIR]   (default: $DEFAULT_RUN_DIR)
       $(basename "$0") stop   [RUN_DIR]
       $(basename "$0") status [RUN_DIR]
EOF
}

dist_ok() { [[ -f "$STAMP" && "$(cat "$STAMP")" == "$ARTIFACT" && -f "$RUNNER" && -d "$DIST/lib" ]]; }

# ---------------------------------------------------------------- fetch
cmd_fetch() {
  if dist_ok; then
    log "Apicurio Registry $APICURIO_VERSION already in $DIST"
    return 0
  fi
  command -v mvn >/dev/null 2>&1 || die "mvn not found on PATH"
  mkdir -p "$REGISTRY_HOME"
  (
    exec 9>"$REGISTRY_HOME/.fetch.lock"   # serialise concurrent fetches of the same home
    command -v flock >/dev/null 2>&1 && flock 9
    if dist_ok; then exit 0; fi
    tmp="$REGISTRY_HOME/fetch.tmp.$$"
    rm -rf "$tmp"; mkdir -p "$tmp/dist"
    log "fetching $ARTIFACT with Maven ..."
    t0=$SECONDS
    if ! mvn -B -q -C -Dstyle.color=never "$DEPENDENCY_PLUGIN:copy" -Dartifact="$ARTIFACT" \
          -DoutputDirectory="$tmp" >"$REGISTRY_HOME/fetch.log" 2>&1; then
      cat "$REGISTRY_HOME/fetch.log" >&2
      rm -rf "$tmp"
      die "mvn dependency:copy failed (output above, also in $REGISTRY_HOME/fetch.log)"
    fi
    tar -xzf "$tmp/apicurio-registry-app-$APICURIO_VERSION-all.tar.gz" -C "$tmp/dist" \
      || { rm -rf "$tmp"; die "could not unpack the Apicurio distribution"; }
    [[ -f "$tmp/dist/apicurio-registry-app-$APICURIO_VERSION-runner.jar" ]] \
      || { rm -rf "$tmp"; die "runner jar missing from the Apicurio distribution"; }
    echo "$ARTIFACT" >"$tmp/dist/.stamp"
    rm -rf "$DIST"
    mv "$tmp/dist" "$DIST"
    rm -rf "$tmp"
    log "unpacked Apicurio Registry $APICURIO_VERSION ($(find "$DIST/lib" -name '*.jar' | wc -l) jars) in $((SECONDS - t0)) s"
  )
}

# ---------------------------------------------------------------- helpers

# Identifies the (distribution, JVM) pair a CDS archive was dumped for.
cds_key() {
  { echo "$ARTIFACT"; java -version 2>&1; command -v java; } | sha256sum | cut -c1-16
}

# 0 when the ccompat API answers (the registry is ready, storage included).
ready() {
  "$(python_bin)" - "$1" <<'EOF' 2>/dev/null
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1] + "/schemas/types", timeout=2) as r:
    sys.exit(0 if r.status == 200 and b"AVRO" in r.read() else 1)
EOF
}

# ---------------------------------------------------------------- start
cmd_start() {
  local run_dir pid t0 port base
  t0=$SECONDS
  run_dir="$(resolve_run_dir "${1:-}" create)"
  pid="$(live_pid "$run_dir")"
  if [[ -n "$pid" ]]; then
    die "a registry is already running from $run_dir (pid $pid, $(cat "$run_dir/url" 2>/dev/null || echo '?')); run '$0 stop $run_dir' first"
  fi
  rm -f "$run_dir/pid" "$run_dir/url" "$run_dir/base"
  cds_finish "$run_dir" 0
  command -v java >/dev/null 2>&1 || die "java not found on PATH (Java 17+ is needed)"
  cmd_fetch

  if [[ -n "${STAMPFLOW_REGISTRY_PORT:-}" ]]; then
    port="$STAMPFLOW_REGISTRY_PORT"
  else
    port="$("$(python_bin)" -c '
import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
  fi
  [[ "$port" =~ ^[0-9]+$ ]] || die "could not pick a free port"
  base="http://127.0.0.1:$port"

  # Always empty: in-memory storage (H2 in memory, the distribution's default) lives and dies with the JVM.
  rm -rf "$run_dir/tmp"; mkdir -p "$run_dir/tmp"
  rm -f "$run_dir/registry.log"
  local cds_flags
  cds_flags="$(cds_opts "$run_dir")"
  log "starting Apicurio Registry $APICURIO_VERSION on $base"
  # The run dir is on the command line (tmpdir, import/snapshot dirs): live_pid checks it, and Apicurio's
  # scratch files stay out of the shared /tmp.
  # shellcheck disable=SC2086
  nohup java $JVM_OPTS $cds_flags -Djava.io.tmpdir="$run_dir/tmp" \
    -Dquarkus.http.host=127.0.0.1 -Dquarkus.http.port="$port" \
    -Dapicurio.import.work-dir="$run_dir/tmp" -Dapicurio.storage.snapshot.location="$run_dir/tmp" \
    -Dquarkus.http.access-log.enabled=false \
    -jar "$RUNNER" >"$run_dir/registry.log" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$run_dir/pid"

  local deadline=$((SECONDS + START_TIMEOUT))
  while ! ready "$base/apis/ccompat/v7"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$run_dir/pid"; cds_finish "$run_dir" 0
      tail -n 40 "$run_dir/registry.log" >&2 || true
      die "registry process $pid exited during startup (log: $run_dir/registry.log)"
    fi
    if ((SECONDS >= deadline)); then
      tail -n 40 "$run_dir/registry.log" >&2 || true
      kill_and_wait "$pid" 5 || true
      rm -f "$run_dir/pid"; cds_finish "$run_dir" 0
      die "registry did not answer within ${START_TIMEOUT}s (log: $run_dir/registry.log)"
    fi
    sleep 0.25
  done
  echo "$base" >"$run_dir/base"
  echo "$base/apis/ccompat/v7" >"$run_dir/url"
  log "registry up (pid $pid) in $((SECONDS - t0)) s; run dir $run_dir"
  echo "$base/apis/ccompat/v7"
}

# ---------------------------------------------------------------- stop
cmd_stop() {
  local run_dir pid
  run_dir="$(resolve_run_dir "${1:-}")"
  pid="$(live_pid "$run_dir")"
  if [[ -z "$pid" ]]; then
    if [[ -d "$run_dir" ]]; then
      rm -f "$run_dir/pid" "$run_dir/url" "$run_dir/base"
      cds_finish "$run_dir" 0
    fi
    log "not running ($run_dir)"
    return 0
  fi
  local clean=1 timeout="$STOP_TIMEOUT"
  if [[ -f "$run_dir/cds-pending" ]]; then
    timeout="$CDS_DUMP_TIMEOUT"
    log "stopping registry pid $pid (it dumps its class-data-sharing archive first, once) ..."
  else
    log "stopping registry pid $pid ..."
  fi
  kill_and_wait "$pid" "$timeout" || clean=0
  kill -0 "$pid" 2>/dev/null && die "pid $pid did not exit"
  rm -f "$run_dir/pid" "$run_dir/url" "$run_dir/base"
  cds_finish "$run_dir" "$clean"
  rm -rf "$run_dir/tmp"
  log "stopped"
}

# ---------------------------------------------------------------- status
cmd_status() {
  local run_dir pid
  run_dir="$(resolve_run_dir "${1:-}")"
  pid="$(live_pid "$run_dir")"
  if [[ -n "$pid" ]]; then
    echo "running (pid $pid, $(cat "$run_dir/url" 2>/dev/null || echo 'starting'), run dir $run_dir)"
    return 0
  fi
  echo "not running"
  return 3
}

main() {
  local cmd="${1:-}"
  [[ $# -gt 0 ]] && shift
  case "$cmd" in
    fetch)  [[ $# -eq 0 ]] || { usage; exit 2; }; cmd_fetch ;;
    start)  [[ $# -le 1 ]] || { usage; exit 2; }; cmd_start "${1:-}" ;;
    stop)   [[ $# -le 1 ]] || { usage; exit 2; }; cmd_stop "${1:-}" ;;
    status) [[ $# -le 1 ]] || { usage; exit 2; }; cmd_status "${1:-}" ;;
    -h|--help|help) usage ;;
    *) usage; exit 2 ;;
  esac
}

main "$@"
