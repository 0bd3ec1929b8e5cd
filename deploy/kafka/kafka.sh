#!/usr/bin/env bash
# Local single-node Apache Kafka (KRaft, combined broker+controller) for stampflow
# development and tests.  Jars come from Maven Central via deploy/kafka/pom.xml.
#
#   kafka.sh fetch              resolve broker jars into $STAMPFLOW_KAFKA_HOME/libs (idempotent)
#   kafka.sh start  [RUN_DIR]   format + start a fresh broker; last stdout line = bootstrap address
#   kafka.sh stop   [RUN_DIR]   stop it (TERM, then KILL after a grace period); safe if not running
#   kafka.sh status [RUN_DIR]   print "running ..." (exit 0) or "not running" (exit 3)
#
# RUN_DIR defaults to <repo>/.kafka-run.  See deploy/kafka/README.md for details and
# the environment variables that tune it.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd -P)"
POM="$SCRIPT_DIR/pom.xml"
LOG4J2_XML="$SCRIPT_DIR/log4j2.xml"

KAFKA_HOME="${STAMPFLOW_KAFKA_HOME:-$REPO_ROOT/.cache/kafka}"
LIBS="$KAFKA_HOME/libs"
STAMP="$LIBS/.stamp"
DEFAULT_RUN_DIR="$REPO_ROOT/.kafka-run"

START_TIMEOUT="${STAMPFLOW_KAFKA_START_TIMEOUT:-90}"
STOP_TIMEOUT="${STAMPFLOW_KAFKA_STOP_TIMEOUT:-20}"
HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xmx512m -Xms256m}"
# Small, fast-starting JVM for a 2-core box.  Override with KAFKA_JVM_OPTS.
JVM_OPTS="${KAFKA_JVM_OPTS:--XX:+UseSerialGC -XX:+ExitOnOutOfMemoryError -XX:-UsePerfData -Djava.awt.headless=true -Djava.net.preferIPv4Stack=true}"
# AppCDS: the first broker run dumps a dynamic class-data-sharing archive at exit
# (on `stop`), later starts map it and come up ~1.5-2 s faster.  0 disables.
CDS="${STAMPFLOW_KAFKA_CDS:-1}"
CDS_DIR="$KAFKA_HOME/cds"
# Options for the short-lived StorageTool JVM (C1 only: it runs for ~1 s).
TOOL_JVM_OPTS="-Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:-UsePerfData -Djava.awt.headless=true"

log() { printf '[kafka.sh] %s\n' "$*" >&2; }
die() { printf '[kafka.sh] ERROR: %s\n' "$*" >&2; exit 1; }

usage() {
  cat >&2 <<EOF
usage: $(basename "$0") fetch
       $(basename "$0") start  [RUN_DIR]   (default: $DEFAULT_RUN_DIR)
       $(basename "$0") stop   [RUN_DIR]
       $(basename "$0") status [RUN_DIR]
EOF
}

python_bin() {
  if [[ -n "${PYTHON:-}" ]]; then echo "$PYTHON"
  elif command -v python3 >/dev/null 2>&1; then echo python3
  elif [[ -x "$REPO_ROOT/.venv/bin/python" ]]; then echo "$REPO_ROOT/.venv/bin/python"
  else die "python3 is needed (to pick free ports / generate a cluster id)"
  fi
}

pom_hash() { sha256sum "$POM" | cut -d' ' -f1; }

libs_ok() {
  [[ -f "$STAMP" ]] && [[ "$(cat "$STAMP")" == "$(pom_hash)" ]] \
    && compgen -G "$LIBS/kafka_2.13-*.jar" >/dev/null
}

