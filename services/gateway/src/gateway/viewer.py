"""Links to the viewer for available studies, from a URL template (setting `viewer_url_template`).

Placeholders (values URL-quoted): `{gateway_url}`, the gateway's public base URL (setting `public_url`);
`{study_instance_uid}`; `{patient_id}`, the PACS PatientID the study was
catalogued under; `{orthanc_study_id}`, the id Orthanc gives the study. Orthanc (1.10, `Toolbox::
ComputeSHA1` on "PatientID|StudyInstanceUID") names a study by the SHA-1 of that string written as five
groups of eight hex digits, so the link needs no request to the viewer's store; C-MOVE keeps the PatientID.

Examples:
- the OHIF viewer the gateway serves (default): `{gateway_url}/viewer/viewer?StudyInstanceUIDs={study_instance_uid}`
- MedDREAM: `https://meddream.example.org/meddream/?study={study_instance_uid}`
- a site's own OHIF: `https://ohif.example.org/viewer?StudyInstanceUIDs={study_instance_uid}`
"""

from __future__ import annotations

import hashlib
import string
from urllib.parse import quote

PLACEHOLDERS = frozenset({"gateway_url", "study_instance_uid", "patient_id", "orthanc_study_id"})


def orthanc_study_id(patient_id: str, study_instance_uid: str) -> str:
    digest = hashlib.sha1(f"{patient_id}|{study_instance_uid}".encode()).hexdigest()  # noqa: S324 - Orthanc's id
    return "-".join(digest[index : index + 8] for index in range(0, 40, 8))


def template_fields(template: str) -> set[str]:
    fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    unknown = fields - PLACEHOLDERS
    if unknown:
        raise ValueError(f"unknown placeholder(s) in the viewer URL template: {', '.join(sorted(unknown))}")
    return fields


class ViewerLinks:
    def __init__(self, template: str, gateway_url: str = "") -> None:
        self._template = template
        self._fields = template_fields(template)
        self._gateway_url = gateway_url.rstrip("/")

    def url(self, study_instance_uid: str, patient_id: str | None) -> str | None:
        """The link, or None when the template needs the PatientID and it is not known."""
        needs_patient = bool(self._fields & {"patient_id", "orthanc_study_id"})
        if needs_patient and patient_id is None:
            return None
        values = {"study_instance_uid": quote(study_instance_uid, safe=""), "gateway_url": self._gateway_url}
        if patient_id is not None:
            values["patient_id"] = quote(patient_id, safe="")
            values["orthanc_study_id"] = orthanc_study_id(patient_id, study_instance_uid)
        return self._template.format(**values)
