#!/usr/bin/env bash
# Local single-node Apache Kafka (KRaft, combined broker+controller) for stampflow
# development and tests.  Jars come from Maven Central via deploy/kafka/pom.xml.
#
#   kafka.sh fetch              resolve broker jars into $STAMPFLOW_KAFKA_HOME/libs (idempotent)
#   kafka.sh start  [RUN_DIR]   format + start a fresh broker; last stdout line = bootstrap address
#   kafka.sh stop   [RUN_DIR]   stop it (TERM, then KILL after a grace period); safe if not running
#   kafka.sh status [RUN_DIR]   print "running ..." (exit 0) or "not running" (exit 3)
#   kafka.sh restart [RUN_DIR]  start it again on the same ports and log dirs (data kept, no format)
#   kafka.sh configs ARGS...    kafka-configs (kafka.admin.ConfigCommand) on the broker's classpath
#
# Secured mode: set STAMPFLOW_KAFKA_SSL_KEYSTORE (PKCS12), STAMPFLOW_KAFKA_SSL_KEYSTORE_PASSWORD and
# STAMPFLOW_KAFKA_SCRAM_USERS ("name=password ...") before `start`: the client listener is then SASL_SSL.
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

SERVICE_TAG="kafka.sh"
JVM_MARK='kafka.Kafka'
CDS_PREFIX="broker"
# shellcheck source=../lib/jvm-service.sh
source "$SCRIPT_DIR/../lib/jvm-service.sh"  # log, die, run dir, PID, stop and CDS helpers

usage() {
  cat >&2 <<EOF
usage: $(basename "$0") fetch
       $(basename "$0") start  [RUN_DIR]   (default: $DEFAULT_RUN_DIR)
       $(basename "$0") stop   [RUN_DIR]
       $(basename "$0") status [RUN_DIR]
       $(basename "$0") restart [RUN_DIR]   (same ports and log dirs, data kept)
       $(basename "$0") configs ARGS...     (kafka-configs: --bootstrap-server HOST:PORT --alter ...)
EOF
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

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

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
# Secured mode (all three set, or none): the client listener is SASL_SSL with SCRAM-SHA-512 users created at
# format time (`kafka-storage format --add-scram`), and the broker talks to itself on a loopback PLAINTEXT
# listener that is not advertised to clients.  The keystore (PKCS12, broker key + certificate) is the
# caller's: the integration tests make a CA and a broker certificate with openssl.
secure_mode() {
  local n=0
  [[ -n "${STAMPFLOW_KAFKA_SSL_KEYSTORE:-}" ]] && n=$((n + 1))
  [[ -n "${STAMPFLOW_KAFKA_SSL_KEYSTORE_PASSWORD:-}" ]] && n=$((n + 1))
  [[ -n "${STAMPFLOW_KAFKA_SCRAM_USERS:-}" ]] && n=$((n + 1))
  ((n == 0)) && return 1
  ((n == 3)) || die "secured mode needs STAMPFLOW_KAFKA_SSL_KEYSTORE, STAMPFLOW_KAFKA_SSL_KEYSTORE_PASSWORD and STAMPFLOW_KAFKA_SCRAM_USERS together"
  [[ -r "$STAMPFLOW_KAFKA_SSL_KEYSTORE" ]] || die "keystore $STAMPFLOW_KAFKA_SSL_KEYSTORE is not readable"
  return 0
}

free_ports() {
  "$(python_bin)" -c '
import socket, sys
socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])
for s in socks:
    s.close()
' "$1"
}

