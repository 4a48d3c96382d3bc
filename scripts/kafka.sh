#!/usr/bin/env bash
# Runs a real single-node Apache Kafka (KRaft, broker and controller in one JVM) for tests.
#
# Needs only Java 17+ and Maven: the broker's jars come from the Maven registry (scripts/kafka/pom.xml),
# not from a Kafka download, a Debian package or Docker. Everything the broker writes (data, logs, pid
# file, generated config) stays in the state dir; the jars are cached once per machine.
set -euo pipefail

readonly KAFKA_VERSION=4.1.1
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
readonly SCRIPT_DIR REPO_ROOT

KAFKA_HOME_DIR=${RECEIPTS_KAFKA_HOME:-$HOME/.cache/receipts/kafka-$KAFKA_VERSION}
PORT=${RECEIPTS_KAFKA_PORT:-39092}
STATE_DIR=${RECEIPTS_KAFKA_STATE:-$REPO_ROOT/target/kafka}
START_TIMEOUT=${RECEIPTS_KAFKA_START_TIMEOUT:-90}
STOP_TIMEOUT=30
HEAP_OPTS=${RECEIPTS_KAFKA_HEAP_OPTS:--Xms128m -Xmx512m}
EXTRA_JVM_OPTS=${RECEIPTS_KAFKA_JVM_OPTS:-}
# Any valid Kafka cluster id (16 bytes, URL-safe base64 without padding); this one is "receipts-test-12".
CLUSTER_ID=${RECEIPTS_KAFKA_CLUSTER_ID:-cmVjZWlwdHMtdGVzdC0xMg}

usage() {
  cat <<EOF
Usage: scripts/kafka.sh COMMAND [ARGS...]

Runs a single-node Apache Kafka $KAFKA_VERSION (KRaft) for tests, from Maven jars (needs Java 17+ and Maven).

Commands:
  fetch           resolve the broker's jars from the Maven registry into the cache dir (once)
  start           start the broker in the background and wait until it serves clients; prints the
                  bootstrap address (127.0.0.1:PORT) on stdout. If a Kafka broker already answers on
                  PORT, reuses it. Fetches the jars first if needed.
  stop            stop the broker started from the state dir (TERM, then KILL after ${STOP_TIMEOUT}s)
  status          say whether a broker runs; exit 0 if one answers on PORT, 3 if not
  reset           stop the broker and delete the state dir (all topics and offsets)
  topics ARGS...  run Kafka's topic tool against the broker, e.g. 'topics --list' or
                  'topics --create --topic t --partitions 3'
  tool CLASS ARGS...
                  run any class from the Kafka jars with the tools' logging, e.g.
                  'tool org.apache.kafka.tools.consumer.ConsoleConsumer --bootstrap-server 127.0.0.1:39092 ...'
  help            show this help

Environment (defaults in brackets):
  RECEIPTS_KAFKA_PORT           client port; the controller listens on PORT+1 [39092]
  RECEIPTS_KAFKA_STATE          state dir: data, logs, pid file, server.properties [<repo>/target/kafka]
  RECEIPTS_KAFKA_HOME           jar cache [\$HOME/.cache/receipts/kafka-$KAFKA_VERSION]
  RECEIPTS_KAFKA_START_TIMEOUT  seconds to wait for the broker to serve clients [90]
  RECEIPTS_KAFKA_HEAP_OPTS      broker heap [-Xms128m -Xmx512m]
  RECEIPTS_KAFKA_JVM_OPTS       more JVM options for the broker []
  RECEIPTS_MAVEN_ARGS           more arguments for mvn, e.g. -Dmaven.repo.local=DIR []
  JAVA_HOME                     Java to use [java on PATH]

The broker logs to STATE/logs/server.log. Topics are not auto-created.
EOF
}

