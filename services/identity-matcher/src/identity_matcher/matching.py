"""From a DCC identity and the PACS candidates to an outcome (pure; the rules are in `rules.py`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

from proxymage_shared.dicom import PatientRecord
from proxymage_shared.events import IdentityTrait, NearMiss, PacsPatientRef
from proxymage_shared.reasons import Reason

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
    reason: Reason | None = None


# How the console names each trait (French, as every reason users read).
TRAIT_NAMES: Final[dict[IdentityTrait, str]] = {
    "birth_name": "nom de naissance",
    "used_name": "nom d'usage",
    "first_name": "prénom",
    "birth_date": "date de naissance",
    "sex": "sexe",
}


def dcc_side_problem(identity: DccIdentity) -> Reason | None:
    """Why the DCC's identity can never match (CONTRACT.md rules 1 and 3), or None.

    Checked before any PACS query: a name that is blank or invalid after normalisation, or a sex other than
    M/F. Reason `invalid_identity`, whose detail names the traits, never their values.
    """
    invalid = prepare_dcc(identity).invalid_traits
    if not invalid:
        return None
    problems = [
        "sexe inconnu, M ou F requis"
        if trait == "sex"
        else f"{TRAIT_NAMES[trait]} vide ou avec des caractères non admis dans un nom"
        for trait in sorted(invalid)
    ]
    return Reason.of("invalid_identity", " ; ".join(problems))


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
    # The near misses travel structured (`near_misses`): the text stays the same for every unmatched patient.
    return Resolution("unmatched", (), near_misses, Reason.of("patient_not_found"))