cmd_start() {
  local run_dir pid t0 py port cport iport cluster_id props secure=0
  t0=$SECONDS
  run_dir="$(resolve_run_dir "${1:-}" create)"

  pid="$(live_pid "$run_dir")"
  if [[ -n "$pid" ]]; then
    die "a broker is already running from $run_dir (pid $pid, bootstrap $(cat "$run_dir/bootstrap" 2>/dev/null || echo '?')); run '$0 stop $run_dir' first"
  fi
  rm -f "$run_dir/pid" "$run_dir/bootstrap"
  cds_finish "$run_dir" 0
  if secure_mode; then secure=1; fi

  command -v java >/dev/null 2>&1 || die "java not found on PATH"
  cmd_fetch

  py="$(python_bin)"
  if [[ -n "${STAMPFLOW_KAFKA_PORT:-}" || -n "${STAMPFLOW_KAFKA_CONTROLLER_PORT:-}" ]]; then
    [[ -n "${STAMPFLOW_KAFKA_PORT:-}" && -n "${STAMPFLOW_KAFKA_CONTROLLER_PORT:-}" ]] \
      || die "set both STAMPFLOW_KAFKA_PORT and STAMPFLOW_KAFKA_CONTROLLER_PORT, or neither"
    port="$STAMPFLOW_KAFKA_PORT"; cport="$STAMPFLOW_KAFKA_CONTROLLER_PORT"
    read -r iport < <(free_ports 1)
  else
    read -r port cport iport < <(free_ports 3)
  fi
  [[ "$port" =~ ^[0-9]+$ && "$cport" =~ ^[0-9]+$ && "$iport" =~ ^[0-9]+$ ]] || die "could not pick free ports"

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
  local listeners inter_broker protocol_map
  if ((secure)); then
    listeners="SASL_SSL://127.0.0.1:$port,INTERNAL://127.0.0.1:$iport"
    inter_broker=INTERNAL
    protocol_map="CONTROLLER:PLAINTEXT,INTERNAL:PLAINTEXT,SASL_SSL:SASL_SSL"
  else
    listeners="PLAINTEXT://127.0.0.1:$port"
    inter_broker=PLAINTEXT
    protocol_map="CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
  fi
  # In secured mode the keystore password is in server.properties: only its owner may read it.
  : >"$props" && chmod 600 "$props"
  cat >"$props" <<EOF
# Generated by deploy/kafka/kafka.sh -- overwritten on every start ('restart' reuses it).
# Single-node KRaft cluster (combined broker + controller) on 127.0.0.1.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$cport
controller.listener.names=CONTROLLER
listeners=$listeners,CONTROLLER://127.0.0.1:$cport
advertised.listeners=$listeners,CONTROLLER://127.0.0.1:$cport
inter.broker.listener.name=$inter_broker
listener.security.protocol.map=$protocol_map

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
  if ((secure)); then
    cat >>"$props" <<EOF

# SASL_SSL client listener: TLS with the caller's keystore, SCRAM-SHA-512 users from format --add-scram.
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.type=PKCS12
ssl.keystore.location=$STAMPFLOW_KAFKA_SSL_KEYSTORE
ssl.keystore.password=$STAMPFLOW_KAFKA_SSL_KEYSTORE_PASSWORD
ssl.client.auth=none
EOF
  fi

  local -a format_args=(format --standalone -t "$cluster_id" -c "$props")
  if ((secure)); then
    local user
    for user in $STAMPFLOW_KAFKA_SCRAM_USERS; do
      [[ "$user" == ?*=?* ]] || die "STAMPFLOW_KAFKA_SCRAM_USERS: expected space-separated name=password pairs"
      format_args+=(--add-scram "SCRAM-SHA-512=[name=${user%%=*},password=${user#*=}]")
    done
  fi

  log "formatting storage in $run_dir/data (cluster id $cluster_id)"
  # shellcheck disable=SC2086
  if ! java $TOOL_JVM_OPTS "-Dlog4j2.configurationFile=$LOG4J2_XML" "-Dkafka.logs.dir=$run_dir" -cp "$LIBS/*" \
        kafka.tools.StorageTool "${format_args[@]}" >"$run_dir/format.log" 2>&1; then
    cat "$run_dir/format.log" >&2
    die "kafka-storage format failed"
  fi
  if ((secure)); then
    log "starting broker: SASL_SSL 127.0.0.1:$port (SCRAM-SHA-512), CONTROLLER 127.0.0.1:$cport"
  else
    log "starting broker: PLAINTEXT 127.0.0.1:$port, CONTROLLER 127.0.0.1:$cport"
  fi
  launch "$run_dir" "$port"
  log "broker up (pid $(cat "$run_dir/pid")) in $((SECONDS - t0)) s; run dir $run_dir"
  echo "127.0.0.1:$port"
}

