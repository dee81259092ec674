#!/usr/bin/env bash
# The local stack of real servers on 127.0.0.1: Kafka, FerretDB, Orthanc MIRC + VIEWER, SMTP (STARTTLS +
# client certificates), and the OHIF viewer's files that the gateway serves (installed, not run),
# and the OpenID Connect provider of the console's sign-in (oidc.sh).
#   stack.sh up       install what is missing, start everything, wait until each one answers
#   stack.sh down     stop every process it started (by pid file) and wait until they are gone
#   stack.sh status   one line per server
#   stack.sh install  only install (idempotent; cached under var/)
# Each server has its own script (kafka.sh, ferretdb.sh, orthanc.sh, smtp.sh, ohif.sh, oidc.sh) with the same verbs.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
here="$PM_ROOT/deploy/local"
components=(kafka ferretdb orthanc smtp ohif oidc)

# Runs "<component>.sh <verb>" for every component at once; fails if any failed, after all finished.
each() {
  local verb="$1" failed=() pids=() name i
  for name in "${components[@]}"; do
    bash "$here/$name.sh" "$verb" &
    pids+=($!)
  done
  for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || failed+=("${components[$i]}")
  done
  if [ "${#failed[@]}" -gt 0 ]; then
    pm_log "$verb failed for: ${failed[*]} (logs in $PM_LOG)"
    return 1
  fi
}

case "${1:-}" in
  install) each install ;;
  up)
    started=$SECONDS
    each start
    pm_log "stack up in $((SECONDS - started))s"
    "$0" status
    ;;
  down) each stop ;;
  status)
    for name in "${components[@]}"; do bash "$here/$name.sh" status; done
    ;;
  *)
    echo "usage: $0 up|down|status|install" >&2
    exit 2
    ;;
esac
