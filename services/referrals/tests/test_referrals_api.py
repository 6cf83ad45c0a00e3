"""The referrals service against real PostgreSQL, Kafka and OpenBao: the directory, a
referral through its whole loop, refused and concurrent steps, scope and tenancy, the
clinical reason sealed at rest and withheld from who may not read it, and the
loop-closure figures."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from careloop_contracts import prefixed
from careloop_kit.clock import FrozenClock
from careloop_kit.testing.kafka import header, wait_for_records
from careloop_kit.testing.services import Mint
from careloop_referrals.settings import ReferralsSettings

pytestmark = pytest.mark.service


REASON = "Suspected rotator cuff tear, MRI attached, marker-Q7Z"
VALID_NPIS = ("1234567893", "1245319599")


async def _directory_entry(
    client: httpx.AsyncClient, headers: dict[str, str], npi: str, **overrides: object
) -> str:
    body: dict[str, object] = {
        "kind": "provider",
        "npi": npi,
        "name": f"Dr. Referrer {npi}",
        "specialty": "family-medicine",
        "contact": {"email": f"referrer-{npi}@clinic.example"},
        "preferred_channel": "secure-email",
    }
    body.update(overrides)
    response = await client.post("/referrals/directory", json=body, headers=headers)
    assert response.status_code == 201, response.text
    entry_id: str = response.json()["id"]
    return entry_id


async def _referral(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    referrer: str,
    *,
    location: str = "loc-north",
    patient: str = "pat-1",
) -> dict[str, object]:
    response = await client.post(
        "/referrals",
        json={
            "location_id": location,
            "patient_id": patient,
            "direction": "inbound",
            "urgency": "urgent",
            "referring_provider_id": referrer,
            "reason": REASON,
        },
        headers=headers,
    )
    assert response.status_code == 201, response.text
    body: dict[str, object] = response.json()
    return body


async def _move(
    client: httpx.AsyncClient, headers: dict[str, str], referral_id: object, to: str, **more: object
) -> httpx.Response:
    return await client.post(
        f"/referrals/{referral_id}/transitions", json={"to": to, **more}, headers=headers
    )


async def test_directory_checks_the_npi_and_keeps_one_entry_per_npi(
    referrals: httpx.AsyncClient, mint: Mint
) -> None:
    admin = mint()
    entry_id = await _directory_entry(referrals, admin, VALID_NPIS[0])
    read = await referrals.get(f"/referrals/directory/{entry_id}", headers=admin)
    assert read.json()["npi"] == VALID_NPIS[0]

    typo = await referrals.post(
        "/referrals/directory",
        json={
            "kind": "provider",
            "npi": "1234567890",
            "name": "Dr. Typo",
            "contact": {"email": "t@clinic.example"},
        },
        headers=admin,
    )
    assert typo.status_code == 422
    assert typo.headers["content-type"].startswith("application/problem+json")
    assert "check digit" in typo.json()["detail"]

    again = await referrals.post(
        "/referrals/directory",
        json={
            "kind": "provider",
            "npi": VALID_NPIS[0],
            "name": "Dr. Twice",
            "contact": {"email": "twice@clinic.example"},
        },
        headers=admin,
    )
    assert again.status_code == 409
    assert again.json()["npi"] == VALID_NPIS[0]

    no_address = await referrals.post(
        "/referrals/directory",
        json={"kind": "organization", "name": "Ortho Group", "preferred_channel": "fax"},
        headers=admin,
    )
    assert no_address.status_code == 422
    assert "fax" in no_address.json()["detail"]

    changed = await referrals.patch(
        f"/referrals/directory/{entry_id}", json={"specialty": "orthopedics"}, headers=admin
    )
    assert changed.json()["specialty"] == "orthopedics"
    found = await referrals.get(
        "/referrals/directory", params={"npi": VALID_NPIS[0]}, headers=admin
    )
    assert [e["id"] for e in found.json()["items"]] == [entry_id]


async def test_a_referral_goes_through_its_loop_with_its_history_and_events(
    referrals: httpx.AsyncClient,
    mint: Mint,
    clock: FrozenClock,
    referrals_settings: ReferralsSettings,
    topic_prefix: str,
) -> None:
    referrer = await _directory_entry(referrals, mint(), VALID_NPIS[0])
    created = await _referral(referrals, mint(), referrer)
    assert created["stage"] == "received"
    assert created["task_status"] == "received"
    assert created["reason"] == REASON
    assert "triaged" in created["allowed_next"]  # type: ignore[operator]

    steps = [
        ("triaged", {}),
        ("patient-contacted", {}),
        ("scheduled", {"appointment_id": "apt-42"}),
        ("seen", {}),
        ("outcome-reported", {}),
    ]
    for stage, extra in steps:
        clock.advance(timedelta(days=1))
        moved = await _move(referrals, mint(), created["id"], stage, **extra)
        assert moved.status_code == 200, moved.text
    final = moved.json()
    assert final["stage"] == "outcome-reported"
    assert final["task_status"] == "completed"
    assert final["allowed_next"] == []
    assert final["appointment_id"] == "apt-42"
    assert final["version"] == 6
    assert [(h["from_stage"], h["to_stage"]) for h in final["history"]] == [
        (None, "received"),
        ("received", "triaged"),
        ("triaged", "patient-contacted"),
        ("patient-contacted", "scheduled"),
        ("scheduled", "seen"),
        ("seen", "outcome-reported"),
    ]

    topic = prefixed("careloop.referrals", topic_prefix)
    records = await wait_for_records(
        referrals_settings.kafka_bootstrap,
        topic,
        lambda rs: sum(1 for r in rs if header(r, "ce_subject") == created["id"]) >= 6,
    )
    mine = [r for r in records if header(r, "ce_subject") == created["id"]]
    types = [header(r, "ce_type") for r in mine]
    assert types[0] == "careloop.referrals.referral.received.v1"
    assert types.count("careloop.referrals.referral.stage_changed.v1") == 5
    for record in mine:
        assert record.key == b"pat-1"
        assert b"marker-Q7Z" not in record.value  # the reason never travels
    last = json.loads(mine[-1].value)
    assert (last["from_stage"], last["stage"], last["task_status"]) == (
        "seen",
        "outcome-reported",
        "completed",
    )


async def test_an_invalid_step_is_refused_with_the_allowed_next_stages(
    referrals: httpx.AsyncClient, mint: Mint
) -> None:
    referrer = await _directory_entry(referrals, mint(), VALID_NPIS[0])
    created = await _referral(referrals, mint(), referrer)
    refused = await _move(referrals, mint(), created["id"], "seen")
    assert refused.status_code == 409
    problem = refused.json()
    assert problem["current_stage"] == "received"
    assert problem["allowed_next"] == sorted(
        ["triaged", "declined", "cancelled", "expired", "redirected"]
    )
    no_reason = await _move(referrals, mint(), created["id"], "declined")
    assert no_reason.status_code == 422
    assert "reason" in no_reason.json()["detail"]
    unchanged = await referrals.get(f"/referrals/{created['id']}", headers=mint())
    assert unchanged.json()["version"] == 1


async def test_of_concurrent_steps_on_one_referral_exactly_one_wins(
    referrals: httpx.AsyncClient, mint: Mint
) -> None:
    referrer = await _directory_entry(referrals, mint(), VALID_NPIS[0])
    created = await _referral(referrals, mint(), referrer)
    headers = mint()
    answers = await asyncio.gather(
        *(
            _move(
                referrals,
                headers,
                created["id"],
                "triaged" if i % 2 else "declined",
                reason="not our specialty",
                version=1,
            )
            for i in range(8)
        )
    )
    codes = sorted(a.status_code for a in answers)
    assert codes == [200] + [409] * 7
    after = (await referrals.get(f"/referrals/{created['id']}", headers=headers)).json()
    assert after["version"] == 2
    assert len(after["history"]) == 2


async def test_scope_tenancy_and_the_patients_own_referrals(
    referrals: httpx.AsyncClient, mint: Mint, unique_id: str
) -> None:
    referrer = await _directory_entry(referrals, mint(), VALID_NPIS[0])
    created = await _referral(referrals, mint(), referrer, location="loc-north", patient="pat-1")
    path = f"/referrals/{created['id']}"

    other_tenant = await referrals.get(path, headers=mint(org=f"org-other-{unique_id}"))
    assert other_tenant.status_code == 404
    south = mint(roles=["care_coordinator"], loc=["loc-south"])
    assert (await referrals.get(path, headers=south)).status_code == 403
    assert (await _move(referrals, south, created["id"], "triaged")).status_code == 403
    assert (await referrals.get("/referrals", headers=south)).json()["items"] == []
    north = mint(roles=["care_coordinator"], loc=["loc-north"])
    assert (await referrals.get(path, headers=north)).status_code == 200

    own = mint(roles=["patient"], act="patient", pat="pat-1", loc=[], amr=["pwd"])
    assert (await referrals.get(path, headers=own)).status_code == 200
    stranger = mint(roles=["patient"], act="patient", pat="pat-2", loc=[], amr=["pwd"])
    assert (await referrals.get(path, headers=stranger)).status_code == 403
    listed = await referrals.get("/referrals", params={"patient_id": "pat-1"}, headers=stranger)
    assert listed.status_code == 403
    assert (await referrals.get("/referrals", headers=stranger)).json()["items"] == []

    # The front desk moves the loop along without reading why the patient was referred.
    desk = mint(roles=["front_desk"], loc=["loc-north"], amr=["pwd"])
    seen_by_desk = (await referrals.get(path, headers=desk)).json()
    assert seen_by_desk["reason"] is None
    assert seen_by_desk["withheld_categories"] == ["clinical"]
    assert (await _move(referrals, desk, created["id"], "triaged")).status_code == 200


async def test_the_reason_is_sealed_at_rest(
    referrals: httpx.AsyncClient, mint: Mint, referrals_settings: ReferralsSettings
) -> None:
    referrer = await _directory_entry(referrals, mint(), VALID_NPIS[0])
    created = await _referral(referrals, mint(), referrer)
    await _move(referrals, mint(), created["id"], "declined", reason="Declined: marker-Q7Z")
    engine = create_async_engine(referrals_settings.database_url.get_secret_value())
    try:
        async with engine.connect() as connection:
            dump = await connection.execute(
                text(
                    "SELECT r.reason_ct, t.reason_ct FROM referral r "
                    "JOIN referral_transition t ON t.referral_id = r.id WHERE r.id = :id"
                ),
                {"id": created["id"]},
            )
            blobs = [bytes(b) for row in dump for b in row if b is not None]
    finally:
        await engine.dispose()
    assert len(blobs) == 3  # the referral's reason (twice, once per row) and the decline
    assert all(b"marker-Q7Z" not in blob for blob in blobs)
    read = (await referrals.get(f"/referrals/{created['id']}", headers=mint())).json()
    assert read["history"][-1]["reason"] == "Declined: marker-Q7Z"


async def test_loop_closure_figures_match_a_hand_computed_case(
    referrals: httpx.AsyncClient, mint: Mint, clock: FrozenClock
) -> None:
    referrer = await _directory_entry(referrals, mint(), VALID_NPIS[0])
    start = clock.now()
    # (location, stages entered, each a day later than the one before)
    plans = [
        ("loc-north", ["triaged", "scheduled", "seen", "outcome-reported"]),
        ("loc-north", ["triaged", "patient-contacted", "scheduled", "seen"]),
        ("loc-south", ["triaged", "expired"]),
        ("loc-south", ["redirected"]),
    ]
    ids = []
    for location, _ in plans:
        ids.append((await _referral(referrals, mint(), referrer, location=location))["id"])
    for day in range(1, 5):
        clock.set(start + timedelta(days=day))
        for referral_id, (_, stages) in zip(ids, plans, strict=True):
            if day <= len(stages):
                extra = {"appointment_id": "apt-x"} if stages[day - 1] == "scheduled" else {}
                moved = await _move(
                    referrals, mint(), referral_id, stages[day - 1], reason="per plan", **extra
                )
                assert moved.status_code == 200, moved.text
    report = await referrals.get(
        "/referrals/figures",
        params={
            "from": (start - timedelta(hours=1)).isoformat(),
            "to": (start + timedelta(hours=1)).isoformat(),
        },
        headers=mint(),
    )
    assert report.status_code == 200, report.text
    groups = {g["group"]: g for g in report.json()["groups"]}
    north, south = groups["loc-north"], groups["loc-south"]
    assert (north["referrals"], north["closed"], north["share_closed"]) == (2, 1, 0.5)
    assert north["median_days_to_scheduled"] == 2.5  # days 2 and 3
    assert north["median_days_to_seen"] == 3.5  # days 3 and 4
    assert north["median_days_to_report"] == 4.0
    assert (south["referrals"], south["closed"], south["share_closed"]) == (1, 0, 0.0)
    assert south["median_days_to_scheduled"] is None

    patient = mint(roles=["patient"], act="patient", pat="pat-1", loc=[], amr=["pwd"])
    assert (
        await referrals.get(
            "/referrals/figures",
            params={"from": start.isoformat(), "to": (start + timedelta(days=1)).isoformat()},
            headers=patient,
        )
    ).status_code == 403


async def test_a_partner_creates_referrals_only_at_its_own_locations(
    referrals: httpx.AsyncClient, mint: Mint
) -> None:
    referrer = await _directory_entry(referrals, mint(), VALID_NPIS[1])

    def partner(locations: list[str]) -> dict[str, str]:
        return mint(
            act="partner", sub="client-acme", roles=[], loc=locations, scope="referrals:create"
        )

    body = {
        "patient_id": "pat-1",
        "direction": "inbound",
        "referring_provider_id": referrer,
        "reason": REASON,
    }
    at_north = partner(["loc-north"])
    own = await referrals.post(
        "/referrals", json={**body, "location_id": "loc-north"}, headers=at_north
    )
    assert own.status_code == 201, own.text
    assert own.json()["reason"] is None  # a partner scope sees nothing clinical back
    elsewhere = await referrals.post(
        "/referrals", json={**body, "location_id": "loc-south"}, headers=at_north
    )
    assert elsewhere.status_code == 403
    everywhere = await referrals.post(
        "/referrals", json={**body, "location_id": "loc-south"}, headers=partner(["*"])
    )
    assert everywhere.status_code == 201, everywhere.text