# The client port of a formatted run dir: the first listener that is not CONTROLLER or INTERNAL.
client_port() {
  sed -n 's/^listeners=//p' "$1/server.properties" | tr ',' '\n' | grep -vE '^(CONTROLLER|INTERNAL):' \
    | head -n 1 | sed 's/.*://'
}

# Start the JVM on RUN_DIR/server.properties and wait until it serves PORT; writes pid and bootstrap.
launch() {
  local run_dir="$1" port="$2" pid cds_flags started_before
  local -a log_props=("-Dlog4j2.configurationFile=$LOG4J2_XML" "-Dkafka.logs.dir=$run_dir")
  cds_flags="$(cds_opts "$run_dir")"
  # server.log is kept across a restart: count the start lines already in it.
  started_before="$(grep -c "Kafka Server started" "$run_dir/server.log" 2>/dev/null || true)"
  # shellcheck disable=SC2086
  nohup java $HEAP_OPTS $JVM_OPTS $cds_flags "${log_props[@]}" -cp "$LIBS/*" \
    kafka.Kafka "$run_dir/server.properties" >>"$run_dir/broker.log" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$run_dir/pid"

  local deadline=$((SECONDS + START_TIMEOUT))
  while :; do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$run_dir/pid"; cds_finish "$run_dir" 0
      dump_logs "$run_dir"
      die "broker process $pid exited during startup (logs: $run_dir/broker.log, $run_dir/server.log)"
    fi
    if (( $(grep -c "Kafka Server started" "$run_dir/server.log" 2>/dev/null || true) > ${started_before:-0} )) \
        && port_open "$port"; then
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
}

# ---------------------------------------------------------------- restart
# Start the broker of RUN_DIR again on the same ports and log directories, keeping every topic, offset and
# transaction: what clients see when an operator restarts a broker, or when one crashes and comes back.
cmd_restart() {
  local run_dir pid t0 port
  t0=$SECONDS
  run_dir="$(resolve_run_dir "${1:-}")"
  [[ -f "$run_dir/server.properties" && -f "$run_dir/data/meta.properties" ]] \
    || die "$run_dir holds no formatted broker; use '$0 start $run_dir'"
  pid="$(live_pid "$run_dir")"
  [[ -z "$pid" ]] || die "a broker is already running from $run_dir (pid $pid)"
  rm -f "$run_dir/pid" "$run_dir/bootstrap"
  cds_finish "$run_dir" 0
  port="$(client_port "$run_dir")"
  [[ "$port" =~ ^[0-9]+$ ]] || die "no client listener in $run_dir/server.properties"
  log "restarting broker from $run_dir on 127.0.0.1:$port (same log dirs)"
  launch "$run_dir" "$port"
  log "broker up again (pid $(cat "$run_dir/pid")) in $((SECONDS - t0)) s"
  echo "127.0.0.1:$port"
}

# ---------------------------------------------------------------- configs
# kafka-configs.sh without a distribution: dynamic topic, client and quota configs, e.g.
#   kafka.sh configs --bootstrap-server 127.0.0.1:PORT --alter --entity-type clients --entity-name ID \
#                    --add-config producer_byte_rate=20000
cmd_configs() {
  libs_ok || cmd_fetch
  # shellcheck disable=SC2086
  java $TOOL_JVM_OPTS "-Dlog4j2.configurationFile=$LOG4J2_XML" "-Dkafka.logs.dir=${TMPDIR:-/tmp}" -cp "$LIBS/*" \
    kafka.admin.ConfigCommand "$@"
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
    restart) [[ $# -le 1 ]] || { usage; exit 2; }; cmd_restart "${1:-}" ;;
    configs) cmd_configs "$@" ;;
    stop)   [[ $# -le 1 ]] || { usage; exit 2; }; cmd_stop "${1:-}" ;;
    status) [[ $# -le 1 ]] || { usage; exit 2; }; cmd_status "${1:-}" ;;
    -h|--help|help) usage ;;
    *) usage; exit 2 ;;
  esac
}

main "$@"
