#!/usr/bin/env bash
# End to end on Docker, with no registry: builds the edgeplane image offline
# (deploy/offline-image.sh: the release binary and its libraries, `docker
# import`ed), brings up docker-compose.yml (a coordinator and a docker-runtime
# worker), and checks, through the coordinator on localhost:8080:
#
#   - the worker is healthy and its notes-coa container serves /convert;
#   - a second worker, on the host with a (declared) GPU, is given the GPU
#     services, whose images this machine lacks: they are `failed` with the
#     engine's message and that worker stays healthy;
#   - stopping the worker's container makes it `disconnected` within a
#     second and notes-coa's gRPC health NOT_SERVING; the worker removes
#     its service container as it stops;
#   - started again, it resumes its id; killed (SIGKILL) and started again,
#     it resumes its id and adopts the service container it left running;
#   - a restarted coordinator gets the worker back by itself, same id;
#   - the logs name workers and services, never the containers' addresses;
#   - `docker-compose down` leaves no container behind.
#
# Needs: docker (engine reachable), docker-compose, curl, jq, cargo.
# Cleans up on any exit. Usage: tests/e2e_docker.sh
# The image holds target/release/edgeplane (built here, once), or the binary
# EDGEPLANE_E2E_BIN names (.ci/run passes the one `cargo test` just built).
set -euo pipefail
cd "$(dirname "$0")/.."

export COMPOSE_PROJECT_NAME=edgeplane-e2e
export EDGEPLANE_IMAGE=edgeplane:local
export WORKER_NAME=e2e-worker
export HEARTBEAT_TIMEOUT_SECONDS=10
export WORKER_TIMEOUT_SECONDS=120
export KEEPALIVE_INTERVAL_SECONDS=1
GPU_WORKER=e2e-gpu
BASE=http://localhost:8080
BIN=${EDGEPLANE_E2E_BIN:-target/release/edgeplane}
started=$(date +%s)

say() { printf '[e2e %3ss] %s\n' "$(($(date +%s) - started))" "$*"; }
die() { printf '[e2e] FAILED: %s\n' "$*" >&2; exit 1; }
compose() { docker-compose "$@"; }

for tool in docker docker-compose curl jq cargo; do
  command -v "$tool" >/dev/null || die "$tool is not installed"
done
docker info >/dev/null 2>&1 || die "the Docker engine is not reachable (docker info failed); this test needs it"

cleanup() {
  local rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "---- docker-compose logs (last 80 lines each) ----" >&2
    compose logs --no-color --tail 80 >&2 || true
  fi
  compose down -v --remove-orphans --timeout 20 >/dev/null 2>&1 || true
  [ -z "${gpu_pid:-}" ] || kill "$gpu_pid" 2>/dev/null || true
  local left
  left=$(docker ps -aq --filter "label=edgeplane.worker=$WORKER_NAME"; docker ps -aq --filter "label=edgeplane.worker=$GPU_WORKER")
  [ -z "$left" ] || docker rm -f $left >/dev/null 2>&1 || true
  [ -z "${gpu_state:-}" ] || rm -rf "$gpu_state"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if curl -s -o /dev/null --max-time 1 "$BASE/health"; then
  die "something already answers on localhost:8080; stop it first"
fi

if [ -z "${EDGEPLANE_E2E_BIN:-}" ]; then
  say "building the release binary (once)"
  cargo build --release --quiet --bin edgeplane
fi
[ -x "$BIN" ] || die "no binary at $BIN"
say "building the offline image $EDGEPLANE_IMAGE from $BIN"
deploy/offline-image.sh "$BIN" "$EDGEPLANE_IMAGE"

# A leftover from an interrupted run would fail the checks below.
compose down -v --remove-orphans --timeout 5 >/dev/null 2>&1 || true

say "docker-compose up"
compose up -d --no-build

# shellcheck source=tests/e2e_wait.sh
. tests/e2e_wait.sh
worker_json() { curl -sf --max-time 2 "$BASE/api/admin/workers" | jq -c --arg n "$WORKER_NAME" '.[] | select(.name == $n)'; }
worker_field() { worker_json | jq -r ".$1"; }
worker_is() { [ "$(worker_field status)" = "$1" ]; }
worker_is_healthy_as() { [ "$(worker_field status)" = healthy ] && [ "$(worker_field worker_id)" = "$1" ]; }
convert() {
  curl -sf --max-time 5 -X POST "$BASE/service/notes/convert" -H 'Content-Type: application/json' \
    -d '{"notes":"test","client_name":"test"}'
}
convert_ok() { convert | jq -e '.full_text == "test" and (.matters_discussed | type == "array")'; }
health() { "$BIN" health --coordinator "$BASE" --service notes-coa --timeout 2s; }
service_container() { docker ps -q --filter "label=edgeplane.worker=$WORKER_NAME" --filter "label=edgeplane.service=notes-coa"; }

wait_for 60 "the coordinator's healthcheck (gRPC health) passes" \
  sh -c "[ \"\$(docker inspect -f '{{.State.Health.Status}}' \$(docker-compose ps -q coordinator))\" = healthy ]"
wait_for 60 "worker $WORKER_NAME healthy in /api/admin/workers" worker_is healthy
ID=$(worker_field worker_id)
say "worker $WORKER_NAME is healthy as $ID"
wait_for 90 "notes-coa answers /service/notes/convert through the coordinator" convert_ok
convert | jq -c '{served_by, full_text}'
[ "$(health)" = SERVING ] || die "notes-coa's gRPC health is not SERVING"

svc=$(service_container)
[ -n "$svc" ] || die "no notes-coa container labelled for $WORKER_NAME"
owner=$(docker inspect -f '{{index .Config.Labels "edgeplane.owner"}}' "$svc")
image=$(docker inspect -f '{{.Config.Image}}' "$svc")
name=$(docker inspect -f '{{.Name}}' "$svc")
[ -n "$owner" ] && [ "$image" = "$EDGEPLANE_IMAGE" ] || die "service container: owner '$owner', image '$image'"
docker inspect -f '{{range .Mounts}}{{.Source}} {{end}}' "$svc" | grep -q docker.sock &&
  die "the service container has the Docker socket mounted"
say "notes-coa runs as container $name (owner $owner), SERVING"

say "a GPU worker on the host: the GPU services' images are missing"
gpu_state=$(mktemp -d)
NO_COLOR=1 "$BIN" worker --coordinator "$BASE" --name "$GPU_WORKER" --runtime docker --gpu A100=80GiB \
  --state-dir "$gpu_state" --probe-interval 500ms >"$gpu_state/log" 2>&1 &
gpu_pid=$!
gpu_failed() {
  curl -sf --max-time 2 "$BASE/api/admin/workers" | jq -e --arg n "$GPU_WORKER" '.[] | select(.name == $n)
    | .status == "healthy" and any(.services[]; .name == "llm-inference" and .state == "failed"
        and (.message | contains("edgeplane/llm-inference:latest")))'
}
wait_for 30 "llm-inference failed on $GPU_WORKER with the image's name, worker healthy" gpu_failed
curl -sf "$BASE/api/admin/workers" | jq -r --arg n "$GPU_WORKER" \
  '.[] | select(.name == $n) | .services[] | select(.name == "llm-inference") | "  llm-inference: \(.state): \(.message)"'
kill "$gpu_pid"
wait "$gpu_pid" || die "the GPU worker did not stop cleanly: $(tail -5 "$gpu_state/log")"
gpu_pid=
[ -z "$(docker ps -aq --filter "label=edgeplane.worker=$GPU_WORKER")" ] || die "the GPU worker left containers"
say "GPU services failed with the engine's message; the worker stayed healthy, stopped clean"

worker_container=$(compose ps -q worker)
ips=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}' "$worker_container" "$svc" | tr -s ' \n' ' ')

