#!/usr/bin/env bash
# The local SMTP server standing in for MSSanté (French secure health mail): requires STARTTLS and a
# client certificate from the test CA (deploy/local/smtp/server.py documents the behaviour).
#
#   deploy/local/smtp.sh install   test certificates (deploy/local/smtp/certs.sh) + the workspace venv
#   deploy/local/smtp.sh start     install, start, wait until ready
#   deploy/local/smtp.sh stop      stop it (SIGTERM)
#   deploy/local/smtp.sh status    one line: up/down, address, pid
#   deploy/local/smtp.sh wait      wait until an EHLO advertises STARTTLS and a mutual-TLS session works
#   deploy/local/smtp.sh reset     empty the mailbox and remove the failure script (tests start clean)
#
# Address: PROXYMAGE_SMTP__HOST/PORT; files under PROXYMAGE_LOCAL_SMTP_DIR (var/smtp):
#   certs/ (ca.pem, client.pem/.key for clients; rogue-client.pem/.key from an untrusted CA),
#   mailbox/<ts>-<n>.eml + .json (accepted messages), script.json (scripted 4xx/5xx replies).
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SMTP_NAME=smtp
SMTP_HOST="$PROXYMAGE_SMTP__HOST"
SMTP_PORT="$PROXYMAGE_SMTP__PORT"
SMTP_DIR="$PM_ROOT/$PROXYMAGE_LOCAL_SMTP_DIR"
SMTP_CERTS="$SMTP_DIR/certs"
SMTP_PY="$PM_ROOT/.venv/bin/python"
SMTP_SERVER="$PM_ROOT/deploy/local/smtp/server.py"
READY_SECONDS=30
LOG_MARKER="--- smtp.sh start"

usage() {
  sed -n '5,10p' "${BASH_SOURCE[0]}" | sed 's/^# //' >&2
  exit 2
}

# The lines of the log after the last start marker (at most 30).
log_tail() {
  pm_log "last lines of $PM_LOG/$SMTP_NAME.log:"
  awk -v m="$LOG_MARKER" 'index($0, m) == 1 { n = 0; next } { line[n++] = $0 }
    END { for (i = (n > 30 ? n - 30 : 0); i < n; i++) print line[i] }' \
    "$PM_LOG/$SMTP_NAME.log" >&2 2>/dev/null || true
}

venv_ok() {
  [ -x "$SMTP_PY" ] && "$SMTP_PY" -c 'import aiosmtpd' >/dev/null 2>&1
}

cmd_install() {
  "$PM_ROOT/deploy/local/smtp/certs.sh" "$SMTP_CERTS"
  if ! venv_ok; then
    command -v uv >/dev/null || pm_die "uv not found: needed to create $PM_ROOT/.venv"
    pm_log "smtp: workspace venv missing or without aiosmtpd, running uv sync"
    if [ -f "$PM_ROOT/uv.lock" ]; then
      (cd "$PM_ROOT" && UV_PYTHON_DOWNLOADS=never uv sync --frozen)
    else
      (cd "$PM_ROOT" && UV_PYTHON_DOWNLOADS=never uv sync)
    fi
    venv_ok || pm_die "smtp: $SMTP_PY cannot import aiosmtpd after uv sync (dev dependency group)"
  fi
}

port_open() {
  bash -c "exec 3<>/dev/tcp/$SMTP_HOST/$SMTP_PORT" 2>/dev/null
}

cmd_start() {
  cmd_install
  if pm_running "$SMTP_NAME"; then
    pm_log "$SMTP_NAME already running (pid $(pm_pid "$SMTP_NAME"))"
  else
    # Someone else on the port would answer the readiness probe in place of our server.
    port_open && pm_die "smtp: port $SMTP_PORT on $SMTP_HOST is already in use by another process"
    echo "$LOG_MARKER $(date '+%F %T') ---" >>"$PM_LOG/$SMTP_NAME.log"
    # -u: log lines reach the file as they are written.
    pm_start "$SMTP_NAME" "$SMTP_PY" -u "$SMTP_SERVER" \
      --host "$SMTP_HOST" --port "$SMTP_PORT" --dir "$SMTP_DIR"
  fi
  cmd_wait
}

# Ready = the greeting and EHLO advertise STARTTLS, and STARTTLS with our client certificate gives
# a session that answers EHLO and NOOP: this also proves the server loaded its certificates.
is_ready() {
  SMTP_HOST="$SMTP_HOST" SMTP_PORT="$SMTP_PORT" SMTP_CERTS="$SMTP_CERTS" \
    timeout 8 "$SMTP_PY" - <<'EOF'
import os, smtplib, ssl, sys
certs = os.environ["SMTP_CERTS"]
ctx = ssl.create_default_context(cafile=f"{certs}/ca.pem")
ctx.minimum_version = ssl.TLSVersion.TLSv1_2
ctx.load_cert_chain(f"{certs}/client.pem", f"{certs}/client.key")
with smtplib.SMTP(os.environ["SMTP_HOST"], int(os.environ["SMTP_PORT"]), local_hostname="probe.test", timeout=3) as s:
    s.ehlo()
    if not s.has_extn("starttls"):
        sys.exit("STARTTLS not advertised")
    s.starttls(context=ctx)
    s.ehlo()
    if s.noop()[0] != 250:
        sys.exit("NOOP after STARTTLS failed")
EOF
}

cmd_wait() {
  [ -n "$(pm_pid "$SMTP_NAME")" ] || pm_die "$SMTP_NAME is not started (deploy/local/smtp.sh start)"
  venv_ok || pm_die "smtp: $SMTP_PY missing (deploy/local/smtp.sh install)"
  local deadline=$((SECONDS + READY_SECONDS)) probe_err="$PM_RUN/$SMTP_NAME.probe.err"
  until is_ready >/dev/null 2>"$probe_err"; do
    if ! pm_running "$SMTP_NAME"; then
      log_tail
      rm -f "$probe_err"
      pm_die "$SMTP_NAME exited (see $PM_LOG/$SMTP_NAME.log)"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      log_tail
      pm_log "last probe error: $(tail -n 1 "$probe_err")"
      rm -f "$probe_err"
      pm_die "$SMTP_NAME not ready after ${READY_SECONDS}s ($SMTP_HOST:$SMTP_PORT, STARTTLS + client cert)"
    fi
    sleep 0.2
  done
  rm -f "$probe_err"
  pm_log "$SMTP_NAME ready ($SMTP_HOST:$SMTP_PORT, STARTTLS + client certificate, mailbox $SMTP_DIR/mailbox)"
}

cmd_reset() {
  # Only our own files: *.eml/*.json and leftover temporary files of an interrupted write.
  if [ -d "$SMTP_DIR/mailbox" ]; then
    find "$SMTP_DIR/mailbox" -maxdepth 1 -type f \( -name '*.eml' -o -name '*.json' -o -name '.*.tmp' \) -delete
  fi
  rm -f "$SMTP_DIR/script.json"
  pm_log "smtp: mailbox emptied, script.json removed"
}

main() {
  case "${1:-}" in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) pm_stop "$SMTP_NAME" 10 ;;
    status) pm_status_line "$SMTP_NAME" "smtp+starttls://$SMTP_HOST:$SMTP_PORT" ;;
    wait) cmd_wait ;;
    reset) cmd_reset ;;
    *) usage ;;
  esac
}

main "$@"
