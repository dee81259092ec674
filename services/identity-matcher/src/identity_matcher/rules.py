"""The strict identity rules of CONTRACT.md ("Identity rules (strict)"), as pure functions: no I/O, no asyncio.

Which function implements which rule:

| rule | what                                              | here                                                |
|------|---------------------------------------------------|-----------------------------------------------------|
| 1    | decode and normalise a name                       | `decode_person_name`, `normalise_name`              |
| 2    | the PACS side's traits from a C-FIND answer       | `candidate_traits`, `candidate_from_record`         |
| 3, 4 | the match decision (strict equality only)         | `decide`, `decide_prepared`                         |
| 5    | link every matching PACS patient                  | the service: it calls `decide` for every candidate  |
| 6    | near misses: which trait, what kind of difference | `decide_prepared` (only when not matched)           |

Each side is normalised once (`prepare_dcc`, `prepare_candidate`); the match itself is then five equality tests
(`decide_prepared`), and the near-miss classification runs only for a candidate that does not match. Edit
distance, separators and prefixes are looked at only there, to *describe* a difference (rule 6), never to match
(rule 4).

Decisions taken where the contract leaves room (each is repeated where it is implemented):

- Spaces (rule 1): every Unicode space separator (category Zs: U+00A0, U+202F, U+2007, U+2009, U+3000, …) is
  turned into a space at the "non-breaking space -> space" step. A character whose compatibility decomposition
  holds a space (spacing accents such as U+00A8 "¨") makes the name invalid instead of becoming a space.
- Letters without a decomposition to A–Z other than Œ and Æ (Ø, Ł, Đ, ẞ, Þ, Greek, Cyrillic, …) make the
  name invalid, as the contract says: nothing is silently stripped or transliterated.
- Missing versus invalid (rule 6): a PACS trait that is absent or blank is `missing`; one that is present but
  unusable (a name outside A–Z, space, `'`, `-` after normalisation; a birth date that is not a full valid DA;
  a sex other than `M`/`F`, e.g. `O` or `U`) is `invalid`. A DCC trait that cannot match anything (a name
  invalid after normalisation, sex `U`) is `invalid` too: the kind does not say which side.
- `truncated`: the PACS value is a proper prefix of the DCC value (after normalisation) *and* the PN component
  group it was read from is at the DICOM limit of 64 characters (PS3.5 §6.2, VR PN), counted in characters or
  in UTF-8 bytes. A shorter prefix (`MARIE` for `MARIE CLAIRE`) is a different first name, not a truncation.
  A first name missing from a PatientName at the limit was cut away entirely: `truncated` too. Only the PACS
  side is checked for truncation: the DCC has no such documented limit.
- `separator`: equal once every run of `-` and spaces is read as one separator (`JEAN-PIERRE`/`JEAN PIERRE`).
  `apostrophe_or_space_removed`: equal once every space, apostrophe and hyphen is removed
  (`D'ARTAGNAN`/`DARTAGNAN`, `DE LA FONTAINE`/`DELAFONTAINE`; a dropped hyphen is reported the same way).
- Several traits failing "only on separators/truncation" (rule 6) means every failing trait's kind is
  `separator`, `apostrophe_or_space_removed` or `truncated`; the near miss reported is the first failing trait
  in the order birth name, used name, first name, birth date, sex (`Decision.failed_traits` lists them all).
- Names in the wrong fields (`birth_name_is_used_name`) count as one difference even when both the birth name
  and the used name fail, as long as swapping the fields explains every name difference; it is reported on
  the birth name.
- A sex recorded `M` on one side and `F` on the other is a `one_edit` near miss: one character differs, and a
  candidate equal on every other trait is exactly what identity vigilance must see.
- A single failing trait whose difference is none of the kinds (twins `PAUL`/`PIERRE`, homonyms born in
  different years) is not a near miss: rule 6 reports typing and recording slips, not other people.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, TypeAlias, get_args

from proxymage_shared.dicom.results import PatientRecord, parse_da
from proxymage_shared.events import IdentityTrait, NearMiss, NearMissKind, Patient
from pydicom.charset import convert_encodings, decode_bytes
from pydicom.valuerep import PN_DELIMS

__all__ = [
    "PN_COMPONENT_GROUP_MAX_CHARS",
    "TRAIT_ORDER",
    "UNICODE_SPACES",
    "CandidateTraits",
    "DccIdentity",
    "Decision",
    "PreparedCandidate",
    "PreparedDcc",
    "candidate_from_record",
    "candidate_traits",
    "decide",
    "decide_prepared",
    "decode_person_name",
    "normalise_name",
    "prepare_candidate",
    "prepare_dcc",
]

# PS3.5 §6.2, VR PN: at most 64 characters per component group (alphabetic, ideographic, phonetic).
PN_COMPONENT_GROUP_MAX_CHARS: Final = 64
TRAIT_ORDER: Final[tuple[IdentityTrait, ...]] = ("birth_name", "used_name", "first_name", "birth_date", "sex")
MATCHING_SEXES: Final = frozenset({"M", "F"})
_NAME_TRAITS: Final[tuple[IdentityTrait, ...]] = ("birth_name", "used_name", "first_name")

# --- Rule 1: decoding and normalisation ---------------------------------------------------------------------

# Unicode's space separators (general category Zs, Unicode 15): each one is a space for rule 1.
UNICODE_SPACES: Final = "\u0020\u00a0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u202f\u205f\u3000"
# Rule 1's character replacements before uppercasing. They map single characters to single characters and none
# yields another's source, so one translation does the spaces, apostrophes and hyphens steps at once.
_SPACES_APOSTROPHES_HYPHENS: Final = str.maketrans(
    {
        **dict.fromkeys(UNICODE_SPACES, " "),
        "\u2019": "'",  # ’ right single quotation mark
        "\u02bc": "'",  # ʼ modifier letter apostrophe
        "\u00b4": "'",  # ´ acute accent
        "`": "'",  # ` grave accent
        "\u2010": "-",  # ‐ hyphen
        "\u2011": "-",  # ‑ non-breaking hyphen
    }
)
_LIGATURES: Final = str.maketrans({"Œ": "OE", "œ": "OE", "Æ": "AE", "æ": "AE"})
_SPACE_RUNS: Final = re.compile(r" {2,}")
_COMBINING_DIACRITICAL_MARKS: Final = re.compile("[\u0300-\u036f]")  # the marks NFKD gives Latin letters
# A normalised name: words of A–Z, apostrophes and hyphens separated by single spaces, nothing around them.
_NORMALISED_NAME: Final = re.compile(r"[A-Z'\-]+(?: [A-Z'\-]+)*")

# ISO 2022 escape sequences (PS3.5 §6.1.2.5.3, ISO/IEC 2022 §13): ESC $ F and ESC $ ( F put a multi-byte set
# into G0, whose 7-bit bytes may include 0x3D; ESC ( F puts a single-byte set back. G1 designations (ESC $ ) F,
# ESC ) F, ESC - F) leave G0, hence the "=" delimiter, alone.
_ESC: Final = 0x1B
_G1_TO_G3_DESIGNATIONS: Final = frozenset({b")", b"*", b"+", b"-", b".", b"/"})
_GROUP_DELIMITER: Final = 0x3D  # '='


def decode_person_name(raw: bytes, character_sets: Sequence[str]) -> str:
    """Rule 1, "decode with the DICOM Specific Character Set": the alphabetic group of a raw PN value.

    `character_sets` is the value of Specific Character Set (0008,0005), empty for the default repertoire.
    Decoding is pydicom's: `convert_encodings` maps the defined terms to codecs (an empty or missing value is
    ISO_IR 6, read as Latin-1, and a misspelt term is corrected with a warning), and `decode_bytes` handles ISO
    2022 escape sequences with `^` resetting the encoding. Bytes that do not decode become U+FFFD, with
    pydicom's warning, so the name is then invalid for `normalise_name` rather than silently altered.

    Only the alphabetic group is returned (e.g. `YAMADA^TARO` of `YAMADA^TARO=山田^太郎=やまだ^たろう`), with its
    components and trailing carets as stored. The group ends at the first `=` read in a single-byte set, so a
    `=` byte inside a multi-byte ISO 2022 run (JIS X 0208 uses 0x3D) is not taken for the delimiter.
    """
    encodings = convert_encodings(list(character_sets) or [""])
    return decode_bytes(_alphabetic_group_bytes(raw), encodings, PN_DELIMS)


def _alphabetic_group_bytes(raw: bytes) -> bytes:
    multi_byte_g0 = False
    for index, byte in enumerate(raw):
        if byte == _ESC:
            intermediates = raw[index + 1 : index + 3]
            if intermediates[:1] == b"$":
                multi_byte_g0 = intermediates[1:] not in _G1_TO_G3_DESIGNATIONS
            elif intermediates[:1] == b"(":
                multi_byte_g0 = False
        elif byte == _GROUP_DELIMITER and not multi_byte_g0:
            return raw[:index]
    return raw


@functools.lru_cache(maxsize=65_536)
def normalise_name(value: str) -> str | None:
    """Rule 1: the comparable form of a name, or None when the name is invalid (or empty once normalised).

    Steps, in the contract's order: Unicode NFC; trim; every Unicode space (U+00A0 non-breaking space, but also
    U+202F, U+2009, U+3000, … — category Zs) -> space; runs of spaces -> one; typographic apostrophes
    (’ ʼ ´ `) -> `'`; Unicode hyphens (U+2010, U+2011) -> `-`; uppercase; NFKD and drop combining marks
    (É -> E); Œ -> OE, Æ -> AE (and œ, æ, though uppercasing already turned them into Œ, Æ). The result may
    only contain A–Z, single spaces between words, `'` and `-`: anything else makes the name invalid (None),
    never silently stripped. That includes a character whose NFKD decomposition brings a space (spacing
    accents such as `¨`: they would otherwise turn into a separator) and letters NFKD leaves alone (Ø, Ł,
    Greek, Cyrillic). The function is idempotent on valid names and memoised (it is pure).
    """
    if value.isascii():
        # ASCII is NFC and NFKD-stable and holds no ligature: only trimming, case and the final check apply,
        # unless it has something else to fix (a backtick, several spaces) — then the full path runs.
        quick = value.strip().upper()
        if _NORMALISED_NAME.fullmatch(quick):
            return quick
    return _normalise_name_in_full(value)


def _normalise_name_in_full(value: str) -> str | None:
    text = unicodedata.normalize("NFC", value).strip()
    # Replacing the spaces before collapsing runs, and the apostrophes and hyphens in the same pass, is the
    # contract's order: the replacements are independent one-character mappings.
    text = _SPACE_RUNS.sub(" ", text.translate(_SPACES_APOSTROPHES_HYPHENS)).upper()
    spaces = text.count(" ")
    text = _COMBINING_DIACRITICAL_MARKS.sub("", unicodedata.normalize("NFKD", text))
    if not text.isascii():  # any other combining mark (general category M) is dropped too
        text = "".join(char for char in text if char.isascii() or not unicodedata.category(char).startswith("M"))
    if text.count(" ") != spaces:
        return None  # a compatibility character decomposed to a space: not a letter, so invalid
    text = text.translate(_LIGATURES)
    return text if _NORMALISED_NAME.fullmatch(text) else None


# --- The two sides --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DccIdentity:
    """The DCC's identity of the patient (rule 3's five traits), as the DCC sent it (not yet normalised)."""

    birth_name: str
    used_name: str | None
    first_name: str
    birth_date: dt.date
    sex: str  # "M" | "F" | "U"

    @classmethod
    def from_patient(cls, patient: Patient) -> DccIdentity:
        return cls(
            birth_name=patient.birth_name,
            used_name=patient.used_name,
            first_name=patient.first_name,
            birth_date=patient.birth_date,
            sex=patient.sex,
        )


@dataclass(frozen=True, slots=True)
class CandidateTraits:
    """The PACS side of one candidate after rule 2: raw (decoded, not normalised) traits, None when absent.

    `birth_date_raw` is the DA as stored, so an invalid date (present) can be told from a missing one.
    `traits_at_length_limit` names the traits read from a PN component group at the 64-character limit (they
    may have been cut by the PACS: rule 6's `truncated`).
    """

    birth_name: str | None
    used_name: str | None
    first_name: str | None
    birth_date: dt.date | None
    birth_date_raw: str | None
    sex: str | None
    traits_at_length_limit: frozenset[IdentityTrait] = field(default_factory=frozenset)


# --- Rule 2: the PACS side's traits ---------------------------------------------------------------------------


def candidate_traits(
    patient_name: str | None,
    birth_name: str | None,
    birth_date: dt.date | None,
    birth_date_raw: str | None,
    sex: str | None,
    *,
    family_is_used_name: bool = False,
) -> CandidateTraits:
    """Rule 2: the traits of one PACS patient from its decoded PN values, birth date and sex.

    `patient_name` and `birth_name` are the alphabetic groups of PatientName and Patient's Birth Name (0010,1005)
    (anything from a `=` on is ignored, should a caller pass the whole value); components are split on `^`.

    - Birth Name present (its family component is not blank): birth name = that family component; used name =
      PatientName's family component when it differs from it after normalisation, else none.
    - Otherwise: birth name = PatientName's family component, no used name. With the per-PACS setting
      `family_is_used_name`, PatientName's family component is the used name instead and the birth name is
      missing (rule 4: a used name never stands in for a birth name).
    - First name = the whole given component of PatientName (the middle-name component is not part of it).
    - The birth date is `birth_date`, or `birth_date_raw` read as DA (full YYYYMMDD only) when no date is given.
    - Sex is kept as stored (trimmed); blank is absent.
    """
    name_components = _components(patient_name)
    family = _present(name_components[0])
    given = _present(name_components[1]) if len(name_components) > 1 else None
    birth_family = _present(_components(birth_name)[0])
    name_at_limit = _at_length_limit(patient_name)

    limit: set[IdentityTrait] = set()
    if birth_family is not None:
        pacs_birth_name: str | None = birth_family
        pacs_used_name = family if family is not None and not _same_name(family, birth_family) else None
        if _at_length_limit(birth_name):
            limit.add("birth_name")
    elif family_is_used_name:
        pacs_birth_name, pacs_used_name = None, family
    else:
        pacs_birth_name, pacs_used_name = family, None
        if name_at_limit:
            limit.add("birth_name")
    if name_at_limit:
        limit.update(("used_name", "first_name"))

    raw_date = _present(birth_date_raw)
    return CandidateTraits(
        birth_name=pacs_birth_name,
        used_name=pacs_used_name,
        first_name=given,
        birth_date=birth_date if birth_date is not None else parse_da(raw_date.strip() if raw_date else None),
        birth_date_raw=raw_date,
        sex=_present(sex.strip() if sex is not None else None),
        traits_at_length_limit=frozenset(limit),
    )


def candidate_from_record(record: PatientRecord, *, family_is_used_name: bool = False) -> CandidateTraits:
    """Rule 2 applied to a decoded patient-level C-FIND answer (names already decoded by its character set)."""
    return candidate_traits(
        record.patient_name,
        record.birth_name,
        record.birth_date,
        record.birth_date_raw,
        record.sex,
        family_is_used_name=family_is_used_name,
    )


def _components(group: str | None) -> list[str]:
    if group is None:
        return [""]
    return group.partition("=")[0].split("^")


def _present(value: str | None) -> str | None:
    return value if value is not None and value.strip() else None


def _same_name(first: str, second: str) -> bool:
    normalised = normalise_name(first)
    return normalised is not None and normalised == normalise_name(second)


def _at_length_limit(group: str | None) -> bool:
    if group is None:
        return False
    alphabetic = group.partition("=")[0]
    return (
        len(alphabetic) >= PN_COMPONENT_GROUP_MAX_CHARS
        or len(alphabetic.encode("utf-8")) >= PN_COMPONENT_GROUP_MAX_CHARS
    )


# --- Prepared (normalised) sides ----------------------------------------------------------------------------

_NO_TRAITS: Final[frozenset[IdentityTrait]] = frozenset()


@dataclass(frozen=True, slots=True)
class PreparedDcc:
    """The DCC side normalised once (rule 1). A trait in `invalid_traits` can match nothing (its value is None).

    `used_name` is the used name rule 3 requires from the PACS: set only when the DCC gives one that differs
    from its birth name after normalisation. `requires_used_name` is also true for an invalid used name.
    """

    birth_name: str | None
    used_name: str | None
    requires_used_name: bool
    first_name: str | None
    birth_date: dt.date
    sex: str | None
    invalid_traits: frozenset[IdentityTrait]

    @property
    def can_match(self) -> bool:
        """False when a DCC trait is invalid (e.g. sex `U`): no candidate can match (reason `invalid_trait`)."""
        return not self.invalid_traits


@dataclass(frozen=True, slots=True)
class PreparedCandidate:
    """The PACS side normalised once (rule 1). Absent traits are in `missing`, unusable ones in `invalid`;
    both have the value None, which never equals a valid DCC value."""

    birth_name: str | None
    used_name: str | None
    first_name: str | None
    birth_date: dt.date | None
    sex: str | None
    missing: frozenset[IdentityTrait]
    invalid: frozenset[IdentityTrait]
    at_length_limit: frozenset[IdentityTrait]


def prepare_dcc(dcc: DccIdentity) -> PreparedDcc:
    """Rule 1 on the DCC side, and rule 3's "if the DCC gives a used name different from its birth name".

    A blank used name is no used name. A birth or first name that is invalid or blank, a used name that is
    invalid, and a sex other than `M`/`F` (`U`) are invalid traits: they never match.
    """
    invalid: list[IdentityTrait] = []
    birth_name = normalise_name(dcc.birth_name)
    if birth_name is None:
        invalid.append("birth_name")
    used_name: str | None = None
    requires_used_name = False
    given_used_name_raw = _present(dcc.used_name)
    if given_used_name_raw is not None:
        given_used_name = normalise_name(given_used_name_raw)
        if given_used_name is None:
            invalid.append("used_name")
            requires_used_name = True
        elif given_used_name != birth_name:
            used_name = given_used_name
            requires_used_name = True
    first_name = normalise_name(dcc.first_name)
    if first_name is None:
        invalid.append("first_name")
    sex = dcc.sex if dcc.sex in MATCHING_SEXES else None
    if sex is None:
        invalid.append("sex")
    return PreparedDcc(
        birth_name=birth_name,
        used_name=used_name,
        requires_used_name=requires_used_name,
        first_name=first_name,
        birth_date=dcc.birth_date,
        sex=sex,
        invalid_traits=frozenset(invalid) if invalid else _NO_TRAITS,
    )


def prepare_candidate(candidate: CandidateTraits) -> PreparedCandidate:
    """Rule 1 on the PACS side: normalise each trait once and sort absent traits from unusable ones.

    Names: absent or blank -> missing; not normalisable -> invalid. Birth date: no date and a blank raw value
    -> missing; a raw value that is not a full valid DA (`19560231`, `195604`) -> invalid. Sex: blank ->
    missing; anything but `M` or `F` (`O`, `U`, lowercase) -> invalid.
    """
    missing: list[IdentityTrait] = []
    invalid: list[IdentityTrait] = []
    names: list[str | None] = []
    for trait, value in zip(
        _NAME_TRAITS, (candidate.birth_name, candidate.used_name, candidate.first_name), strict=True
    ):
        if value is None or not value.strip():
            missing.append(trait)
            names.append(None)
            continue
        normalised = normalise_name(value)
        if normalised is None:
            invalid.append(trait)
        names.append(normalised)

    birth_date = candidate.birth_date
    if birth_date is None:
        (missing if _present(candidate.birth_date_raw) is None else invalid).append("birth_date")

    sex = candidate.sex.strip() if candidate.sex is not None else ""
    if sex not in MATCHING_SEXES:
        (invalid if sex else missing).append("sex")
    return PreparedCandidate(
        birth_name=names[0],
        used_name=names[1],
        first_name=names[2],
        birth_date=birth_date,
        sex=sex if sex in MATCHING_SEXES else None,
        missing=frozenset(missing) if missing else _NO_TRAITS,
        invalid=frozenset(invalid) if invalid else _NO_TRAITS,
        at_length_limit=candidate.traits_at_length_limit,
    )


# --- Rules 3, 4 and 6: the decision ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome for one candidate.

    `near_miss` is set only when not matched and rule 6 says it is a near miss (trait and kind, never values).
    `failed_traits` lists every trait that did not match, in `TRAIT_ORDER` (for counters; never values).
    `invalid` is true when a failing trait is invalid on either side (reason `invalid_trait`).
    """

    matched: bool
    near_miss: NearMiss | None
    failed_traits: tuple[IdentityTrait, ...]
    invalid: bool


MATCHED: Final = Decision(matched=True, near_miss=None, failed_traits=(), invalid=False)


def decide(dcc: DccIdentity, candidate: CandidateTraits) -> Decision:
    """Rules 3-6 for one candidate. To compare one DCC identity with many candidates, prepare it once and call
    `decide_prepared`."""
    return decide_prepared(prepare_dcc(dcc), prepare_candidate(candidate))


def decide_prepared(dcc: PreparedDcc, candidate: PreparedCandidate) -> Decision:
    """Rule 3 (with rule 4: nothing but equality of normalised values) then, when not matched, rule 6.

    Match iff birth names equal; first names equal (whole values); birth dates equal (a missing or invalid
    date never matches); sexes equal and both `M` or both `F`; and, when the DCC requires a used name, the PACS
    used name is equal. Invalid or missing values are None and a valid DCC's values never are, so a None never
    matches.
    """
    if (
        dcc.birth_name == candidate.birth_name
        and dcc.first_name == candidate.first_name
        and dcc.birth_date == candidate.birth_date
        and dcc.sex == candidate.sex
        and (not dcc.requires_used_name or dcc.used_name == candidate.used_name)
        and dcc.can_match
    ):
        return MATCHED
    return _explain_mismatch(dcc, candidate)


_SEPARATOR_LIKE_KINDS: Final[frozenset[NearMissKind]] = frozenset(
    {"separator", "apostrophe_or_space_removed", "truncated"}
)
# Decisions and near misses are values from small sets: build each once (this path runs for most candidates).
_NEAR_MISSES: Final[dict[tuple[IdentityTrait, NearMissKind], NearMiss]] = {
    (trait, kind): NearMiss(trait=trait, kind=kind) for trait in TRAIT_ORDER for kind in get_args(NearMissKind)
}
_Difference: TypeAlias = tuple[IdentityTrait, NearMissKind]


@functools.lru_cache(maxsize=4096)
def _unmatched(failed_traits: tuple[IdentityTrait, ...], invalid: bool, near_miss: _Difference | None) -> Decision:
    return Decision(
        matched=False,
        near_miss=_NEAR_MISSES[near_miss] if near_miss is not None else None,
        failed_traits=failed_traits,
        invalid=invalid,
    )


def _explain_mismatch(dcc: PreparedDcc, candidate: PreparedCandidate) -> Decision:
    """Rule 6: what failed, and whether it is a near miss (one difference of a known kind, or several that are
    all separators/truncation).

    Shortcut: when two or more traits fail and one is the birth date or the sex, it cannot be a near miss (only
    name differences can merge into one, or be separator-like), so nothing more is computed.
    """
    failed_traits = _failed_traits(dcc, candidate)
    invalid = not (dcc.invalid_traits.isdisjoint(failed_traits) and candidate.invalid.isdisjoint(failed_traits))
    near_miss = None
    if len(failed_traits) == 1 or not ("birth_date" in failed_traits or "sex" in failed_traits):
        near_miss = _near_miss(dcc, candidate, failed_traits)
    return _unmatched(failed_traits, invalid, near_miss)


def _failed_traits(dcc: PreparedDcc, candidate: PreparedCandidate) -> tuple[IdentityTrait, ...]:
    """The traits that fail rule 3, in `TRAIT_ORDER`. A None DCC value is an invalid DCC trait: it fails."""
    failed: list[IdentityTrait] = []
    if dcc.birth_name is None or dcc.birth_name != candidate.birth_name:
        failed.append("birth_name")
    if dcc.requires_used_name and (dcc.used_name is None or dcc.used_name != candidate.used_name):
        failed.append("used_name")
    if dcc.first_name is None or dcc.first_name != candidate.first_name:
        failed.append("first_name")
    if dcc.birth_date != candidate.birth_date:
        failed.append("birth_date")
    if dcc.sex is None or dcc.sex != candidate.sex:
        failed.append("sex")
    return tuple(failed)


def _near_miss(
    dcc: PreparedDcc, candidate: PreparedCandidate, failed_traits: tuple[IdentityTrait, ...]
) -> _Difference | None:
    """The near miss to report, if the failing traits make one: each difference must be of a known kind, and
    there must be one difference only, or several that are all separator-like (then the first is reported)."""
    differences: list[_Difference] = []
    names_in_wrong_fields = "birth_name" in failed_traits and _names_in_wrong_fields(dcc, candidate)
    if names_in_wrong_fields:
        differences.append(("birth_name", "birth_name_is_used_name"))
    for trait in failed_traits:
        if names_in_wrong_fields and (trait == "birth_name" or trait == "used_name"):
            continue
        kind = _kind(trait, dcc, candidate)
        if kind is None:
            return None
        differences.append((trait, kind))
        if len(differences) > 1 and not all(other in _SEPARATOR_LIKE_KINDS for _, other in differences):
            return None
    return differences[0]


def _names_in_wrong_fields(dcc: PreparedDcc, candidate: PreparedCandidate) -> bool:
    """`birth_name_is_used_name`: swapping the birth and used names on one side explains every name difference.

    Either the PACS's birth name is the DCC's used name (and the PACS has no used name, or has the DCC's birth
    name as used name), or the DCC gives no distinct used name and the PACS's used name is the DCC's birth name.
    All the names involved must be valid and present (an invalid or missing name is None).
    """
    pacs_birth, pacs_used = candidate.birth_name, candidate.used_name
    if pacs_birth is None or dcc.birth_name is None or "used_name" in candidate.invalid:
        return False
    if dcc.used_name is not None:
        return pacs_birth == dcc.used_name and (pacs_used is None or pacs_used == dcc.birth_name)
    return not dcc.requires_used_name and pacs_used is not None and pacs_used == dcc.birth_name


def _kind(trait: IdentityTrait, dcc: PreparedDcc, candidate: PreparedCandidate) -> NearMissKind | None:
    """The kind of one failing trait: invalid on the DCC side, then missing or invalid on the PACS side, then the
    kind of difference between two valid values (None when it is none of rule 6's kinds)."""
    if trait in dcc.invalid_traits:
        return "invalid"
    if trait in candidate.missing:
        # A given component cut away entirely by a PACS at the PN length limit is a truncation, not an absence.
        return "truncated" if trait == "first_name" and trait in candidate.at_length_limit else "missing"
    if trait in candidate.invalid:
        return "invalid"
    if trait == "birth_date":
        return _date_difference_kind(dcc.birth_date, candidate.birth_date) if candidate.birth_date else None
    if trait == "sex":
        return "one_edit"  # M on one side, F on the other: one character (see the module's docstring)
    if trait == "birth_name":
        dcc_value, pacs_value = dcc.birth_name, candidate.birth_name
    elif trait == "used_name":
        dcc_value, pacs_value = dcc.used_name, candidate.used_name
    else:
        dcc_value, pacs_value = dcc.first_name, candidate.first_name
    if dcc_value is None or pacs_value is None:
        return None  # not reached: a name that is neither invalid nor missing has a value on both sides
    return _name_difference_kind(dcc_value, pacs_value, pacs_at_length_limit=trait in candidate.at_length_limit)


_SEPARATOR_RUN: Final = re.compile(r"[ \-]+")
_WITHOUT_SEPARATORS: Final = str.maketrans("", "", " '-")


def _name_difference_kind(dcc_value: str, pacs_value: str, *, pacs_at_length_limit: bool) -> NearMissKind | None:
    """Rule 6 for two different valid normalised names: the first kind that describes the difference.

    `separator`: equal once each run of `-`/spaces is one separator. `apostrophe_or_space_removed`: equal once
    spaces, apostrophes and hyphens are removed. `truncated`: the PACS value is a proper prefix of the DCC's and
    was read from a PN group at the 64-character limit. `one_edit`: Levenshtein distance 1. Otherwise None.
    (Names equal once separators are treated alike are also equal once separators are removed: the cheap
    removal test goes first.)
    """
    if dcc_value.translate(_WITHOUT_SEPARATORS) == pacs_value.translate(_WITHOUT_SEPARATORS):
        if _SEPARATOR_RUN.sub(" ", dcc_value) == _SEPARATOR_RUN.sub(" ", pacs_value):
            return "separator"
        return "apostrophe_or_space_removed"
    if pacs_at_length_limit and len(pacs_value) < len(dcc_value) and dcc_value.startswith(pacs_value):
        return "truncated"
    if _one_edit_apart(dcc_value, pacs_value):
        return "one_edit"
    return None


def _one_edit_apart(first: str, second: str) -> bool:
    """Levenshtein distance exactly 1 (one insertion, deletion or substitution), for different strings.

    Used only to describe a near miss (rule 6), never to match (rule 4)."""
    if len(first) > len(second):
        first, second = second, first
    if len(second) - len(first) > 1:
        return False
    prefix = 0
    while prefix < len(first) and first[prefix] == second[prefix]:
        prefix += 1
    if len(first) == len(second):
        return first[prefix + 1 :] == second[prefix + 1 :]
    return first[prefix:] == second[prefix + 1 :]


def _date_difference_kind(dcc_date: dt.date, pacs_date: dt.date) -> NearMissKind | None:
    """Rule 6 for two different valid birth dates: `day_month_swapped` (the PACS date is the DCC date with day
    and month exchanged), else `one_digit` (YYYYMMDD differ in exactly one digit), else None. A swap always
    changes an even number of digits, so the two kinds never overlap."""
    if dcc_date.day <= 12 and (pacs_date.year, pacs_date.month, pacs_date.day) == (
        dcc_date.year,
        dcc_date.day,
        dcc_date.month,
    ):
        return "day_month_swapped"
    if sum(a != b for a, b in zip(_digits(dcc_date), _digits(pacs_date), strict=True)) == 1:
        return "one_digit"
    return None


def _digits(date: dt.date) -> str:
    return f"{date.year:04d}{date.month:02d}{date.day:02d}"
