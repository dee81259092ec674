#!/bin/sh
# Entry point of the Proxymage service images.
#  - Secrets as files: every file /run/secrets/PROXYMAGE_* (compose `secrets:`, a Kubernetes Secret mounted
#    there, or PROXYMAGE_SECRETS_DIR) becomes the environment variable of the same name, its content the
#    value (trailing newline dropped), unless that variable is already set. So tokens and URLs with
#    passwords (PROXYMAGE_API_TOKENS, PROXYMAGE_MONGO_URL, ...) need not be written in the compose file.
#  - No argument: runs the image's service (proxymage-$PROXYMAGE_SERVICE). Arguments: runs them instead,
#    e.g. `proxymage topics` to create the topics.
set -eu
secrets_dir="${PROXYMAGE_SECRETS_DIR:-/run/secrets}"
if [ -d "$secrets_dir" ]; then
  for file in "$secrets_dir"/PROXYMAGE_*; do
    [ -f "$file" ] || continue
    name="$(basename "$file")"
    case "$name" in *[!A-Za-z0-9_]*) echo "proxymage-entrypoint: ignoring $file (not a variable name)" >&2; continue ;; esac
    if [ -z "$(eval "printf '%s' \"\${$name+set}\"")" ]; then
      value="$(cat "$file")"
      export "$name=$value"
    fi
  done
fi
if [ "$#" -eq 0 ]; then
  exec "proxymage-${PROXYMAGE_SERVICE:?PROXYMAGE_SERVICE is not set}"
fi
exec "$@"