say "stopping the worker's container"
t0=$(date +%s%N)
docker stop -t 30 "$worker_container" >/dev/null &
stopper=$!
until worker_is disconnected; do
  [ $(( ($(date +%s%N) - t0) / 1000000 )) -lt 1000 ] || die "worker not disconnected within 1 s of docker stop"
  sleep 0.05
done
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
say "worker disconnected ${ms} ms after docker stop"
out=$(health || true)
[ "$out" != SERVING ] && grep -q NOT_SERVING <<<"$out" || die "notes-coa health after the stop: $out"
say "notes-coa health: $out"
wait "$stopper"
[ -z "$(service_container)" ] || die "the stopped worker left its service container running"

say "starting the worker again"
docker start "$worker_container" >/dev/null
wait_for 60 "worker back, healthy, as $ID" worker_is_healthy_as "$ID"
wait_for 90 "notes-coa answers again" convert_ok
svc=$(service_container)
say "resumed as $ID; notes-coa serving from a new container"

say "killing the worker (SIGKILL): its service container stays"
docker kill "$worker_container" >/dev/null
wait_for 5 "killed worker disconnected" worker_is disconnected
[ "$(service_container)" = "$svc" ] || die "the service container did not outlive the killed worker"
docker start "$worker_container" >/dev/null
wait_for 60 "worker back after SIGKILL, as $ID" worker_is_healthy_as "$ID"
wait_for 60 "notes-coa answers after adoption" convert_ok
[ "$(service_container)" = "$svc" ] || die "the restarted worker replaced its container instead of adopting it"
# (grep reads a here-string, not a pipe: with pipefail, grep -q quitting early
# would fail the writer with SIGPIPE and the check with it.)
grep -q "adopted the running container" <<<"$(compose logs --no-color worker)" || die "no adoption in the worker's log"
say "resumed as $ID and adopted the running notes-coa container"

say "restarting the coordinator"
compose restart -t 10 coordinator >/dev/null
wait_for 60 "worker re-registered by itself as $ID" worker_is_healthy_as "$ID"
wait_for 60 "notes-coa answers after the coordinator restart" convert_ok
n=$(curl -sf "$BASE/api/admin/workers" | jq 'length')
[ "$n" = 1 ] || die "expected one worker record after the restart, got $n"
say "worker back by itself as $ID; no duplicate"

logs=$(compose logs --no-color)
grep -q "worker=$WORKER_NAME" <<<"$logs" || die "the logs never name the worker"
grep -q "service=notes-coa" <<<"$logs" || die "the logs never name the service"
for ip in $ips; do
  grep -qF "$ip" <<<"$logs" && die "the logs show a container address ($ip)"
done
say "logs name $WORKER_NAME and notes-coa, and no container address ($ips)"

say "docker-compose down"
compose down -v --timeout 30 >/dev/null 2>&1
left=$(docker ps -aq --filter "label=edgeplane.worker=$WORKER_NAME"; docker ps -aq --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME")
[ -z "$left" ] || die "containers left after docker-compose down: $left"
say "no container left"
echo "e2e_docker: 1 passed, 0 failed ($(($(date +%s) - started)) s)"
