#!/usr/bin/env bash
# Local MongoDB-compatible server: FerretDB v1 with its SQLite backend, built from ./ferretdb
# (a small Go main around the embeddable github.com/FerretDB/FerretDB/ferretdb package).
#
#   ferretdb.sh install   build $PM_VAR/ferretdb/bin/ferretdb (skipped when up to date)
#   ferretdb.sh start     install if needed, start on 127.0.0.1:$PROXYMAGE_LOCAL_FERRETDB_PORT, wait
#   ferretdb.sh wait      until a MongoDB ping is answered ok:1 (60 s deadline)
#   ferretdb.sh stop      SIGTERM, wait for exit
#   ferretdb.sh status    one status line
#
# Data lives in $PM_VAR/ferretdb/data (one SQLite file per database) and survives stop/start.
# The FerretDB module is patched at build time (ferretdb/patches/*.patch, applied to a vendored copy;
# each patch says why): its SQLite backend otherwise never uses the _id index.
# The binary serializes conflicting commands (see ferretdb/main.go): FerretDB v1 alone loses
# concurrent single-document updates that real MongoDB applies atomically.
# Optional: PROXYMAGE_LOCAL_FERRETDB_LOG_LEVEL=debug|info|warn|error (default info).
set -euo pipefail

# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

FDB_SRC="$PM_ROOT/deploy/local/ferretdb"
FDB_HOME="$PM_VAR/ferretdb"
FDB_BIN="$FDB_HOME/bin/ferretdb"
FDB_DATA="$FDB_HOME/data"
FDB_ADDR="127.0.0.1:${PROXYMAGE_LOCAL_FERRETDB_PORT}"
FDB_WAIT_SECONDS=60

fdb_up_to_date() {
  [ -x "$FDB_BIN" ] || return 1
  local f
  # The directories themselves too: removing a source file or a patch changes their mtime.
  for f in "$FDB_SRC" "$FDB_SRC"/*.go "$FDB_SRC"/go.mod "$FDB_SRC"/go.sum "$FDB_SRC"/patches "$FDB_SRC"/patches/*.patch; do
    [ ! -e "$f" ] || [ "$FDB_BIN" -nt "$f" ] || return 1
  done
}

# fdb_build OUT: vendor the module's dependencies in a scratch copy of $FDB_SRC, apply our patches to
# the vendored FerretDB (a hunk that does not apply exactly fails the build), build OUT from it.
fdb_build() {
  local out="$1" build rc=0
  build="$(mktemp -d "${TMPDIR:-/tmp}/proxymage-ferretdb-build.XXXXXX")"
  fdb_build_in "$build" "$out" || rc=$?
  rm -rf "$build"
  return "$rc"
}

fdb_build_in() {
  local build="$1" out="$2" p
  cp "$FDB_SRC"/*.go "$FDB_SRC"/go.mod "$FDB_SRC"/go.sum "$build/" || return 1
  (cd "$build" && go mod vendor) || return 1
  for p in "$FDB_SRC"/patches/*.patch; do
    [ -e "$p" ] || continue
    pm_log "applying $(basename "$p")"
    # -F0: no fuzz, --forward: never reverse an already applied patch; any rejected hunk fails.
    patch -p1 -F0 --forward --batch --no-backup-if-mismatch -r - \
      -d "$build/vendor/github.com/FerretDB/FerretDB" <"$p" >&2 || {
      pm_log "patch $p does not apply to the vendored FerretDB"
      return 1
    }
  done
  # -buildvcs=false: the repo may have no commits yet, and VCS stamping is useless here.
  (cd "$build" && go build -mod=vendor -buildvcs=false -trimpath -o "$out" .)
}

fdb_install() {
  if fdb_up_to_date; then
    return 0
  fi
  command -v go >/dev/null || pm_die "go not found: FerretDB is built from source (deploy/local/ferretdb)"
  command -v patch >/dev/null || pm_die "patch not found: FerretDB is patched at build time (apt-get install patch)"
  mkdir -p "$(dirname "$FDB_BIN")"
  pm_log "building FerretDB into $FDB_BIN (the first build compiles SQLite-in-Go: a minute or two)"
  # Build to a temporary name and rename: an interrupted build never leaves a binary that looks
  # up to date.
  fdb_build "$FDB_BIN.tmp" || pm_die "FerretDB build failed"
  mv -f "$FDB_BIN.tmp" "$FDB_BIN"
  pm_log "FerretDB built"
}

fdb_tail_log() {
  pm_log "last lines of $PM_LOG/ferretdb.log:"
  tail -n 30 "$PM_LOG/ferretdb.log" >&2 2>/dev/null || true
}

fdb_wait() {
  [ -x "$FDB_BIN" ] || pm_die "FerretDB is not installed (run: $0 install)"
  local deadline=$((SECONDS + FDB_WAIT_SECONDS)) err=""
  # Readiness is a real ping round-trip through the wire protocol and the SQLite backend, not
  # merely an open port. The probe is our own binary in -ping mode (no pymongo needed).
  until err="$("$FDB_BIN" -ping -listen-addr "$FDB_ADDR" -timeout 2s 2>&1)"; do
    if ! pm_running ferretdb; then
      # A pid file left behind means it was started and died (pm_stop removes it): show why.
      [ -e "$PM_RUN/ferretdb.pid" ] || pm_die "FerretDB is not running (start it: $0 start)"
      fdb_tail_log
      pm_die "FerretDB exited during start-up"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      fdb_tail_log
      pm_die "FerretDB did not answer a ping on $FDB_ADDR within ${FDB_WAIT_SECONDS}s: $err"
    fi
    sleep 0.05
  done
  pm_log "FerretDB ready at $PROXYMAGE_MONGO_URL"
}

fdb_start() {
  fdb_install
  mkdir -p "$FDB_DATA"
  pm_start ferretdb "$FDB_BIN" \
    -listen-addr "$FDB_ADDR" \
    -sqlite-dir "$FDB_DATA" \
    -log-level "${PROXYMAGE_LOCAL_FERRETDB_LOG_LEVEL:-info}"
  fdb_wait
}

case "${1:-}" in
  install) fdb_install ;;
  start) fdb_start ;;
  wait) fdb_wait ;;
  # After SIGTERM FerretDB gives connected clients a few seconds before closing them.
  stop) pm_stop ferretdb 20 ;;
  status) pm_status_line ferretdb "$PROXYMAGE_MONGO_URL" ;;
  *)
    echo "usage: $0 install|start|stop|status|wait" >&2
    exit 2
    ;;
esac
