#!/usr/bin/env python3
"""The Orthanc image's configuration: deploy/local/orthanc/config.py's, adapted to a container network.

Same settings as the local stack (PROXYMAGE_MIRC__AE_TITLE/HOST/PORT, PROXYMAGE_VIEWER__*,
PROXYMAGE_LOCAL_MIRC_HTTP_PORT, PROXYMAGE_LOCAL_VIEWER_HTTP_PORT, PROXYMAGE_LOCAL_CLIENT_AE_TITLES), where
HOST is the peer's name on the container network; inside the container this instance listens on its own PORT
and HTTP port (the defaults below: 4242 and 8042). What differs from the loopback stack, and why:
 - RemoteAccessAllowed=true: the gateway (DICOMweb proxy) and the study fetcher (purge) call VIEWER's REST API
   from other containers; publish the HTTP port on 127.0.0.1 only, or not at all.
 - DicomCheckModalityHost=false: containers' addresses are not known in advance; the AE titles are still
   checked (only the listed ones may associate). The client AEs' host is PROXYMAGE_LOCAL_CLIENT_AE_HOST.
 - Storage and index in /var/lib/orthanc/data (a volume), temporary files in /tmp.

Usage: container_config.py > config.json      (ORTHANC_INSTANCE=mirc|viewer)
       container_config.py --healthcheck      exit 0 when the REST API answers /system
"""

import json
import os
import sys
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import config

DEFAULTS = {
    "PROXYMAGE_MIRC__AE_TITLE": "MIRC",
    "PROXYMAGE_MIRC__HOST": "mirc",
    "PROXYMAGE_MIRC__PORT": "4242",
    "PROXYMAGE_LOCAL_MIRC_HTTP_PORT": "8042",
    "PROXYMAGE_VIEWER__AE_TITLE": "VIEWER",
    "PROXYMAGE_VIEWER__HOST": "viewer",
    "PROXYMAGE_VIEWER__PORT": "4242",
    "PROXYMAGE_LOCAL_VIEWER_HTTP_PORT": "8042",
    "PROXYMAGE_LOCAL_CLIENT_AE_TITLES": "PM_IDENTITY PM_FETCHER PM_DEV",
}
DATA = "/var/lib/orthanc/data"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"


def instance() -> str:
    name = os.environ.get("ORTHANC_INSTANCE", "mirc")
    if name not in config.INSTANCES:
        sys.exit(f"container_config.py: ORTHANC_INSTANCE={name!r} (mirc or viewer)")
    return name


def build() -> dict:
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
    name = instance()
    result = config.build(name, DATA, DICOMWEB_PLUGIN if name == "viewer" else None)
    result["TemporaryDirectory"] = "/tmp"  # noqa: S108 - the container's own tmpfs
    result["StorageDirectory"] = os.path.join(DATA, "storage")
    result["IndexDirectory"] = os.path.join(DATA, "index")
    result["RemoteAccessAllowed"] = True
    result["DicomCheckModalityHost"] = False
    client_host = os.environ.get("PROXYMAGE_LOCAL_CLIENT_AE_HOST")
    if client_host:
        for key, (aet, _host, port) in list(result["DicomModalities"].items()):
            if key not in ("mirc", "viewer"):
                result["DicomModalities"][key] = [aet, client_host, port]
    return result


def healthcheck() -> int:
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
    port = os.environ[f"PROXYMAGE_LOCAL_{config.INSTANCES[instance()]}_HTTP_PORT"]
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/system", timeout=4) as response:
            return 0 if response.status == 200 else 1
    except OSError as error:
        print(f"healthcheck: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    if sys.argv[1:] == ["--healthcheck"]:
        sys.exit(healthcheck())
    json.dump(build(), sys.stdout, indent=2)
    sys.stdout.write("\n")
