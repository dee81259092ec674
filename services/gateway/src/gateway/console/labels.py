"""The console's French wording (user guide §4–§7): pure tables, shared by the templates and, as a JSON data
block, by the page script. No I/O.

The identity hints tell staff *what to check in the DCC* when no PACS patient matched: the API gives only
which trait differed and how (CONTRACT.md "Identity rules" §6), never the other patient's values, so the
examples below are invented (FICTIF/EXEMPLE) to show the kind of difference.
"""

from __future__ import annotations

from typing import Final

# User guide §4.1, word for word and in the order of the guide (= CONTRACT.md's 18 codes).
MODALITY_LABELS: Final[dict[str, str]] = {
    "AU": "Audio",
    "CR": "Radiographie conventionnelle (informatisée)",
    "CT": "Tomodensitométrie",
    "DX": "Radiologie numérique",
    "ES": "Endoscopie",
    "MG": "Mammographie",
    "MR": "Résonance magnétique",
    "NM": "Médecine nucléaire",
    "OT": "Autre",
    "PT": "Tomographie par émission de positons Type (PET)",
    "RF": "Radiofluoroscopie",
    "RT": "Radiothérapie",
    "SC": "Capture d'écran par image clé",
    "SR": "Rapports structurés",
    "US": "Ultrasons",
    "VL": "Photo",
    "XA": "Angiographie",
    "XC": "Radioscopie numérique",
}

DATE_FILTER_LABELS: Final[dict[str, str]] = {
    "none": "Aucun",
    "between": "Examens compris entre deux dates",
    "within_months": "Examens de moins de X mois",
}

CONSENT_SENTENCE: Final = (
    "Le patient a été informé de l'informatisation et du partage de ses données personnelles ainsi que de "
    "leur hébergement chez un hébergeur de données de santé agréé et ne s'y est pas opposé"
)

SEX_LABELS: Final[dict[str, str]] = {"F": "Féminin", "M": "Masculin", "U": "Inconnu"}

EXPERT_ROLE_LABELS: Final[dict[str, str]] = {
    "radiologist": "Radiologue d'astreinte",
    "nuclear_physician": "Médecin nucléaire d'astreinte",
}

# Every status of the shared NotificationStatus (checked by the tests): the e-mail's state, in words.
NOTIFICATION_STATUS_LABELS: Final[dict[str, str]] = {
    "pending": "en cours d'envoi",
    "waiting": "En attente",
    "sent": "envoyée",
    "failed": "échec de l'envoi",
    "refused": "refusée (adresse hors messagerie sécurisée)",
    "skipped": "non envoyée (pas d'expert désigné)",
    "not_sent": "Non envoyé",
    "cancelled": "Annulé",
}

# CONTRACT.md `retrieval.status` -> what the meeting's Imaging tab says (user guide §7.1).
NOT_YET_AVAILABLE: Final = "La visualisation de cet examen n'est pas encore disponible."
RETRIEVAL_STATUS_LABELS: Final[dict[str, str]] = {
    "not_requested": "Non sélectionné",
    "queued": NOT_YET_AVAILABLE,
    "retrieving": NOT_YET_AVAILABLE,
    "not_yet_available": NOT_YET_AVAILABLE,
    "available": "Visuel disponible",
    "failed": "La récupération de cet examen a échoué.",
    "removed": "Examen retiré",
}
RETRIEVAL_DETAIL_LABELS: Final[dict[str, str]] = {
    "queued": "Récupération en attente.",
    "retrieving": "Récupération en cours.",
    "not_yet_available": "Nouvelle tentative automatique prévue.",
}

IDENTITY_STATUS_LABELS: Final[dict[str, str]] = {
    "pending": "Recherche du patient en cours…",
    "matched": "Patient identifié",
    "unmatched": "Patient non trouvé",
    "no_consent": "Pas de consentement",
    "withdrawn": "Inscription annulée",
    "error": "Recherche du patient impossible pour le moment",
}
IDENTITY_STATUS_DETAILS: Final[dict[str, str]] = {
    "pending": "Les examens s'afficheront dès que le patient aura été recherché dans MIRC.",
    "unmatched": (
        "Aucun patient de MIRC ne correspond strictement aux cinq traits d'identité (nom de naissance, "
        "nom d'usage, prénom, date de naissance, sexe). Vérifier l'identité saisie dans le DCC."
    ),
    "no_consent": "Le consentement du patient n'a pas été recueilli : aucune imagerie n'est recherchée.",
    "withdrawn": (
        "Le patient a été retiré de la réunion : aucune imagerie n'est plus recherchée et les examens "
        "récupérés sont retirés de la visionneuse."
    ),
    "error": "MIRC n'a pas pu être interrogé ; la recherche sera relancée. Utiliser « Actualiser » plus tard.",
}

# Why the gateway refused an input (pydantic's error `type`), for the page's alert: never its English text.
ERROR_LABELS: Final[dict[str, str]] = {
    "missing": "champ obligatoire",
    "string_too_long": "texte trop long",
    "string_too_short": "champ vide",
    "string_pattern_mismatch": "format non admis",
    "literal_error": "valeur non admise",
    "date_from_datetime_parsing": "date invalide",
    "date_parsing": "date invalide",
    "value_error": "valeur invalide",
    "json_invalid": "requête illisible",
    "bool_type": "case à cocher attendue",
    "mssante_domain": "adresse hors messagerie sécurisée de santé (MSSanté)",
    "fallback": "valeur invalide",
}

