"""Why something is not (yet) done: one stable code per reason, with the French text users read.

CONTRACT v1.1: the REST `reason` is "a stable code plus a French text". Services publish both on Kafka
(`reason_code`, and `reason` = the French text, possibly with a detail appended); the gateway answers
`"<code>: <texte>"` and gives the parts apart too. Texts never contain patient data: they are shown on
screens, sent on Kafka and written to logs.

A code, once published, keeps its meaning (a DCC may branch on it); a new situation gets a new code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

# code -> French text. Grouped by who says it; the gateway and the console know every code from here.
TEXTS: Final[dict[str, str]] = {
    # --- the enrolment's lifecycle (CONTRACT v1.1), said by every service about what it holds ---------------
    "waiting_identity": "en attente de l'identification du patient dans le PACS régional",
    "waiting_catalogue": "en attente de la liste des examens du patient",
    "patient_not_found": "patient non trouvé dans le PACS régional : aucun examen ne peut être chargé",
    "no_consent": "pas de consentement du patient : aucun PACS n'est interrogé",
    "consent_withdrawn": "consentement retiré : les images ont été retirées",
    "enrolment_withdrawn": "inscription annulée : les images ont été retirées",
    "identity_changed": "identité corrigée : cet examen n'appartient pas au patient identifié",
    "not_patient_study": "examen n'appartenant pas au patient identifié",
    "identity_error": "le PACS régional n'a pas pu être interrogé pour identifier le patient",
    "invalid_identity": "identité du DCC inutilisable",
    # --- retrieval (study-fetcher) -----------------------------------------------------------------------
    "not_in_mirc": "examen pas encore présent dans le PACS régional (MIRC)",
    "pacs_unreachable": "PACS régional (MIRC) injoignable",
    "pacs_error": "le PACS régional n'a pas répondu correctement",
    "viewer_unreachable": "stockage de la visionneuse injoignable",
    "move_incomplete": "transfert incomplet",
    "move_refused": "le PACS régional a refusé le transfert",
    "move_failed": "le PACS régional n'a pas pu effectuer le transfert",
    "deadline_passed": "délai dépassé (fin du jour de la réunion)",
    "pacs_back": "PACS régional (MIRC) de nouveau joignable, reprise",
    "viewer_back": "stockage de la visionneuse de nouveau joignable, reprise",
    "resumed": "reprise après interruption",
    # --- catalogue (study-fetcher) ------------------------------------------------------------------------
    "catalogue_error": "la liste des examens n'a pas pu être obtenue du PACS régional",
    # --- expertise e-mails (expert-notifier) --------------------------------------------------------------
    "expertise_not_requested": "expertise non demandée",
    "waiting_enrolment": "en attente de l'inscription du patient",
    "waiting_meeting": "en attente des experts d'astreinte de la réunion",
    "waiting_available_study": "en attente d'un examen sélectionné disponible",
    "no_expert": "aucun expert d'astreinte désigné pour ce rôle",
    "expert_replaced": "l'expert d'astreinte a changé avant l'envoi",
    "meeting_passed": "la date de la réunion est passée",
    "recipient_not_allowed": "adresse hors des domaines de messagerie sécurisée autorisés : non envoyé",
    "send_failed": "l'envoi a échoué",
    "send_retrying": "envoi en échec temporaire, nouvel essai prévu",
    "smtp_configuration": "messagerie sécurisée mal configurée (certificat ou relais)",
    "facts_missing": "les informations de l'inscription ne sont plus disponibles",
}

# The reasons that close an enrolment: what was selected is removed and purged (CONTRACT v1.1).
CLOSURE_CODES: Final = frozenset({"consent_withdrawn", "enrolment_withdrawn"})


def text(code: str, detail: str | None = None) -> str:
    """The French text of `code`, with a detail appended (`texte (détail)`) when one is given."""
    base = TEXTS.get(code, code.replace("_", " "))
    return f"{base} ({detail})" if detail else base


@dataclass(frozen=True, slots=True)
class Reason:
    """A reason as services carry it: the stable code and the French text shown to people."""

    code: str
    text: str

    @classmethod
    def of(cls, code: str, detail: str | None = None) -> Reason:
        return cls(code, text(code, detail))

    def rest(self) -> str:
        """The REST `reason`: `"<code>: <texte>"`."""
        return f"{self.code}: {self.text}"
