"""Live updates: the SSE streams' names and messages (the `Handlers` publish them after each applied patch).

Each applied patch (a stale or replayed event applies nothing and says nothing) is announced on the
enrolment's stream and on its meeting's stream, after it is durable in MongoDB. Messages carry ids and
states; the meeting stream's messages also carry the patient's row of the meeting list (`summary`).
"""

from __future__ import annotations

from gateway import views
from gateway.projection import Json, Patch
from gateway.read_model import EnrolmentRecord
from gateway.viewer import ViewerLinks

Message = dict[str, Json]  # an SSE message's data (JSON-ready)


def enrolment_stream(enrolment_id: str) -> str:
    return f"enrolment:{enrolment_id}"


def meeting_stream(meeting_id: str) -> str:
    return f"meeting:{meeting_id}"


def rcp_stream(rcp_id: str) -> str:
    return f"rcp:{rcp_id}"


def _study_state(patch: Patch, record: EnrolmentRecord, links: ViewerLinks) -> Message:
    study_instance_uid = str(patch.value["study_instance_uid"])
    selected = study_instance_uid in views.selected_uids(record)
    patient_id = views.study_patient_id(record, study_instance_uid)
    retrieval = views.retrieval_view(record, study_instance_uid, selected=selected, patient_id=patient_id, links=links)
    return {
        "study_instance_uid": study_instance_uid,
        "selected": selected,
        "retrieval": retrieval.model_dump(mode="json"),
    }


def enrolment_message(patch: Patch, record: EnrolmentRecord, links: ViewerLinks) -> Message:
    """The SSE data for a patch applied to an enrolment document (JSON-ready)."""
    data: Message = {"enrolment_id": record.enrolment_id}
    if patch.kind in ("study-status", "removal"):
        data.update(_study_state(patch, record, links))
    elif patch.kind == "identity":
        data["identity"] = views.identity_view(record).model_dump(mode="json")
    elif patch.kind == "catalogue":
        data["catalogue"] = views.catalogue_view(record).model_dump(mode="json")
    elif patch.kind == "selection":
        data["selected"] = [*views.selected_uids(record)]
        data["expertise_requested"] = views.expertise_view(record).requested
    elif patch.kind == "expertise":
        data["expertise"] = views.expertise_view(record).model_dump(mode="json")
    elif patch.kind == "enrolment":
        enrolment = record.enrolment
        data.update(
            meeting_id=enrolment.meeting_id if enrolment is not None else None,
            consent=enrolment.consent if enrolment is not None else None,
            identity=views.identity_view(record).model_dump(mode="json"),
        )
    if patch.kind in ("enrolment", "withdrawal"):
        withdrawal = views.withdrawal_view(record)
        data["withdrawal"] = withdrawal.model_dump(mode="json") if withdrawal is not None else None
        data["identity"] = views.identity_view(record).model_dump(mode="json")
    return data
