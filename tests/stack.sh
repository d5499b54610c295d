#!/usr/bin/env bash
# Tests scripts/stack against the real parts: an Apache Kafka broker, datagen, the pipeline and
# Prometheus. In its own state folder, table root, topic and consumer group, so it can share a
# broker with other tests (scripts/test's, via KAFKA_LOCAL_DIR) without touching their data.
#
#   1. `up` from cold prints the three `name address` lines last;
#   2. a second `up` finds everything running (same pids) and prints the same lines;
#   3. through Prometheus's HTTP API: every target is up, and the pipeline's committed rows
#      (pageviews_rows_committed_total; else pageviews_records_read_total) grow between polls;
#   4. `status` exits 0; with datagen stopped it exits non-zero; `up` brings datagen back;
#   5. `down` leaves none of the stack's pids alive and nothing listening on its ports, and
#      `pageviews verify` finds the tables it wrote exactly-once.
#
#   tests/stack.sh
#
# Environment:
#   PAGEVIEWS_BIN     the pageviews binary to run (default: built now with `scripts/build pageviews`,
#                     so that the test never runs a stale binary)
#   KAFKA_LOCAL_DIR   a broker to use (scripts/test's); one is started (and stopped) otherwise
#   STACK_TIMEOUT     seconds scripts/stack waits for each part (default 180)
set -euo pipefail
cd "$(dirname "$0")/.."

