"""Properties of the identity rules (CONTRACT.md "Identity rules (strict)"), checked with hypothesis."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import unicodedata

from hypothesis import assume, given, settings
from hypothesis import strategies as st
from identity_matcher.rules import (
    TRAIT_ORDER,
    CandidateTraits,
    DccIdentity,
    decide,
    normalise_name,
)
from proxymage_shared.events import IdentityTrait

FAST = settings(max_examples=150, deadline=None)

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyzÉÈÊËÀÂÄÎÏÔÖÙÛÜÇéèêëàâäîïôöùûüçŒœÆæß"
SEPARATORS = " '-’ʼ´`\u2010\u2011\u00a0\u202f"
# Names as people type them: letters, accents, ligatures and every separator rule 1 knows.
typed_names = st.text(alphabet=LETTERS + SEPARATORS, min_size=1, max_size=24)
valid_names = typed_names.filter(lambda name: normalise_name(name) is not None)
# Names close to each other, so that pairs often match or nearly match.
NAME_POOL = [
    "D'ARTAGNAN", "DARTAGNAN", "D ARTAGNAN", "d’Artagnan", "DE LA FONTAINE", "DELAFONTAINE", "De La Fontaine",
    "JEAN-PIERRE", "JEAN PIERRE", "Jean‐Pierre", "JEANPIERRE", "BÉRANGER-FICTIF", "BERANGER-FICTIF",
    "BÉRENGER-FICTIF", "LÉA", "LÉNA", "LEO", "SŒUR-EXEMPLE", "SOEUR-EXEMPLE", "MARIE", "MARIE CLAIRE",
]  # fmt: skip
pooled_names = st.one_of(st.sampled_from(NAME_POOL), valid_names)
DATE_POOL = [dt.date(1956, 4, 12), dt.date(1956, 12, 4), dt.date(1956, 4, 13), dt.date(1965, 4, 12)]
dates = st.one_of(st.sampled_from(DATE_POOL), st.dates(dt.date(1900, 1, 1), dt.date(2024, 12, 31)))
matching_sexes = st.sampled_from(["M", "F"])


def da(date: dt.date) -> str:
    return f"{date.year:04d}{date.month:02d}{date.day:02d}"


def as_candidate(identity: DccIdentity) -> CandidateTraits:
    """The same identity as a PACS would hold it (rule 2's output)."""
    return CandidateTraits(
        birth_name=identity.birth_name,
        used_name=identity.used_name,
        first_name=identity.first_name,
        birth_date=identity.birth_date,
        birth_date_raw=da(identity.birth_date),
        sex=identity.sex,
    )


def with_name(candidate: CandidateTraits, trait: IdentityTrait, name: str | None) -> CandidateTraits:
    if trait == "birth_name":
        return dataclasses.replace(candidate, birth_name=name)
    if trait == "used_name":
        return dataclasses.replace(candidate, used_name=name)
    return dataclasses.replace(candidate, first_name=name)


identities_without_used_name = st.builds(
    DccIdentity,
    birth_name=pooled_names,
    used_name=st.none(),
    first_name=pooled_names,
    birth_date=dates,
    sex=matching_sexes,
)


@st.composite
def valid_identities(draw: st.DrawFn) -> DccIdentity:
    """A DCC identity every trait of which is valid, with a used name (different from the birth name) or not."""
    identity = draw(identities_without_used_name)
    used_name = draw(st.one_of(st.none(), pooled_names))
    assume(used_name is None or normalise_name(used_name) != normalise_name(identity.birth_name))
    return dataclasses.replace(identity, used_name=used_name)


# PACS traits as a PACS may hold them: valid, variants of each other, missing or invalid.
pacs_names = st.one_of(pooled_names, st.none(), st.just(""), st.sampled_from(["ESSAI2", "H@LENE", "ΑΛΦΑ"]))
pacs_birth_dates = st.one_of(
    dates.map(lambda date: (date, da(date))),
    st.sampled_from([(None, None), (None, ""), (None, "19560231"), (None, "195604")]),
)
pacs_sexes = st.sampled_from(["M", "F", "U", "O", "", None])


@st.composite
def candidates_near(draw: st.DrawFn, identity: DccIdentity) -> CandidateTraits:
    """The identity as a PACS holds it, with up to two traits replaced by whatever a PACS may hold instead."""
    candidate = as_candidate(identity)
    for trait in draw(st.sets(st.sampled_from(TRAIT_ORDER), max_size=2)):
        if trait == "birth_date":
            birth_date, raw = draw(pacs_birth_dates)
            candidate = dataclasses.replace(candidate, birth_date=birth_date, birth_date_raw=raw)
        elif trait == "sex":
            candidate = dataclasses.replace(candidate, sex=draw(pacs_sexes))
        else:
            candidate = with_name(candidate, trait, draw(pacs_names))
    return candidate


@FAST
@given(st.one_of(typed_names, st.text(max_size=24)))
def test_normalisation_is_idempotent_and_yields_only_the_allowed_characters(raw: str) -> None:
    normalised = normalise_name(raw)
    if normalised is not None:
        assert normalise_name(normalised) == normalised
        assert re.fullmatch(r"[A-Z'\-]+( [A-Z'\-]+)*", normalised)


def contract_normalisation(value: str) -> str | None:
    """CONTRACT.md rule 1 written step by step in its order, slowly: the reference for `normalise_name`."""
    text = unicodedata.normalize("NFC", value)
    text = text.strip()
    text = "".join(" " if unicodedata.category(char) == "Zs" else char for char in text)
    text = re.sub(" +", " ", text)
    for apostrophe in "’ʼ´`":
        text = text.replace(apostrophe, "'")
    text = text.replace("\u2010", "-").replace("\u2011", "-")
    text = text.upper()
    decomposed = unicodedata.normalize("NFKD", text)
    without_marks = "".join(char for char in decomposed if not unicodedata.category(char).startswith("M"))
    if without_marks.count(" ") != text.count(" "):
        return None  # the module's documented decision: a decomposition that brings a space is invalid
    for ligature, letters in (("Œ", "OE"), ("œ", "OE"), ("Æ", "AE"), ("æ", "AE")):
        without_marks = without_marks.replace(ligature, letters)
    return without_marks if re.fullmatch(r"[A-Z'\-]+( [A-Z'\-]+)*", without_marks) else None


@FAST
@given(st.one_of(typed_names, st.text(max_size=24), st.text(alphabet=LETTERS + SEPARATORS + "¨\t0@ΑЕØ", max_size=24)))
def test_normalisation_follows_the_contract_step_by_step(raw: str) -> None:
    assert normalise_name(raw) == contract_normalisation(raw)


@FAST
@given(typed_names)
def test_case_and_unicode_composition_never_change_a_name(raw: str) -> None:
    normalised = normalise_name(raw)
    assert normalise_name(raw.lower()) == normalised
    assert normalise_name(unicodedata.normalize("NFD", raw)) == normalised


@FAST
@given(identities_without_used_name, identities_without_used_name)
def test_the_decision_is_symmetric_without_used_names(first: DccIdentity, second: DccIdentity) -> None:
    # Without used names and with nothing at the PN length limit, every rule is symmetric: the match, the
    # failing traits and the near-miss kind do not depend on which side holds which identity.
    assert decide(first, as_candidate(second)) == decide(second, as_candidate(first))


# DCC identities as the contract's model lets them through: names may be invalid, sex may be U.
any_dcc_identities = st.builds(
    DccIdentity,
    birth_name=st.one_of(pooled_names, st.sampled_from(["ESSAI2", "ΑΛΦΑ", " "])),
    used_name=st.one_of(st.none(), pooled_names, st.just("H@LENE")),
    first_name=st.one_of(pooled_names, st.just("H@LENE")),
    birth_date=dates,
    sex=st.sampled_from(["M", "F", "U"]),
)


@FAST
@given(st.one_of(valid_identities(), any_dcc_identities), st.data())
def test_a_near_miss_is_never_a_match(identity: DccIdentity, data: st.DataObject) -> None:
    decision = decide(identity, data.draw(candidates_near(identity)))
    if decision.matched:
        assert decision.near_miss is None
        assert decision.failed_traits == ()
        assert not decision.invalid
    else:
        assert decision.failed_traits
        if decision.near_miss is not None:
            assert decision.near_miss.trait in decision.failed_traits


@FAST
@given(valid_identities(), st.sampled_from(TRAIT_ORDER), st.data())
def test_changing_one_trait_of_a_matching_pair_breaks_the_match(
    identity: DccIdentity, trait: IdentityTrait, data: st.DataObject
) -> None:
    candidate = as_candidate(identity)
    assert decide(identity, candidate).matched

    if trait == "birth_date":
        other_date = data.draw(dates.filter(lambda date: date != identity.birth_date))
        changed = dataclasses.replace(candidate, birth_date=other_date, birth_date_raw=da(other_date))
    elif trait == "sex":
        changed = dataclasses.replace(candidate, sex="F" if identity.sex == "M" else "M")
    else:
        current = getattr(identity, trait)
        assume(current is not None)  # no used name to change
        other_name = data.draw(pooled_names.filter(lambda name: normalise_name(name) != normalise_name(current)))
        changed = with_name(candidate, trait, other_name)

    decision = decide(identity, changed)
    assert not decision.matched
    assert trait in decision.failed_traits
