#!/usr/bin/env bash
# Builds every Proxymage image with podman (`make images`):
#   localhost/proxymage-{identity-matcher,study-fetcher,expert-notifier,gateway}:$TAG   deploy/images/Containerfile
#   localhost/proxymage-kafka:$TAG      Kafka from the Maven jars of deploy/local/kafka.sh install
#   localhost/proxymage-ferretdb:$TAG   the patched FerretDB binary of deploy/local/ferretdb.sh install
#   localhost/proxymage-orthanc:$TAG    Orthanc + DICOMweb from Debian (MIRC and VIEWER)
#   localhost/proxymage-smtp:$TAG       the STARTTLS + client-certificate SMTP test server
# Settings: PROXYMAGE_BASE_IMAGE (default localhost/debian:bookworm, made by base.sh image; any Debian
# bookworm-based image works, e.g. docker.io/library/python:3.11-slim-bookworm), PROXYMAGE_IMAGE_TAG (latest),
# PROXYMAGE_BUILD_EXTRA_CA (a PEM file of CA certificates the builds must trust to reach PyPI; default: the
# host's /usr/local/share/ca-certificates/*.crt, passed as the build secret `extra_ca`, never stored in an image).
#   build.sh [IMAGE...]   (default: all; names without the proxymage- prefix)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BASE="${PROXYMAGE_BASE_IMAGE:-localhost/debian:bookworm}"
TAG="${PROXYMAGE_IMAGE_TAG:-latest}"
STAGE="$ROOT/var/images"
SERVICES=(identity-matcher study-fetcher expert-notifier gateway)
ALL=("${SERVICES[@]}" kafka ferretdb orthanc smtp)
VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/pyproject.toml" | head -n 1)"
REVISION="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"

log() { echo "[images] $*" >&2; }

secret_args=()
extra_ca() {
  mkdir -p "$STAGE"
  local ca="${PROXYMAGE_BUILD_EXTRA_CA:-}"
  if [ -z "$ca" ] && compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
    cat /usr/local/share/ca-certificates/*.crt >"$STAGE/extra-ca.pem"
    ca="$STAGE/extra-ca.pem"
  fi
  if [ -n "$ca" ]; then
    secret_args=(--secret "id=extra_ca,src=$ca")
  fi
}

build() {  # build NAME CONTEXT CONTAINERFILE [--build-arg ...]
  local name="$1" context="$2" file="$3" started=$SECONDS
  shift 3
  log "building localhost/proxymage-$name:$TAG"
  # --format docker: the OCI format drops HEALTHCHECK. --layers: reuse unchanged layers between builds.
  podman build --quiet --format docker --layers "${secret_args[@]}" \
    --build-arg "BASE=$BASE" --build-arg "VERSION=$VERSION" "$@" \
    -f "$file" -t "localhost/proxymage-$name:$TAG" "$context" >/dev/null
  log "built localhost/proxymage-$name:$TAG in $((SECONDS - started))s"
}

service_image() {
  build "$1" "$ROOT" "$ROOT/deploy/images/Containerfile" --build-arg "SERVICE=$1" --build-arg "REVISION=$REVISION"
}

kafka_image() {
  bash "$ROOT/deploy/local/kafka.sh" install
  local ctx="$STAGE/context/kafka" jar
  rm -rf "$ctx"
  mkdir -p "$ctx/libs"
  cp -l "$ROOT/var/kafka/libs/"*.jar "$ctx/libs/" 2>/dev/null || cp "$ROOT/var/kafka/libs/"*.jar "$ctx/libs/"
  cp "$ROOT/deploy/images/kafka/kafka-entrypoint.sh" "$ctx/"
  jar="$(basename "$(ls "$ctx/libs"/kafka_2.13-*.jar | head -n 1)" .jar)"
  build kafka "$ctx" "$ROOT/deploy/images/kafka/Containerfile" --build-arg "VERSION=${jar#kafka_2.13-}"
}

ferretdb_image() {
  bash "$ROOT/deploy/local/ferretdb.sh" install
  local ctx="$STAGE/context/ferretdb"
  rm -rf "$ctx"
  mkdir -p "$ctx"
  cp "$ROOT/var/ferretdb/bin/ferretdb" "$ctx/ferretdb"
  build ferretdb "$ctx" "$ROOT/deploy/images/ferretdb/Containerfile"
}

main() {
  local images=("$@") started=$SECONDS image
  [ "${#images[@]}" -gt 0 ] || images=("${ALL[@]}")
  if [ "$BASE" = localhost/debian:bookworm ]; then
    bash "$ROOT/deploy/images/base.sh" image
  fi
  extra_ca
  for image in "${images[@]}"; do
    case "$image" in
      identity-matcher | study-fetcher | expert-notifier | gateway) service_image "$image" ;;
      kafka) kafka_image ;;
      ferretdb) ferretdb_image ;;
      orthanc) build orthanc "$ROOT" "$ROOT/deploy/images/orthanc/Containerfile" ;;
      smtp) build smtp "$ROOT" "$ROOT/deploy/images/smtp/Containerfile" ;;
      *) log "unknown image '$image' (one of: ${ALL[*]})"; exit 2 ;;
    esac
  done
  log "all built in $((SECONDS - started))s:"
  for image in "${images[@]}"; do
    podman image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' "localhost/proxymage-$image:$TAG" >&2
  done
}

main "$@"
