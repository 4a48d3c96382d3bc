#!/usr/bin/env bash
# The project's test command: a real Kafka broker, the domain-purity check, then every test.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: scripts/test.sh [CARGO-TEST-ARGS...]

Runs the project's tests:
  1. uses the Kafka broker in KAFKA_BOOTSTRAP_SERVERS if set; otherwise starts one with
     scripts/kafka.sh (Java 17 + Maven), exports KAFKA_BOOTSTRAP_SERVERS, and stops it on exit
     if this run started it;
  2. uses the Jaeger in RECEIPTS_TEST_JAEGER (query URL; with RECEIPTS_TEST_JAEGER_OTLP_GRPC and
     RECEIPTS_TEST_JAEGER_OTLP_HTTP) if set; otherwise builds Jaeger v2 once with scripts/jaeger.sh
     (Go, from the module proxy), starts it, exports the three variables for the trace tests, and
     stops it on exit if this run started it;
  3. checks that receipts-domain has no normal dependency on tokio, sled, rdkafka, tonic, hyper, axum
     or reqwest;
  4. installs the pinned twilio Python helper library and the standardwebhooks library into
     target/pyenv (unless RECEIPTS_TEST_PYTHON already names a python that has them) and exports
     RECEIPTS_TEST_PYTHON for the REST facade's client test and the signing-secret receiver;
  5. checks the Prometheus alerting rules with promtool (check rules, then the unit tests in
     deploy/prometheus/alerts.test.yml), installing Debian's prometheus package for it when no
     promtool is on PATH and RECEIPTS_PROMTOOL does not name one; fails if none can be had;
  6. cargo test --workspace --all-targets, then cargo test --workspace --doc.

Arguments go to both cargo test runs, e.g.
  scripts/test.sh -p receipts-bus            only one package (replaces --workspace)
  scripts/test.sh -- --nocapture             arguments for the test binaries
  scripts/test.sh -p receipts-bus --test it  given target selections replace --all-targets and --doc
                                             (then cargo test runs once)

Ends with a line 'tests: N passed, N failed, N skipped' summed over all runs; exits non-zero if any
step failed. See scripts/kafka.sh --help for the broker's settings (port 39092 by default) and
scripts/jaeger.sh --help for Jaeger's (OTLP on 4317/4318, query API on 16686 by default).
EOF
}

case ${1:-} in
  -h | --help | help)
    usage
    exit 0
    ;;
esac

cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf 'test.sh: %s\n' "$*" >&2; }

# Crates that would make the domain impure: runtimes, storage, Kafka, network stacks.
readonly FORBIDDEN_IN_DOMAIN=(tokio sled rdkafka tonic hyper axum reqwest)

if [[ -t 1 ]]; then
  # Output goes through tee below, which would turn colour off.
  export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-always}
else
  export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
fi
export RUST_BACKTRACE=${RUST_BACKTRACE:-1}

