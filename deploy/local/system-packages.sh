#!/usr/bin/env bash
# Installs the Debian packages the local stack and the tests need, if any is missing (idempotent, quiet
# when everything is there). Called by `make install`, hence by `make demo` and `make test`:
#   orthanc, orthanc-dicomweb   MIRC and VIEWER (the viewer store serves DICOMweb to OHIF)
#   dcmtk                       the stack's DICOM readiness probes (echoscu) and the movescu benchmark
#   openssl, curl               test certificates; readiness probes
#   patch                       FerretDB is patched at build time (deploy/local/ferretdb/patches)
#   chromium                    the console's and the viewer's browser tests (Playwright never downloads one)
#   iproute2                    `ss`: make chaos finds the fetcher that holds a move's association
# The JDK with Maven (Kafka), Go (FerretDB), Node's npm (OHIF) and Python 3.11 come with the machine.
set -euo pipefail

missing=()
command -v Orthanc >/dev/null 2>&1 || [ -x /usr/sbin/Orthanc ] || missing+=(orthanc)
[ -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || missing+=(orthanc-dicomweb)
[ -x /usr/bin/echoscu ] || missing+=(dcmtk)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v patch >/dev/null 2>&1 || missing+=(patch)
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v ss >/dev/null 2>&1 || missing+=(iproute2)
# Extra commands a caller needs, each from the Debian package of the same name (deploy/images/base.sh:
# podman runc mmdebstrap).
for command in "$@"; do
  command -v "$command" >/dev/null 2>&1 || missing+=("$command")
done
[ "${#missing[@]}" -eq 0 ] && exit 0

echo "[system-packages] installing from Debian: ${missing[*]}" >&2
if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  as_root=(sudo -n)
else
  echo "[system-packages] ERROR: these Debian packages are missing and installing them needs root:" >&2
  echo "    sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
  echo "  then run the make command again." >&2
  exit 1
fi
# apt's own output goes to a log, shown only if it fails.
log=$(mktemp /tmp/proxymage-apt.XXXXXX.log)
if ! { "${as_root[@]}" apt-get update -q && DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -q "${missing[@]}"; } >"$log" 2>&1; then
  tail -n 40 "$log" >&2
  echo "[system-packages] ERROR: apt-get failed (whole output: $log)" >&2
  exit 1
fi
rm -f "$log"
echo "[system-packages] installed: ${missing[*]}" >&2
