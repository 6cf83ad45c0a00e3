"""The care-gaps service against real PostgreSQL, Kafka and OpenBao: clinical fact events
open a diabetic patient's HbA1c gap (once, however often the fact arrives) and a result
closes it; a booked visit of a listed type schedules it and its cancellation opens it
again; a population evaluation runs as a durable job to done and changes nothing the
second time; the population view and its CSV; decisions by hand; and the walls between
tenants, locations, sensitive locations, patients and roles.

Demographics are seeded straight into care-gaps' store (sealed, as the patients read
would leave them) instead of starting the patients service; the registration and
birth-date test answers the read in-process instead (as messaging's tests answer its
contact reads). Every patient is synthetic.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from careloop_caregaps.app import create_app
from careloop_caregaps.domain.facts import Coding, Fact, Quantity, Sex
from careloop_caregaps.settings import CaregapsSettings
from careloop_caregaps.store.codec import demographics_text, fact_text
from careloop_caregaps.store.repository import repositories
from careloop_caregaps.usecases.common import field_cipher
from careloop_caregaps.usecases.jobs import run_batch
from fastapi import FastAPI

from careloop_contracts import Envelope, Event, to_headers
from careloop_contracts.patients import (
    ClinicalFactRecorded,
    FactCoding,
    FactKindName,
    FactQuantity,
    PatientMerged,
    PatientRegistered,
    PatientUpdated,
)
from careloop_contracts.scheduling import AppointmentBooked, AppointmentCancelled
from careloop_kit.auth import StaticJwksSource
from careloop_kit.auth.testing import TestTokenIssuer
from careloop_kit.clock import FrozenClock
from careloop_kit.service import Runtime
from careloop_kit.testing.apps import running_app
from careloop_kit.testing.kafka import read_topic
from careloop_kit.testing.services import Mint

pytestmark = pytest.mark.service

MEASURE = "diabetes-hba1c"
DIABETES = FactCoding(system="icd-10-cm", code="E11.9")
HBA1C = FactCoding(system="loinc", code="4548-4")


def _runtime(app: FastAPI) -> Runtime:
    runtime: Runtime = app.state.runtime
    return runtime


async def _publish(runtime: Runtime, event: Event, event_id: str | None = None) -> None:
    """As the owning service's relay would: the same envelope headers, keyed by patient."""
    envelope = Envelope(
        id=event_id or str(uuid.uuid4()),
        type=event.event_type,
        source="/careloop/test",
        time=datetime.now(UTC),
        subject=event.partition_key(),
        org_id=getattr(event, "org_id", None),
        location_id=getattr(event, "location_id", None),
    )
    await runtime.producer.send_and_wait(
        runtime.topic(event.topic),
        value=event.to_json(),
        key=event.partition_key().encode(),
        headers=to_headers(envelope),
    )


async def _seed_patient(
    runtime: Runtime, org_id: str, patient_id: str, *, birth: date = date(1970, 5, 1)
) -> None:
    """What a registration's demographics read leaves in the store (sealed)."""
    async with runtime.sessionmaker() as session, session.begin():
        sealed = await field_cipher(runtime).seal_field(
            session,
            demographics_text(birth, "female"),
            org_id=org_id,
            table="patient_profile",
            column="demographics",
            row_id=patient_id,
        )
        await repositories(session).patients.set_demographics(
            org_id, patient_id, sealed, runtime.clock.now()
        )


async def _seed_fact(runtime: Runtime, org_id: str, patient_id: str, fact: Fact) -> None:
    """A fact kept without an evaluation (as if it came before the measure existed)."""
    async with runtime.sessionmaker() as session, session.begin():
        sealed = await field_cipher(runtime).seal_field(
            session,
            fact_text(fact),
            org_id=org_id,
            table="clinical_fact",
            column="fact",
            row_id=fact.fact_id,
        )
        await repositories(session).patients.record_fact(
            org_id, patient_id, fact.fact_id, version=1, fact_ct=sealed, now=runtime.clock.now()
        )


async def _seed_location(runtime: Runtime, org_id: str, location_id: str) -> None:
    """Identity's word that a location is sensitive."""
    async with runtime.sessionmaker() as session, session.begin():
        await repositories(session).locations.apply(
            org_id,
            location_id,
            sensitive=True,
            changed_at=runtime.clock.now(),
            now=runtime.clock.now(),
        )