results=$(mktemp)
started_kafka=0
stop_kafka() {
  if ((started_kafka)); then
    started_kafka=0
    scripts/kafka.sh stop || true
  fi
}
started_jaeger=0
stop_jaeger() {
  if ((started_jaeger)); then
    started_jaeger=0
    scripts/jaeger.sh stop || true
  fi
}
cleanup() {
  stop_kafka
  stop_jaeger
  rm -f "$results"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- 1. Kafka ---------------------------------------------------------------------------------------
if [[ -n ${KAFKA_BOOTSTRAP_SERVERS:-} ]]; then
  log "using the Kafka broker at $KAFKA_BOOTSTRAP_SERVERS"
else
  scripts/kafka.sh fetch
  # A broker that already runs (an earlier run, a developer's) is reused and left running.
  if ! scripts/kafka.sh status >/dev/null 2>&1; then
    started_kafka=1
  fi
  KAFKA_BOOTSTRAP_SERVERS=$(scripts/kafka.sh start)
  export KAFKA_BOOTSTRAP_SERVERS
  log "KAFKA_BOOTSTRAP_SERVERS=$KAFKA_BOOTSTRAP_SERVERS"
fi

failed_steps=()

# --- 2. Jaeger ---------------------------------------------------------------------------------------
# The trace tests read what receipts exported back through Jaeger's query API.
provision_jaeger() {
  local endpoints
  if [[ -n ${RECEIPTS_TEST_JAEGER:-} ]]; then
    log "using the Jaeger at $RECEIPTS_TEST_JAEGER"
    return 0
  fi
  scripts/jaeger.sh fetch || return 1
  # A Jaeger that already runs (an earlier run, a developer's) is reused and left running.
  if ! scripts/jaeger.sh status >/dev/null 2>&1; then
    started_jaeger=1
  fi
  scripts/jaeger.sh start >/dev/null || return 1
  mapfile -t endpoints < <(scripts/jaeger.sh endpoints)
  export RECEIPTS_TEST_JAEGER_OTLP_GRPC=${endpoints[0]}
  export RECEIPTS_TEST_JAEGER_OTLP_HTTP=${endpoints[1]}
  export RECEIPTS_TEST_JAEGER=${endpoints[2]}
  log "RECEIPTS_TEST_JAEGER=$RECEIPTS_TEST_JAEGER (OTLP $RECEIPTS_TEST_JAEGER_OTLP_GRPC," \
    "$RECEIPTS_TEST_JAEGER_OTLP_HTTP)"
}

provision_jaeger || failed_steps+=("jaeger")

# --- 3. Domain purity -------------------------------------------------------------------------------
check_domain_purity() {
  local tree name
  local -a offenders=()
  if ! tree=$(cargo tree -p receipts-domain -e normal --target all --prefix none); then
    log "error: cargo tree -p receipts-domain failed"
    return 1
  fi
  for name in "${FORBIDDEN_IN_DOMAIN[@]}"; do
    if awk '{ print $1 }' <<<"$tree" | grep -qxF "$name"; then
      offenders+=("$name")
    fi
  done
  if ((${#offenders[@]} > 0)); then
    log "error: receipts-domain must stay pure (no async runtime, storage, Kafka or network crates)," \
      "but its normal dependencies include: ${offenders[*]}"
    for name in "${offenders[@]}"; do
      log "how receipts-domain reaches $name:"
      cargo tree -p receipts-domain -e normal --target all -i "$name" >&2 || true
    done
    return 1
  fi
  log "receipts-domain is pure: none of ${FORBIDDEN_IN_DOMAIN[*]}"
}

check_domain_purity || failed_steps+=("domain purity")

# --- 4. The Twilio helper library and standardwebhooks for Python ---------------------------------
# services/query's client test runs the official library against the REST facade; the receipts
# crate's signing-secret test verifies deliveries with the Standard Webhooks reference library.
readonly TWILIO_PYTHON_VERSION=9.13.0
readonly STANDARDWEBHOOKS_PYTHON_VERSION=1.1.0
provision_python_libraries() {
  local venv=target/pyenv
  if [[ -n ${RECEIPTS_TEST_PYTHON:-} ]]; then
    log "using RECEIPTS_TEST_PYTHON=$RECEIPTS_TEST_PYTHON"
    return 0
  fi
  if ! "$venv/bin/python" -c "
import sys, twilio, importlib.metadata as m
sys.exit(twilio.__version__ != '$TWILIO_PYTHON_VERSION'
         or m.version('standardwebhooks') != '$STANDARDWEBHOOKS_PYTHON_VERSION')" 2>/dev/null; then
    log "installing twilio==$TWILIO_PYTHON_VERSION and standardwebhooks==$STANDARDWEBHOOKS_PYTHON_VERSION into $venv"
    python3 -m venv "$venv" && "$venv/bin/pip" install --quiet --disable-pip-version-check \
      "twilio==$TWILIO_PYTHON_VERSION" "standardwebhooks==$STANDARDWEBHOOKS_PYTHON_VERSION" || return 1
  fi
  RECEIPTS_TEST_PYTHON=$PWD/$venv/bin/python
  export RECEIPTS_TEST_PYTHON
  log "RECEIPTS_TEST_PYTHON=$RECEIPTS_TEST_PYTHON (twilio $TWILIO_PYTHON_VERSION, standardwebhooks $STANDARDWEBHOOKS_PYTHON_VERSION)"
}

provision_python_libraries || failed_steps+=("python libraries")

# --- 5. Prometheus alerting rules --------------------------------------------------------------------
# deploy/prometheus/alerts.yml must load and its unit tests pass; promtool is what Prometheus itself
# uses to load them.
provision_promtool() {
  if [[ -n ${RECEIPTS_PROMTOOL:-} ]]; then
    if [[ ! -x $RECEIPTS_PROMTOOL ]]; then
      log "error: RECEIPTS_PROMTOOL=$RECEIPTS_PROMTOOL is not an executable file"
      return 1
    fi
    log "using RECEIPTS_PROMTOOL=$RECEIPTS_PROMTOOL"
    return 0
  fi
  if RECEIPTS_PROMTOOL=$(command -v promtool); then
    return 0
  fi
  if ! command -v apt-get >/dev/null || ((EUID != 0)); then
    log "error: promtool is needed to check deploy/prometheus/alerts.yml and is not on PATH;" \
      "install it (Debian/Ubuntu: apt-get install prometheus) or set RECEIPTS_PROMTOOL"
    return 1
  fi
  log "installing Debian's prometheus package for promtool"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus; } >&2 ||
    {
      log "error: apt-get install prometheus failed; install promtool or set RECEIPTS_PROMTOOL"
      return 1
    }
  RECEIPTS_PROMTOOL=$(command -v promtool) || {
    log "error: the prometheus package installed no promtool"
    return 1
  }
}

check_alert_rules() {
  provision_promtool || return 1
  log "$("$RECEIPTS_PROMTOOL" --version 2>&1 | head -n 1)"
  "$RECEIPTS_PROMTOOL" check rules deploy/prometheus/alerts.yml &&
    "$RECEIPTS_PROMTOOL" test rules deploy/prometheus/alerts.test.yml
}

check_alert_rules || failed_steps+=("prometheus alerting rules")

# --- 6. Tests ---------------------------------------------------------------------------------------
# Which selections did the caller make (before any `--`, after which arguments go to the test binaries)?
select_packages=(--workspace)
targets_given=0
has_no_fail_fast=0
for arg in "$@"; do
  [[ $arg == -- ]] && break
  case $arg in
    -p | -p?* | --package | --package=* | --workspace | --all) select_packages=() ;;
    --lib | --bins | --bin | --bin=* | --examples | --example | --example=* | --tests | --test | --test=* | \
      --benches | --bench | --bench=* | --all-targets | --doc)
      targets_given=1
      ;;
    --no-fail-fast) has_no_fail_fast=1 ;;
  esac
