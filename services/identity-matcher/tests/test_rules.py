"""The identity rules of CONTRACT.md ("Identity rules (strict)") as one table of named cases.

Each case is one DCC identity against one PACS candidate and says which rule it checks. The PACS side goes
through the real path: a decoded `PatientRecord` (or raw PN bytes through `decode_person_name`) turned into
traits by `candidate_from_record` (rule 2). Every name is invented and obviously fake (FICTIF, EXEMPLE, ESSAI),
or a classic fictional one (D'ARTAGNAN, DE LA FONTAINE), or the DICOM standard's own example (YAMADA^TARO).
"""

from __future__ import annotations

import datetime as dt
import unicodedata
from dataclasses import dataclass

import pytest
from identity_matcher.rules import (
    PN_COMPONENT_GROUP_MAX_CHARS,
    UNICODE_SPACES,
    CandidateTraits,
    DccIdentity,
    candidate_from_record,
    candidate_traits,
    decide,
    decide_prepared,
    decode_person_name,
    normalise_name,
    prepare_candidate,
    prepare_dcc,
)
from proxymage_shared.dicom.results import PatientRecord, parse_da
from proxymage_shared.events import IdentityTrait, NearMissKind, Patient
from pydicom.charset import convert_encodings
from pydicom.valuerep import _encode_personname

# --- How a case is written --------------------------------------------------------------------------------


def dcc(
    birth_name: str,
    first_name: str,
    birth_date: str = "1956-04-12",
    sex: str = "F",
    used_name: str | None = None,
) -> DccIdentity:
    """The DCC side, through the contract's `Patient` model."""
    patient = Patient.model_validate(
        {
            "birth_name": birth_name,
            "used_name": used_name,
            "first_name": first_name,
            "birth_date": dt.date.fromisoformat(birth_date),
            "sex": sex,
        }
    )
    return DccIdentity.from_patient(patient)


def pacs(
    patient_name: str | None,
    *,
    birth_name: str | None = None,
    birth_date: str = "19560412",
    sex: str = "F",
    family_is_used_name: bool = False,
) -> CandidateTraits:
    """The PACS side: a decoded patient-level C-FIND answer (values as `PatientRecord` keeps them)."""
    record = PatientRecord(
        patient_id="FICTIF-0001",
        issuer="CHU-FICTIF",
        patient_name=patient_name,
        birth_name=birth_name,
        birth_date_raw=birth_date or None,
        birth_date=parse_da(birth_date),
        sex=sex or None,
        character_sets=(),
    )
    return candidate_from_record(record, family_is_used_name=family_is_used_name)


def pacs_bytes(
    raw: bytes, character_sets: list[str], *, birth_date: str = "19560412", sex: str = "F"
) -> CandidateTraits:
    """The PACS side from a raw PatientName value in the given Specific Character Set."""
    return pacs(decode_person_name(raw, character_sets), birth_date=birth_date, sex=sex)


def lefaux_pacs(patient_name: str, *, family_is_used_name: bool = False) -> CandidateTraits:
    """A PACS record of Marie-Claire D'EXEMPLE with Patient's Birth Name (0010,1005)."""
    return pacs(
        patient_name,
        birth_name="D'EXEMPLE^Marie-Claire",
        birth_date="19610930",
        family_is_used_name=family_is_used_name,
    )


@dataclass(frozen=True)
class Expected:
    matched: bool
    near_miss: tuple[IdentityTrait, NearMissKind] | None = None
    invalid: bool = False
    failed_traits: tuple[IdentityTrait, ...] | None = None  # checked when given


MATCH = Expected(matched=True, failed_traits=())
NOT_A_NEAR_MISS = Expected(matched=False)


def near_miss(trait: IdentityTrait, kind: NearMissKind, *, failed: tuple[IdentityTrait, ...] | None = None) -> Expected:
    return Expected(matched=False, near_miss=(trait, kind), invalid=kind == "invalid", failed_traits=failed)


@dataclass(frozen=True)
class Case:
    name: str
    rule: str  # the CONTRACT.md rule(s) the case checks
    dcc: DccIdentity
    pacs: CandidateTraits
    expected: Expected


