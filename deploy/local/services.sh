#!/usr/bin/env bash
# The four Proxymage services as background processes on 127.0.0.1, each with its health port from
# local.env, logs under var/log.
#   services.sh start | stop | status | wait
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
python="$PM_ROOT/.venv/bin/python"
# name:python package:health port
services=(
  "identity-matcher:identity_matcher:$PROXYMAGE_LOCAL_IDENTITY_MATCHER_HEALTH_PORT"
  "study-fetcher:study_fetcher:$PROXYMAGE_LOCAL_STUDY_FETCHER_HEALTH_PORT"
  "expert-notifier:expert_notifier:$PROXYMAGE_LOCAL_EXPERT_NOTIFIER_HEALTH_PORT"
  "gateway:gateway:$PROXYMAGE_LOCAL_GATEWAY_HTTP_PORT"
)

ready() { curl -fsS --noproxy '*' -o /dev/null "http://127.0.0.1:$1/readyz"; }

case "${1:-}" in
  start)
    cd "$PM_ROOT"  # relative paths in local.env (certificates, ...) are relative to the repository
    [ -x "$python" ] || pm_die "no virtualenv at $PM_ROOT/.venv: run 'make install' first"
    for entry in "${services[@]}"; do
      IFS=: read -r name package port <<<"$entry"
      PROXYMAGE_HEALTH_PORT="$port" pm_start "$name" "$python" -m "$package"
    done
    "$0" wait
    ;;
  wait)
    for entry in "${services[@]}"; do
      IFS=: read -r name package port <<<"$entry"
      pm_wait_until 60 "$name ready on :$port/readyz" ready "$port" \
        || { tail -n 20 "$PM_LOG/$name.log" >&2; exit 1; }
    done
    pm_log "services ready"
    ;;
  stop)
    for entry in "${services[@]}"; do
      IFS=: read -r name _ _ <<<"$entry"
      pm_stop "$name" 10 &
    done
    wait
    ;;
  status)
    for entry in "${services[@]}"; do
      IFS=: read -r name _ port <<<"$entry"
      pm_status_line "$name" "http://127.0.0.1:$port/readyz"
    done
    ;;
  *)
    echo "usage: $0 start|stop|status|wait" >&2
    exit 2
    ;;
esac