def _fact_event(
    org_id: str,
    patient_id: str,
    fact_id: str,
    *,
    code: FactCoding = DIABETES,
    kind: FactKindName = "condition",
    status: str = "active",
    on: date = date(2020, 1, 1),
    quantities: tuple[FactQuantity, ...] = (),
) -> ClinicalFactRecorded:
    return ClinicalFactRecorded(
        fact_id=fact_id,
        patient_id=patient_id,
        org_id=org_id,
        kind=kind,
        version=1,
        status=status,
        codes=(code,),
        effective_on=on,
        quantities=quantities,
        source="ehr-import",
        recorded_at=datetime(2026, 3, 1, tzinfo=UTC),
    )


def _appointment(
    org_id: str, patient_id: str, appointment_id: str, status: str, *, type_id: str
) -> dict[str, Any]:
    start = datetime(2026, 3, 10, 14, 0, tzinfo=UTC)
    return {
        "appointment_id": appointment_id,
        "patient_id": patient_id,
        "org_id": org_id,
        "location_id": "loc-north",
        "provider_id": "prov-1",
        "appointment_type_id": type_id,
        "start_at": start,
        "end_at": start + timedelta(minutes=30),
        "status": status,
        "confirmation": "unconfirmed",
        "occurred_at": datetime(2026, 3, 2, 9, 0, tzinfo=UTC),
    }


async def _gap_of(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    patient_id: str,
    done: Callable[[dict[str, Any]], bool],
    timeout_s: float = 20.0,
) -> dict[str, Any]:
    """The patient's current HbA1c gap once `done` holds for it."""
    deadline = time.monotonic() + timeout_s
    found: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = await client.get(f"/patients/{patient_id}/gaps", headers=headers)
        assert response.status_code == 200, response.text
        mine = [g for g in response.json()["items"] if g["measure_id"] == MEASURE]
        if mine:
            found = mine[0]
            if done(found):
                return found
        await asyncio.sleep(0.2)
    raise AssertionError(f"the {MEASURE} gap of {patient_id} never got there: {found}")


async def _gap_events(runtime: Runtime, gap_id: str) -> list[dict[str, Any]]:
    records = await read_topic(runtime.settings.kafka_bootstrap, runtime.topic("careloop.caregaps"))
    bodies = [json.loads(r.value) for r in records if r.value]
    return [b for b in bodies if b.get("gap_id") == gap_id]


async def _access_records(runtime: Runtime) -> list[dict[str, Any]]:
    records = await read_topic(runtime.settings.kafka_bootstrap, runtime.topic("careloop.caregaps"))
    bodies = [json.loads(r.value) for r in records if r.value]
    return [b for b in bodies if "audit_id" in b]


async def test_facts_open_one_gap_once_and_a_result_closes_it(
    caregaps: httpx.AsyncClient, caregaps_app: FastAPI, mint: Mint, unique_id: str
) -> None:
    runtime = _runtime(caregaps_app)
    org = f"org-{unique_id}"
    await _seed_patient(runtime, org, "pat-1")
    diabetes = _fact_event(org, "pat-1", f"fact-dm-{unique_id}")
    await _publish(runtime, diabetes)
    await _publish(runtime, diabetes)  # the same fact sent again under a new event id

    gap = await _gap_of(caregaps, mint(), "pat-1", lambda g: g["status"] == "open")
    assert gap["reason"] == "no-hba1c-in-12-months"
    assert gap["due_on"] is None

    result = _fact_event(
        org,
        "pat-1",
        f"fact-a1c-{unique_id}",
        code=HBA1C,
        kind="observation",
        status="final",
        on=date(2026, 2, 20),
        quantities=(FactQuantity(value=6.9, unit="%"),),
    )
    await _publish(runtime, result)
    closed = await _gap_of(caregaps, mint(), "pat-1", lambda g: g["status"] == "closed")
    assert closed["id"] == gap["id"]

    detail = (await caregaps.get(f"/gaps/{gap['id']}", headers=mint())).json()
    assert detail["evidence"]["closed_by"] == [result.fact_id]
    assert detail["evidence_fact_ids"] == [result.fact_id]
    assert [h["status"] for h in detail["history"]] == ["open", "closed"]
    assert [(h["from_status"], h["to_status"], h["cause"]) for h in detail["history"]] == [
        (None, "open", None),
        ("open", "closed", "evidence"),
    ]
    assert detail["history"][-1]["actor_id"] == "service:caregaps"

    events = await _gap_events(runtime, gap["id"])
    assert [e["status"] for e in events] == ["open", "closed"]
    assert "value" not in json.dumps(events)

    # The result withdrawn (a correction, version 2): the patient is due again, in a new
    # gap; the first version arriving late changes nothing.
    withdrawn = result.model_copy(update={"version": 2, "status": "entered-in-error"})
    await _publish(runtime, withdrawn)
    again = await _gap_of(caregaps, mint(), "pat-1", lambda g: g["status"] == "open")
    assert again["id"] != gap["id"]
    await _publish(runtime, result)
    # A later, high result behind it on the patient's partition: once the gap shows it,
    # the late version was handled (had it counted, it would have closed this gap too).
    high = _fact_event(
        org,
        "pat-1",
        f"fact-a1c-high-{unique_id}",
        code=HBA1C,
        kind="observation",
        status="final",
        on=date(2026, 2, 25),
        quantities=(FactQuantity(value=9.5, unit="%"),),
    )
    await _publish(runtime, high)
    await _gap_of(caregaps, mint(), "pat-1", lambda g: g["reason"] == "hba1c-8-or-over")
    every = (await caregaps.get("/patients/pat-1/gaps", headers=mint())).json()["items"]
    assert sorted(g["status"] for g in every if g["measure_id"] == MEASURE) == ["closed", "open"]

    # Every step is on the patient's trail: the service opening and closing the gap, the
    # staff member reading it.
    access = [e for e in await _access_records(runtime) if e.get("resource_id") == gap["id"]]
    assert {(e["actor_id"], e["action"]) for e in access} >= {
        ("caregaps", "create"),
        ("caregaps", "update"),
        (f"user-{unique_id}", "read"),
    }
    assert all(e["patient_id"] == "pat-1" for e in access)


