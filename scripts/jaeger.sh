#!/usr/bin/env bash
# Runs a real Jaeger v2 (OTLP in, query API and UI out, traces in memory) for tests and for looking
# at traces by hand.
#
# Needs only Go: Jaeger is built from the Go module proxy in a scratch module (no Docker, no
# download of a release archive) and the binary is cached once per machine. Everything a running
# Jaeger writes (config, log, pid file) stays in the state dir.
set -euo pipefail

readonly JAEGER_VERSION=1.76.0
readonly JAEGER_PACKAGE=github.com/jaegertracing/jaeger/cmd/jaeger
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
readonly SCRIPT_DIR REPO_ROOT

JAEGER_HOME_DIR=${RECEIPTS_JAEGER_HOME:-$HOME/.cache/receipts/jaeger-$JAEGER_VERSION}
STATE_DIR=${RECEIPTS_JAEGER_STATE:-$REPO_ROOT/target/jaeger}
OTLP_GRPC_PORT=${RECEIPTS_JAEGER_OTLP_GRPC_PORT:-4317}
OTLP_HTTP_PORT=${RECEIPTS_JAEGER_OTLP_HTTP_PORT:-4318}
QUERY_PORT=${RECEIPTS_JAEGER_QUERY_PORT:-16686}
START_TIMEOUT=${RECEIPTS_JAEGER_START_TIMEOUT:-60}
STOP_TIMEOUT=15