TRAIT_LABELS: Final[dict[str, str]] = {
    "birth_name": "Le nom de naissance",
    "used_name": "Le nom d'usage",
    "first_name": "Le prénom",
    "birth_date": "La date de naissance",
    "sex": "Le sexe",
}

# Invented examples of each kind of difference, per kind of trait (names vs first name).
_SEPARATOR_EXAMPLES: Final[dict[str, str]] = {
    "first_name": "« Jean-Pierre » / « Jean Pierre »",
    "name": "« MARTIN-EXEMPLE » / « MARTIN EXEMPLE »",
}
_APOSTROPHE_EXAMPLES: Final[dict[str, str]] = {
    "first_name": "« Marie Anne » / « Marieanne »",
    "name": "« D'EXEMPLE » / « DEXEMPLE »",
}
_TRUNCATED_EXAMPLES: Final[dict[str, str]] = {
    "first_name": "« Marie-Claire » / « Marie »",
    "name": "« FICTIF-EXEMPLE » / « FICTIF »",
}


def _example_key(trait: str) -> str:
    return "first_name" if trait == "first_name" else "name"


def near_miss_hint(trait: str, kind: str) -> str:
    """One French sentence telling staff what to check in the DCC for a near miss (trait, kind)."""
    subject = TRAIT_LABELS.get(trait, "Un trait d'identité")
    key = _example_key(trait)
    match kind:
        case "separator":
            return f"{subject} diffère par un séparateur (tiret ou espace) : vérifier {_SEPARATOR_EXAMPLES[key]}"
        case "apostrophe_or_space_removed":
            return (
                f"{subject} diffère par une apostrophe ou un espace en plus ou en moins : "
                f"vérifier {_APOSTROPHE_EXAMPLES[key]}"
            )
        case "truncated":
            return (
                f"{subject} semble tronqué ou incomplet : vérifier la saisie complète, "
                f"par exemple {_TRUNCATED_EXAMPLES[key]}"
            )
        case "one_edit":
            return f"{subject} diffère d'une seule lettre (faute de frappe possible) : vérifier l'orthographe"
        case "day_month_swapped":
            return "La date de naissance a peut-être le jour et le mois inversés : vérifier, par exemple 04/12 / 12/04"
        case "one_digit":
            return "La date de naissance diffère d'un seul chiffre : vérifier la saisie"
        case "birth_name_is_used_name":
            return (
                "Le nom de naissance saisi est le nom d'usage du patient dans MIRC : vérifier le nom de naissance "
                "et le nom d'usage (nom marital) dans le DCC"
            )
        case "missing":
            return f"{subject} n'est pas renseigné d'un côté : le compléter dans le DCC"
        case "invalid":
            return f"{subject} contient un caractère non admis ou une valeur invalide : corriger la saisie dans le DCC"
        case _:
            return f"{subject} diffère légèrement : vérifier la saisie dans le DCC"


NEAR_MISS_TRAITS: Final = tuple(TRAIT_LABELS)
NEAR_MISS_KINDS: Final = (
    "separator",
    "apostrophe_or_space_removed",
    "truncated",
    "one_edit",
    "day_month_swapped",
    "one_digit",
    "birth_name_is_used_name",
    "missing",
    "invalid",
)


# Issue 15 (the meeting day): a patient's imaging at a glance (`gateway.meeting_day.imaging_state`), on the
# meeting's list, the printed sheet and its PDF.
IMAGING_STATE_LABELS: Final[dict[str, str]] = {
    "failed": "Récupération en échec",
    "not_identified": "Patient non trouvé dans MIRC",
    "waiting": "Examens pas encore tous disponibles",
    "none_selected": "Aucun examen sélectionné",
    "no_consent": "Pas de consentement",
    "available": "Tous les examens disponibles",
    "withdrawn": "Inscription annulée",
}


def script_labels() -> dict[str, object]:
    """Everything the page script needs to word the API's JSON (embedded as a JSON data block)."""
    return {
        "modalities": MODALITY_LABELS,
        "retrieval": RETRIEVAL_STATUS_LABELS,
        "retrieval_detail": RETRIEVAL_DETAIL_LABELS,
        "identity": IDENTITY_STATUS_LABELS,
        "identity_detail": IDENTITY_STATUS_DETAILS,
        "roles": EXPERT_ROLE_LABELS,
        "notifications": NOTIFICATION_STATUS_LABELS,
        "errors": ERROR_LABELS,
        "hints": {
            f"{trait}/{kind}": near_miss_hint(trait, kind) for trait in NEAR_MISS_TRAITS for kind in NEAR_MISS_KINDS
        },
        "hint_fallback": "Un trait d'identité diffère légèrement : vérifier la saisie dans le DCC",
        "imaging_states": IMAGING_STATE_LABELS,
        "imaging_state_order": list(IMAGING_STATE_LABELS),  # the page's JSON has its keys sorted: the order apart
        "sexes": SEX_LABELS,
    }