async def test_a_booked_visit_of_a_listed_type_schedules_the_gap_and_its_cancellation_opens_it(
    caregaps: httpx.AsyncClient, caregaps_app: FastAPI, mint: Mint, unique_id: str
) -> None:
    runtime = _runtime(caregaps_app)
    org = f"org-{unique_id}"
    listed = await caregaps.put(
        f"/measures/{MEASURE}/visit-types",
        json={"appointment_type_ids": ["type-diabetes"]},
        headers=mint(),
    )
    assert listed.status_code == 200, listed.text
    assert listed.json()["visit_type_ids"] == ["type-diabetes"]
    await _seed_patient(runtime, org, "pat-1")
    await _publish(runtime, _fact_event(org, "pat-1", f"fact-dm-{unique_id}"))
    opened = await _gap_of(caregaps, mint(), "pat-1", lambda g: g["status"] == "open")
    assert opened["location_id"] is None

    await _publish(
        runtime,
        AppointmentBooked(**_appointment(org, "pat-1", "apt-other", "booked", type_id="type-x")),
    )
    await _publish(
        runtime,
        AppointmentBooked(**_appointment(org, "pat-1", "apt-1", "booked", type_id="type-diabetes")),
    )
    scheduled = await _gap_of(caregaps, mint(), "pat-1", lambda g: g["status"] == "scheduled")
    assert (scheduled["location_id"], scheduled["provider_id"]) == ("loc-north", "prov-1")

    await _publish(
        runtime,
        AppointmentCancelled(
            **_appointment(org, "pat-1", "apt-1", "cancelled", type_id="type-diabetes")
        ),
    )
    reopened = await _gap_of(caregaps, mint(), "pat-1", lambda g: g["status"] == "open")
    detail = (await caregaps.get(f"/gaps/{reopened['id']}", headers=mint())).json()
    assert [h["cause"] for h in detail["history"]] == [None, "booked", "visit-cancelled"]


async def _job(client: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, Any]:
    started = await client.post("/evaluations", json={}, headers=headers)
    assert started.status_code == 202, started.text
    url = started.json()["status_url"]
    seen = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        body: dict[str, Any] = (await client.get(url, headers=headers)).json()
        seen.append(body["status"])
        if body["status"] in ("done", "failed"):
            body["seen"] = seen
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"the evaluation never finished: {seen}")