# ---------------------------------------------------------------- fetch
cmd_fetch() {
  if libs_ok; then
    log "jars already resolved in $LIBS"
    return 0
  fi
  command -v mvn >/dev/null 2>&1 || die "mvn not found on PATH"
  mkdir -p "$KAFKA_HOME"
  (
    # Serialise concurrent fetches of the same KAFKA_HOME.
    exec 9>"$KAFKA_HOME/.fetch.lock"
    command -v flock >/dev/null 2>&1 && flock 9
    if libs_ok; then exit 0; fi
    tmp="$KAFKA_HOME/libs.tmp.$$"
    rm -rf "$tmp"
    log "resolving Kafka jars with Maven into $LIBS ..."
    local_t0=$SECONDS
    if ! mvn -B -q -Dstyle.color=never -f "$POM" \
          dependency:copy-dependencies -DoutputDirectory="$tmp" >"$KAFKA_HOME/fetch.log" 2>&1; then
      cat "$KAFKA_HOME/fetch.log" >&2
      rm -rf "$tmp"
      die "mvn dependency:copy-dependencies failed (output above, also in $KAFKA_HOME/fetch.log)"
    fi
    compgen -G "$tmp/kafka_2.13-*.jar" >/dev/null || { rm -rf "$tmp"; die "kafka_2.13 jar missing after resolution"; }
    pom_hash >"$tmp/.stamp"
    rm -rf "$LIBS"
    mv "$tmp" "$LIBS"
    log "resolved $(find "$LIBS" -maxdepth 1 -name "*.jar" | wc -l) jars in $((SECONDS - local_t0)) s"
  )
}

# ---------------------------------------------------------------- helpers
# Identifies the (jar set, JVM) pair a CDS archive was dumped for.
cds_key() {
  { pom_hash; java -version 2>&1; command -v java; } | sha256sum | cut -c1-16
}

# Echo the JVM flags for CDS, recording a pending dump in RUN_DIR/cds-pending.
cds_opts() {
  local run_dir="$1" key
  rm -f "$run_dir/cds-pending"
  [[ "$CDS" == 1 ]] || return 0
  key="$(cds_key)"
  mkdir -p "$CDS_DIR"
  if [[ -s "$CDS_DIR/broker-$key.jsa" ]]; then
    echo "-XX:SharedArchiveFile=$CDS_DIR/broker-$key.jsa"
  else
    # Stale archives (other pom / JVM) are useless; drop them, and leftovers
    # of dumps that never finished.
    rm -f "$CDS_DIR"/broker-*.jsa
    find "$CDS_DIR" -name 'broker-*.jsa.tmp.*' -mmin +1440 -delete 2>/dev/null || true
    local tmp="$CDS_DIR/broker-$key.jsa.tmp.$$"
    printf '%s\n%s\n' "$tmp" "$CDS_DIR/broker-$key.jsa" >"$run_dir/cds-pending"
    echo "-XX:ArchiveClassesAtExit=$tmp"
  fi
}

# After the broker exited: publish (publish=1, clean TERM shutdown) or discard the
# archive it was told to dump.  A KILLed JVM may have left a partial file.
cds_finish() {
  local run_dir="$1" publish="$2" tmp="" final=""
  [[ -f "$run_dir/cds-pending" ]] || return 0
  { read -r tmp; read -r final; } <"$run_dir/cds-pending" || true
  rm -f "$run_dir/cds-pending"
  [[ -n "$tmp" && -n "$final" ]] || return 0
  if [[ "$publish" == 1 && -s "$tmp" ]]; then
    mv -f "$tmp" "$final" && log "saved class-data-sharing archive $final"
  else
    rm -f "$tmp"
  fi
}

# Absolute RUN_DIR; created only when $2 == create (stop/status never create it).
resolve_run_dir() {
  local d="${1:-$DEFAULT_RUN_DIR}"
  if [[ "${2:-}" == create ]]; then
    mkdir -p "$d"
  elif [[ ! -d "$d" ]]; then
    echo "$d"; return 0
  fi
  (cd "$d" && pwd -P)
}

