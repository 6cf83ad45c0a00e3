"""An audit record as a FHIR R4 AuditEvent, coded after IHE Basic Audit Log Patterns."""

from __future__ import annotations

import base64
from typing import Any

from careloop_audit.domain.record import RecordFields, format_instant

AUDIT_EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
DICOM = "http://dicom.nema.org/resources/ontology/DCM"
RESTFUL_INTERACTION = "http://hl7.org/fhir/restful-interaction"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
PARTICIPATION_TYPE = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
ACTOR_SYSTEM = "urn:careloop:actor"
SERVICE_SYSTEM = "urn:careloop:service"
CARELOOP_TAG_BASE = "https://careloop.dev/fhir/"

# Careloop action -> (AuditEvent.action, subtype code in restful-interaction).
_ACTIONS: dict[str, tuple[str, str]] = {
    "create": ("C", "create"),
    "read": ("R", "read"),
    "update": ("U", "update"),
    "delete": ("D", "delete"),
    "query": ("E", "search"),
    "merge": ("U", "operation"),
}
_OUTCOMES = {"success": "0", "denied": "4", "error": "8"}
_REFERENCE_TYPES = {
    "user": "Practitioner",
    "patient": "Patient",
    "partner": "Organization",
    "service": "Device",
    "system": "Device",
}


def _event_type(action: str) -> tuple[dict[str, str], list[dict[str, str]], str]:
    if action == "export":
        # BALP export: DICOM "Export" (110106), the data leaves the system; action R.
        return {"system": DICOM, "code": "110106", "display": "Export"}, [], "R"
    code, interaction = _ACTIONS.get(action, ("E", "operation"))
    rest = {"system": AUDIT_EVENT_TYPE, "code": "rest", "display": "Restful Operation"}
    return rest, [{"system": RESTFUL_INTERACTION, "code": interaction}], code


def _entities(fields: RecordFields) -> list[dict[str, Any]]:
    entities: list[dict[str, Any]] = []
    if fields.patient_id is not None:
        entities.append(
            {
                "what": {"reference": f"Patient/{fields.patient_id}"},
                "type": {"system": ENTITY_TYPE, "code": "1", "display": "Person"},
                "role": {"system": OBJECT_ROLE, "code": "1", "display": "Patient"},
            }
        )
    if fields.resource_id is not None and not (
        fields.resource_type == "Patient" and fields.resource_id == fields.patient_id
    ):
        entities.append(
            {
                "what": {"reference": f"{fields.resource_type}/{fields.resource_id}"},
                "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
                "role": {"system": OBJECT_ROLE, "code": "4", "display": "Domain Resource"},
            }
        )
    details = [{"type": "phi-categories", "valueString": ",".join(fields.phi_categories)}]
    if fields.query_fingerprint is not None:
        query = base64.b64encode(fields.query_fingerprint.encode()).decode()
        entities.append(
            {
                "what": {"display": f"{fields.resource_type} search"},
                "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
                "role": {"system": OBJECT_ROLE, "code": "24", "display": "Query"},
                "query": query,
                "detail": details,
            }
        )
    elif entities:
        entities[-1]["detail"] = details
    return entities


def to_audit_event(fields: RecordFields) -> dict[str, Any]:
    """The record as a FHIR R4 AuditEvent resource (JSON)."""
    event_type, subtype, action = _event_type(fields.action)
    agent: dict[str, Any] = {
        "type": {
            "coding": [
                {"system": PARTICIPATION_TYPE, "code": "IRCP", "display": "information recipient"}
            ]
        },
        "who": {
            "type": _REFERENCE_TYPES.get(fields.actor_type, "Device"),
            "identifier": {"system": ACTOR_SYSTEM, "value": fields.actor_id},
        },
        "requestor": True,
    }
    if fields.source_ip is not None:
        agent["network"] = {"address": fields.source_ip, "type": "2"}
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": fields.audit_id,
        "type": event_type,
        "action": action,
        "period": {
            "start": format_instant(fields.occurred_at),
            "end": format_instant(fields.occurred_at),
        },
        "recorded": format_instant(fields.recorded_at),
        "outcome": _OUTCOMES.get(fields.outcome, "8"),
        "purposeOfEvent": [{"coding": [{"system": ACT_REASON, "code": fields.purpose_of_use}]}],
        "agent": [agent],
        "source": {
            "site": fields.org_id,
            "observer": {"identifier": {"system": SERVICE_SYSTEM, "value": fields.source_service}},
            "type": [{"system": SOURCE_TYPE, "code": "4", "display": "Application Server"}],
        },
        "entity": _entities(fields),
    }
    if subtype:
        event["subtype"] = subtype
    if fields.outcome_detail is not None:
        event["outcomeDesc"] = fields.outcome_detail
    if fields.request_id is not None:
        event["meta"] = {
            "tag": [{"system": CARELOOP_TAG_BASE + "request-id", "code": fields.request_id}]
        }
    return event