async def test_population_evaluation_is_a_job_that_changes_nothing_the_second_time(
    caregaps: httpx.AsyncClient, caregaps_app: FastAPI, mint: Mint, unique_id: str
) -> None:
    runtime = _runtime(caregaps_app)
    org = f"org-{unique_id}"
    patients = ["pat-a", "pat-b", "pat-c"]
    for patient in patients:
        await _seed_patient(runtime, org, patient)
        diabetes = Fact(
            f"fact-{patient}-{unique_id}",
            "condition",
            "active",
            (Coding("icd-10-cm", "E11.9"),),
            date(2020, 1, 1),
        )
        await _seed_fact(runtime, org, patient, diabetes)
    # pat-c had an HbA1c of 9.1 % last month: a gap, for its value.
    high = Fact(
        f"fact-a1c-{unique_id}",
        "observation",
        "final",
        (Coding("loinc", "4548-4"),),
        date(2026, 2, 1),
        quantities=(Quantity(9.1, "%"),),
    )
    await _seed_fact(runtime, org, "pat-c", high)

    admin = mint()
    first = await _job(caregaps, admin)
    assert first["status"] == "done", first
    assert (first["total"], first["done"], first["percent"]) == (3, 3, 100.0)
    assert first["changed"] > 3  # every patient gets several measures' gaps
    before = await read_topic(runtime.settings.kafka_bootstrap, runtime.topic("careloop.caregaps"))

    second = await _job(caregaps, admin)
    assert second["status"] == "done"
    assert (second["done"], second["changed"]) == (3, 0)
    await asyncio.sleep(1.0)  # the relay would have published anything new by now
    after = await read_topic(runtime.settings.kafka_bootstrap, runtime.topic("careloop.caregaps"))
    gap_events = [r for r in after if r.value and b'"gap_id"' in r.value]
    assert len(gap_events) == len([r for r in before if r.value and b'"gap_id"' in r.value])

    view = await caregaps.get("/population", params={"measure_id": MEASURE}, headers=admin)
    assert view.status_code == 200, view.text
    body = view.json()
    assert [(c["status"], c["count"]) for c in body["counts"]] == [("open", 3)]
    assert sorted(i["patient_id"] for i in body["items"]) == patients
    by_patient = {
        g["patient_id"]: g
        for p in patients
        for g in (await caregaps.get(f"/patients/{p}/gaps", headers=admin)).json()["items"]
        if g["measure_id"] == MEASURE
    }
    assert by_patient["pat-c"]["reason"] == "hba1c-8-or-over"

    paged = await caregaps.get(
        "/population", params={"measure_id": MEASURE, "limit": 2}, headers=admin
    )
    assert len(paged.json()["items"]) == 2
    assert paged.json()["next_cursor"] is not None

    export = await caregaps.get(
        "/population/export.csv", params={"measure_id": MEASURE}, headers=admin
    )
    assert export.status_code == 200
    assert export.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(export.text)))
    assert rows[0] == [
        "patient_id",
        "gap_id",
        "measure_id",
        "status",
        "due_on",
        "location_id",
        "provider_id",
    ]
    assert sorted(r[0] for r in rows[1:]) == patients

    measures = (await caregaps.get("/measures", headers=admin)).json()["items"]
    hba1c = next(m for m in measures if m["id"] == MEASURE)
    assert any(v["id"] == "hba1c" and v["version"] for v in hba1c["value_sets"])


