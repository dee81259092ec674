# Common helpers for the deploy/local scripts. Source it; it loads local.env (or $PROXYMAGE_LOCAL_ENV) and defines:
#   PM_ROOT (repo root), PM_VAR (absolute var dir), PM_RUN (pid files), PM_LOG (log files)
#   pm_start NAME CMD...     start CMD in the background, log to $PM_LOG/NAME.log, pid in $PM_RUN/NAME.pid
#   pm_running NAME          true while NAME's pid is alive
#   pm_stop NAME [SECONDS]   SIGTERM, wait until the pid is gone (SIGKILL after SECONDS, default 20)
#   pm_wait_port HOST PORT [SECONDS]  wait until a TCP port accepts connections
#   pm_wait_until SECONDS DESCRIPTION CMD...  retry CMD until it succeeds or the deadline passes
set -euo pipefail

PM_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# Scripts may run under `uv run` (tests): drop virtualenv bin dirs from PATH, since pynetdicom installs
# its own `echoscu`/`findscu`/`movescu` there, which would shadow dcmtk's tools that the scripts expect.
PATH="$(printf '%s' "$PATH" | tr ':' '\n' | grep -v -e '/\.venv/bin$' -e "^${VIRTUAL_ENV:-/nonexistent}/bin$" | paste -sd: -)"
export PATH
# The env file: deploy/local/local.env unless PROXYMAGE_LOCAL_ENV names another one (absolute, or relative to
# the repository), e.g. deploy/chaos/chaos.env for a second stack on other ports and its own var dir.
PM_ENV_FILE="${PROXYMAGE_LOCAL_ENV:-deploy/local/local.env}"
case "$PM_ENV_FILE" in /*) ;; *) PM_ENV_FILE="$PM_ROOT/$PM_ENV_FILE" ;; esac
[ -f "$PM_ENV_FILE" ] || { echo "lib.sh: env file $PM_ENV_FILE not found (PROXYMAGE_LOCAL_ENV)" >&2; exit 1; }
set -a
# shellcheck source=local.env
. "$PM_ENV_FILE"
set +a
# The services and tools started from here read the same file (pydantic-settings' dotenv).
export PROXYMAGE_ENV_FILE="$PM_ENV_FILE"
PM_VAR="$PM_ROOT/${PROXYMAGE_VAR_DIR}"
PM_RUN="$PM_VAR/run"
PM_LOG="$PM_VAR/log"
mkdir -p "$PM_RUN" "$PM_LOG"

pm_log() { printf '%s %s\n' "[$(date +%H:%M:%S)]" "$*" >&2; }
pm_die() { pm_log "ERROR: $*"; exit 1; }

pm_pid() { cat "$PM_RUN/$1.pid" 2>/dev/null || true; }

# True while the pid is alive. An exited process that its parent has not reaped yet (state Z) counts as
# gone: on some machines PID 1 reaps orphans only after a second or more.
pm_alive() {
  local pid="$1" state
  kill -0 "$pid" 2>/dev/null || return 1
  state="$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)"
  [ "$state" != "Z" ]
}

pm_running() {
  local pid
  pid="$(pm_pid "$1")"
  [ -n "$pid" ] && pm_alive "$pid"
}

pm_start() {
  local name="$1"; shift
  if pm_running "$name"; then
    pm_log "$name already running (pid $(pm_pid "$name"))"
    return 0
  fi
  # setsid: the process gets its own session, so it outlives the calling make/pytest and
  # pm_stop can signal its whole process group.
  setsid "$@" >>"$PM_LOG/$name.log" 2>&1 </dev/null &
  echo $! >"$PM_RUN/$name.pid"
  pm_log "$name started (pid $!, log $PM_LOG/$name.log)"
}

pm_stop() {
  local name="$1" grace="${2:-20}" pid waited=0
  pid="$(pm_pid "$name")"
  if [ -z "$pid" ] || ! pm_alive "$pid"; then
    rm -f "$PM_RUN/$name.pid"
    return 0
  fi
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  # Wait for the pid to be gone: Orthanc keeps its SQLite locked for a few seconds after SIGTERM.
  while pm_alive "$pid"; do
    if [ "$waited" -ge $((grace * 10)) ]; then
      pm_log "$name did not stop within ${grace}s, killing it"
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
    sleep 0.1
    waited=$((waited + 1))
  done
  rm -f "$PM_RUN/$name.pid"
  pm_log "$name stopped"
}

pm_wait_port() {
  local host="$1" port="$2" seconds="${3:-60}"
  pm_wait_until "$seconds" "$host:$port accepting connections" \
    bash -c "exec 3<>/dev/tcp/$host/$port" 2>/dev/null
}

pm_wait_until() {
  local seconds="$1" what="$2"; shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      pm_log "timed out after ${seconds}s waiting for: $what"
      return 1
    fi
    sleep 0.2
  done
}

pm_status_line() {
  # pm_status_line NAME ADDRESS: prints "NAME up|down ADDRESS (pid N)"
  local name="$1" address="$2"
  if pm_running "$name"; then
    printf '%-17s up    %-32s pid %s\n' "$name" "$address" "$(pm_pid "$name")"
  else
    printf '%-17s down  %s\n' "$name" "$address"
  fi
}
