"""Stores synthetic studies into a PACS by C-STORE (pynetdicom), e.g. the local MIRC Orthanc."""

from __future__ import annotations

import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, evt

from proxymage_shared.devtools.synthetic import MODALITY_SOP_CLASSES, SyntheticStudy
from proxymage_shared.settings import DicomPeer


@dataclass(frozen=True, slots=True)
class SeedReport:
    studies: int
    instances: int
    failed: int


def _set_tcp_nodelay(event: Any) -> None:
    raw = event.assoc.dul.socket.socket if event.assoc.dul.socket else None
    if raw is not None:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def store_studies(studies: Iterable[SyntheticStudy], peer: DicomPeer, calling_ae_title: str = "PM_DEV") -> SeedReport:
    """C-STOREs every instance over one association; raises if the PACS cannot be reached."""
    ae = AE(ae_title=calling_ae_title)
    for sop_class in MODALITY_SOP_CLASSES.values():
        ae.add_requested_context(sop_class, ExplicitVRLittleEndian)
    assoc = ae.associate(
        peer.host, peer.port, ae_title=peer.ae_title, evt_handlers=[(evt.EVT_CONN_OPEN, _set_tcp_nodelay)]
    )
    if not assoc.is_established:
        raise ConnectionError(f"cannot associate with {peer.ae_title} at {peer.host}:{peer.port}")
    studies_count = instances = failed = 0
    try:
        for study in studies:
            studies_count += 1
            for ds in study.instances:
                status = assoc.send_c_store(ds)
                instances += 1
                if "Status" not in status or status.Status != 0x0000:
                    failed += 1
    finally:
        assoc.release()
    return SeedReport(studies_count, instances, failed)