fail() {
  echo "tests/stack.sh: FAIL: $*" >&2
  for log in "$STACK_DIR"/*.log; do
    [ -f "$log" ] || continue
    echo "--- last lines of $log" >&2
    tail -n 15 "$log" >&2
  done
  exit 1
}
step() { echo "tests/stack.sh: $*" >&2; }

STACK_DIR=$(mktemp -d "${TMPDIR:-/tmp}/pageviews-stack-test.XXXXXX")
export STACK_DIR
export PAGEVIEWS_OUTPUT="$STACK_DIR/tables"
# A topic and group of our own: the broker may be shared, and datagen creates the topic.
export KAFKA_TOPIC="stack-test-$$" CONSUMER_GROUP="stack-test-$$"
unset PAGEVIEWS_HTTP PAGEVIEWS_PIPELINE_ID KAFKA_OPTIONS ROWS_PER_SECOND KAFKA_BOOTSTRAP
cleanup() {
  scripts/stack down >/dev/null 2>&1 || true
  rm -rf "$STACK_DIR"
}
trap cleanup EXIT

if [ -z "${PAGEVIEWS_BIN:-}" ]; then
  step "building the pipeline (scripts/build pageviews)"
  scripts/build pageviews >&2 || fail "the build failed"
  PAGEVIEWS_BIN="$(scripts/build --bin-dir)/pageviews"
fi
export PAGEVIEWS_BIN

# 1. From cold.
start=$SECONDS
lines=$(scripts/stack up) || fail "scripts/stack up failed"
step "up from cold took $((SECONDS - start)) s"
printf '%s\n' "$lines" | tail -n 3 >"$STACK_DIR/lines"
grep -Eq '^pageviews http://127\.0\.0\.1:[0-9]+/api/status$' "$STACK_DIR/lines" || fail "no 'pageviews URL' line in: $lines"
grep -Eq '^prometheus http://127\.0\.0\.1:[0-9]+$' "$STACK_DIR/lines" || fail "no 'prometheus URL' line in: $lines"
grep -Eq '^kafka 127\.0\.0\.1:[0-9]+$' "$STACK_DIR/lines" || fail "no 'kafka host:port' line in: $lines"
prometheus=$(awk '$1 == "prometheus" { print $2 }' "$STACK_DIR/lines")
pids_before=$(cat "$STACK_DIR"/*.pid)

# 2. Idempotent.
start=$SECONDS
again=$(scripts/stack up) || fail "a second scripts/stack up failed"
step "up, already running, took $((SECONDS - start)) s"
[ "$(printf '%s\n' "$again" | tail -n 3)" = "$(cat "$STACK_DIR/lines")" ] || fail "a second up printed other lines: $again"
[ "$(cat "$STACK_DIR"/*.pid)" = "$pids_before" ] || fail "a second up restarted parts that were running"

# 3. Through Prometheus: all targets up; the committed rows grow.
query() {
  python3 - "$prometheus" "$1" <<'EOF'
import json, sys, urllib.parse, urllib.request
url = sys.argv[1] + "/api/v1/query?" + urllib.parse.urlencode({"query": sys.argv[2]})
result = json.load(urllib.request.urlopen(url, timeout=5))["data"]["result"]
print(result[0]["value"][1] if result else "")
EOF
}
python3 - "$prometheus" <<'EOF' || fail "not every Prometheus target is up"
import json, sys, urllib.request
targets = json.load(urllib.request.urlopen(sys.argv[1] + "/api/v1/targets", timeout=5))["data"]["activeTargets"]
for t in targets:
    print(f'tests/stack.sh: target {t["labels"]["job"]} {t["scrapeUrl"]}: {t["health"]}', file=sys.stderr)
sys.exit(0 if targets and all(t["health"] == "up" for t in targets) else 1)
EOF
[ "$(query 'min(up{job="pageviews"})')" = 1 ] || fail "up{job=\"pageviews\"} is not 1"
metric=pageviews_rows_committed_total
[ -n "$(query "sum($metric)")" ] || metric=pageviews_records_read_total
first=$(query "sum($metric)")
[ -n "$first" ] || fail "Prometheus has neither pageviews_rows_committed_total nor pageviews_records_read_total"
step "sum($metric) = $first; waiting for it to grow (a checkpoint every 10 s, then a scrape)"
deadline=$((SECONDS + 90))
until [ "$(python3 -c 'import sys; print(float(sys.argv[1]) > float(sys.argv[2]))' "$(query "sum($metric)")" "$first")" = True ]; do
  [ $SECONDS -lt $deadline ] || fail "sum($metric) stayed at $first for 90 s"
  sleep 1
done
step "sum($metric) grew to $(query "sum($metric)")"

# 4. status: 0 when all is up; non-zero with a part down; up brings it back.
scripts/stack status >/dev/null || fail "scripts/stack status fails while everything runs"
kill "$(cat "$STACK_DIR/datagen.pid")"
while kill -0 "$(cat "$STACK_DIR/datagen.pid")" 2>/dev/null; do sleep 0.1; done
if scripts/stack status >/dev/null 2>&1; then fail "scripts/stack status exits 0 with datagen stopped"; fi
scripts/stack up >/dev/null || fail "scripts/stack up did not restart datagen"
scripts/stack status >/dev/null || fail "scripts/stack status fails after up restarted datagen"

# 5. down: every pid gone, every port closed, the tables whole.
pids=$(cat "$STACK_DIR"/*.pid)
ports="$(cat "$STACK_DIR"/*.port)"
if [ -f "$STACK_DIR/kafka.owned" ]; then
  kdir=$(cat "$STACK_DIR/kafka-dir")
  pids="$pids $(cat "$kdir/pid")"
  for f in port controller-port metrics-port; do [ ! -f "$kdir/$f" ] || ports="$ports $(cat "$kdir/$f")"; done
fi
scripts/stack down || fail "scripts/stack down failed"
for pid in $pids; do
  if kill -0 "$pid" 2>/dev/null; then fail "pid $pid ($(ps -p "$pid" -o args=)) is alive after down"; fi
done
for port in $ports; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then fail "port $port still accepts connections after down"; fi
done
if scripts/stack status >/dev/null 2>&1; then fail "scripts/stack status exits 0 after down"; fi
"$PAGEVIEWS_BIN" verify --output "$PAGEVIEWS_OUTPUT" >&2 || fail "pageviews verify finds the stack's tables broken"

echo "tests/stack.sh: scripts/stack passed"