async def test_decisions_by_hand_and_the_walls(
    caregaps: httpx.AsyncClient, caregaps_app: FastAPI, mint: Mint, unique_id: str
) -> None:
    runtime = _runtime(caregaps_app)
    org = f"org-{unique_id}"
    await _seed_patient(runtime, org, "pat-1")
    await _publish(
        runtime,
        AppointmentBooked(**_appointment(org, "pat-1", "apt-1", "booked", type_id="type-x")),
    )
    await _publish(runtime, _fact_event(org, "pat-1", f"fact-dm-{unique_id}"))
    gap = await _gap_of(
        caregaps, mint(), "pat-1", lambda g: g["status"] == "open" and g["location_id"] is not None
    )
    path = f"/gaps/{gap['id']}"

    declined = await caregaps.post(
        f"{path}/decline", json={"reason": "Prefers to wait, synthetic note"}, headers=mint()
    )
    assert declined.status_code == 200, declined.text
    assert declined.json()["status"] == "declined"
    assert declined.json()["history"][-1]["reason"] == "Prefers to wait, synthetic note"
    again = await caregaps.post(f"{path}/decline", json={"reason": "again"}, headers=mint())
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"
    assert (await caregaps.post(f"{path}/reopen", headers=mint())).json()["status"] == "open"
    excluded = await caregaps.post(
        f"{path}/exclude", json={"reason": "Seen elsewhere"}, headers=mint()
    )
    assert excluded.json()["status"] == "excluded"
    reopened = await caregaps.post(f"{path}/reopen", headers=mint())
    assert [h["cause"] for h in reopened.json()["history"]] == [
        None,
        "declined",
        "reopened",
        "exclusion",
        "reopened",
    ]
    blank = await caregaps.post(f"{path}/decline", json={"reason": ""}, headers=mint())
    assert blank.status_code == 422

    # Walls: another tenant, a location outside the scope, a role without the permission.
    assert (await caregaps.get(path, headers=mint(org="org-other"))).status_code == 404
    south = mint(roles=["care_coordinator"], loc=["loc-south"])
    assert (await caregaps.get(path, headers=south)).status_code == 403
    south_list = (await caregaps.get("/patients/pat-1/gaps", headers=south)).json()["items"]
    assert south_list == []
    north = mint(roles=["care_coordinator"], loc=["loc-north"])
    assert (await caregaps.get(path, headers=north)).status_code == 200
    front_desk = mint(roles=["front_desk"], loc=["loc-north"])
    refused = await caregaps.get(path, headers=front_desk)
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"
    assert (await caregaps.get("/population", headers=front_desk)).status_code == 403
    coordinator_job = await caregaps.post(
        "/evaluations", json={"location_id": "loc-south"}, headers=north
    )
    assert coordinator_job.status_code == 403  # a location outside the caller's scope
    job = (await caregaps.post("/evaluations", json={}, headers=mint())).json()
    assert (await caregaps.get(job["status_url"], headers=mint(org="org-other"))).status_code == 404
    provider = mint(roles=["provider"], loc=["loc-north"])
    assert (await caregaps.get(path, headers=provider)).status_code == 200
    assert (await caregaps.post("/evaluations", json={}, headers=provider)).status_code == 403

    # A patient sees its own gaps only.
    own = mint(roles=["patient"], act="patient", pat="pat-1", loc=[], amr=["pwd"])
    mine = await caregaps.get("/patients/pat-1/gaps", headers=own)
    assert [g["id"] for g in mine.json()["items"] if g["measure_id"] == MEASURE] == [gap["id"]]
    stranger = mint(roles=["patient"], act="patient", pat="pat-2", loc=[], amr=["pwd"])
    assert (await caregaps.get("/patients/pat-1/gaps", headers=stranger)).status_code == 403
    assert (await caregaps.get(path, headers=stranger)).status_code == 403

    # A sensitive location's gaps: only staff whose scope names it, not an org-wide scope.
    await _seed_location(runtime, org, "loc-north")
    assert (await caregaps.get(path, headers=mint())).status_code == 403
    assert (await caregaps.get(path, headers=north)).status_code == 200
    population = (await caregaps.get("/population", headers=mint())).json()
    assert population["items"] == []


async def test_a_merge_moves_facts_and_gaps_to_the_surviving_record(
    caregaps: httpx.AsyncClient, caregaps_app: FastAPI, mint: Mint, unique_id: str
) -> None:
    runtime = _runtime(caregaps_app)
    org = f"org-{unique_id}"
    await _seed_patient(runtime, org, "pat-dup")
    await _seed_patient(runtime, org, "pat-1")
    await _publish(runtime, _fact_event(org, "pat-dup", f"fact-dm-{unique_id}"))
    duplicate = await _gap_of(caregaps, mint(), "pat-dup", lambda g: g["status"] == "open")
    recent = Fact(
        f"fact-a1c-{unique_id}",
        "observation",
        "final",
        (Coding("loinc", "4548-4"),),
        date(2026, 2, 1),
        quantities=(Quantity(6.5, "%"),),
    )
    await _seed_fact(runtime, org, "pat-1", recent)

    await _publish(
        runtime,
        PatientMerged(
            surviving_patient_id="pat-1",
            merged_patient_id="pat-dup",
            org_id=org,
            merged_at=datetime(2026, 3, 2, 8, 0, tzinfo=UTC),
        ),
    )
    # The survivor now has the diabetes and the recent result: the moved gap closes.
    moved = await _gap_of(caregaps, mint(), "pat-1", lambda g: g["status"] == "closed")
    assert moved["id"] == duplicate["id"]
    left = (await caregaps.get("/patients/pat-dup/gaps", headers=mint())).json()["items"]
    assert left == []


