#!/usr/bin/env bash
# Test PKI of the local SMTP server (the MSSanté stand-in), generated with the openssl CLI.
#
# Usage: deploy/local/smtp/certs.sh [DIR]     (default: $PROXYMAGE_LOCAL_SMTP_DIR/certs, i.e. var/smtp/certs)
#
# Creates, only what is missing (or expires within a day):
#   ca.pem, ca.key                 test CA: the only CA the server trusts for client certificates,
#                                  and the CA clients trust for the server certificate
#   server.pem, server.key         server certificate, CN=localhost, SAN DNS:localhost IP:127.0.0.1 IP:::1
#                                  (or $PROXYMAGE_SMTP_SERVER_SAN)
#   client.pem, client.key         client certificate, CN=proxymage-notifier.test, signed by ca.pem
#   rogue-ca.pem, rogue-ca.key     a second, untrusted CA
#   rogue-client.pem, rogue-client.key   client certificate with the same CN, signed by rogue-ca.pem:
#                                  negative tests (the server must refuse it)
# Keys are EC P-256 (fast to generate, supported by every TLS 1.2+ stack), mode 0600.
# If the CA is (re)generated, the certificates it signs are regenerated too.
set -euo pipefail
# shellcheck source=../lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

CERTS_DIR="${1:-$PM_ROOT/$PROXYMAGE_LOCAL_SMTP_DIR/certs}"
CA_DAYS=3650
LEAF_DAYS=1095
CLIENT_CN=proxymage-notifier.test
# The server certificate's names; deploy/compose/secrets.sh adds the SMTP container's host name.
SERVER_SAN="${PROXYMAGE_SMTP_SERVER_SAN:-DNS:localhost,IP:127.0.0.1,IP:::1}"
# Regenerate anything that expires within this many seconds.
MIN_REMAINING_SECONDS=86400

command -v openssl >/dev/null || pm_die "openssl not found (apt-get install openssl)"
mkdir -p "$CERTS_DIR"
# Work in a private temporary directory and move finished files in: an interrupted run never leaves
# a certificate without its key (or a key without its certificate) under the final names.
WORK="$(mktemp -d "$CERTS_DIR/.work.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
umask 077

# valid NAME: NAME.pem and NAME.key exist and the certificate does not expire soon.
valid() {
  [ -s "$CERTS_DIR/$1.pem" ] && [ -s "$CERTS_DIR/$1.key" ] &&
    openssl x509 -in "$CERTS_DIR/$1.pem" -noout -checkend "$MIN_REMAINING_SECONDS" >/dev/null 2>&1
}

new_key() {
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null
}

# install_pair NAME: move NAME.pem/NAME.key from the work directory into place (key first, so a
# reader that sees the new certificate also sees its key).
install_pair() {
  chmod 0600 "$WORK/$1.key"
  chmod 0644 "$WORK/$1.pem"
  mv -f "$WORK/$1.key" "$CERTS_DIR/$1.key"
  mv -f "$WORK/$1.pem" "$CERTS_DIR/$1.pem"
}

# make_ca NAME SUBJECT: self-signed CA that may only sign end-entity certificates (pathlen 0).
make_ca() {
  local name="$1" subject="$2"
  new_key "$WORK/$name.key"
  openssl req -x509 -new -key "$WORK/$name.key" -sha256 -days "$CA_DAYS" -subj "$subject" \
    -set_serial "0x$(openssl rand -hex 16)" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash" \
    -out "$WORK/$name.pem"
  install_pair "$name"
  pm_log "smtp certs: generated $name ($subject)"
}

# make_leaf NAME CA SUBJECT EKU SAN: end-entity certificate signed by CA.
# Includes authorityKeyIdentifier: Python >= 3.13 verifies with VERIFY_X509_STRICT, which demands it.
make_leaf() {
  local name="$1" ca="$2" subject="$3" eku="$4" san="$5"
  new_key "$WORK/$name.key"
  printf '%s\n' \
    "basicConstraints=critical,CA:FALSE" \
    "keyUsage=critical,digitalSignature" \
    "extendedKeyUsage=$eku" \
    "subjectAltName=$san" \
    "subjectKeyIdentifier=hash" \
    "authorityKeyIdentifier=keyid:always" >"$WORK/$name.ext"
  openssl req -new -key "$WORK/$name.key" -subj "$subject" -out "$WORK/$name.csr"
  openssl x509 -req -in "$WORK/$name.csr" -CA "$CERTS_DIR/$ca.pem" -CAkey "$CERTS_DIR/$ca.key" \
    -set_serial "0x$(openssl rand -hex 16)" -sha256 -days "$LEAF_DAYS" \
    -extfile "$WORK/$name.ext" -out "$WORK/$name.pem" 2>/dev/null
  install_pair "$name"
  pm_log "smtp certs: generated $name ($subject, signed by $ca)"
}

ca_regenerated=0
if ! valid ca; then
  make_ca ca "/O=Proxymage test/CN=Proxymage test CA"
  ca_regenerated=1
fi
if [ "$ca_regenerated" = 1 ] || ! valid server; then
  make_leaf server ca "/O=Proxymage test/CN=localhost" serverAuth "$SERVER_SAN"
fi
if [ "$ca_regenerated" = 1 ] || ! valid client; then
  make_leaf client ca "/O=Proxymage test/CN=$CLIENT_CN" clientAuth "DNS:$CLIENT_CN"
fi

rogue_regenerated=0
if ! valid rogue-ca; then
  make_ca rogue-ca "/O=Rogue test/CN=Rogue test CA"
  rogue_regenerated=1
fi
if [ "$rogue_regenerated" = 1 ] || ! valid rogue-client; then
  # Same subject as the genuine client: only the issuer differs, which is what the server must check.
  make_leaf rogue-client rogue-ca "/O=Proxymage test/CN=$CLIENT_CN" clientAuth "DNS:$CLIENT_CN"
fi

# Sanity check: a broken chain would otherwise surface later as an obscure TLS handshake error.
for name in server client; do
  openssl verify -CAfile "$CERTS_DIR/ca.pem" "$CERTS_DIR/$name.pem" >/dev/null ||
    pm_die "smtp certs: $name.pem does not verify against ca.pem (delete $CERTS_DIR and rerun)"
done
if openssl verify -CAfile "$CERTS_DIR/ca.pem" "$CERTS_DIR/rogue-client.pem" >/dev/null 2>&1; then
  pm_die "smtp certs: rogue-client.pem verifies against ca.pem (delete $CERTS_DIR and rerun)"
fi