# Shared identities of the table.
BERANGER = dcc("BÉRANGER-FICTIF", "Hélène")
LEFAUX_MARRIED = dcc("D'EXEMPLE", "Marie-Claire", "1961-09-30", used_name="LEFAUX-EXEMPLE")
JIS_YAMADA = _encode_personname(  # the example of DICOM PS3.5 H.3.1, in ISO 2022 IR 87
    ["YAMADA^TARO", "山田^太郎", "やまだ^たろう"], convert_encodings(["", "ISO 2022 IR 87"])
)
LONG_FAMILY = "DE LA FONTAINE-EXEMPLE-ESSAI-FICTIF"
LONG_GIVEN = "MARIE-CLAIRE-ANNE-SOPHIE-LOUISE-GABRIELLE"
VERY_LONG_FAMILY = "DE LA FONTAINE-EXEMPLE-ESSAI-FICTIF-DE LA FICTION-EXEMPLE-ESSAI-FICTIF"
CUT = PN_COMPONENT_GROUP_MAX_CHARS  # a PACS keeps the first 64 characters of the PN group

# fmt: off
CASES = [
    # --- rule 1: decoding and normalisation make these equal --------------------------------------------------
    Case("accents_on_dcc_side", "1", dcc("Béranger-Fictif", "Hélène"), pacs("BERANGER-FICTIF^HELENE"), MATCH),
    Case("accents_on_pacs_side", "1", dcc("BERANGER-FICTIF", "HELENE"), pacs("BÉRANGER-FICTIF^Hélène"), MATCH),
    Case("lowercase_against_uppercase", "1", dcc("béranger-fictif", "hélène"), pacs("BÉRANGER-FICTIF^HÉLÈNE"), MATCH),
    Case("decomposed_accents_nfd", "1", dcc("BE\u0301RANGER-FICTIF", "He\u0301le\u0300ne"),
         pacs("BÉRANGER-FICTIF^Hélène"), MATCH),
    Case("latin1_character_set_issuer_tours", "1, 5", BERANGER,
         pacs_bytes("BÉRANGER-FICTIF^Hélène".encode("latin-1"), ["ISO_IR 100"]), MATCH),
    Case("utf8_character_set_issuer_blois", "1, 5", BERANGER,
         pacs_bytes("BÉRANGER-FICTIF^Hélène".encode(), ["ISO_IR 192"]), MATCH),
    Case("default_character_set_ascii", "1", BERANGER, pacs_bytes(b"BERANGER-FICTIF^HELENE", []), MATCH),
    Case("oe_ligature_utf8_pacs", "1", dcc("SOEUR-EXEMPLE", "Anais", "1990-07-14"),
         pacs_bytes("SŒUR-EXEMPLE^Anaïs".encode(), ["ISO_IR 192"], birth_date="19900714"), MATCH),
    Case("oe_ligature_lowercase_dcc", "1", dcc("sœur-exemple", "Anaïs"), pacs("SOEUR-EXEMPLE^ANAIS"), MATCH),
    Case("ae_ligature_lowercase_dcc", "1", dcc("ESSAI-FICTIF", "Lætitia"), pacs("ESSAI-FICTIF^LAETITIA"), MATCH),
    Case("ae_ligature_uppercase_pacs", "1", dcc("ESSAI-FICTIF", "Laetitia"), pacs("ESSAI-FICTIF^LÆTITIA"), MATCH),
    Case("right_single_quote_apostrophe", "1", dcc("D’EXEMPLE", "Noël"), pacs("D'EXEMPLE^NOEL"), MATCH),
    Case("modifier_letter_apostrophe", "1", dcc("DʼEXEMPLE", "Noël"), pacs("D'EXEMPLE^NOEL"), MATCH),
    Case("acute_accent_as_apostrophe", "1", dcc("D'EXEMPLE", "Noël"), pacs("D´EXEMPLE^NOEL"), MATCH),
    Case("grave_accent_as_apostrophe", "1", dcc("D`EXEMPLE", "Noël"), pacs("D'EXEMPLE^NOEL"), MATCH),
    Case("unicode_hyphen_u2010", "1", dcc("BÉRANGER\u2010FICTIF", "Hélène"), pacs("BERANGER-FICTIF^HELENE"), MATCH),
    Case("non_breaking_hyphen_u2011", "1", dcc("ESSAI-FICTIF", "Marie\u2011Claire"),
         pacs("ESSAI-FICTIF^MARIE-CLAIRE"), MATCH),
    Case("non_breaking_spaces", "1", dcc("DE\u00a0LA\u00a0FICTION", "Amélie"), pacs("DE LA FICTION^AMELIE"), MATCH),
    Case("double_spaces_and_padding", "1", dcc("DE LA FICTION", "Amélie"), pacs("DE  LA   FICTION ^ Amélie "), MATCH),
    Case("pn_trailing_carets", "1, 2", BERANGER, pacs("BÉRANGER-FICTIF^Hélène^^^"), MATCH),
    Case("pn_ideographic_and_phonetic_groups_iso2022", "1, 2", dcc("YAMADA", "Taro", sex="M"),
         pacs_bytes(JIS_YAMADA, ["", "ISO 2022 IR 87"], sex="M"), MATCH),
    # --- rule 1: anything outside A-Z, space, ' and - makes the trait invalid (never stripped) --------------------
    Case("digit_in_birth_name", "1", BERANGER, pacs("BÉRANGER-FICTIF2^Hélène"), near_miss("birth_name", "invalid")),
    Case("at_sign_in_first_name", "1", BERANGER, pacs("BÉRANGER-FICTIF^H@LENE"), near_miss("first_name", "invalid")),
    Case("cyrillic_lookalike_letter", "1", BERANGER, pacs("BÉRANGER-FICTIF^H\u0415LENE"),
         near_miss("first_name", "invalid")),
    Case("greek_letter_on_dcc_side", "1", dcc("B\u0395RANGER-FICTIF", "Hélène"), pacs("BERANGER-FICTIF^HELENE"),
         near_miss("birth_name", "invalid")),
    Case("spacing_diaeresis_is_not_a_space", "1", BERANGER, pacs("BÉRANGER-FICTIF^HE\u00a8LENE"),
         near_miss("first_name", "invalid")),
    Case("letter_without_decomposition_even_if_equal", "1", dcc("ØSTER-FICTIF", "Hélène"),
         pacs("ØSTER-FICTIF^Hélène"), near_miss("birth_name", "invalid")),
    # --- rule 2: which PN component is which trait ---------------------------------------------------------------
    Case("birth_name_element_and_used_name", "2, 3", LEFAUX_MARRIED,
         lefaux_pacs("LEFAUX-EXEMPLE^Marie-Claire"), MATCH),
    Case("pacs_used_name_ignored_when_dcc_gives_none", "2, 3", dcc("D'EXEMPLE", "Marie-Claire", "1961-09-30"),
         lefaux_pacs("LEFAUX-EXEMPLE^Marie-Claire"), MATCH),
    Case("birth_name_element_same_as_patient_name", "2", BERANGER,
         pacs("BÉRANGER-FICTIF^Hélène", birth_name="BERANGER-FICTIF^HELENE"), MATCH),
    Case("dcc_used_name_same_as_birth_name", "3", dcc("BÉRANGER-FICTIF", "Hélène", used_name="béranger-fictif"),
         pacs("BERANGER-FICTIF^HELENE"), MATCH),
    Case("dcc_used_name_pacs_has_none", "3", dcc("BÉRANGER-FICTIF", "Hélène", used_name="LEFAUX-EXEMPLE"),
         pacs("BÉRANGER-FICTIF^Hélène"), near_miss("used_name", "missing")),
    Case("used_name_one_edit", "3, 6", LEFAUX_MARRIED,
         lefaux_pacs("LEFAUX-EXEMPLES^Marie-Claire"), near_miss("used_name", "one_edit")),
    Case("family_is_used_name_with_birth_name_element", "2", LEFAUX_MARRIED,
         lefaux_pacs("LEFAUX-EXEMPLE^Marie-Claire", family_is_used_name=True), MATCH),
    Case("family_is_used_name_without_birth_name_element", "2, 4", LEFAUX_MARRIED,
         pacs("LEFAUX-EXEMPLE^Marie-Claire", birth_date="19610930", family_is_used_name=True),
         near_miss("birth_name", "missing", failed=("birth_name",))),
    Case("family_is_used_name_is_not_a_birth_name", "2, 4", dcc("LEFAUX-EXEMPLE", "Marie-Claire", "1961-09-30"),
         pacs("LEFAUX-EXEMPLE^Marie-Claire", birth_date="19610930", family_is_used_name=True),
         near_miss("birth_name", "missing")),
    Case("middle_name_component_is_not_first_name", "2", BERANGER, pacs("BÉRANGER-FICTIF^Hélène^Marie"), MATCH),
    Case("patient_name_without_given_component", "2", BERANGER, pacs("BÉRANGER-FICTIF"),
         near_miss("first_name", "missing")),
    # --- rule 3: first names whole, full dates, sexes M or F -------------------------------------------------------
    Case("first_name_compared_whole_pacs_longer", "3, 4", dcc("ESSAI-FICTIF", "Marie"),
         pacs("ESSAI-FICTIF^MARIE CLAIRE"), NOT_A_NEAR_MISS),
    Case("first_name_first_token_is_not_enough", "3, 4", dcc("ESSAI-FICTIF", "Marie Claire"),
         pacs("ESSAI-FICTIF^MARIE"), NOT_A_NEAR_MISS),
    Case("invalid_calendar_date", "3", BERANGER, pacs("BÉRANGER-FICTIF^Hélène", birth_date="19560231"),
         near_miss("birth_date", "invalid")),
    Case("incomplete_date", "3", BERANGER, pacs("BÉRANGER-FICTIF^Hélène", birth_date="195604"),
         near_miss("birth_date", "invalid")),
    Case("date_not_in_da_format", "3", BERANGER, pacs("BÉRANGER-FICTIF^Hélène", birth_date="1956-04-12"),
         near_miss("birth_date", "invalid")),
    Case("empty_date", "3", BERANGER, pacs("BÉRANGER-FICTIF^Hélène", birth_date=""),
         near_miss("birth_date", "missing")),
    Case("pacs_sex_u", "3", BERANGER, pacs("BÉRANGER-FICTIF^Hélène", sex="U"), near_miss("sex", "invalid")),
    Case("pacs_sex_o", "3", BERANGER, pacs("BÉRANGER-FICTIF^Hélène", sex="O"), near_miss("sex", "invalid")),
    Case("pacs_sex_empty", "3", BERANGER, pacs("BÉRANGER-FICTIF^Hélène", sex=""), near_miss("sex", "missing")),
    Case("sex_u_on_both_sides_never_matches", "3", dcc("BÉRANGER-FICTIF", "Hélène", sex="U"),
         pacs("BÉRANGER-FICTIF^Hélène", sex="U"), near_miss("sex", "invalid")),
    Case("sex_m_against_f", "3, 6", BERANGER, pacs("BÉRANGER-FICTIF^Hélène", sex="M"), near_miss("sex", "one_edit")),
    # --- rule 4: no separator, apostrophe, prefix, edit-distance or phonetic matching ------------------------------
    Case("jean_pierre_vs_jean_space_pierre", "4, 6", dcc("TESTARD-FICTIF", "Jean Pierre", "1970-03-03", "M"),
         pacs("TESTARD-FICTIF^Jean-Pierre", birth_date="19700303", sex="M"), near_miss("first_name", "separator")),
    Case("d_artagnan_vs_dartagnan", "4, 6", dcc("DARTAGNAN", "Noël", sex="M"), pacs("D'ARTAGNAN^NOEL", sex="M"),
         near_miss("birth_name", "apostrophe_or_space_removed")),
    Case("de_la_fontaine_vs_delafontaine", "4, 6", dcc("DE LA FONTAINE", "Amélie"), pacs("DELAFONTAINE^AMELIE"),
         near_miss("birth_name", "apostrophe_or_space_removed")),
    Case("prefix_of_birth_name", "4", dcc("ESSAI", "Marie"), pacs("ESSAI-FICTIF^MARIE"), NOT_A_NEAR_MISS),
    Case("one_edit_in_birth_name", "4, 6", dcc("BÉRENGER-FICTIF", "Hélène"), pacs("BÉRANGER-FICTIF^Hélène"),
         near_miss("birth_name", "one_edit")),
    Case("phonetic_equivalent", "4", dcc("BÉRANGER-PHICTIF", "Hélène"), pacs("BÉRANGER-FICTIF^Hélène"),
         NOT_A_NEAR_MISS),
    Case("dcc_birth_name_is_pacs_used_name", "4, 6", dcc("LEFAUX-EXEMPLE", "Marie-Claire", "1961-09-30"),
         lefaux_pacs("LEFAUX-EXEMPLE^Marie-Claire"), near_miss("birth_name", "birth_name_is_used_name")),
    Case("dcc_used_name_is_pacs_birth_name", "4, 6", LEFAUX_MARRIED,
         pacs("LEFAUX-EXEMPLE^Marie-Claire", birth_date="19610930"),
         near_miss("birth_name", "birth_name_is_used_name", failed=("birth_name", "used_name"))),
    Case("birth_and_used_names_swapped", "4, 6",
         dcc("LEFAUX-EXEMPLE", "Marie-Claire", "1961-09-30", used_name="D'EXEMPLE"),
         lefaux_pacs("LEFAUX-EXEMPLE^Marie-Claire"), near_miss("birth_name", "birth_name_is_used_name")),
    # --- rule 6: near misses, and what is not one -------------------------------------------------------------------
    Case("twins_paul_and_pierre", "3, 6", dcc("JUMEAU-ESSAI", "Paul", "1980-01-15", "M"),
         pacs("JUMEAU-ESSAI^Pierre", birth_date="19800115", sex="M"), NOT_A_NEAR_MISS),
    Case("twins_lea_and_lena", "3, 6", dcc("JUMEAU-ESSAI", "Léa", "1980-01-15"),
         pacs("JUMEAU-ESSAI^Léna", birth_date="19800115"), near_miss("first_name", "one_edit")),
    Case("twins_leo_and_lea_of_different_sex", "3, 6", dcc("JUMEAU-ESSAI", "Léo", "1980-01-15", "M"),
         pacs("JUMEAU-ESSAI^Léa", birth_date="19800115", sex="F"), NOT_A_NEAR_MISS),
    Case("homonyms_born_years_apart", "3, 6", dcc("HOMONYME-FICTIF", "Jean", "1950-05-05", "M"),
         pacs("HOMONYME-FICTIF^Jean", birth_date="19721120", sex="M"), NOT_A_NEAR_MISS),
    Case("homonym_one_digit_apart", "3, 6", dcc("HOMONYME-FICTIF", "Jean", "1950-05-05", "M"),
         pacs("HOMONYME-FICTIF^Jean", birth_date="19500506", sex="M"), near_miss("birth_date", "one_digit")),
    Case("day_and_month_swapped", "3, 6", BERANGER, pacs("BÉRANGER-FICTIF^Hélène", birth_date="19561204"),
         near_miss("birth_date", "day_month_swapped")),
    Case("first_name_truncated_at_64", "6", dcc(LONG_FAMILY, LONG_GIVEN),
         pacs(f"{LONG_FAMILY}^{LONG_GIVEN}"[:CUT]), near_miss("first_name", "truncated")),
    Case("birth_name_truncated_at_64", "6", dcc(VERY_LONG_FAMILY, "Amélie"),
         pacs(f"{VERY_LONG_FAMILY}^Amélie"[:CUT]),
         near_miss("birth_name", "truncated", failed=("birth_name", "first_name"))),
    Case("short_prefix_is_not_a_truncation", "4, 6", dcc("ESSAI-FICTIF", "Marie-Claire"),
         pacs("ESSAI-FICTIF^MARIE-CLAI"), NOT_A_NEAR_MISS),
    Case("separators_only_on_two_traits", "6", dcc("DARTAGNAN", "Jean Pierre", sex="M"),
         pacs("D'ARTAGNAN^JEAN-PIERRE", sex="M"),
         near_miss("birth_name", "apostrophe_or_space_removed", failed=("birth_name", "first_name"))),
    Case("separator_and_another_difference", "6", dcc("TESTARD-FICTIF", "Jean Pierre", sex="M"),
         pacs("TESTARD-FICTIF^JEAN-PIERRE", sex="F"), NOT_A_NEAR_MISS),
    Case("one_edit_and_one_digit", "6", dcc("BÉRENGER-FICTIF", "Hélène"),
         pacs("BÉRANGER-FICTIF^Hélène", birth_date="19560413"), NOT_A_NEAR_MISS),
    Case("invalid_and_different", "1, 6", BERANGER, pacs("BÉRANGER-FICTIF^H@LENE", sex="M"),
         Expected(matched=False, invalid=True, failed_traits=("first_name", "sex"))),
]
# fmt: on


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_identity_rules(case: Case) -> None:
    decision = decide(case.dcc, case.pacs)
    near = (decision.near_miss.trait, decision.near_miss.kind) if decision.near_miss else None
    assert (decision.matched, near, decision.invalid) == (
        case.expected.matched,
        case.expected.near_miss,
        case.expected.invalid,
    )
    if case.expected.failed_traits is not None:
        assert decision.failed_traits == case.expected.failed_traits
    assert decision == decide_prepared(prepare_dcc(case.dcc), prepare_candidate(case.pacs))


