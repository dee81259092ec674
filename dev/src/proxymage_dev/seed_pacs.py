"""Stores synthetic studies into a PACS by C-STORE (pynetdicom), e.g. the local MIRC Orthanc."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from proxymage_shared.dicom.client import set_tcp_nodelay
from proxymage_shared.settings import DicomPeer
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.association import Association

from proxymage_dev.synthetic import MODALITY_SOP_CLASSES, SyntheticStudy


@dataclass(frozen=True, slots=True)
class SeedReport:
    studies: int
    instances: int
    failed: int


def _associate(peer: DicomPeer, calling_ae_title: str) -> Association:
    ae = AE(ae_title=calling_ae_title)
    ae.dimse_timeout = 20
    for sop_class in MODALITY_SOP_CLASSES.values():
        ae.add_requested_context(sop_class, ExplicitVRLittleEndian)
    assoc = ae.associate(
        peer.host, peer.port, ae_title=peer.ae_title, evt_handlers=[(evt.EVT_CONN_OPEN, set_tcp_nodelay)]
    )
    if not assoc.is_established:
        raise ConnectionError(f"cannot associate with {peer.ae_title} at {peer.host}:{peer.port}")
    return assoc


def store_studies(
    studies: Iterable[SyntheticStudy], peer: DicomPeer, calling_ae_title: str = "PM_DEV", attempts: int = 3
) -> SeedReport:
    """C-STOREs every instance, over one association while it lasts; an instance whose store gets no answer
    (the association dropped or timed out) is sent again over a new association, up to `attempts` times.
    Raises if the PACS cannot be reached at all."""
    assoc = _associate(peer, calling_ae_title)
    studies_count = instances = failed = 0
    try:
        for study in studies:
            studies_count += 1
            for ds in study.instances:
                instances += 1
                for attempt in range(1, attempts + 1):
                    if not assoc.is_established:
                        assoc = _associate(peer, calling_ae_title)
                    status = assoc.send_c_store(ds)
                    if "Status" in status:
                        failed += status.Status != 0x0000
                        break
                    assoc.abort()  # no answer: start afresh
                    if attempt == attempts:
                        failed += 1
    finally:
        if assoc.is_established:
            assoc.release()
    return SeedReport(studies_count, instances, failed)
