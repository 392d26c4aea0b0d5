#!/usr/bin/env bash
# Compute Engine shutdown-script: drain the inference server before the VM stops.
#
# Asks the server to take no new work (POST /admin/drain, loopback only), then waits until
# nothing is queued or running, within what Compute Engine allows: about 30 s after a Spot
# preemption notice, longer for an ordinary stop. systemd then stops the server.
set -euo pipefail

readonly STATE_DIR="${STARTUP_STATE_DIR:-/var/lib/videogen}"
# The server's port, from the settings startup.sh wrote (or PORT, or 8080).
PORT="${PORT:-$(sed -n 's/^PORT="\(.*\)"$/\1/p' "${STATE_DIR}/server.env" 2>/dev/null || true)}"
readonly PORT="${PORT:-8080}"
readonly METADATA_BASE_URL="${METADATA_BASE_URL:-http://metadata.google.internal/computeMetadata/v1}"
readonly PREEMPTED_LIMIT_SECONDS="${PREEMPTED_LIMIT_SECONDS:-25}"
readonly STOP_LIMIT_SECONDS="${STOP_LIMIT_SECONDS:-90}"
readonly SERVER="http://127.0.0.1:${PORT}"

log() { printf '%s shutdown %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*"; }
err() { log "$@" >&2; }

# Prints the drain limit in seconds: short when this VM is being preempted.
drain_limit() {
  local preempted
  preempted="$(curl -fsS --max-time 2 -H 'Metadata-Flavor: Google' \
    "${METADATA_BASE_URL}/instance/preempted" 2>/dev/null || echo unknown)"
  if [[ "${preempted}" == "TRUE" ]]; then
    echo "${PREEMPTED_LIMIT_SECONDS}"
  else
    echo "${STOP_LIMIT_SECONDS}"
  fi
}

# Prints how many requests are queued or running, or nothing when the server does not answer.
in_flight() {
  curl -sS --max-time 2 "${SERVER}/health" 2>/dev/null \
    | grep -o '"in_flight":[0-9]*' | cut -d: -f2 || true
}

main() {
  local limit started remaining
  limit="$(drain_limit)"
  started="${SECONDS}"
  if ! curl -fsS --max-time 5 -X POST "${SERVER}/admin/drain" >/dev/null 2>&1; then
    log "stage=drain result=no_server seconds=0"
    return 0
  fi
  log "stage=drain result=requested limit_seconds=${limit} in_flight=$(in_flight)"
  while (( SECONDS - started < limit )); do
    remaining="$(in_flight)"
    if [[ -z "${remaining}" || "${remaining}" == "0" ]]; then
      log "stage=drain result=drained seconds=$(( SECONDS - started ))"
      return 0
    fi
    sleep 0.5
  done
  err "stage=drain result=limit_reached seconds=$(( SECONDS - started )) in_flight=$(in_flight)"
}

main "$@"
