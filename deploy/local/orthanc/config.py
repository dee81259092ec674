#!/usr/bin/env python3
"""Generate the Orthanc configuration of one local instance ("mirc" or "viewer").

Called by deploy/local/orthanc.sh, which has sourced deploy/local/local.env (exported), so the
ports and AE titles come from the environment. Standard library only: the system python3 runs it.

Written against Orthanc 1.10.1 (Debian 12); every option below exists in that version's
default configuration (`Orthanc --config=FILE`). Notably absent from 1.10.1, hence not used:
 - a listen/bind address option: Orthanc's DICOM and HTTP servers listen on all interfaces.
   Loopback-only is enforced instead by RemoteAccessAllowed=false (HTTP answers 127.0.0.1 only)
   and by DicomCheckModalityHost=true with every known modality on 127.0.0.1 (DICOM).
 - ExtraMainDicomTags (new in 1.11): not needed, C-FIND answers read tags that are not in the
   index (PatientBirthName, IssuerOfPatientID) from the stored files, see StorageAccessOnFind.

Usage: config.py INSTANCE INSTANCE_DIR [--dicomweb-plugin PATH] > config.json
"""

import argparse
import json
import os
import sys

# The two instances and the env prefix of their settings (PROXYMAGE_<PREFIX>__AE_TITLE, ...).
INSTANCES = {"mirc": "MIRC", "viewer": "VIEWER"}

# Port of the client AEs (PROXYMAGE_LOCAL_CLIENT_AE_TITLES) as DICOM modalities. Orthanc only
# connects there when one of them is named as a C-MOVE destination (e.g. `movescu -aem PM_DEV
# --port 11119` to receive into movescu's own storage SCP); for C-FIND/C-MOVE *from* them only
# their AE title (and host, 127.0.0.1) matter.
CLIENT_PORT_DEFAULT = 11119


def env(name):
    value = os.environ.get(name)
    if not value:
        sys.exit(f"config.py: {name} is not set (source deploy/local/lib.sh first)")
    return value


def aet(value, name):
    # DICOM AE titles are at most 16 characters; Orthanc refuses longer ones at startup anyway,
    # but failing here names the variable at fault.
    if len(value) > 16 or not value.strip():
        sys.exit(f"config.py: {name}={value!r} is not a valid AE title (1..16 characters)")
    return value


def port(value, name):
    try:
        number = int(value)
    except ValueError:
        number = 0
    if not 0 < number < 65536:
        sys.exit(f"config.py: {name}={value!r} is not a TCP port")
    return number


def node(prefix):
    """AE title, host and DICOM port of MIRC or VIEWER, as the services see them."""
    return {
        "aet": aet(env(f"PROXYMAGE_{prefix}__AE_TITLE"), f"PROXYMAGE_{prefix}__AE_TITLE"),
        "host": env(f"PROXYMAGE_{prefix}__HOST"),
        "port": port(env(f"PROXYMAGE_{prefix}__PORT"), f"PROXYMAGE_{prefix}__PORT"),
        "http_port": port(env(f"PROXYMAGE_LOCAL_{prefix}_HTTP_PORT"), f"PROXYMAGE_LOCAL_{prefix}_HTTP_PORT"),
    }


