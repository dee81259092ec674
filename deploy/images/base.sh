#!/usr/bin/env bash
# Container tooling and the local Debian base image (no registry serves images on this kind of machine).
#   base.sh tools   install podman, runc, mmdebstrap from Debian (as root) and the containers.conf below
#   base.sh image   build localhost/debian:bookworm with mmdebstrap (~3 min; skipped when present)
# Facts (ARCHITECTURE.md "Measured facts"): crun refuses this kernel's hybrid cgroups, so podman runs with
# runc; without explicit ulimits setrlimit fails with EPERM. PROXYMAGE_BASE_IMAGE names the image.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BASE_IMAGE="${PROXYMAGE_BASE_IMAGE:-localhost/debian:bookworm}"
CONF_DIR="${PROXYMAGE_CONTAINERS_CONF_DIR:-/etc/containers}"

log() { echo "[images] $*" >&2; }

tools() {
  bash "$ROOT/deploy/local/system-packages.sh" podman runc mmdebstrap
  if [ ! -e "$CONF_DIR/containers.conf" ] || ! grep -q 'runtime = "runc"' "$CONF_DIR/containers.conf"; then
    mkdir -p "$CONF_DIR"
    cat >"$CONF_DIR/containers.conf" <<'CONF'
# Written by Proxymage's deploy/images/base.sh: crun refuses this kernel's hybrid cgroups; without explicit
# ulimits, setrlimit fails with EPERM.
[engine]
runtime = "runc"

[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]
CONF
    log "wrote $CONF_DIR/containers.conf (runc, default ulimits)"
  fi
}

image() {
  tools
  if podman image exists "$BASE_IMAGE"; then
    return 0
  fi
  local work
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' RETURN
  log "building $BASE_IMAGE with mmdebstrap (minbase bookworm, ~3 min)"
  mmdebstrap --quiet --variant=minbase --include=ca-certificates bookworm "$work/rootfs.tar" >&2
  podman import --change 'CMD ["/bin/bash"]' "$work/rootfs.tar" "$BASE_IMAGE" >&2
  log "built $BASE_IMAGE"
}

case "${1:-}" in
  tools) tools ;;
  image) image ;;
  *) echo "usage: $0 tools|image" >&2; exit 2 ;;
esac