usage() {
  cat <<EOF
Usage: scripts/jaeger.sh COMMAND

Runs Jaeger $JAEGER_VERSION (v2: OTLP receivers, in-memory storage, query API and UI), built from
the Go module proxy (needs Go 1.24+).

Commands:
  fetch      build the jaeger binary into the cache dir (once; about 5 minutes on two cores)
  start      start Jaeger in the background and wait until it is healthy; prints the query URL
             (http://127.0.0.1:QUERY_PORT) on stdout. Reuses a Jaeger that already answers on
             QUERY_PORT. Builds it first if needed.
  stop       stop the Jaeger started from the state dir (TERM, then KILL after ${STOP_TIMEOUT}s)
  status     say whether Jaeger runs; exit 0 if its query API answers on QUERY_PORT, 3 if not
  endpoints  print the OTLP gRPC, OTLP HTTP and query URLs, one a line
  help       show this help

Environment (defaults in brackets):
  RECEIPTS_JAEGER_OTLP_GRPC_PORT  OTLP over gRPC [4317]
  RECEIPTS_JAEGER_OTLP_HTTP_PORT  OTLP over HTTP [4318]
  RECEIPTS_JAEGER_QUERY_PORT      query API (/api/traces) and UI [16686]; its gRPC API, the health
                                  check and the collector's own metrics take QUERY_PORT-1,
                                  QUERY_PORT+1 and QUERY_PORT+2
  RECEIPTS_JAEGER_STATE           state dir: config, log, pid file [<repo>/target/jaeger]
  RECEIPTS_JAEGER_HOME            binary cache [\$HOME/.cache/receipts/jaeger-$JAEGER_VERSION]
  RECEIPTS_JAEGER_START_TIMEOUT   seconds to wait for Jaeger to become healthy [60]

Jaeger logs to STATE/jaeger.log. Traces live in memory and are gone when it stops.
EOF
}

log() { printf 'jaeger.sh: %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

check_settings() {
  local name value
  for name in OTLP_GRPC_PORT OTLP_HTTP_PORT QUERY_PORT; do
    value=${!name}
    if ! [[ $value =~ ^[0-9]+$ ]] || ((value < 2 || value > 65533)); then
      die "RECEIPTS_JAEGER_$name must be a port number, not '$value'"
    fi
  done
  [[ $START_TIMEOUT =~ ^[0-9]+$ ]] || die "RECEIPTS_JAEGER_START_TIMEOUT must be a number of seconds"
  [[ $STATE_DIR == /* ]] || STATE_DIR=$PWD/$STATE_DIR
  [[ $JAEGER_HOME_DIR == /* ]] || JAEGER_HOME_DIR=$PWD/$JAEGER_HOME_DIR
  QUERY_GRPC_PORT=$((QUERY_PORT - 1))
  HEALTH_PORT=$((QUERY_PORT + 1))
  METRICS_PORT=$((QUERY_PORT + 2))
  BINARY=$JAEGER_HOME_DIR/jaeger
  PID_FILE=$STATE_DIR/jaeger.pid
  CONFIG_FILE=$STATE_DIR/config.yaml
  LOG_FILE=$STATE_DIR/jaeger.log
  QUERY_URL=http://127.0.0.1:$QUERY_PORT
  readonly STATE_DIR JAEGER_HOME_DIR QUERY_GRPC_PORT HEALTH_PORT METRICS_PORT BINARY PID_FILE \
    CONFIG_FILE LOG_FILE QUERY_URL
}

# ---------------------------------------------------------------------------------------------------
# fetch

is_fetched() {
  [[ -x $BINARY && -f $JAEGER_HOME_DIR/.built && $(<"$JAEGER_HOME_DIR/.built") == "$JAEGER_VERSION" ]]
}

cmd_fetch() {
  if is_fetched; then
    log "jaeger $JAEGER_VERSION already built: $BINARY"
    return 0
  fi
  command -v go >/dev/null 2>&1 || die "go not found: install Go 1.24 or later to build Jaeger"
  mkdir -p "$JAEGER_HOME_DIR"
  local lock_fd
  # One build at a time per cache dir (parallel test runs share it).
  exec {lock_fd}>"$JAEGER_HOME_DIR/.lock"
  if command -v flock >/dev/null 2>&1; then
    flock "$lock_fd"
  fi
  if ! is_fetched; then
    local started=$SECONDS module=$JAEGER_HOME_DIR/module
    mkdir -p "$module"
    log "building jaeger $JAEGER_VERSION from the Go module proxy (several minutes; log in" \
      "$JAEGER_HOME_DIR/build.log)..."
    # A scratch module that names Jaeger as a tool pins its whole dependency graph in go.sum.
    if ! (
      cd "$module"
      [[ -f go.mod ]] || go mod init receipts.local/jaeger-build
      go get -tool "$JAEGER_PACKAGE@v$JAEGER_VERSION"
      go build -trimpath -o "$BINARY.tmp" "$JAEGER_PACKAGE"
    ) >"$JAEGER_HOME_DIR/build.log" 2>&1; then
      tail -n 30 "$JAEGER_HOME_DIR/build.log" >&2
      die "building jaeger $JAEGER_VERSION failed (see above)"
    fi
    mv "$BINARY.tmp" "$BINARY"
    echo "$JAEGER_VERSION" >"$JAEGER_HOME_DIR/.built"
    log "built $BINARY in $((SECONDS - started))s"
  fi
  exec {lock_fd}>&-
}

# ---------------------------------------------------------------------------------------------------
# Probing

port_open() {
  # shellcheck disable=SC2016 # $1 is expanded by the inner shell
  timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null
}

# True if Jaeger's query API answers on QUERY_PORT.
query_answers() {
  curl -fsS --max-time 2 "$QUERY_URL/api/services" 2>/dev/null | grep -q '"data"'
}

running_pid() {
  local pid cmdline
  [[ -f $PID_FILE ]] || return 1
  pid=$(<"$PID_FILE")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  # Guard against a recycled pid: it must be our Jaeger, started with our config.
  cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  [[ $cmdline == *jaeger*"$CONFIG_FILE"* ]] || return 1
  echo "$pid"
}

# ---------------------------------------------------------------------------------------------------
# start

write_config() {
  mkdir -p "$STATE_DIR"
  cat >"$CONFIG_FILE" <<EOF
# Written by scripts/jaeger.sh on every start; edits are overwritten.
# Jaeger v2 all in one: OTLP receivers, traces in memory, query API and UI, on loopback only.
service:
  extensions: [jaeger_storage, jaeger_query, healthcheckv2]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    resource:
      service.name: jaeger
    metrics:
      level: basic
      readers:
        - pull:
            exporter:
              prometheus:
                host: 127.0.0.1
                port: $METRICS_PORT
    logs:
      level: info

extensions:
  jaeger_query:
    storage:
      traces: memory_store
    http:
      endpoint: 127.0.0.1:$QUERY_PORT
    grpc:
      endpoint: 127.0.0.1:$QUERY_GRPC_PORT
  jaeger_storage:
    backends:
      memory_store:
        memory:
          max_traces: 100000
  healthcheckv2:
    use_v2: true
    http:
      endpoint: 127.0.0.1:$HEALTH_PORT

receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:$OTLP_GRPC_PORT
      http:
        endpoint: 127.0.0.1:$OTLP_HTTP_PORT

processors:
  batch:
    # Tests read traces back right after exporting them.
    timeout: 200ms

exporters:
  jaeger_storage_exporter:
    trace_storage: memory_store
EOF
}

wait_until_serving() {
  local pid=$1 deadline=$((SECONDS + START_TIMEOUT)) started=$SECONDS
  log "waiting up to ${START_TIMEOUT}s for jaeger (pid $pid) to answer on $QUERY_URL"
  until query_answers; do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 30 "$LOG_FILE" >&2 || true
      rm -f "$PID_FILE"
      die "jaeger exited during start-up"
    fi
    if ((SECONDS >= deadline)); then
      tail -n 30 "$LOG_FILE" >&2 || true
      stop_pid "$pid"
      die "jaeger did not answer within ${START_TIMEOUT}s"
    fi
    sleep 0.5
  done
  log "jaeger $JAEGER_VERSION serves $QUERY_URL, OTLP on 127.0.0.1:$OTLP_GRPC_PORT (gRPC) and" \
    "127.0.0.1:$OTLP_HTTP_PORT (HTTP) (pid $pid, ready in $((SECONDS - started))s; log $LOG_FILE)"
}

cmd_start() {
  local pid port
  if pid=$(running_pid); then
    query_answers || wait_until_serving "$pid"
    log "the jaeger from $STATE_DIR already runs (pid $pid); reusing it"
    echo "$QUERY_URL"
    return 0
  fi
  if query_answers; then
    log "note: a jaeger already answers on $QUERY_URL (not started from $STATE_DIR); reusing it"
    echo "$QUERY_URL"
    return 0
  fi
  for port in "$OTLP_GRPC_PORT" "$OTLP_HTTP_PORT" "$QUERY_PORT" "$QUERY_GRPC_PORT" "$HEALTH_PORT" \
    "$METRICS_PORT"; do
    port_open "$port" && die "port $port is in use; set the RECEIPTS_JAEGER_*_PORT variables"
  done
  is_fetched || cmd_fetch
  write_config
  rm -f "$PID_FILE"
  # Stays out of the caller's stdin/stdout/stderr, so `$(jaeger.sh start)` returns once it is ready.
  nohup "$BINARY" --config "$CONFIG_FILE" </dev/null >"$LOG_FILE" 2>&1 &
  pid=$!
  echo "$pid" >"$PID_FILE"
  wait_until_serving "$pid"
  echo "$QUERY_URL"
}

# ---------------------------------------------------------------------------------------------------
# stop, status

stop_pid() {
  local pid=$1 deadline=$((SECONDS + STOP_TIMEOUT))
  kill -TERM "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do
    if ((SECONDS >= deadline)); then
      log "jaeger (pid $pid) did not stop within ${STOP_TIMEOUT}s; killing it"
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.2
  done
  rm -f "$PID_FILE"
  log "stopped jaeger (pid $pid)"
}

cmd_stop() {
  local pid
  if pid=$(running_pid); then
    stop_pid "$pid"
  else
    rm -f "$PID_FILE"
    log "no jaeger from $STATE_DIR is running"
  fi
}

cmd_status() {
  local pid
  if pid=$(running_pid); then
    if query_answers; then
      echo "running: pid $pid, query API on $QUERY_URL; state in $STATE_DIR"
      return 0
    fi
    echo "starting or unresponsive: pid $pid; state in $STATE_DIR"
    return 3
  fi
  if query_answers; then
    echo "running: a jaeger answers on $QUERY_URL, but not one started from $STATE_DIR"
    return 0
  fi
  echo "not running (query port $QUERY_PORT, state dir $STATE_DIR)"
  return 3
}

cmd_endpoints() {
  echo "http://127.0.0.1:$OTLP_GRPC_PORT"
  echo "http://127.0.0.1:$OTLP_HTTP_PORT"
  echo "$QUERY_URL"
}

main() {
  local command=${1:-}
  case $command in
    fetch | start | stop | status | endpoints) ;;
    help | -h | --help)
      usage
      return 0
      ;;
    "")
      usage >&2
      exit 2
      ;;
    *)
      log "unknown command '$command'"
      usage >&2
      exit 2
      ;;
  esac
  check_settings
  case $command in
    fetch) cmd_fetch ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    endpoints) cmd_endpoints ;;
  esac
}

main "$@"
