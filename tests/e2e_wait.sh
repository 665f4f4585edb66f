# Sourced by the Docker end-to-end scripts (which define `die`).
# wait_for SECONDS DESCRIPTION COMMAND...: runs COMMAND every 0.2 s until it
# succeeds; fails the test with DESCRIPTION after SECONDS.
wait_for() {
  local limit=$1 what=$2; shift 2
  local deadline=$(($(date +%s) + limit))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || die "not within ${limit}s: $what"
    sleep 0.2
  done
}
