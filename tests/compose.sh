#!/usr/bin/env bash
# Tests compose.yaml without a container engine: Debian's docker-compose validates it (with
# and without the s3 profile) and resolves it, and tests/compose_check.py checks the resolved
# services: names, profiles, health checks, depends_on conditions and order, ports, and the
# addresses and credentials the services share. Then it breaks the resolved file on purpose,
# one way at a time, and expects the checker to notice, so a check that stopped checking
# fails here. No image is pulled, built or run.
#
#   tests/compose.sh
#
# Environment:
#   COMPOSE   the compose command (default docker-compose, installed from Debian when missing)
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "tests/compose.sh: FAIL: $*" >&2; exit 1; }

compose="${COMPOSE:-docker-compose}"
if [ -z "${COMPOSE:-}" ] && ! command -v docker-compose >/dev/null; then
  echo "tests/compose.sh: installing Debian's docker-compose (it validates compose files; no engine needed)" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends docker-compose >/dev/null; } \
    || fail "could not install docker-compose with apt-get"
fi
# The checker reads YAML: PyYAML comes with Debian's docker-compose, for Debian's python3.
py=python3
$py -c 'import yaml' 2>/dev/null || py=/usr/bin/python3
$py -c 'import yaml' 2>/dev/null || fail "no python3 with PyYAML (apt-get install python3-yaml)"

# Compose v2 resolves only the active profiles; v1 resolves every service. Both are checked
# with every profile active.
$compose -f compose.yaml config -q || fail "$compose rejects compose.yaml"
$compose -f compose.yaml --profile s3 config -q || fail "$compose rejects compose.yaml with --profile s3"
resolved=$(mktemp)
trap 'rm -f "$resolved"' EXIT
$compose -f compose.yaml --profile s3 config >"$resolved" || fail "$compose cannot resolve compose.yaml"
$py tests/compose_check.py --root . <"$resolved" || fail "compose.yaml does not describe the stack (see above)"

# Each mutation removes one property the checker guards; the checker must reject it.
mutate() {
  local what=$1 code=$2
  if $py -c "
import sys, yaml
c = yaml.safe_load(open(sys.argv[1]))
s = c['services']
$code
yaml.safe_dump(c, sys.stdout)" "$resolved" | $py tests/compose_check.py --root . >/dev/null 2>&1; then
    fail "the checker accepts compose.yaml with $what"
  fi
  echo "tests/compose.sh: rejected as it should be: $what" >&2
}
mutate "no health check on grafana" "del s['grafana']['healthcheck']"
mutate "pageviews not waiting for datagen's health" "s['pageviews']['depends_on']['datagen']['condition'] = 'service_started'"
mutate "grafana not waiting for prometheus" "del s['grafana']['depends_on']"
mutate "datagen pointed at the host listener" "s['datagen']['environment']['KAFKA_BOOTSTRAP'] = 'kafka:9092'"
mutate "minio outside the s3 profile" "del s['minio']['profiles']"
mutate "a cycle" "s['kafka']['depends_on'] = {'grafana': {'condition': 'service_healthy'}}"
mutate "the S3 pipeline in the default consumer group" "del s['pageviews-s3']['environment']['CONSUMER_GROUP']"
mutate "the bucket job missing" "del s['minio-bucket']"

echo "tests/compose.sh: compose.yaml passed"
