#!/usr/bin/env bash
# The highly available stack in Docker, end to end (docker-compose.ha.yml):
# etcd and three coordinators from offline images, one worker that lists
# all three. Checks:
#   - every coordinator sees the other two, exactly one is the placement
#     leader, and etcd is up for all;
#   - every coordinator lists the worker, with the coordinator holding it;
#   - `docker kill` (SIGKILL) of that coordinator: the worker is healthy on
#     a survivor with the same id, listed so by both survivors, and the
#     service containers placed on it are the same ones (none restarted);
#   - `docker-compose down` leaves no container behind.
# Needs: docker (engine reachable), docker-compose, curl, jq, etcd (Debian's
# etcd-server, for its binary), cargo. Usage: tests/e2e_ha_docker.sh
# EDGEPLANE_E2E_BIN: the edgeplane binary for the image (default: a release build).
set -euo pipefail
cd "$(dirname "$0")/.."

export COMPOSE_PROJECT_NAME=edgeplane-ha-e2e
export EDGEPLANE_IMAGE=edgeplane:local
export EDGEPLANE_ETCD_IMAGE=edgeplane-etcd:local
export EDGEPLANE_CLUSTER_SECRET=e2e-cluster-secret
export EDGEPLANE_ETCD_LEASE_TTL=4s
export WORKER_NAME=ha-e2e-worker
export HEARTBEAT_TIMEOUT_SECONDS=10
export WORKER_TIMEOUT_SECONDS=120
export KEEPALIVE_INTERVAL_SECONDS=1
BIN=${EDGEPLANE_E2E_BIN:-target/release/edgeplane}
PORTS=(8081 8082 8083)
started=$(date +%s)

say() { printf '[e2e-ha %3ss] %s\n' "$(($(date +%s) - started))" "$*"; }
die() { printf '[e2e-ha] FAILED: %s\n' "$*" >&2; exit 1; }
compose() { docker-compose -f docker-compose.ha.yml "$@"; }

for tool in docker docker-compose curl jq cargo etcd; do
  command -v "$tool" >/dev/null || die "$tool is not installed"
done
docker info >/dev/null 2>&1 || die "the Docker engine is not reachable (docker info failed); this test needs it"

cleanup() {
  local rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "---- docker-compose logs (last 60 lines each) ----" >&2
    compose logs --no-color --tail 60 >&2 || true
  fi
  compose down -v --remove-orphans --timeout 20 >/dev/null 2>&1 || true
  local left
  left=$(docker ps -aq --filter "label=edgeplane.worker=$WORKER_NAME")
  [ -z "$left" ] || docker rm -f $left >/dev/null 2>&1 || true
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for p in "${PORTS[@]}"; do
  if curl -s -o /dev/null --max-time 1 "http://localhost:$p/health"; then
    die "something already answers on localhost:$p; stop it first"
  fi
done
if [ -z "${EDGEPLANE_E2E_BIN:-}" ]; then
  say "building the release binary (once)"
  cargo build --release --quiet --bin edgeplane
fi
[ -x "$BIN" ] || die "no binary at $BIN"
say "building the offline images"
deploy/offline-image.sh "$BIN" "$EDGEPLANE_IMAGE"
deploy/offline-image.sh --etcd "$(command -v etcd)" "$EDGEPLANE_ETCD_IMAGE"
compose down -v --remove-orphans --timeout 5 >/dev/null 2>&1 || true

say "docker-compose -f docker-compose.ha.yml up"
compose up -d --no-build

# shellcheck source=tests/e2e_wait.sh
. tests/e2e_wait.sh
health() { curl -sf --max-time 2 "http://localhost:$1/health"; }
cluster_ready() {
  local leaders=0 p
  for p in "${PORTS[@]}"; do
    health "$p" | jq -e '.cluster.etcd == "up" and (.cluster.coordinators | length) == 3' >/dev/null || return 1
    [ "$(health "$p" | jq -r .cluster.role)" = leader ] && leaders=$((leaders + 1))
  done
  [ "$leaders" -eq 1 ]
}
wait_for 90 "three coordinators that see each other, one leader" cluster_ready
say "three coordinators, one placement leader, etcd up"

worker() { curl -sf --max-time 2 "http://localhost:$1/api/admin/workers" | jq -c --arg n "$WORKER_NAME" '.[] | select(.name == $n)'; }
listed_healthy_everywhere() {
  local p first="" w
  for p in "$@"; do
    w=$(worker "$p")
    [ "$(jq -r .status <<<"$w")" = healthy ] || return 1
    [ -n "$(jq -r .coordinator <<<"$w")" ] || return 1
    [ -z "$first" ] && first=$(jq -c '{worker_id, coordinator}' <<<"$w")
    [ "$(jq -c '{worker_id, coordinator}' <<<"$w")" = "$first" ] || return 1
  done
}
wait_for 60 "the worker listed healthy, with its coordinator, on all three" listed_healthy_everywhere "${PORTS[@]}"
id=$(worker 8081 | jq -r .worker_id)
holder=$(worker 8081 | jq -r .coordinator)
say "worker $id held by $holder, listed so on all three"

containers() { docker ps -q --no-trunc --filter "label=edgeplane.worker=$WORKER_NAME" | sort | tr '\n' ' '; }
# Every service placed on the worker running as a container of its own.
all_running() {
  local placed running
  placed=$(worker 8081 | jq '.assigned_containers | length')
  running=$(wc -w <<<"$(containers)")
  [ "$placed" -gt 0 ] && [ "$running" -eq "$placed" ]
}
wait_for 120 "the services placed on the worker running as containers" all_running
before_containers=$(containers)
say "service containers on the worker: $(wc -w <<<"$before_containers")"

say "docker kill (SIGKILL) $holder"
compose kill -s SIGKILL "$holder" >/dev/null
survivors=()
for i in 1 2 3; do
  [ "coordinator-$i" = "$holder" ] || survivors+=("${PORTS[$((i - 1))]}")
done
moved() {
  listed_healthy_everywhere "${survivors[@]}" || return 1
  local w
  w=$(worker "${survivors[0]}")
  [ "$(jq -r .worker_id <<<"$w")" = "$id" ] && [ "$(jq -r .coordinator <<<"$w")" != "$holder" ]
}
wait_for 30 "the worker healthy on a survivor with the same id" moved
say "worker $id now held by $(worker "${survivors[0]}" | jq -r .coordinator), same id, on both survivors"
after_containers=$(containers)
[ "$after_containers" = "$before_containers" ] || die "service containers changed across the move: before [$before_containers] after [$after_containers]"
say "the same $(wc -w <<<"$after_containers") service containers, none restarted"
records=$(curl -sf "http://localhost:${survivors[0]}/api/admin/workers" | jq --arg n "$WORKER_NAME" '[.[] | select(.name == $n)] | length')
[ "$records" = 1 ] || die "$records records for $WORKER_NAME"

say "docker-compose down"
compose down -v --timeout 30 >/dev/null 2>&1
left=$(docker ps -aq --filter "label=edgeplane.worker=$WORKER_NAME"; docker ps -aq --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME")
[ -z "$left" ] || die "containers left after docker-compose down: $left"
say "no container left"
echo "e2e_ha_docker: 1 passed, 0 failed ($(($(date +%s) - started)) s)"
