"""From a DCC identity and the PACS candidates to an outcome (pure; the rules are in `rules.py`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from proxymage_shared.dicom import PatientRecord
from proxymage_shared.events import NearMiss, PacsPatientRef

from identity_matcher.rules import (
    DccIdentity,
    candidate_from_record,
    decide_prepared,
    normalise_name,
    prepare_candidate,
    prepare_dcc,
)


@dataclass(frozen=True, slots=True)
class Resolution:
    status: Literal["matched", "unmatched"]
    pacs_patients: tuple[PacsPatientRef, ...] = ()
    near_misses: tuple[NearMiss, ...] = ()
    reason: str | None = None


def dcc_side_problem(identity: DccIdentity) -> str | None:
    """Why the DCC's identity can never match (CONTRACT.md rules 1 and 3), or None.

    Checked before any PACS query: a name that is invalid after normalisation, or a sex other than M/F.
    The reason names the traits, never their values.
    """
    invalid = prepare_dcc(identity).invalid_traits
    if not invalid:
        return None
    problems = [
        "the DCC's sex is unknown; a strict match needs M or F"
        if trait == "sex"
        else f"the DCC's {trait.replace('_', ' ')} has characters a name cannot have"
        for trait in sorted(invalid)
    ]
    return "invalid_trait: " + "; ".join(problems)


def normalised_names(identity: DccIdentity) -> list[str]:
    names = [normalise_name(identity.birth_name), normalise_name(identity.used_name or "")]
    return [name for name in names if name]


def resolve(
    identity: DccIdentity, records: Sequence[PatientRecord], *, family_is_used_name: bool = False
) -> Resolution:
    """CONTRACT.md rule 5: every matching PACS patient is linked; rule 6: near misses reported, never linked."""
    linked: dict[tuple[str, str], PacsPatientRef] = {}
    near: set[tuple[str, str]] = set()
    prepared = prepare_dcc(identity)
    for record in records:
        candidate = candidate_from_record(record, family_is_used_name=family_is_used_name)
        decision = decide_prepared(prepared, prepare_candidate(candidate))
        if decision.matched:
            linked[(record.patient_id, record.issuer or "")] = PacsPatientRef(
                patient_id=record.patient_id, issuer=record.issuer
            )
        elif decision.near_miss is not None:
            near.add((decision.near_miss.trait, decision.near_miss.kind))
    near_misses = tuple(NearMiss.model_validate({"trait": t, "kind": k}) for t, k in sorted(near))
    if linked:
        return Resolution("matched", tuple(linked[key] for key in sorted(linked)), near_misses)
    reason = "no PACS patient matches every trait" + (" (near misses reported)" if near_misses else "")
    return Resolution("unmatched", (), near_misses, reason)
