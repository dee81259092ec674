#!/bin/sh
# SMTP image entry point: copies the CA and server certificate into the data volume's certs/ (server.py reads
# them there), then runs the server on 0.0.0.0:2525 (a non-root user cannot bind 587). `smtp-entrypoint healthcheck`: the greeting and EHLO
# advertise STARTTLS.
set -eu
DIR=/var/lib/proxymage-smtp
if [ "${1:-}" = healthcheck ]; then
  exec /opt/smtp/bin/python -c '
import smtplib, sys
with smtplib.SMTP("127.0.0.1", 2525, local_hostname="healthcheck.test", timeout=4) as s:
    s.ehlo()
    sys.exit(0 if s.has_extn("starttls") else "STARTTLS not advertised")'
fi
mkdir -p "$DIR/certs" "$DIR/mailbox"
for name in ca.pem server.pem server.key; do
  [ -s "$SMTP_CERTS_DIR/smtp-$name" ] || { echo "smtp-entrypoint: missing $SMTP_CERTS_DIR/smtp-$name" >&2; exit 1; }
  cp "$SMTP_CERTS_DIR/smtp-$name" "$DIR/certs/$name"
done
chmod 600 "$DIR/certs/server.key"
exec /opt/smtp/bin/python -u /usr/local/lib/proxymage-smtp/server.py --host 0.0.0.0 --port 2525 --dir "$DIR" "$@"
