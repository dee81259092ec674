#!/usr/bin/env bash
# The compose stack's secrets, as files under $PROXYMAGE_COMPOSE_SECRETS (default var/compose/secrets, mode 0700),
# created once (idempotent; delete the directory to renew them):
#   smtp-ca.pem, smtp-server.pem/.key   the SMTP test server's CA and certificate (SAN DNS:smtp, DNS:localhost)
#   smtp-client.pem/.key                the expert notifier's client certificate (signed by that CA)
#   PROXYMAGE_API_TOKENS                the gateway's API tokens (SHA-256 hashes, see the gateway's settings)
#   dcc-token                           the DCC token itself (not given to any container): your Bearer token
# The files are readable by every user (the containers run as their own non-root users and read them through
# bind mounts); the directory is the owner's only.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DIR="${PROXYMAGE_COMPOSE_SECRETS:-$ROOT/var/compose/secrets}"
CERTS="$(dirname "$DIR")/certs"

mkdir -p "$DIR"
chmod 0700 "$DIR"
PROXYMAGE_SMTP_SERVER_SAN="DNS:smtp,DNS:localhost,IP:127.0.0.1" bash "$ROOT/deploy/local/smtp/certs.sh" "$CERTS"
for name in ca.pem server.pem server.key client.pem client.key; do
  install -m 0644 "$CERTS/$name" "$DIR/smtp-$name"
done
if [ ! -s "$DIR/dcc-token" ]; then
  (umask 077 && python3 -c 'import secrets; print(secrets.token_urlsafe(32))' >"$DIR/dcc-token")
fi
python3 - "$DIR" <<'PY'
import hashlib, json, pathlib, sys
directory = pathlib.Path(sys.argv[1])
token = (directory / "dcc-token").read_text().strip()
tokens = [{"name": "dcc-compose", "role": "dcc", "sha256": hashlib.sha256(token.encode()).hexdigest()}]
target = directory / "PROXYMAGE_API_TOKENS"
target.write_text(json.dumps(tokens))
target.chmod(0o644)
PY
echo "[compose] secrets in $DIR (DCC token: $DIR/dcc-token)" >&2
