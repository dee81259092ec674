#!/usr/bin/env bash
# podman's Docker-compatible API on a unix socket, for testcontainers-python (the container mode of the tests,
# PROXYMAGE_TEST_STACK=containers). Docker users do not need it: set DOCKER_HOST (or keep Docker's default socket).
#   podman-socket.sh start    start `podman system service --time=0` in the background unless the socket answers;
#                             prints the DOCKER_HOST value (unix://SOCKET) on stdout
#   podman-socket.sh stop     stop the service this script started (pid file), wait until it is gone
#   podman-socket.sh status   one line: up/down and the socket
# Socket: $PROXYMAGE_PODMAN_SOCKET (default /run/proxymage-podman.sock as root, else $XDG_RUNTIME_DIR/...).
# Facts (ARCHITECTURE.md): testcontainers then needs TESTCONTAINERS_RYUK_DISABLED=true and
# TESTCONTAINERS_CONNECTION_MODE=docker_host; podman runs with runc (deploy/images/base.sh tools).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
if [ "$(id -u)" -eq 0 ]; then default_dir=/run; else default_dir="${XDG_RUNTIME_DIR:-/tmp}"; fi
SOCKET="${PROXYMAGE_PODMAN_SOCKET:-$default_dir/proxymage-podman.sock}"
RUN="$ROOT/var/containers/run"
PID_FILE="$RUN/podman-service.pid"
LOG_FILE="$ROOT/var/containers/log/podman-service.log"

log() { echo "[podman-socket] $*" >&2; }

answers() {
  curl --silent --fail --max-time 2 --unix-socket "$SOCKET" http://d/_ping >/dev/null 2>&1
}

our_pid() {
  local pid
  pid="$(cat "$PID_FILE" 2>/dev/null || true)"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

start() {
  command -v podman >/dev/null || { log "podman not found (deploy/images/base.sh tools installs it)"; exit 1; }
  if ! answers; then
    mkdir -p "$RUN" "$(dirname "$LOG_FILE")" "$(dirname "$SOCKET")"
    rm -f "$SOCKET"
    setsid podman system service --time=0 "unix://$SOCKET" >>"$LOG_FILE" 2>&1 </dev/null &
    echo $! >"$PID_FILE"
    local deadline=$((SECONDS + 30))
    until answers; do
      if ! kill -0 "$(cat "$PID_FILE")" 2>/dev/null; then
        log "podman system service exited (log: $LOG_FILE)"
        tail -n 20 "$LOG_FILE" >&2 || true
        exit 1
      fi
      [ "$SECONDS" -lt "$deadline" ] || { log "no answer on $SOCKET after 30s (log: $LOG_FILE)"; exit 1; }
      sleep 0.2
    done
    log "podman API on unix://$SOCKET (pid $(cat "$PID_FILE"))"
  fi
  echo "unix://$SOCKET"
}

stop() {
  local pid waited=0
  pid="$(our_pid || true)"
  if [ -z "$pid" ]; then
    rm -f "$PID_FILE"
    return 0
  fi
  kill "$pid"
  while kill -0 "$pid" 2>/dev/null; do
    [ "$waited" -lt 100 ] || { kill -9 "$pid" 2>/dev/null || true; break; }
    sleep 0.1
    waited=$((waited + 1))
  done
  rm -f "$PID_FILE"
  log "podman API on unix://$SOCKET stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status)
    if answers; then echo "podman-socket  up    unix://$SOCKET  pid $(our_pid || echo '(not ours)')"
    else echo "podman-socket  down  unix://$SOCKET"; fi
    ;;
  *) sed -n '2,8p' "${BASH_SOURCE[0]}" | sed 's/^# //' >&2; exit 2 ;;
esac
