#!/usr/bin/env bash
# The local Orthanc servers: MIRC (the regional PACS we query/retrieve from) and VIEWER (the
# viewer's store the studies are moved into). Our own processes with our own configs under
# var/orthanc/<instance>/; Debian's orthanc system service is not used.
#
# Usage: deploy/local/orthanc.sh install|start|stop|status|wait [mirc|viewer|all]   (default all)
#        deploy/local/orthanc.sh reset mirc|viewer|all    delete all stored data (tests start clean)
#
# Ports and AE titles come from deploy/local/local.env (PROXYMAGE_MIRC__*, PROXYMAGE_VIEWER__*,
# PROXYMAGE_LOCAL_*_HTTP_PORT, PROXYMAGE_LOCAL_CLIENT_AE_TITLES); the config itself is generated
# by deploy/local/orthanc/config.py, which documents the options.
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ORTHANC_VAR="$PM_VAR/orthanc"
READY_SECONDS=60
# After SIGTERM Orthanc takes 2-4 s to exit (it closes its servers, then saves its jobs to the
# SQLite index): a new process on the same storage before then starts, but its writes fail with
# "database is locked". pm_stop waits until the pid is gone.
STOP_GRACE_SECONDS=30
# Calling AE title of our readiness probe: must be one of PROXYMAGE_LOCAL_CLIENT_AE_TITLES, the
# only AE titles (with MIRC/VIEWER) that the instances accept associations from.
PROBE_AET=PM_DEV
# VIEWER serves DICOMweb (Debian's orthanc-dicomweb) to the gateway's read-only proxy.
DICOMWEB_CANDIDATES=(
  /usr/share/orthanc/plugins/libOrthancDicomWeb.so
  /usr/lib/orthanc/libOrthancDicomWeb.so
  /usr/lib/orthanc/libOrthancDicomWeb.so.*
)

usage() {
  sed -n '6,7p' "${BASH_SOURCE[0]}" | sed 's/^# //' >&2
  exit 2
}

# Debian installs Orthanc in /usr/sbin, which is not on every user's PATH.
orthanc_bin() {
  command -v Orthanc 2>/dev/null || { [ -x /usr/sbin/Orthanc ] && echo /usr/sbin/Orthanc; }
}

dicomweb_plugin() {
  local candidate
  for candidate in "${DICOMWEB_CANDIDATES[@]}"; do
    [ -f "$candidate" ] && { echo "$candidate"; return 0; }
  done
  return 1
}

# instance_vars INSTANCE: sets NAME (pid/log name), AET, DICOM_PORT, HTTP_PORT, DIR.
instance_vars() {
  case "$1" in
    mirc)
      AET="$PROXYMAGE_MIRC__AE_TITLE" DICOM_PORT="$PROXYMAGE_MIRC__PORT"
      HTTP_PORT="$PROXYMAGE_LOCAL_MIRC_HTTP_PORT" ;;
    viewer)
      AET="$PROXYMAGE_VIEWER__AE_TITLE" DICOM_PORT="$PROXYMAGE_VIEWER__PORT"
      HTTP_PORT="$PROXYMAGE_LOCAL_VIEWER_HTTP_PORT" ;;
    *) pm_die "unknown Orthanc instance '$1' (mirc, viewer or all)" ;;
  esac
  NAME="orthanc-$1"
  DIR="$ORTHANC_VAR/$1"
}

# The REST API; --noproxy: an http_proxy in the environment must not capture loopback calls.
rest() {
  curl -fsS --noproxy '*' --max-time 10 "$@"
}

