#!/bin/sh
# Orthanc image entry point: writes the configuration of $ORTHANC_INSTANCE (mirc|viewer) into /tmp (the root
# filesystem may be read-only), then runs Orthanc in the foreground.
set -eu
python3 /usr/local/lib/proxymage-orthanc/container_config.py >/tmp/orthanc.json
# TCP_NODELAY=1: DCMTK then disables Nagle's algorithm (C-MOVE is much slower without, see orthanc.sh).
TCP_NODELAY=1 exec /usr/sbin/Orthanc /tmp/orthanc.json
