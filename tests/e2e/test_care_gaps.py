"""A diabetic patient's HbA1c gap through the gateway, every service real: open ->
outreach sent -> scheduled -> closed, and the audit trail holds each step.

A synthetic patient is registered through the gateway; a Condition (ICD-10-CM E11.9,
type 2 diabetes) recorded as a clinical fact reaches care gaps on `careloop.patients`
and opens the `diabetes-hba1c` gap. A routine visit booked at the practice attributes
the patient (and the gap) to its location. An outreach campaign for the measure at that
location is launched: care gaps asks messaging (`OutreachRequested`), and messaging
texts the patient through the Twilio double, naming the practice and nothing clinical.
The measure is given the practice's visit type, and a visit of that type booked in
scheduling marks the gap scheduled (scheduling's event on `careloop.scheduling`). An
HbA1c result (LOINC 4548-4, 7.1 %) closes it. Every read and write on the way is in the
patient's audit trail.

Identity signs the staff token and owns the location (its event gives scheduling and
care gaps the location's view); patients, scheduling, care gaps, messaging, audit and
the gateway trust identity's keys. Every name, date and code value here is synthetic.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import httpx
import pytest
from careloop_caregaps.app import create_app as create_caregaps
from careloop_caregaps.settings import CaregapsSettings
from typer.testing import CliRunner

from careloop_audit.app import create_app as create_audit
from careloop_audit.settings import AuditSettings
from careloop_cli.main import app as careloop
from careloop_gateway.app import create_app as create_gateway
from careloop_gateway.settings import GatewaySettings
from careloop_identity.app import create_app as create_identity
from careloop_identity.settings import IdentitySettings
from careloop_kit.infra.ports import free_port
from careloop_kit.testing.apps import serve_in_task, serve_in_tasks
from careloop_kit.testing.services import ServiceSettingsFactory
from careloop_messaging.app import create_app as create_messaging
from careloop_messaging.settings import MessagingSettings
from careloop_messaging.testing.twilio_double import TwilioDouble
from careloop_patients.app import create_app as create_patients
from careloop_patients.settings import PatientsSettings
from careloop_scheduling.app import create_app as create_scheduling
from careloop_scheduling.settings import SchedulingSettings

from .practice import PRACTICE_NAME, PRACTICE_ZONE
from .test_messaging_reminders import BOOTSTRAP, admin_of_new_org
from .test_two_way_confirmation import eventually_async

pytestmark = pytest.mark.e2e

API = "/api/v1"
MEASURE = "diabetes-hba1c"
# Synthetic patient: 58 years old on the day the test runs, inside the measure's 18-75.
FAMILY, GIVEN = "Synthetic-Vandermolen", "Oriel"
BIRTH_DATE = date(date.today().year - 58, 3, 14).isoformat()
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
# Nothing of these may reach the patient's phone: who they are, or what the gap is about.
PHI_MARKERS = (
    FAMILY,
    GIVEN,
    BIRTH_DATE,
    "diabet",
    "a1c",
    "hba1c",
    "hemoglobin",
    "glucose",
    MEASURE,
)


def condition(patient_id: str) -> dict[str, Any]:
    """Type 2 diabetes without complications, active, as a FHIR R4 Condition."""
    return {
        "resourceType": "Condition",
        "clinicalStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    "code": "active",
                }
            ]
        },
        "verificationStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                    "code": "confirmed",
                }
            ]
        },
        "code": {
            "coding": [
                {
                    "system": ICD10CM,
                    "code": "E11.9",
                    "display": "Type 2 diabetes mellitus without complications",
                }
            ]
        },
        "subject": {"reference": f"Patient/{patient_id}"},
        "onsetDateTime": (date.today() - timedelta(days=3 * 365)).isoformat(),
    }


def hba1c(patient_id: str) -> dict[str, Any]:
    """An HbA1c of 7.1 % taken today, as a FHIR R4 Observation."""
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "laboratory",
                    }
                ]
            }
        ],
        "code": {
            "coding": [
                {
                    "system": LOINC,
                    "code": "4548-4",
                    "display": "Hemoglobin A1c/Hemoglobin.total in Blood",
                }
            ]
        },
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": datetime.now(UTC).replace(microsecond=0).isoformat(),
        "valueQuantity": {"value": 7.1, "unit": "%", "system": UCUM, "code": "%"},
    }


@dataclass
class Practice:
    gateway: httpx.AsyncClient
    staff: dict[str, str]
    org_id: str
    location_id: str
    double: TwilioDouble

    @property
    def staff_id(self) -> str:
        """The `sub` of the staff token (read, not verified: the services verified it)."""
        payload = self.staff["Authorization"].removeprefix("Bearer ").split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return str(claims["sub"])

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self.gateway.request(method, f"{API}{path}", headers=self.staff, **kwargs)
        assert response.status_code < 300, (
            f"{method} {path}: {response.status_code} {response.text}"
        )
        return response.json()

    async def gaps(self, patient_id: str) -> list[dict[str, Any]]:
        response = await self.gateway.get(
            f"{API}/caregaps/patients/{patient_id}/gaps", headers=self.staff
        )
        if response.status_code == 404:
            # The facts consumer has not seen the registration yet.
            return []
        assert response.status_code == 200, response.text
        return _items(response.json())

    async def gap_until(self, patient_id: str, status: str) -> dict[str, Any]:
        gaps = await eventually_async(
            lambda: self.gaps(patient_id),
            lambda found: any(g["measure_id"] == MEASURE and g["status"] == status for g in found),
            timeout_s=60,
        )
        [gap] = [g for g in gaps if g["measure_id"] == MEASURE]
        return gap

    async def trail(self, patient_id: str) -> list[dict[str, Any]]:
        page = await self.call("GET", f"/audit/audit/patients/{patient_id}/trail")
        return _items(page)


def _items(page: dict[str, Any]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = page["items"]
    return items


@pytest.fixture
async def practice(
    service_settings: ServiceSettingsFactory, topic_prefix: str
) -> AsyncIterator[Practice]:
    async def settings_of(kind: type[Any], service: str, **overrides: Any) -> Any:
        return await service_settings(kind, service, topic_prefix=topic_prefix, **overrides)

    names = ("patients", "scheduling", "caregaps", "messaging", "audit", "gateway")
    ports = {name: free_port() for name in names}
    local = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    identity_app = create_identity(
        await settings_of(
            IdentitySettings, "identity", bootstrap_token=BOOTSTRAP["X-Bootstrap-Token"]
        )
    )
    double = TwilioDouble("AC" + "5" * 32, "test-" + "6" * 32)
    async with serve_in_task(identity_app) as identity_url, serve_in_task(double.app) as twilio:
        jwks = {"auth_jwks_url": f"{identity_url}/.well-known/jwks.json"}
        # Where care gaps reaches patients with its own service identity, if it does.
        caregaps_wiring = {
            key: value
            for key, value in {
                "patients_url": local["patients"],
                "identity_token_url": f"{identity_url}/oauth/token",
            }.items()
            if key in CaregapsSettings.model_fields
        }
        apps = {
            "patients": create_patients(await settings_of(PatientsSettings, "patients", **jwks)),
            "scheduling": create_scheduling(
                await settings_of(
                    SchedulingSettings, "scheduling", reminder_poll_interval_s=3600, **jwks
                )
            ),
            "caregaps": create_caregaps(
                await settings_of(CaregapsSettings, "caregaps", **caregaps_wiring, **jwks)
            ),
            "messaging": create_messaging(
                await settings_of(
                    MessagingSettings,
                    "messaging",
                    delivery_mode="provider",
                    patients_url=local["patients"],
                    identity_token_url=f"{identity_url}/oauth/token",
                    twilio_api_base=twilio,
                    twilio_account_sid=double.account_sid,
                    twilio_auth_token=double.auth_token,
                    twilio_from_number="+15550009999",
                    secure_link_base="https://portal.example.test/m",
                    delivery_poll_interval_s=0.05,
                    **jwks,
                )
            ),
            "audit": create_audit(
                await settings_of(AuditSettings, "audit", checkpoint_interval_s=0.5, **jwks)
            ),
            "gateway": create_gateway(
                await settings_of(
                    GatewaySettings,
                    "gateway",
                    routes={
                        name: local[name] for name in names if name not in ("gateway", "messaging")
                    },
                    **jwks,
                )
            ),
        }
        async with (
            serve_in_tasks(apps, ports=ports),
            httpx.AsyncClient(base_url=local["gateway"], timeout=30) as gateway,
            httpx.AsyncClient(base_url=identity_url, timeout=30) as identity,
        ):
            org_id, admin = await admin_of_new_org(identity_url)
            location = await identity.post(
                f"/organizations/{org_id}/locations",
                json={"name": PRACTICE_NAME, "time_zone": PRACTICE_ZONE.key},
                headers=admin,
            )
            assert location.status_code == 201, location.text
            yield Practice(
                gateway=gateway,
                staff=admin,
                org_id=org_id,
                location_id=str(location.json()["id"]),
                double=double,
            )


async def open_for_visits(practice: Practice) -> tuple[str, str, str]:
    """A provider with a day of availability two days on and two visit types, once
    scheduling knows the location: (provider id, routine type id, diabetes type id)."""
    await eventually_async(
        lambda: practice.gateway.get(
            f"{API}/scheduling/locations/{practice.location_id}", headers=practice.staff
        ),
        lambda response: response.status_code == 200,
        timeout_s=60,
    )
    provider = await practice.call(
        "POST",
        "/scheduling/providers",
        json={"display_name": "Dr. Synthetic Haverkamp", "location_ids": [practice.location_id]},
    )
    routine = await practice.call(
        "POST",
        "/scheduling/appointment-types",
        json={"name": "Routine visit", "duration_minutes": 20, "patient_kind": "established"},
    )
    kind = await practice.call(
        "POST",
        "/scheduling/appointment-types",
        json={"name": "Diabetes review", "duration_minutes": 20, "patient_kind": "established"},
    )
    day = (datetime.now(UTC) + timedelta(days=2)).astimezone(PRACTICE_ZONE).date()
    await practice.call(
        "POST",
        f"/scheduling/providers/{provider['id']}/availability",
        json={
            "location_id": practice.location_id,
            "weekday": day.weekday(),
            "start": "09:00",
            "end": "17:00",
        },
    )
    return str(provider["id"]), str(routine["id"]), str(kind["id"])


async def test_a_diabetic_patients_hba1c_gap_opens_is_scheduled_and_closes(
    practice: Practice,
) -> None:
    registered = await practice.call(
        "POST",
        "/patients/patients",
        json={
            "location_id": practice.location_id,
            "name": {"family": FAMILY, "given": [GIVEN]},
            "birth_date": BIRTH_DATE,
            "sex": "female",
            "phones": ["+1 555 0100 412"],
            "preferred_language": "en",
            "preferences": {"allowed_channels": ["sms"], "preferred_channel": "sms"},
        },
    )
    patient_id = str(registered["id"])

    # The diagnosis opens the HbA1c gap.
    await practice.call(
        "POST", f"/patients/patients/{patient_id}/facts", json=condition(patient_id)
    )
    opened = await practice.gap_until(patient_id, "open")
    assert opened["measure_id"] == MEASURE

    # A routine visit (not of the measure's type) is the patient's care relationship:
    # the gap is attributed to the practice's location.
    provider_id, routine_id, type_id = await open_for_visits(practice)
    day = (datetime.now(UTC) + timedelta(days=2)).astimezone(PRACTICE_ZONE).date()

    async def book(type_id: str, at: time) -> None:
        await practice.call(
            "POST",
            "/scheduling/appointments",
            json={
                "patient_id": patient_id,
                "provider_id": provider_id,
                "appointment_type_id": type_id,
                "location_id": practice.location_id,
                "start_at": datetime.combine(day, at, PRACTICE_ZONE).astimezone(UTC).isoformat(),
            },
        )

    await book(routine_id, time(9))
    await eventually_async(
        lambda: practice.gaps(patient_id),
        lambda found: any(g["location_id"] == practice.location_id for g in found),
        timeout_s=60,
    )
    # The booking's confirmation text, if the practice sends one, is not the outreach.
    before = len(practice.double.messages)

    # An outreach campaign for the measure: one SMS step, two weeks to answer.
    campaign = await practice.call(
        "POST",
        "/caregaps/campaigns",
        json={
            "name": "HbA1c recall (synthetic)",
            "measure_ids": [MEASURE],
            "location_id": practice.location_id,
            "steps": [{"channel": "sms", "wait_days": 14}],
        },
    )
    launched = await eventually_async(
        # 409 until identity's location event has reached care gaps' view.
        lambda: practice.gateway.post(
            f"{API}/caregaps/campaigns/{campaign['id']}/launch", headers=practice.staff
        ),
        lambda response: response.status_code == 200,
        timeout_s=60,
    )
    assert launched.json()["counts"]["patients_targeted"] == 1
    await practice.gap_until(patient_id, "outreach-sent")

    def outreach_texts() -> list[str]:
        return [
            m.body
            for m in practice.double.messages[before:]
            if "check-up" in m.body.lower() or "checkup" in m.body.lower()
        ]

    async def read_texts() -> list[str]:
        return outreach_texts()

    [text] = await eventually_async(read_texts, lambda found: len(found) == 1, timeout_s=60)
    assert PRACTICE_NAME in text
    assert "https://portal.example.test/m/" in text
    for marker in PHI_MARKERS:
        assert marker.lower() not in text.lower(), (marker, text)

    # A visit of the measure's visit type, booked, schedules it.
    await practice.call(
        "PUT", f"/caregaps/measures/{MEASURE}/visit-types", json={"appointment_type_ids": [type_id]}
    )
    await book(type_id, time(10))
    scheduled = await practice.gap_until(patient_id, "scheduled")
    assert scheduled["id"] == opened["id"]

    # The result closes it, with the result as its evidence.
    result = await practice.call(
        "POST", f"/patients/patients/{patient_id}/facts", json=hba1c(patient_id)
    )
    closed = await practice.gap_until(patient_id, "closed")
    assert closed["id"] == opened["id"]
    detail = await practice.call("GET", f"/caregaps/gaps/{closed['id']}")
    assert detail["status"] == "closed"
    assert detail["evidence"]["closed_by"] == [result["id"]], detail
    assert [step["status"] for step in detail["history"]][-4:] == [
        "open",
        "outreach-sent",
        "scheduled",
        "closed",
    ]
    read = await practice.call("GET", f"/caregaps/campaigns/{campaign['id']}")
    assert (read["counts"]["steps_sent"], read["counts"]["scheduled"]) == (1, 1)
    assert len(outreach_texts()) == 1

    # Every step is in the patient's trail: the registration and both facts in patients,
    # care gaps reading the demographics there with its own identity, the booking in
    # scheduling, the gap opened and moved twice by care gaps itself, and staff's reads.
    def steps(trail: list[dict[str, Any]]) -> list[tuple[str, str, str, str]]:
        return [
            (r["source_service"], r["actor_id"], r["action"], r["resource_type"]) for r in trail
        ]

    staff = practice.staff_id
    expected = [
        ("patients", staff, "create", "Patient"),
        ("patients", "service:caregaps", "read", "Patient"),
        ("patients", staff, "create", "Condition"),
        ("caregaps", "caregaps", "create", "MeasureReport"),
        ("scheduling", staff, "create", "Appointment"),
        ("caregaps", staff, "update", "MeasureReport"),
        ("scheduling", staff, "create", "Appointment"),
        ("caregaps", "caregaps", "update", "MeasureReport"),
        ("patients", staff, "create", "Observation"),
        ("caregaps", "caregaps", "update", "MeasureReport"),
        ("caregaps", staff, "read", "MeasureReport"),
    ]

    def complete(trail: list[dict[str, Any]]) -> bool:
        found = steps(trail)
        return all(found.count(step) >= expected.count(step) for step in expected)

    trail = await eventually_async(lambda: practice.trail(patient_id), complete, timeout_s=60)
    assert all(record["patient_id"] == patient_id for record in trail)
    assert all(record["org_id"] == practice.org_id for record in trail)
    assert all(record["outcome"] == "success" for record in trail)

    # A population evaluation from the command line, through the gateway, follows the job
    # to its end; the patient's gaps are current, so it changes nothing.
    evaluated = await asyncio.to_thread(
        CliRunner().invoke,
        careloop,
        [
            *("caregaps", "evaluate", "--gateway", str(practice.gateway.base_url)),
            *("--location", practice.location_id, "--poll-interval", "0.2", "--timeout", "60"),
        ],
        env={"CARELOOP_ACCESS_TOKEN": practice.staff["Authorization"].removeprefix("Bearer ")},
    )
    assert evaluated.exit_code == 0, evaluated.output
    said = " ".join(evaluated.output.split())
    assert "100%" in said
    assert "done: 1 of 1 patients, 0 gap(s) changed" in said