port_open() {
  bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# Ready = answers a DICOM C-ECHO (the DICOM server is up and accepts our called AE) and the
# REST API answers (the index is open); Orthanc opens the two servers at different moments.
is_ready() {
  echoscu -to 5 -ta 5 -td 5 -aet "$PROBE_AET" -aec "$AET" 127.0.0.1 "$DICOM_PORT" >/dev/null 2>&1 &&
    rest -o /dev/null "http://127.0.0.1:$HTTP_PORT/system" 2>/dev/null
}

# The log is appended to across runs: start_one writes a marker line, show only the lines after
# the last one (at most 30).
LOG_MARKER="--- orthanc.sh start"
log_tail() {
  pm_log "last lines of $PM_LOG/$NAME.log:"
  awk -v m="$LOG_MARKER" 'index($0, m) == 1 { n = 0; next } { line[n++] = $0 }
    END { for (i = (n > 30 ? n - 30 : 0); i < n; i++) print line[i] }' \
    "$PM_LOG/$NAME.log" >&2 2>/dev/null || true
}

cmd_install() {
  local missing=() tool plugin
  for tool in Orthanc echoscu movescu findscu; do
    if [ "$tool" = Orthanc ]; then orthanc_bin >/dev/null || missing+=("$tool")
    else command -v "$tool" >/dev/null || missing+=("$tool"); fi
  done
  dicomweb_plugin >/dev/null || missing+=(orthanc-dicomweb)
  if [ "${#missing[@]}" -eq 0 ]; then
    pm_log "orthanc: Orthanc, its DICOMweb plugin and dcmtk present ($("$(orthanc_bin)" --version | head -n 1))"
  else
    pm_log "orthanc: missing ${missing[*]}, installing orthanc, orthanc-dicomweb and dcmtk with apt-get"
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
      command -v sudo >/dev/null ||
        pm_die "not root: run 'apt-get install -y orthanc orthanc-dicomweb dcmtk' as root"
      sudo=(sudo -n)
    fi
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get install -y orthanc orthanc-dicomweb dcmtk ||
      { "${sudo[@]}" apt-get update && "${sudo[@]}" apt-get install -y orthanc orthanc-dicomweb dcmtk; } ||
      pm_die "apt-get install orthanc orthanc-dicomweb dcmtk failed"
    # The package may have started Debian's own service (port 4242/8042): not ours, not used.
  fi
  plugin="$(dicomweb_plugin)" || pm_die "orthanc-dicomweb installed but libOrthancDicomWeb.so not found"
  pm_log "orthanc: DICOMweb plugin $plugin (loaded by VIEWER)"
}

start_one() {
  local bin plugin args
  instance_vars "$1"
  if pm_running "$NAME"; then
    pm_log "$NAME already running (pid $(pm_pid "$NAME"))"
    return 0
  fi
  bin="$(orthanc_bin)" || pm_die "Orthanc not found: run deploy/local/orthanc.sh install"
  # An Orthanc of ours whose pid file is gone (var/run wiped, ...) may still be using this
  # storage: Orthanc 1.10 does not lock its index at startup, two processes on the same SQLite
  # file both start and then fail writes with "database is locked" (SQLite error 5).
  local stray
  stray="$(pgrep -f -- "$DIR/config.json" | xargs)" || true
  [ -z "$stray" ] || pm_die "$NAME: Orthanc process(es) $stray still use $DIR (not in $PM_RUN)"
  # Someone else on our ports (Debian's service reconfigured, another checkout...) would answer
  # the readiness probe in place of the process we start.
  local port
  for port in "$DICOM_PORT" "$HTTP_PORT"; do
    port_open "$port" && pm_die "$NAME: port $port is already in use by another process"
  done
  mkdir -p "$DIR/storage" "$DIR/index" "$DIR/tmp"
  args=("$1" "$DIR")
  # DICOMweb only on the viewer's store: the gateway's read-only proxy serves it to the viewer.
  if [ "$1" = viewer ]; then
    plugin="$(dicomweb_plugin)" ||
      pm_die "$NAME: the DICOMweb plugin is missing (run deploy/local/orthanc.sh install)"
    args+=(--dicomweb-plugin "$plugin")
  fi
  python3 "$PM_ROOT/deploy/local/orthanc/config.py" "${args[@]}" >"$DIR/config.json.tmp"
  mv "$DIR/config.json.tmp" "$DIR/config.json"
  echo "$LOG_MARKER $(date '+%F %T') ---" >>"$PM_LOG/$NAME.log"
  # TCP_NODELAY=1: DCMTK (Orthanc's DICOM layer) then disables Nagle's algorithm on its
  # sockets; without it every DIMSE round trip on loopback waits for delayed ACKs (C-MOVE
  # measured 25x slower). `env` execs Orthanc, so the pid file holds Orthanc's own pid.
  pm_start "$NAME" env TCP_NODELAY=1 "$bin" "$DIR/config.json"
}

wait_one() {
  instance_vars "$1"
  case " $PROXYMAGE_LOCAL_CLIENT_AE_TITLES " in
    *" $PROBE_AET "*) ;;
    *) pm_die "$PROBE_AET must be listed in PROXYMAGE_LOCAL_CLIENT_AE_TITLES (readiness probe)" ;;
  esac
  [ -n "$(pm_pid "$NAME")" ] || pm_die "$NAME is not started (deploy/local/orthanc.sh start $1)"
  local deadline=$((SECONDS + READY_SECONDS))
  until is_ready; do
    if ! pm_running "$NAME"; then
      log_tail
      pm_die "$NAME exited (see $PM_LOG/$NAME.log)"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      log_tail
      pm_die "$NAME not ready after ${READY_SECONDS}s (C-ECHO $AET@127.0.0.1:$DICOM_PORT" \
        "and GET http://127.0.0.1:$HTTP_PORT/system)"
    fi
    sleep 0.2
  done
  pm_log "$NAME ready ($AET dicom 127.0.0.1:$DICOM_PORT, http 127.0.0.1:$HTTP_PORT)"
}