def build(instance, instance_dir, dicomweb_plugin):
    me = node(INSTANCES[instance])
    peer_name = "viewer" if instance == "mirc" else "mirc"
    peer = node(INSTANCES[peer_name])
    client_port = port(
        os.environ.get("PROXYMAGE_LOCAL_CLIENT_AE_PORT", str(CLIENT_PORT_DEFAULT)),
        "PROXYMAGE_LOCAL_CLIENT_AE_PORT",
    )
    clients = env("PROXYMAGE_LOCAL_CLIENT_AE_TITLES").split()

    # Known modalities: the other instance (MIRC C-MOVEs to VIEWER, so VIEWER must be listed in
    # MIRC and MIRC must be allowed to C-STORE into VIEWER) and our services' client AEs. The
    # keys are symbolic names for the REST API (/modalities/<key>); matching is on the AE title.
    modalities = {peer_name: [peer["aet"], peer["host"], peer["port"]]}
    for client in clients:
        aet(client, "PROXYMAGE_LOCAL_CLIENT_AE_TITLES")
        modalities[client.lower()] = [client, "127.0.0.1", client_port]

    config = {
        "Name": me["aet"],
        "StorageDirectory": os.path.join(instance_dir, "storage"),
        "IndexDirectory": os.path.join(instance_dir, "index"),
        # Large temporary files (archives) stay inside var/ rather than /tmp.
        "TemporaryDirectory": os.path.join(instance_dir, "tmp"),
        "Plugins": [],
        # --- HTTP (REST API): loopback only, no authentication (local development stack).
        "HttpServerEnabled": True,
        "HttpPort": me["http_port"],
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "WebDavEnabled": False,
        # --- DICOM
        "DicomServerEnabled": True,
        "DicomAet": me["aet"],
        "DicomPort": me["port"],
        # Like a real PACS: associations addressed to another called AE title are rejected.
        "DicomCheckCalledAet": True,
        # Only the modalities listed below may associate at all, like a real PACS: an unknown
        # calling AE title gets A-ASSOCIATE-RJ "Calling AE Title Not Recognized". (Allowing any
        # one command to everybody, even C-ECHO, makes Orthanc accept the association and then
        # A-ABORT on the first refused C-FIND/C-MOVE/C-STORE, a much vaguer failure.) Host
        # checking ties every known AE title to 127.0.0.1, which also keeps the DICOM port
        # loopback-only in effect.
        "DicomAlwaysAllowEcho": False,
        "DicomAlwaysAllowStore": False,
        "DicomAlwaysAllowFind": False,
        "DicomAlwaysAllowFindWorklist": False,
        "DicomAlwaysAllowGet": False,
        "DicomAlwaysAllowMove": False,
        "DicomCheckModalityHost": True,
        "DicomModalities": modalities,
        "DicomModalitiesInDatabase": False,
        # Idle associations are closed after this many seconds (Orthanc's default; long enough
        # for a slow client between two requests, short enough not to pile up stale ones).
        "DicomScpTimeout": 30,
        # Outgoing associations (MIRC's C-STORE sub-operations to VIEWER during a C-MOVE).
        "DicomScuTimeout": 10,
        # The C-MOVE response is sent once all sub-operations are done, with their real counts:
        # the study fetcher relies on the final status, not on a background job.
        "SynchronousCMove": True,
        # C-FIND answers may include tags that are not in Orthanc's index (PatientBirthName,
        # IssuerOfPatientID at patient level): "Always" lets Orthanc read them, and match on
        # them, from the stored DICOM files. Explicit because the identity matcher depends on it.
        "StorageAccessOnFind": "Always",
        # Unset SpecificCharacterSet means UTF-8 and answers are UTF-8 (ISO_IR 192), so test
        # data with accented names round-trips unchanged.
        "DefaultEncoding": "Utf8",
        # --- Storage behaviour
        # Tests re-send the same instances: replace rather than silently keep the old copy.
        "OverwriteInstances": True,
        # Resources become "stable" 2 s after their last instance (default 60 s), so tests
        # waiting for stable studies stay fast.
        "StableAge": 2,
        # Throw-away development data: skip the fsync() after every stored file.
        "SyncStorageArea": False,
        # Orthanc's default, stated because it matters: C-FIND/C-MOVE queries are logged
        # de-identified, so no patient data ends up in var/log.
        "DeidentifyLogs": True,
    }

    if dicomweb_plugin:
        config["Plugins"] = [dicomweb_plugin]
        # DICOMweb (orthanc-dicomweb 1.7) for the gateway's read-only proxy, which alone talks to it (this
        # HTTP port answers loopback only): QIDO-RS, WADO-RS, rendered. The proxy allows GETs only; STOW
        # stays reachable here on loopback as Orthanc's own REST API already is.
        config["DicomWeb"] = {
            "Enable": True,
            "Root": "/dicom-web/",
            # WADO-URI (the legacy `/wado?requestType=WADO` endpoint) is not proxied: off.
            "EnableWado": False,
            # Metadata from the stored files, every tag: the viewer needs spacing, orientation, windowing.
            "StudiesMetadata": "Full",
            "SeriesMetadata": "Full",
        }

    return config


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("instance", choices=sorted(INSTANCES))
    parser.add_argument("instance_dir", help="absolute directory holding this instance's data")
    parser.add_argument("--dicomweb-plugin", help="path of libOrthancDicomWeb.so to load (VIEWER)")
    args = parser.parse_args()
    if not os.path.isabs(args.instance_dir):
        sys.exit(
            "config.py: INSTANCE_DIR must be absolute (Orthanc resolves relative paths against its working directory)"
        )
    json.dump(build(args.instance, args.instance_dir, args.dicomweb_plugin), sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