def test_the_table_is_large_and_names_are_unique() -> None:
    assert len(CASES) >= 40
    assert len({case.name for case in CASES}) == len(CASES)


# --- The building blocks the table relies on --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  Hélène\u00a0 Marie ", "HELENE MARIE"),
        ("d’Exemple", "D'EXEMPLE"),
        ("sœur‐æ", "SOEUR-AE"),
        ("ＥＳＳＡＩ", "ESSAI"),  # fullwidth letters: NFKD gives A-Z
        ("ESSAI\u2009FICTIF", "ESSAI FICTIF"),  # a thin space is a space (every Unicode space is)
        ("ESSAI\tFICTIF", None),  # a tab is not
        ("Łukasz", None),  # no decomposition to A-Z: invalid, not transliterated
        ("\u0301", None),  # nothing left
        ("", None),
    ],
)
def test_normalise_name(raw: str, expected: str | None) -> None:
    assert normalise_name(raw) == expected


def test_the_space_table_is_unicode_category_zs() -> None:
    assert set(UNICODE_SPACES) == {chr(code) for code in range(0x110000) if unicodedata.category(chr(code)) == "Zs"}


def test_decode_keeps_only_the_alphabetic_group() -> None:
    assert decode_person_name(JIS_YAMADA, ["", "ISO 2022 IR 87"]) == "YAMADA^TARO"
    assert b"\x1b$B" in JIS_YAMADA  # the other groups really are JIS X 0208


