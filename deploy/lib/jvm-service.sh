# Shared by deploy/kafka/kafka.sh and deploy/registry/apicurio.sh: one JVM service on loopback, started into a run
# directory and stopped by the PID recorded there. Sourced, not run. The caller sets:
#   SERVICE_TAG      prefix of every message, e.g. kafka.sh
#   JVM_MARK         a glob the service's JVM command line matches (guards against PID reuse)
#   CDS_PREFIX       file-name prefix of its class-data-sharing archives under $CDS_DIR
#   CDS, CDS_DIR     whether to use an archive, and where archives live
#   DEFAULT_RUN_DIR, REPO_ROOT
# and defines cds_key (what invalidates an archive: the service's jars and the JVM).

log() { printf '[%s] %s\n' "$SERVICE_TAG" "$*" >&2; }
die() { printf '[%s] ERROR: %s\n' "$SERVICE_TAG" "$*" >&2; exit 1; }

python_bin() {
  if [[ -n "${PYTHON:-}" ]]; then echo "$PYTHON"
  elif command -v python3 >/dev/null 2>&1; then echo python3
  elif [[ -x "$REPO_ROOT/.venv/bin/python" ]]; then echo "$REPO_ROOT/.venv/bin/python"
  else die "python3 is needed (to pick free ports and probe the service)"
  fi
}

resolve_run_dir() {
  local d="${1:-$DEFAULT_RUN_DIR}"
  if [[ "${2:-}" == create ]]; then
    mkdir -p "$d"
  elif [[ ! -d "$d" ]]; then
    echo "$d"; return 0
  fi
  (cd "$d" && pwd -P)
}

# The PID in RUN_DIR/pid if that process is alive AND is our JVM for this run dir (a recycled PID is not ours).
live_pid() {
  local run_dir="$1" pid
  [[ -f "$run_dir/pid" ]] || return 0
  pid="$(tr -dc '0-9' <"$run_dir/pid")"
  [[ -n "$pid" ]] || return 0
  kill -0 "$pid" 2>/dev/null || return 0
  if [[ -r "/proc/$pid/cmdline" ]]; then
    local cmdline
    cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline")"
    # shellcheck disable=SC2053 # JVM_MARK is a glob on purpose
    [[ "$cmdline" == *$JVM_MARK* && "$cmdline" == *"$run_dir/"* ]] || return 0
  fi
  echo "$pid"
}

# TERM, wait up to TIMEOUT s, then KILL. Returns 1 when it had to KILL (the JVM did not finish cleanly).
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

# JVM options for class-data sharing: use the archive when one matches cds_key, else have this run write one at
# exit (recorded in RUN_DIR/cds-pending, published by cds_finish only after a clean stop).
cds_opts() {
  local run_dir="$1" key tmp
  rm -f "$run_dir/cds-pending"
  [[ "$CDS" == 1 ]] || return 0
  key="$(cds_key)"
  mkdir -p "$CDS_DIR"
  if [[ -s "$CDS_DIR/$CDS_PREFIX-$key.jsa" ]]; then
    echo "-XX:SharedArchiveFile=$CDS_DIR/$CDS_PREFIX-$key.jsa"
  else
    # Stale archives (other jars / JVM) are useless; drop them, and leftovers of dumps that never finished.
    rm -f "$CDS_DIR/$CDS_PREFIX"-*.jsa
    find "$CDS_DIR" -name "$CDS_PREFIX-*.jsa.tmp.*" -mmin +1440 -delete 2>/dev/null || true
    tmp="$CDS_DIR/$CDS_PREFIX-$key.jsa.tmp.$$"
    printf '%s\n%s\n' "$tmp" "$CDS_DIR/$CDS_PREFIX-$key.jsa" >"$run_dir/cds-pending"
    echo "-XX:ArchiveClassesAtExit=$tmp"
  fi
}

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