# PID from RUN_DIR/pid if that process is alive and is our broker; else empty.
live_pid() {
  local run_dir="$1" pid
  [[ -f "$run_dir/pid" ]] || return 0
  pid="$(tr -dc '0-9' <"$run_dir/pid")"
  [[ -n "$pid" ]] || return 0
  kill -0 "$pid" 2>/dev/null || return 0
  # Guard against PID reuse: must be a kafka.Kafka JVM using this run dir.
  if [[ -r "/proc/$pid/cmdline" ]]; then
    local cmdline
    cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline")"
    [[ "$cmdline" == *kafka.Kafka* && "$cmdline" == *"$run_dir/"* ]] || return 0
  fi
  echo "$pid"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

kill_and_wait() {
  local pid="$1" timeout="$2" i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < timeout * 5; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.2
  done
  log "pid $pid still alive after ${timeout}s, sending KILL"
  kill -KILL "$pid" 2>/dev/null || true
  for ((i = 0; i < 25; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  return 1
}

dump_logs() {
  local run_dir="$1" f
  for f in "$run_dir/broker.log" "$run_dir/server.log"; do
    [[ -s "$f" ]] || continue
    printf -- '---- tail -n 40 %s ----\n' "$f" >&2
    tail -n 40 "$f" >&2
  done
  if grep -qE '^\[[^]]*\] (ERROR|FATAL) ' "$run_dir/server.log" 2>/dev/null; then
    printf -- '---- first ERROR/FATAL lines of %s ----\n' "$run_dir/server.log" >&2
    grep -E '^\[[^]]*\] (ERROR|FATAL) ' "$run_dir/server.log" | head -n 10 | cut -c1-400 >&2
  fi
}

# ---------------------------------------------------------------- start
cmd_start() {
  local run_dir pid t0 py port cport cluster_id props
  t0=$SECONDS
  run_dir="$(resolve_run_dir "${1:-}" create)"

  pid="$(live_pid "$run_dir")"
  if [[ -n "$pid" ]]; then
    die "a broker is already running from $run_dir (pid $pid, bootstrap $(cat "$run_dir/bootstrap" 2>/dev/null || echo '?')); run '$0 stop $run_dir' first"
  fi
  rm -f "$run_dir/pid" "$run_dir/bootstrap"
  cds_finish "$run_dir" 0

  command -v java >/dev/null 2>&1 || die "java not found on PATH"
  cmd_fetch

  py="$(python_bin)"
  if [[ -n "${STAMPFLOW_KAFKA_PORT:-}" || -n "${STAMPFLOW_KAFKA_CONTROLLER_PORT:-}" ]]; then
    [[ -n "${STAMPFLOW_KAFKA_PORT:-}" && -n "${STAMPFLOW_KAFKA_CONTROLLER_PORT:-}" ]] \
      || die "set both STAMPFLOW_KAFKA_PORT and STAMPFLOW_KAFKA_CONTROLLER_PORT, or neither"
    port="$STAMPFLOW_KAFKA_PORT"; cport="$STAMPFLOW_KAFKA_CONTROLLER_PORT"
  else
    read -r port cport < <("$py" -c '
import socket
socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])
for s in socks:
    s.close()
')
  fi
  [[ "$port" =~ ^[0-9]+$ && "$cport" =~ ^[0-9]+$ ]] || die "could not pick free ports"

  # Kafka Uuid: 16 random bytes, url-safe base64 without padding, not starting with '-'.
  cluster_id="$("$py" -c '
import base64, uuid
while True:
    s = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
    if not s.startswith("-"):
        print(s); break
')"

  # Always a fresh cluster: the controller endpoint is part of the formatted
  # KRaft voter set and changes with every start.
  rm -rf "$run_dir/data"
  rm -f "$run_dir"/server.log* "$run_dir/broker.log" "$run_dir/format.log"
  mkdir -p "$run_dir/data"

  props="$run_dir/server.properties"
  cat >"$props" <<EOF
# Generated by deploy/kafka/kafka.sh -- overwritten on every start.
# Single-node KRaft cluster (combined broker + controller) on 127.0.0.1.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$cport
controller.listener.names=CONTROLLER
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT

log.dirs=$run_dir/data
num.partitions=3
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=true
delete.topic.enable=true

# Internal topics: one replica, few partitions (fast first use on one node).
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=10
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0

# Small thread pools for a 2-core machine.
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
background.threads=4

# Dev retention.
log.retention.hours=24
log.segment.bytes=104857600
log.retention.check.interval.ms=300000
EOF

  local -a log_props=("-Dlog4j2.configurationFile=$LOG4J2_XML" "-Dkafka.logs.dir=$run_dir")
  local cp="$LIBS/*"

  log "formatting storage in $run_dir/data (cluster id $cluster_id)"
  # shellcheck disable=SC2086
  if ! java $TOOL_JVM_OPTS "${log_props[@]}" -cp "$cp" kafka.tools.StorageTool \
        format --standalone -t "$cluster_id" -c "$props" >"$run_dir/format.log" 2>&1; then
    cat "$run_dir/format.log" >&2
    die "kafka-storage format failed"
  fi

  local cds_flags
  cds_flags="$(cds_opts "$run_dir")"
  log "starting broker: PLAINTEXT 127.0.0.1:$port, CONTROLLER 127.0.0.1:$cport"
  # shellcheck disable=SC2086
  nohup java $HEAP_OPTS $JVM_OPTS $cds_flags "${log_props[@]}" -cp "$cp" \
    kafka.Kafka "$props" >"$run_dir/broker.log" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$run_dir/pid"

  local deadline=$((SECONDS + START_TIMEOUT))
  while :; do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$run_dir/pid"; cds_finish "$run_dir" 0
      dump_logs "$run_dir"
      die "broker process $pid exited during startup (logs: $run_dir/broker.log, $run_dir/server.log)"
    fi
    if grep -q "Kafka Server started" "$run_dir/server.log" 2>/dev/null && port_open "$port"; then
      break
    fi
    if ((SECONDS >= deadline)); then
      dump_logs "$run_dir"
      log "broker not up after ${START_TIMEOUT}s; killing pid $pid"
      kill_and_wait "$pid" 5 || true
      rm -f "$run_dir/pid"; cds_finish "$run_dir" 0
      die "broker did not start within ${START_TIMEOUT}s (logs: $run_dir/broker.log, $run_dir/server.log)"
    fi
    sleep 0.25
  done

  echo "127.0.0.1:$port" >"$run_dir/bootstrap"
  log "broker up (pid $pid) in $((SECONDS - t0)) s; run dir $run_dir"
  echo "127.0.0.1:$port"
}

# ---------------------------------------------------------------- stop
cmd_stop() {
  local run_dir pid
  run_dir="$(resolve_run_dir "${1:-}")"
  pid="$(live_pid "$run_dir")"
  if [[ -z "$pid" ]]; then
    if [[ -d "$run_dir" ]]; then
      rm -f "$run_dir/pid" "$run_dir/bootstrap"
      cds_finish "$run_dir" 0
    fi
    log "not running ($run_dir)"
    return 0
  fi
  log "stopping broker pid $pid ..."
  local clean=1
  kill_and_wait "$pid" "$STOP_TIMEOUT" || clean=0
  if kill -0 "$pid" 2>/dev/null; then
    die "pid $pid did not exit"
  fi
  rm -f "$run_dir/pid" "$run_dir/bootstrap"
  cds_finish "$run_dir" "$clean"
  log "stopped"
}

# ---------------------------------------------------------------- status
cmd_status() {
  local run_dir pid
  run_dir="$(resolve_run_dir "${1:-}")"
  pid="$(live_pid "$run_dir")"
  if [[ -n "$pid" ]]; then
    echo "running (pid $pid, bootstrap $(cat "$run_dir/bootstrap" 2>/dev/null || echo 'starting'), run dir $run_dir)"
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
