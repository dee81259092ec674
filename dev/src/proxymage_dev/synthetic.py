"""Deterministic synthetic imaging for tests and the demo: obviously fake patients, real DICOM files.

The patients exercise the identity rules of CONTRACT.md: accents in Latin-1 and UTF-8 character sets,
hyphens, apostrophes, spaces and ligatures in names, a Patient's Birth Name different from the name in use,
the same person under two issuers, twins, homonyms, an unknown sex and an invalid birth date. Each has a few
studies of several modalities spread over ten years, with several series and small real pixel data.

The same seed always gives the same UIDs and files, so tests can compute what MIRC holds.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian, generate_uid

LATIN1: Final = "ISO_IR 100"
UTF8: Final = "ISO_IR 192"

# Modality -> (Storage SOP Class UID, study descriptions a French hospital would use)
MODALITY_SOP_CLASSES: Final[dict[str, str]] = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
    "MR": "1.2.840.10008.5.1.4.1.1.4",  # MR Image Storage
    "PT": "1.2.840.10008.5.1.4.1.1.128",  # Positron Emission Tomography Image Storage
    "NM": "1.2.840.10008.5.1.4.1.1.20",  # Nuclear Medicine Image Storage
    "CR": "1.2.840.10008.5.1.4.1.1.1",  # Computed Radiography Image Storage
    "DX": "1.2.840.10008.5.1.4.1.1.1.1",  # Digital X-Ray Image Storage - For Presentation
    "MG": "1.2.840.10008.5.1.4.1.1.1.2",  # Digital Mammography X-Ray Image Storage - For Presentation
    "US": "1.2.840.10008.5.1.4.1.1.6.1",  # Ultrasound Image Storage
    "SC": "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image Storage
    "SR": "1.2.840.10008.5.1.4.1.1.88.11",  # Basic Text SR Storage
}
STUDY_KINDS: Final = (
    ("TDM THORAX", ("CT", "SR")),
    ("TDM TAP", ("CT",)),
    ("IRM CEREBRALE", ("MR",)),
    ("IRM PELVIENNE", ("MR", "SC")),
    ("TEP FDG CORPS ENTIER", ("PT", "CT")),
    ("SCINTIGRAPHIE OSSEUSE", ("NM",)),
    ("RADIO THORAX", ("CR",)),
    ("RADIO BASSIN", ("DX",)),
    ("MAMMOGRAPHIE BILATERALE", ("MG", "SR")),
    ("ECHOGRAPHIE CERVICALE", ("US",)),
)
INSTITUTIONS: Final = {"CHU-FICTIF-TOURS": "CHU FICTIF TOURS", "CH-FICTIF-BLOIS": "CH FICTIF BLOIS"}
UID_ROOT: Final = "1.2.826.0.1.3680043.10.1338."  # a test root; with the seed, UIDs are reproducible


@dataclass(frozen=True, slots=True)
class SyntheticPatient:
    """One PACS patient record (PatientID within an issuer) and why it exists."""

    key: str
    purpose: str
    patient_id: str
    issuer: str
    patient_name: str  # DICOM PN alphabetic group, e.g. "FAMILY^Given"
    birth_name: str | None  # Patient's Birth Name (0010,1005), when different from the name in use
    birth_date: str  # DA as stored (may be deliberately invalid)
    sex: str  # as stored: M, F, O or ""
    character_set: str
    studies: int = 2


# Names are invented and obviously fake (FICTIF, EXEMPLE, ESSAI...): never real people.
PATIENTS: Final[tuple[SyntheticPatient, ...]] = (
    SyntheticPatient("beranger_tours", "accents in Latin-1; same person as beranger_blois", "T0001",
                     "CHU-FICTIF-TOURS", "BÉRANGER-FICTIF^Hélène", None, "19560412", "F", LATIN1, 3),
    SyntheticPatient("beranger_blois", "same person under a second issuer, in UTF-8", "B0042",
                     "CH-FICTIF-BLOIS", "BÉRANGER-FICTIF^Hélène", None, "19560412", "F", UTF8, 2),
    SyntheticPatient("lefaux_married", "name in use differs from the birth name (with an apostrophe)", "T0002",
                     "CHU-FICTIF-TOURS", "LEFAUX-EXEMPLE^Marie-Claire", "D'EXEMPLE^Marie-Claire", "19610930", "F",
                     LATIN1, 2),
    SyntheticPatient("twin_paul", "twin: same names, birth date and sex as twin_pierre but first name", "T0003",
                     "CHU-FICTIF-TOURS", "JUMEAU-ESSAI^Paul", None, "19800115", "M", LATIN1, 1),
    SyntheticPatient("twin_pierre", "twin of twin_paul", "T0004",
                     "CHU-FICTIF-TOURS", "JUMEAU-ESSAI^Pierre", None, "19800115", "M", LATIN1, 1),
    SyntheticPatient("homonym_1950", "homonym of homonym_1972, another birth date", "T0005",
                     "CHU-FICTIF-TOURS", "HOMONYME-FICTIF^Jean", None, "19500505", "M", LATIN1, 2),
    SyntheticPatient("homonym_1972", "homonym of homonym_1950", "B0077",
                     "CH-FICTIF-BLOIS", "HOMONYME-FICTIF^Jean", None, "19721120", "M", UTF8, 1),
    SyntheticPatient("jean_pierre", "hyphenated first name (JEAN PIERRE must not match)", "T0006",
                     "CHU-FICTIF-TOURS", "TESTARD-FICTIF^Jean-Pierre", None, "19700303", "M", LATIN1, 2),
    SyntheticPatient("d_essai", "apostrophe in the family name, accent in the first name", "T0007",
                     "CHU-FICTIF-TOURS", "D'ESSAI^Noël", None, "19451225", "M", LATIN1, 1),
    SyntheticPatient("soeur_ligature", "Œ ligature and diaeresis, UTF-8 only", "B0101",
                     "CH-FICTIF-BLOIS", "SŒUR-EXEMPLE^Anaïs", None, "19900714", "F", UTF8, 2),
    SyntheticPatient("de_la_fiction", "spaces in the family name (DELAFICTION must not match)", "T0008",
                     "CHU-FICTIF-TOURS", "DE LA FICTION^Amélie", None, "19850228", "F", LATIN1, 2),
    SyntheticPatient("sex_other", "sex O never matches", "T0009",
                     "CHU-FICTIF-TOURS", "NEUTRE-ESSAI^Camille", None, "19990909", "O", LATIN1, 1),
    SyntheticPatient("invalid_birth_date", "an invalid birth date never matches", "T0010",
                     "CHU-FICTIF-TOURS", "DATEFAUSSE-ESSAI^Luc", None, "19560231", "M", LATIN1, 1),
)  # fmt: skip


# The patient of benchmark studies: apart from PATIENTS so that tests listing their studies are unaffected.
BENCH_PATIENT: Final = SyntheticPatient(
    "bench", "owner of the large benchmark studies", "T9999", "CHU-FICTIF-TOURS", "BANC-ESSAI^Test", None,
    "20000101", "M", LATIN1, 0,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class SyntheticStudy:
    patient: SyntheticPatient
    study_instance_uid: str
    description: str
    date: dt.date
    modalities: tuple[str, ...]
    instances: tuple[Dataset, ...] = field(repr=False)

    @property
    def series_count(self) -> int:
        return len({ds.SeriesInstanceUID for ds in self.instances})


def _uid(seed: int, *parts: object) -> UID:
    return generate_uid(prefix=UID_ROOT, entropy_srcs=[str(seed), *map(str, parts)])


def _instance(
    patient: SyntheticPatient,
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    modality: str,
    study_date: dt.date,
    description: str,
    series_number: int,
    instance_number: int,
    rng: random.Random,
) -> Dataset:
    sop_class = MODALITY_SOP_CLASSES[modality]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = patient.character_set
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.PatientName = patient.patient_name
    if patient.birth_name:
        ds.PatientBirthName = patient.birth_name
    ds.PatientID = patient.patient_id
    ds.IssuerOfPatientID = patient.issuer
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = patient.sex
    ds.StudyDate = study_date.strftime("%Y%m%d")
    ds.StudyTime = f"{rng.randrange(7, 19):02d}{rng.randrange(60):02d}00"
    ds.SeriesDate = ds.StudyDate
    ds.AccessionNumber = f"ACC{rng.randrange(10**7):07d}"
    ds.StudyDescription = description
    ds.SeriesDescription = f"{modality} SERIE {series_number}"
    ds.StudyID = str(rng.randrange(1, 10**6))
    ds.SeriesNumber = series_number
    ds.InstanceNumber = instance_number
    ds.Modality = modality
    ds.InstitutionName = INSTITUTIONS[patient.issuer]
    ds.ReferringPhysicianName = "MEDECIN^FICTIF"
    ds.Manufacturer = "PROXYMAGE SYNTHETIC"
    if modality == "SR":
        ds.ValueType = "CONTAINER"
        ds.ContinuityOfContent = "SEPARATE"
        ds.CompletionFlag = "COMPLETE"
        ds.VerificationFlag = "UNVERIFIED"
        concept = Dataset()
        concept.CodeValue = "18748-4"
        concept.CodingSchemeDesignator = "LN"
        concept.CodeMeaning = "Diagnostic Imaging Report"
        ds.ConceptNameCodeSequence = [concept]
        return ds
    # Small real pixel data: a 32x32 gradient with noise, 16 bits for CT/MR/PT/NM, 8 bits otherwise.
    size = 32
    bits = 16 if modality in ("CT", "MR", "PT", "NM") else 8
    gradient = np.add.outer(np.arange(size), np.arange(size)) * (4 if bits == 16 else 2)
    noise = np.array([rng.randrange(16) for _ in range(size * size)]).reshape(size, size)
    pixels = (gradient + noise).astype(np.uint16 if bits == 16 else np.uint8)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = size
    ds.Columns = size
    ds.BitsAllocated = bits
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.tobytes()
    return ds


def synthetic_studies(
    seed: int = 42,
    patients: tuple[SyntheticPatient, ...] = PATIENTS,
    today: dt.date | None = None,
) -> Iterator[SyntheticStudy]:
    """Every study of every patient, with its instances; the same seed always gives the same result."""
    # Dates are relative to today so that "studies less than N months old" filters always show some.
    today = today or dt.date.today()
    for patient in patients:
        rng = random.Random(f"{seed}:{patient.key}")  # noqa: S311 - reproducible test data
        for study_index in range(patient.studies):
            description, modalities = STUDY_KINDS[rng.randrange(len(STUDY_KINDS))]
            # Spread over ten years; the first study of each patient is recent so default filters show it.
            days_back = rng.randrange(10, 120) if study_index == 0 else rng.randrange(120, 3650)
            study_date = today - dt.timedelta(days=days_back)
            study_uid = _uid(seed, patient.key, study_index)
            instances: list[Dataset] = []
            for series_number, modality in enumerate(modalities, start=1):
                series_uid = _uid(seed, patient.key, study_index, series_number)
                count = 1 if modality == "SR" else rng.randrange(2, 5)
                for instance_number in range(1, count + 1):
                    sop_uid = _uid(seed, patient.key, study_index, series_number, instance_number)
                    instances.append(
                        _instance(
                            patient, study_uid, series_uid, sop_uid, modality, study_date,
                            description, series_number, instance_number, rng,
                        )
                    )  # fmt: skip
            yield SyntheticStudy(patient, study_uid, description, study_date, modalities, tuple(instances))


def large_study(seed: int, instances: int, patient: SyntheticPatient = BENCH_PATIENT) -> SyntheticStudy:
    """One CT study of `instances` slices (e.g. 300 for retrieval benchmarks), 512x512 16-bit like a real CT."""
    rng = random.Random(f"{seed}:large:{instances}")  # noqa: S311 - reproducible test data
    study_uid = _uid(seed, "large", instances)
    series_uid = _uid(seed, "large", instances, 1)
    study_date = dt.date(2026, 10, 1)
    datasets = []
    size = 512
    base = (np.add.outer(np.arange(size), np.arange(size)) % 4096).astype(np.uint16)
    for number in range(1, instances + 1):
        ds = _instance(
            patient, study_uid, series_uid, _uid(seed, "large", instances, 1, number), "CT", study_date,
            "TDM BENCHMARK", 1, number, rng,
        )  # fmt: skip
        ds.Rows = size
        ds.Columns = size
        # An axial stack with its geometry and windowing, as a scanner writes it: viewers sort and
        # display it as a volume (without them OHIF flags the series as inconsistent).
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.PixelSpacing = [0.7, 0.7]
        ds.SliceThickness = 1.0
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-179.2, -179.2, -float(number)]
        ds.SliceLocation = -float(number)
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        # The gradient spans -1024..~0 HU: a lung-like window shows all of it.
        ds.WindowCenter = -500
        ds.WindowWidth = 1100
        ds.PixelData = (base + number).astype(np.uint16).tobytes()
        datasets.append(ds)
    return SyntheticStudy(patient, study_uid, "TDM BENCHMARK", study_date, ("CT",), tuple(datasets))