log() { printf 'kafka.sh: %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

# ---------------------------------------------------------------------------------------------------
# Settings checks and paths

check_settings() {
  if ! [[ $PORT =~ ^[0-9]+$ ]] || ((PORT < 1 || PORT > 65534)); then
    die "RECEIPTS_KAFKA_PORT must be a port number below 65535, not '$PORT'"
  fi
  [[ $START_TIMEOUT =~ ^[0-9]+$ ]] || die "RECEIPTS_KAFKA_START_TIMEOUT must be a number of seconds"
  CONTROLLER_PORT=$((PORT + 1))
  BOOTSTRAP=127.0.0.1:$PORT
  # Absolute paths: they end up in server.properties and in the broker's command line.
  [[ $STATE_DIR == /* ]] || STATE_DIR=$PWD/$STATE_DIR
  [[ $KAFKA_HOME_DIR == /* ]] || KAFKA_HOME_DIR=$PWD/$KAFKA_HOME_DIR
  LIBS_DIR=$KAFKA_HOME_DIR/libs
  PID_FILE=$STATE_DIR/kafka.pid
  CONFIG_FILE=$STATE_DIR/server.properties
  DATA_DIR=$STATE_DIR/data
  LOG_DIR=$STATE_DIR/logs
  readonly CONTROLLER_PORT BOOTSTRAP STATE_DIR KAFKA_HOME_DIR LIBS_DIR PID_FILE CONFIG_FILE DATA_DIR LOG_DIR
}

find_java() {
  if [[ -n ${JAVA_HOME:-} && -x $JAVA_HOME/bin/java ]]; then
    JAVA=$JAVA_HOME/bin/java
  elif command -v java >/dev/null 2>&1; then
    JAVA=$(command -v java)
  else
    die "java not found: install Java 17 or later, or set JAVA_HOME"
  fi
  local version major
  version=$("$JAVA" -version 2>&1 | sed -n 's/.*version "\([^"]*\)".*/\1/p' | head -n 1)
  major=${version%%.*}
  [[ $major == 1 ]] && major=$(cut -d. -f2 <<<"$version")
  if ! [[ $major =~ ^[0-9]+$ ]] || ((major < 17)); then
    die "Kafka $KAFKA_VERSION needs Java 17 or later; $JAVA is version '${version:-unknown}'"
  fi
}

# ---------------------------------------------------------------------------------------------------
# fetch

fetched_stamp() {
  # Changes whenever the pom (and so the set of jars) changes.
  sha256sum "$SCRIPT_DIR/kafka/pom.xml" | cut -d' ' -f1
}

is_fetched() {
  [[ -f $LIBS_DIR/kafka_2.13-$KAFKA_VERSION.jar && -f $KAFKA_HOME_DIR/.fetched ]] &&
    [[ $(cat "$KAFKA_HOME_DIR/.fetched") == "$(fetched_stamp)" ]]
}

cmd_fetch() {
  if is_fetched; then
    log "Kafka $KAFKA_VERSION jars already in $LIBS_DIR"
    return 0
  fi
  command -v mvn >/dev/null 2>&1 || die "mvn not found: install Maven to fetch Kafka's jars"
  local lock_fd
  mkdir -p "$KAFKA_HOME_DIR"
  # One fetch at a time per cache dir (parallel test runs share it).
  exec {lock_fd}>"$KAFKA_HOME_DIR/.lock"
  if command -v flock >/dev/null 2>&1; then
    flock "$lock_fd"
  fi
  if ! is_fetched; then
    local started=$SECONDS tmp=$KAFKA_HOME_DIR/libs.tmp
    local -a mvn_args
    # shellcheck disable=SC2206 # word splitting of RECEIPTS_MAVEN_ARGS is intended
    mvn_args=(-B -q -f "$KAFKA_HOME_DIR/pom.xml" ${RECEIPTS_MAVEN_ARGS:-}
      dependency:copy-dependencies -DincludeScope=runtime "-DoutputDirectory=$tmp")
    cp "$SCRIPT_DIR/kafka/pom.xml" "$KAFKA_HOME_DIR/pom.xml"
    rm -rf "$tmp"
    # Offline first: where the local Maven repository already has everything, no network is needed.
    if mvn -o "${mvn_args[@]}" >/dev/null 2>&1; then
      log "resolved Kafka $KAFKA_VERSION from the local Maven repository"
    else
      log "resolving Kafka $KAFKA_VERSION and its dependencies from the Maven registry..."
      rm -rf "$tmp"
      # Maven 3.8 prints stray colour codes even in batch mode; keep stderr readable in CI logs.
      mvn "${mvn_args[@]}" 2>&1 | sed $'s/\x1b\\[[0-9;]*m//g' >&2 ||
        die "mvn could not resolve Kafka $KAFKA_VERSION (see above)"
    fi
    [[ -f $tmp/kafka_2.13-$KAFKA_VERSION.jar ]] || die "mvn ran but $tmp has no kafka_2.13-$KAFKA_VERSION.jar"
    rm -rf "$LIBS_DIR"
    mv "$tmp" "$LIBS_DIR"
    fetched_stamp >"$KAFKA_HOME_DIR/.fetched"
    log "fetched $(find "$LIBS_DIR" -name '*.jar' | wc -l) jars into $LIBS_DIR in $((SECONDS - started))s"
  else
    log "Kafka $KAFKA_VERSION jars already in $LIBS_DIR"
  fi
  exec {lock_fd}>&-
}

# ---------------------------------------------------------------------------------------------------
# Probing

# True if something accepts TCP connections on 127.0.0.1:$1.
port_open() {
  # shellcheck disable=SC2016 # $1 is expanded by the inner shell
  timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null
}

# True if a Kafka broker answers on 127.0.0.1:$1: sends an ApiVersions v0 request (the one request every
# Kafka version accepts before anything else) and checks the reply echoes its correlation id.
kafka_answers() {
  local reply
  # shellcheck disable=SC2016 # $1 is expanded by the inner shell
  reply=$(timeout "${2:-3}" bash -c '
      exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
      # size=18, api_key=18 (ApiVersions), api_version=0, correlation_id="RCPT", client_id="receipts"
      printf "\x00\x00\x00\x12\x00\x12\x00\x00RCPT\x00\x08receipts" >&3
      head -c 8 <&3 | od -An -tx1
    ' _ "$1" 2>/dev/null) || return 1
  reply=${reply//[[:space:]]/}
  [[ ${reply:8:8} == 52435054 ]]
}

# Prints the pid of the broker started from STATE_DIR if it is still running; fails otherwise.
running_pid() {
  local pid cmdline
  [[ -f $PID_FILE ]] || return 1
  pid=$(<"$PID_FILE")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  # Guard against a recycled pid: it must be our broker, started with our config.
  if [[ -r /proc/$pid/cmdline ]]; then
    cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline")
  else
    cmdline=$(ps -p "$pid" -o args= 2>/dev/null) || return 1
  fi
  [[ $cmdline == *kafka.Kafka*"$CONFIG_FILE"* ]] || return 1
  echo "$pid"
}

# ---------------------------------------------------------------------------------------------------
# start

write_config() {
  mkdir -p "$DATA_DIR" "$LOG_DIR"
  cat >"$CONFIG_FILE" <<EOF
# Written by scripts/kafka.sh on every start; edits are overwritten.
# A single KRaft node that is both broker and controller, for tests.
process.roles=broker,controller
node.id=1
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
controller.quorum.bootstrap.servers=127.0.0.1:$CONTROLLER_PORT
log.dirs=$DATA_DIR

# One replica of everything.
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
share.coordinator.state.topic.num.partitions=1

# Fast, explicit tests: no join delay, short sessions allowed, topics made on purpose only.
group.initial.rebalance.delay.ms=0
group.min.session.timeout.ms=1000
auto.create.topics.enable=false
delete.topic.enable=true

# A small machine.
num.network.threads=2
num.io.threads=4
background.threads=4
num.recovery.threads.per.data.dir=1
log.cleaner.threads=1
log.cleaner.dedupe.buffer.size=16777216
EOF
  # Broker logs go to files in the state dir, never to the terminal.
  cat >"$STATE_DIR/log4j2.properties" <<'EOF'
# Written by scripts/kafka.sh.
name = receipts-test-kafka
status = warn
appender.server.type = RollingFile
appender.server.name = server
appender.server.fileName = ${sys:kafka.logs.dir}/server.log
appender.server.filePattern = ${sys:kafka.logs.dir}/server.log.%i
appender.server.layout.type = PatternLayout
appender.server.layout.pattern = [%d] %p %m (%c)%n
appender.server.policies.type = Policies
appender.server.policies.size.type = SizeBasedTriggeringPolicy
appender.server.policies.size.size = 50MB
appender.server.strategy.type = DefaultRolloverStrategy
appender.server.strategy.max = 3
rootLogger.level = INFO
rootLogger.appenderRef.server.ref = server
logger.request.name = kafka.request.logger
logger.request.level = WARN
EOF
  # Tools (storage format, topic tool) log warnings to stderr only.
  cat >"$STATE_DIR/log4j2-tools.properties" <<'EOF'
# Written by scripts/kafka.sh.
name = receipts-test-kafka-tools
status = warn
appender.stderr.type = Console
appender.stderr.name = stderr
appender.stderr.target = SYSTEM_ERR
appender.stderr.layout.type = PatternLayout
appender.stderr.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.stderr.ref = stderr
EOF
}

# Runs a Kafka class as a short-lived tool: small heap, fast start-up, warnings on stderr.
run_tool() {
  local class=$1
  shift
  "$JAVA" -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true \
    "-Dlog4j2.configurationFile=$STATE_DIR/log4j2-tools.properties" \
    -cp "$LIBS_DIR/*" "$class" "$@"
}

format_storage() {
  local formatted_for=$STATE_DIR/formatted-for-controller-port
  if [[ -f $DATA_DIR/meta.properties ]]; then
    # The quorum's voter set, with the controller's address, was written when formatting.
    if [[ -f $formatted_for && $(<"$formatted_for") != "$CONTROLLER_PORT" ]]; then
      die "$DATA_DIR was formatted for controller port $(<"$formatted_for"), not $CONTROLLER_PORT;" \
        "run 'scripts/kafka.sh reset' (deletes its data) or use another RECEIPTS_KAFKA_STATE"
    fi
    return 0
  fi
  log "formatting $DATA_DIR (cluster id $CLUSTER_ID)"
  # --standalone: a dynamic quorum (controller.quorum.bootstrap.servers) whose only voter is this node.
  if ! run_tool kafka.tools.StorageTool format --standalone -t "$CLUSTER_ID" -c "$CONFIG_FILE" \
    >"$LOG_DIR/format.log" 2>&1; then
    cat "$LOG_DIR/format.log" >&2
    die "could not format the storage in $DATA_DIR"
  fi
  echo "$CONTROLLER_PORT" >"$formatted_for"
}

show_log_tail() {
  local file
  for file in "$LOG_DIR/server.log" "$LOG_DIR/stdout.log"; do
    if [[ -s $file ]]; then
      log "last lines of $file:"
      tail -n 40 "$file" >&2
    fi
  done
}

# Waits until the broker with pid $1 answers on PORT; fails if it dies or START_TIMEOUT passes.
wait_until_serving() {
  local pid=$1 deadline=$((SECONDS + START_TIMEOUT)) started=$SECONDS
  log "waiting up to ${START_TIMEOUT}s for the broker (pid $pid) to serve clients on $BOOTSTRAP"
  until kafka_answers "$PORT" 2; do
    if ! kill -0 "$pid" 2>/dev/null; then
      printf '\n' >&2
      show_log_tail
      rm -f "$PID_FILE"
      die "the broker exited during start-up"
    fi
    if ((SECONDS >= deadline)); then
      printf '\n' >&2
      show_log_tail
      log "the broker did not serve clients within ${START_TIMEOUT}s; stopping it"
      stop_pid "$pid"
      exit 1
    fi
    printf '.' >&2
    sleep 1
  done
  printf '\n' >&2
  log "Kafka $KAFKA_VERSION serves clients on $BOOTSTRAP (pid $pid, ready in $((SECONDS - started))s;" \
    "logs in $LOG_DIR)"
}

cmd_start() {
  local pid
  if pid=$(running_pid); then
    if kafka_answers "$PORT"; then
      log "the broker from $STATE_DIR already runs (pid $pid); reusing it"
    else
      wait_until_serving "$pid"
    fi
    echo "$BOOTSTRAP"
    return 0
  fi
  if kafka_answers "$PORT"; then
    log "note: a Kafka broker already answers on $BOOTSTRAP (not started from $STATE_DIR); reusing it"
    echo "$BOOTSTRAP"
    return 0
  fi
  if port_open "$PORT"; then
    die "port $PORT is in use by something that is not a Kafka broker; set RECEIPTS_KAFKA_PORT"
  fi
  if port_open "$CONTROLLER_PORT"; then
    die "the controller port $CONTROLLER_PORT (PORT+1) is in use; set RECEIPTS_KAFKA_PORT"
  fi

  find_java
  is_fetched || cmd_fetch
  write_config
  format_storage

  rm -f "$PID_FILE"
  local -a heap_opts extra_opts
  read -r -a heap_opts <<<"$HEAP_OPTS"
  read -r -a extra_opts <<<"$EXTRA_JVM_OPTS"
  # Stays out of the caller's stdin/stdout/stderr, so `$(kafka.sh start)` returns once it is ready.
  nohup "$JAVA" "${heap_opts[@]}" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError \
    -Djava.awt.headless=true "-Dkafka.logs.dir=$LOG_DIR" \
    "-Dlog4j2.configurationFile=$STATE_DIR/log4j2.properties" "${extra_opts[@]}" \
    -cp "$LIBS_DIR/*" kafka.Kafka "$CONFIG_FILE" \
    </dev/null >"$LOG_DIR/stdout.log" 2>&1 &
  pid=$!
  echo "$pid" >"$PID_FILE"
  wait_until_serving "$pid"
  echo "$BOOTSTRAP"
}

# ---------------------------------------------------------------------------------------------------
# stop, status, reset, tools

# Stops pid $1: TERM (controlled shutdown), then KILL after STOP_TIMEOUT seconds.
stop_pid() {
  local pid=$1 deadline=$((SECONDS + STOP_TIMEOUT)) started=$SECONDS
  kill -TERM "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do
    if ((SECONDS >= deadline)); then
      log "the broker (pid $pid) did not stop within ${STOP_TIMEOUT}s; killing it"
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.2
  done
  rm -f "$PID_FILE"
  log "stopped the broker (pid $pid) in $((SECONDS - started))s"
}

cmd_stop() {
  local pid
  if pid=$(running_pid); then
    stop_pid "$pid"
  else
    rm -f "$PID_FILE"
    log "no broker from $STATE_DIR is running"
  fi
}

cmd_status() {
  local pid
  if pid=$(running_pid); then
    if kafka_answers "$PORT"; then
      echo "running: pid $pid, serving clients on $BOOTSTRAP; state in $STATE_DIR"
      return 0
    fi
    echo "starting or unresponsive: pid $pid, not yet serving on $BOOTSTRAP; state in $STATE_DIR"
    return 3
  fi
  if kafka_answers "$PORT"; then
    echo "running: a Kafka broker serves clients on $BOOTSTRAP, but not one started from $STATE_DIR"
    return 0
  fi
  echo "not running (port $PORT, state dir $STATE_DIR)"
  return 3
}

cmd_reset() {
  cmd_stop
  rm -rf "$STATE_DIR"
  log "deleted $STATE_DIR"
}

cmd_tool() {
  (($# >= 1)) || die "usage: scripts/kafka.sh tool CLASS [ARGS...]"
  find_java
  is_fetched || cmd_fetch
  [[ -f $STATE_DIR/log4j2-tools.properties ]] || write_config
  run_tool "$@"
}

main() {
  local command=${1:-}
  (($# > 0)) && shift
  case $command in
    fetch | start | stop | status | reset | topics | tool) ;;
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
    reset) cmd_reset ;;
    topics) cmd_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOTSTRAP" "$@" ;;
    tool) cmd_tool "$@" ;;
  esac
}

main "$@"