status_one() {
  instance_vars "$1"
  pm_status_line "$NAME" "$AET@127.0.0.1:$DICOM_PORT http:$HTTP_PORT"
}

# Delete every patient (hence every study/series/instance) through the REST API.
reset_one() {
  local ids
  instance_vars "$1"
  pm_running "$NAME" || pm_die "$NAME is not running"
  ids="$(rest "http://127.0.0.1:$HTTP_PORT/patients")" || pm_die "$NAME: GET /patients failed"
  # /patients returns a JSON array of Orthanc ids: exactly what bulk-delete takes.
  rest -o /dev/null -X POST -H 'Content-Type: application/json' \
    --data-binary "{\"Resources\": $ids}" "http://127.0.0.1:$HTTP_PORT/tools/bulk-delete" ||
    pm_die "$NAME: POST /tools/bulk-delete failed"
  pm_log "$NAME reset (all patients deleted)"
}

main() {
  local cmd="${1:-}" target instances
  [ -n "$cmd" ] || usage
  if [ "$cmd" = reset ]; then
    # No default here: deleting data is asked for explicitly.
    target="${2:-}"; [ -n "$target" ] || usage
  else
    target="${2:-all}"
  fi
  case "$target" in
    all) instances=(mirc viewer) ;;
    mirc | viewer) instances=("$target") ;;
    *) pm_die "unknown Orthanc instance '$target' (mirc, viewer or all)" ;;
  esac

  local i
  case "$cmd" in
    install) cmd_install ;;
    start)
      # Start all first, then wait: the instances boot in parallel.
      for i in "${instances[@]}"; do start_one "$i"; done
      for i in "${instances[@]}"; do wait_one "$i"; done ;;
    wait) for i in "${instances[@]}"; do wait_one "$i"; done ;;
    stop)
      # In parallel: each pm_stop waits until its process is gone (SQLite index released).
      for i in "${instances[@]}"; do pm_stop "orthanc-$i" "$STOP_GRACE_SECONDS" & done
      wait ;;
    status) for i in "${instances[@]}"; do status_one "$i"; done ;;
    reset) for i in "${instances[@]}"; do reset_one "$i"; done ;;
    *) usage ;;
  esac
}

main "$@"
