#!/usr/bin/env bash
# The local OpenID Connect provider (panva's oidc-provider on Node.js, deploy/local/oidc/server.mjs) that
# stands in for Pro Santé Connect / the region's IdP: the console's personal sign-in (authorization code +
# PKCE) with three synthetic users, one per role (3c, medecin, lecture).
#
#   oidc.sh install   npm ci from the npm registry into deploy/local/oidc/node_modules (package-lock.json pinned)
#   oidc.sh start     install, start on 127.0.0.1:$PROXYMAGE_LOCAL_OIDC_PORT, wait for the discovery document
#   oidc.sh stop      stop it (SIGTERM)
#   oidc.sh status    one line: up/down, issuer, pid
#
# Settings from local.env: PROXYMAGE_OIDC_ISSUER, PROXYMAGE_OIDC_CLIENT_ID/_SECRET (the gateway's client),
# PROXYMAGE_LOCAL_OIDC_PORT, PROXYMAGE_LOCAL_OIDC_REDIRECT_URIS, PROXYMAGE_LOCAL_OIDC_POST_LOGOUT_URIS.
# Its signing key is kept in $PM_VAR/oidc/keys.json (generated at first start).
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

OIDC_NAME=oidc
if [ -z "${PROXYMAGE_LOCAL_OIDC_PORT:-}" ] || [ -z "${PROXYMAGE_OIDC_ISSUER:-}" ]; then
  # Another stack's env file (deploy/chaos/chaos.env...) without a provider: nothing to do.
  [ "${1:-}" = status ] && printf '%-17s off   (no PROXYMAGE_LOCAL_OIDC_PORT in %s)\n' oidc "$PM_ENV_FILE"
  exit 0
fi
OIDC_SRC="$PM_ROOT/deploy/local/oidc"
OIDC_PORT="$PROXYMAGE_LOCAL_OIDC_PORT"
OIDC_ISSUER="$PROXYMAGE_OIDC_ISSUER"
OIDC_STAMP="$OIDC_SRC/node_modules/.proxymage-lock-sha256"

oidc_installed() {
  [ -f "$OIDC_STAMP" ] && [ "$(cat "$OIDC_STAMP")" = "$(sha256sum "$OIDC_SRC/package-lock.json" | awk '{print $1}')" ]
}

cmd_install() {
  if oidc_installed; then
    pm_log "oidc-provider already installed in $OIDC_SRC/node_modules"
    return 0
  fi
  command -v npm >/dev/null || pm_die "npm not found: the OIDC provider is installed from the npm registry (apt-get install npm)"
  # oidc-provider 9 needs URL.parse (Node 20.18+ / 22+; it recommends 22, and runs on 20.20 here).
  node -e 'process.exit(typeof URL.parse === "function" ? 0 : 1)' \
    || pm_die "Node.js $(node --version) is too old for oidc-provider 9: Node 20.18 or later is needed"
  pm_log "installing oidc-provider (npm ci)"
  # --ignore-scripts: no install script of any package runs here.
  (cd "$OIDC_SRC" && npm ci --ignore-scripts --no-audit --no-fund --silent) || pm_die "npm ci in $OIDC_SRC failed"
  sha256sum "$OIDC_SRC/package-lock.json" | awk '{print $1}' >"$OIDC_STAMP"
  pm_log "oidc-provider installed"
}

discovery_answers() {
  curl -fsS --max-time 2 "$OIDC_ISSUER/.well-known/openid-configuration" >/dev/null
}

cmd_start() {
  cmd_install
  if pm_running "$OIDC_NAME"; then
    pm_log "$OIDC_NAME already running (pid $(pm_pid "$OIDC_NAME"))"
  else
    bash -c "exec 3<>/dev/tcp/127.0.0.1/$OIDC_PORT" 2>/dev/null \
      && pm_die "oidc: port $OIDC_PORT on 127.0.0.1 is already in use by another process"
    PROXYMAGE_LOCAL_OIDC_DATA_DIR="$PM_VAR/oidc" NODE_ENV=production \
      pm_start "$OIDC_NAME" node "$OIDC_SRC/server.mjs"
  fi
  pm_wait_until 30 "the OIDC provider's discovery document at $OIDC_ISSUER" discovery_answers \
    || pm_die "oidc: not answering (log $PM_LOG/$OIDC_NAME.log)"
  pm_log "oidc ready at $OIDC_ISSUER (users 3c.fictif/demo-3c, medecin.fictif/demo-medecin, lecture.fictif/demo-lecture)"
}

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) pm_stop "$OIDC_NAME" 10 ;;
  status) pm_status_line "$OIDC_NAME" "$OIDC_ISSUER" ;;
  *)
    echo "usage: $0 install|start|stop|status" >&2
    exit 2
    ;;
esac