async def test_a_population_job_resumes_after_a_restart_from_its_committed_batch(
    caregaps_settings: CaregapsSettings,
    issuer: TestTokenIssuer,
    clock: FrozenClock,
    mint: Mint,
    unique_id: str,
) -> None:
    # The worker looks for jobs once at start, then not for an hour: the test works the
    # first batch itself, then "restarts" the service.
    settings = caregaps_settings.model_copy(update={"evaluation_poll_interval_s": 3600})
    org = f"org-{unique_id}"
    patients = ["pat-a", "pat-b", "pat-c"]
    first_app = create_app(settings, clock=clock, jwks=StaticJwksSource(issuer.jwks_document()))
    async with running_app(first_app) as client:
        runtime = _runtime(first_app)
        for patient in patients:
            await _seed_patient(runtime, org, patient)
            diabetes = Fact(
                f"fact-{patient}-{unique_id}",
                "condition",
                "active",
                (Coding("icd-10-cm", "E11.9"),),
                date(2020, 1, 1),
            )
            await _seed_fact(runtime, org, patient, diabetes)
        await asyncio.sleep(0.5)  # the worker's look at start is over: it sleeps now
        started = await client.post("/evaluations", json={}, headers=mint())
        url = started.json()["status_url"]
        assert await run_batch(runtime)
        halfway = (await client.get(url, headers=mint())).json()
        assert (halfway["status"], halfway["total"], halfway["done"]) == ("running", 3, 2)

    second_app = create_app(settings, clock=clock, jwks=StaticJwksSource(issuer.jwks_document()))
    async with running_app(second_app) as client:
        runtime = _runtime(second_app)
        deadline = time.monotonic() + 20
        body: dict[str, Any] = {}
        while time.monotonic() < deadline:
            body = (await client.get(url, headers=mint())).json()
            if body["status"] == "done":
                break
            await asyncio.sleep(0.1)
        assert (body["status"], body["done"], body["percent"]) == ("done", 3, 100.0)
        # Each patient was evaluated by one batch only: one HbA1c gap opened per patient.
        await asyncio.sleep(1.0)
        records = await read_topic(
            runtime.settings.kafka_bootstrap, runtime.topic("careloop.caregaps")
        )
        opened = [
            json.loads(r.value)
            for r in records
            if r.value and b"gap.opened" in dict(r.headers).get("ce_type", b"")
        ]
        hba1c = sorted(e["patient_id"] for e in opened if e["measure_id"] == MEASURE)
        assert hba1c == patients


class PatientsRecords:
    """Stands in for the patients API's answer to care-gaps' demographics read (the read
    itself, with a service token, is the kit's `RecordReader`); counts the reads."""

    def __init__(self) -> None:
        self.birth_dates: dict[str, date] = {}
        self.reads: list[str] = []

    async def demographics(
        self, org_id: str, patient_id: str
    ) -> tuple[date | None, Sex | None] | None:
        self.reads.append(patient_id)
        birth = self.birth_dates.get(patient_id)
        return None if birth is None else (birth, "male")


async def test_registration_and_a_change_of_birth_date_read_the_demographics_again(
    caregaps_settings: CaregapsSettings,
    issuer: TestTokenIssuer,
    clock: FrozenClock,
    mint: Mint,
    unique_id: str,
) -> None:
    records = PatientsRecords()
    records.birth_dates["pat-1"] = date(1970, 5, 1)
    app = create_app(
        caregaps_settings,
        clock=clock,
        jwks=StaticJwksSource(issuer.jwks_document()),
        demographics=records,
    )
    org = f"org-{unique_id}"
    now = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    async with running_app(app) as client:
        runtime = _runtime(app)
        await _publish(
            runtime, PatientRegistered(patient_id="pat-1", org_id=org, registered_at=now)
        )
        await _publish(runtime, _fact_event(org, "pat-1", f"fact-dm-{unique_id}"))
        await _gap_of(client, mint(), "pat-1", lambda g: g["status"] == "open")

        def update(*fields: str, version: int) -> PatientUpdated:
            return PatientUpdated(
                patient_id="pat-1",
                org_id=org,
                changed_fields=fields,
                version=version,
                updated_at=now,
            )

        await _publish(runtime, update("telecom.email", version=2))
        # A corrected birth date puts the patient past the measure's 75 years.
        records.birth_dates["pat-1"] = date(1940, 5, 1)
        await _publish(runtime, update("birth_date", version=3))
        left = await _gap_of(client, mint(), "pat-1", lambda g: g["status"] == "not-applicable")
        assert records.reads == ["pat-1", "pat-1"]
        detail = (await client.get(f"/gaps/{left['id']}", headers=mint())).json()
        assert detail["history"][-1]["cause"] == "left-population"