def test_decode_ignores_an_equals_byte_inside_a_multibyte_run() -> None:
    # 予 is 0x4D3D in JIS X 0208: its second byte is "=", which must not end the alphabetic group.
    raw = b"ESSAI^\x1b$BM=\x1b(B=\x1b$BM=\x1b(B"
    assert decode_person_name(raw, ["", "ISO 2022 IR 87"]) == "ESSAI^予"


def test_decode_reads_an_equals_byte_after_a_g1_designation_as_the_delimiter() -> None:
    # ISO 2022 IR 149 designates KS X 1001 into G1 (8-bit bytes): a 0x3D that follows is the ASCII "=".
    raw = b"\x1b$)C\xfb\xf3^\x1b$)C\xd1\xce\xd4\xd7=ESSAI^FICTIF"
    assert decode_person_name(raw, ["", "ISO 2022 IR 149"]) == "洪^吉洞"


def test_bytes_in_the_wrong_character_set_make_the_name_invalid() -> None:
    with pytest.warns(UserWarning, match="replacement characters"):
        decoded = decode_person_name("BÉRANGER-FICTIF".encode("latin-1"), ["ISO_IR 192"])
    assert normalise_name(decoded) is None


def test_candidate_traits_marks_a_pn_group_at_the_length_limit() -> None:
    at_limit = candidate_traits(f"{LONG_FAMILY}^{LONG_GIVEN}"[:CUT], None, None, "19560412", "F")
    assert at_limit.traits_at_length_limit == {"birth_name", "used_name", "first_name"}
    assert candidate_traits("ESSAI^MARIE", None, None, "19560412", "F").traits_at_length_limit == frozenset()


def test_candidate_traits_reads_a_raw_date_when_no_date_is_given() -> None:
    traits = candidate_traits("ESSAI^MARIE", None, None, "19560412", " F ")
    assert (traits.birth_date, traits.sex) == (dt.date(1956, 4, 12), "F")


def test_a_dcc_with_an_invalid_trait_can_match_nothing() -> None:
    assert not prepare_dcc(dcc("ESSAI-FICTIF", "Marie", sex="U")).can_match
    assert prepare_dcc(dcc("ESSAI-FICTIF", "Marie")).invalid_traits == frozenset()