done
common=("${select_packages[@]}")
((has_no_fail_fast)) || common+=(--no-fail-fast)

run_cargo_test() {
  log "cargo test $*"
  # Test binaries print their 'test result:' lines on stdout; keep a copy to count them.
  cargo test "$@" | tee -a "$results"
}

if ((targets_given)); then
  run_cargo_test "${common[@]}" "$@" || failed_steps+=("cargo test")
else
  run_cargo_test "${common[@]}" --all-targets "$@" || failed_steps+=("cargo test --all-targets")
  run_cargo_test "${common[@]}" --doc "$@" || failed_steps+=("cargo test --doc")
fi

# --- Summary ----------------------------------------------------------------------------------------
stop_kafka # before the summary, so that it is the last line
stop_jaeger
# libtest: "test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; ..."
read -r passed failed ignored < <(
  sed -n 's/.*test result: [A-Za-z]*\. \([0-9]*\) passed; \([0-9]*\) failed; \([0-9]*\) ignored;.*/\1 \2 \3/p' \
    "$results" | awk '{ p += $1; f += $2; i += $3 } END { print p + 0, f + 0, i + 0 }'
)
echo
if ((${#failed_steps[@]} > 0)); then
  log "FAILED: $(printf '%s; ' "${failed_steps[@]}")"
fi
echo "tests: $passed passed, $failed failed, $ignored skipped"
((${#failed_steps[@]} == 0))
