#!/usr/bin/env bash
# The OHIF Viewer 3 that the gateway serves at /viewer/: the prebuilt `dist/` of the npm package
# @ohif/app, at the version and integrity pinned in ohif/ohif.pin, rewritten for the /viewer/ path.
#
#   ohif.sh install   fetch (npm pack), verify the sha512 integrity, rewrite, install into
#                     $PM_VAR/ohif/<version>/ and point $PM_VAR/ohif/current at it (skipped when done)
#   ohif.sh status    the installed version
#   ohif.sh start     the same as install (stack.sh runs every component's start; nothing runs: the gateway
#                     serves the files); ohif.sh stop does nothing
#
# Only `install` talks to the npm registry; the gateway serves the files as they are (no run-time fetch).
# The rewrites (ohif/rewrite.py) move OHIF's root paths under /viewer/, move index.html's inline scripts
# to a file (the gateway's CSP has no 'unsafe-inline'), drop the service worker, and install our own
# ohif/app-config.js. A change to the pin, to rewrite.py or to app-config.js triggers a new install.
set -euo pipefail

# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

OHIF_SRC="$PM_ROOT/deploy/local/ohif"
OHIF_HOME="$PM_VAR/ohif"
OHIF_BASE=/viewer/
# shellcheck source=ohif/ohif.pin
. "$OHIF_SRC/ohif.pin"
: "${OHIF_VERSION:?ohif.pin sets no OHIF_VERSION}" "${OHIF_INTEGRITY:?ohif.pin sets no OHIF_INTEGRITY}"
OHIF_TARGET="$OHIF_HOME/$OHIF_VERSION"
OHIF_STAMP_FILE=".proxymage-install"

# What the installed tree was made from: the package and our two inputs.
ohif_stamp() {
  printf '%s %s %s\n' "$OHIF_VERSION" "$OHIF_INTEGRITY" "$OHIF_BASE"
  sha256sum "$OHIF_SRC/rewrite.py" "$OHIF_SRC/app-config.js" | awk '{print $1}'
}

ohif_installed() {
  [ -f "$OHIF_TARGET/$OHIF_STAMP_FILE" ] \
    && [ "$(cat "$OHIF_TARGET/$OHIF_STAMP_FILE")" = "$(ohif_stamp)" ] \
    && [ "$(readlink "$OHIF_HOME/current" 2>/dev/null)" = "$OHIF_VERSION" ]
}

# sha512-<base64> as npm writes it (Subresource Integrity format), computed here, not trusted from npm.
ohif_integrity() {
  printf 'sha512-%s' "$(openssl dgst -sha512 -binary "$1" | base64 -w0)"
}

ohif_install() {
  if ohif_installed; then
    pm_log "OHIF $OHIF_VERSION already installed in $OHIF_TARGET"
    return 0
  fi
  command -v npm >/dev/null || pm_die "npm not found: OHIF is installed from the npm registry (apt-get install npm)"
  command -v openssl >/dev/null || pm_die "openssl not found (needed to verify the package's integrity)"
  mkdir -p "$OHIF_HOME"
  local tmp
  tmp="$(mktemp -d "$OHIF_HOME/.install.XXXXXX")"
  # shellcheck disable=SC2064 # expand now: tmp is local
  trap "rm -rf '$tmp'" EXIT

  pm_log "fetching @ohif/app@$OHIF_VERSION (npm pack, ~50 MB)"
  # --ignore-scripts: nothing of the package runs here; only its tarball is wanted.
  (cd "$tmp" && npm pack "@ohif/app@$OHIF_VERSION" --pack-destination "$tmp" --ignore-scripts --silent >/dev/null) \
    || pm_die "npm pack @ohif/app@$OHIF_VERSION failed"
  local tarball="$tmp/ohif-app-$OHIF_VERSION.tgz" actual
  [ -f "$tarball" ] || pm_die "npm pack produced no $tarball"
  actual="$(ohif_integrity "$tarball")"
  if [ "$actual" != "$OHIF_INTEGRITY" ]; then
    pm_die "integrity mismatch for @ohif/app@$OHIF_VERSION: got $actual, pinned $OHIF_INTEGRITY (refusing to install)"
  fi
  pm_log "integrity verified ($OHIF_INTEGRITY)"

  mkdir "$tmp/extract"
  tar -xzf "$tarball" -C "$tmp/extract" --no-same-owner --no-same-permissions package/dist \
    || pm_die "the package has no dist/"
  local build="$tmp/extract/package/dist"
  if ! python3 "$OHIF_SRC/rewrite.py" "$build" "$OHIF_SRC/app-config.js" --base "$OHIF_BASE" \
    | while IFS= read -r line; do pm_log "rewrite: $line"; done; then
    pm_die "rewriting OHIF's dist for $OHIF_BASE failed"
  fi
  ohif_stamp >"$build/$OHIF_STAMP_FILE"
  chmod -R a+rX,go-w "$build"

  # Swap the version's directory in, then the `current` link (renames are atomic): the gateway, which
  # resolves `current` per request, never sees a half-written tree. Only a reinstall of the same version
  # (app-config.js changed) leaves it a moment between the two renames without one.
  if [ -e "$OHIF_TARGET" ]; then
    mv "$OHIF_TARGET" "$tmp/previous"
  fi
  mv "$build" "$OHIF_TARGET"
  ln -sfn "$OHIF_VERSION" "$OHIF_HOME/.current.tmp"
  mv -Tf "$OHIF_HOME/.current.tmp" "$OHIF_HOME/current"
  pm_log "OHIF $OHIF_VERSION installed in $OHIF_TARGET ($OHIF_HOME/current)"
}

ohif_status() {
  if [ -L "$OHIF_HOME/current" ] && [ -f "$OHIF_HOME/current/$OHIF_STAMP_FILE" ]; then
    printf '%-17s installed  %s (pinned %s)\n' ohif "$(readlink "$OHIF_HOME/current")" "$OHIF_VERSION"
  else
    printf '%-17s missing    (run: %s install)\n' ohif "$0"
  fi
}

case "${1:-}" in
  install | start) ohif_install ;;
  stop) ;;
  status) ohif_status ;;
  *)
    echo "usage: $0 install|start|stop|status" >&2
    exit 2
    ;;
esac
