"""Identity owns locations; scheduling's view follows its events. Against real
PostgreSQL, Kafka and OpenBao, with identity and scheduling running side by side on one
topic prefix: a location created and changed through identity's admin API reaches
scheduling's view (zone, name, sensitivity, feature switches); a redelivered event and
an older one change nothing; and a feature switch turned off in identity stops the
workflow it names at that location only.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

import careloop_identity
from careloop_contracts.identity import LocationChanged, LocationCreated
from careloop_identity.app import create_app as create_identity
from careloop_identity.settings import IdentitySettings
from careloop_kit.auth import StaticJwksSource, totp
from careloop_kit.auth.testing import TestTokenIssuer
from careloop_kit.clock import FrozenClock
from careloop_kit.db.migrate import upgrade_async
from careloop_kit.testing.apps import running_app
from careloop_kit.testing.kafka import header, read_topic
from careloop_scheduling.app import create_app as create_scheduling
from careloop_scheduling.settings import SchedulingSettings
from careloop_scheduling.store.tables import platform
from careloop_scheduling.testing.locations import announce_location, location_view, runtime_of

from .practice import MONDAY_NINE, NOW, Practice, open_catalog

pytestmark = pytest.mark.service

BOOTSTRAP = {"X-Bootstrap-Token": "test-bootstrap-token"}
PASSWORD = "Correct horse 42 battery"


@dataclass
class Pair:
    identity: httpx.AsyncClient
    identity_settings: IdentitySettings
    scheduling: httpx.AsyncClient
    issuer: TestTokenIssuer
    org_id: str
    admin: dict[str, str]
    """Identity: the organization's first admin, signed in with a second factor."""

    def staff(self, **claims: Any) -> dict[str, str]:
        """Scheduling: a token of the same organization (org admin of every location)."""
        values: dict[str, Any] = {
            "org": self.org_id,
            "sub": "admin",
            "sid": "sid-admin",
            "roles": ["org_admin"],
            "loc": ["*"],
            "amr": ["pwd", "otp"],
        }
        values.update(claims)
        return {"Authorization": f"Bearer {self.issuer.mint(**values)}"}

    async def add_location(self, **body: Any) -> str:
        created = await self.identity.post(
            f"/organizations/{self.org_id}/locations", json=body, headers=self.admin
        )
        assert created.status_code == 201, created.text
        return str(created.json()["id"])

    async def change_location(self, location_id: str, **body: Any) -> dict[str, Any]:
        changed = await self.identity.patch(
            f"/organizations/{self.org_id}/locations/{location_id}", json=body, headers=self.admin
        )
        assert changed.status_code == 200, changed.text
        result: dict[str, Any] = changed.json()
        return result

    async def view(
        self, location_id: str, until: Callable[[dict[str, Any]], bool] = lambda _: True
    ) -> dict[str, Any]:
        view: dict[str, Any] = await location_view(
            self.scheduling, self.staff(), location_id, until
        )
        return view


async def _first_admin(identity: httpx.AsyncClient) -> tuple[str, dict[str, str]]:
    email = "first-admin@example.org"
    org = await identity.post(
        "/organizations",
        json={
            "name": "Lakeside Clinics",
            "admin": {"email": email, "display_name": "Ada Admin", "password": PASSWORD},
        },
        headers=BOOTSTRAP,
    )
    assert org.status_code == 201, org.text
    credentials = {"org_id": org.json()["id"], "email": email, "password": PASSWORD}
    first = await identity.post("/auth/login", json=credentials)
    bearer = {"Authorization": f"Bearer {first.json()['access_token']}"}
    enrolled = await identity.post("/auth/mfa/enroll", headers=bearer)
    secret = totp.from_base32(enrolled.json()["secret"])
    now = datetime.now(UTC)
    verified = await identity.post(
        "/auth/mfa/verify", json={"code": totp.totp(secret, now)}, headers=bearer
    )
    assert verified.status_code == 200, verified.text
    # A one-time code is good once: sign in with the next step's.
    code = totp.totp(secret, now + timedelta(seconds=totp.STEP_S))
    signed_in = await identity.post("/auth/login", json={**credentials, "otp": code})
    assert signed_in.status_code == 200, signed_in.text
    return org.json()["id"], {"Authorization": f"Bearer {signed_in.json()['access_token']}"}


@pytest.fixture
async def pair(
    make_database: Callable[[str], Any],
    kafka_bootstrap: str,
    vault_addr: str,
    vault_tokens: dict[str, str],
    topic_prefix: str,
) -> AsyncIterator[Pair]:
    common: dict[str, Any] = {
        "environment": "test",
        "kafka_bootstrap": kafka_bootstrap,
        "vault_addr": vault_addr,
        "topic_prefix": topic_prefix,
        "log_json": False,
    }
    identity_dsn = await make_database("identity")
    await upgrade_async(Path(careloop_identity.__file__).parent / "migrations", identity_dsn)
    scheduling_dsn = await make_database("scheduling")
    await upgrade_async(
        Path(__file__).parents[1] / "careloop_scheduling" / "migrations", scheduling_dsn
    )
    identity_settings = IdentitySettings(
        database_url=identity_dsn,
        vault_token=vault_tokens["identity"],
        bootstrap_token=BOOTSTRAP["X-Bootstrap-Token"],
        **common,
    )
    clock = FrozenClock(NOW)
    issuer = TestTokenIssuer(clock)
    scheduling_app = create_scheduling(
        SchedulingSettings(
            database_url=scheduling_dsn, vault_token=vault_tokens["scheduling"], **common
        ),
        clock=clock,
        jwks=StaticJwksSource(issuer.jwks_document()),
    )
    async with (
        running_app(create_identity(identity_settings)) as identity,
        running_app(scheduling_app) as scheduling,
    ):
        org_id, admin = await _first_admin(identity)
        yield Pair(identity, identity_settings, scheduling, issuer, org_id, admin)


async def _identity_record(pair: Pair, location_id: str, event_type: str) -> Any:
    records = await read_topic(
        pair.identity_settings.kafka_bootstrap,
        f"{pair.identity_settings.topic_prefix}careloop.identity",
    )
    (found,) = [
        r for r in records if r.key == location_id.encode() and header(r, "ce_type") == event_type
    ]
    return found


async def _inboxed(pair: Pair, event_id: str) -> int:
    runtime = runtime_of(pair.scheduling)
    async with runtime.sessionmaker() as session:
        count: int = await session.scalar(
            select(func.count())
            .select_from(platform.inbox)
            .where(platform.inbox.c.event_id == event_id)
        )
    return count


async def test_scheduling_follows_identitys_locations_and_ignores_repeats_and_old_news(
    pair: Pair,
) -> None:
    location_id = await pair.add_location(name="Harbor Clinic", time_zone="America/Denver")
    created = await pair.view(location_id)
    assert created["time_zone"] == "America/Denver"
    assert created["display_name"] == "Harbor Clinic"
    assert created["sensitive"] is False
    assert created["features"] == {}

    await pair.change_location(
        location_id,
        name="Harbor Counseling",
        time_zone="America/Phoenix",
        sensitive=True,
        features={"waitlist": False, "reminders": True},
    )
    changed = await pair.view(location_id, lambda v: v["time_zone"] == "America/Phoenix")
    assert changed["display_name"] == "Harbor Counseling"
    assert changed["sensitive"] is True
    assert changed["features"] == {"waitlist": False, "reminders": True}

    # The creation again, exactly as the broker would redeliver it (same id and headers),
    # and an older change under a new id: neither may take the view back.
    original = await _identity_record(pair, location_id, LocationCreated.event_type)
    runtime = runtime_of(pair.scheduling)
    await runtime.producer.send_and_wait(
        original.topic,
        value=bytes(original.value),
        key=bytes(original.key),
        headers=[(name, bytes(value)) for name, value in original.headers],
    )
    stale_id = await announce_location(
        pair.scheduling,
        pair.org_id,
        location_id,
        time_zone="America/Denver",
        name="Harbor Clinic",
        occurred_at=datetime.fromisoformat(json.loads(original.value)["occurred_at"]),
        changed=True,
    )
    # A later genuine change on the same key (so the same partition, behind both).
    await pair.change_location(location_id, features={"two_way_confirmation": False})
    latest = await pair.view(
        location_id, lambda v: v["features"].get("two_way_confirmation") is False
    )

    assert latest["time_zone"] == "America/Phoenix"
    assert latest["display_name"] == "Harbor Counseling"
    assert latest["sensitive"] is True
    assert latest["features"] == {
        "waitlist": False,
        "reminders": True,
        "two_way_confirmation": False,
    }
    assert await _inboxed(pair, header(original, "ce_id") or "") == 1
    assert await _inboxed(pair, stale_id) == 1


async def _reminder_timers(pair: Pair, appointment_id: str) -> int:
    runtime = runtime_of(pair.scheduling)
    timer = platform.timer
    async with runtime.sessionmaker() as session:
        count: int = await session.scalar(
            select(func.count())
            .select_from(timer)
            .where(timer.c.kind == "reminder", timer.c.dedup_key.like(f"{appointment_id}:%"))
        )
    return count


async def _book(pair: Pair, practice: Practice, patient_id: str, start: datetime) -> str:
    booked = await pair.scheduling.post(
        "/appointments", json=practice.booking(patient_id, start), headers=pair.staff()
    )
    assert booked.status_code == 201, booked.text
    return str(booked.json()["id"])


def _waitlisting(practice: Practice, patient_id: str) -> dict[str, str]:
    return {
        "patient_id": patient_id,
        "location_id": practice.location_id,
        "appointment_type_id": practice.type_id,
        "earliest_date": "2030-03-04",
        "latest_date": "2030-03-29",
    }


async def test_a_switch_turned_off_in_identity_stops_its_workflow_there_only(
    pair: Pair,
) -> None:
    north_id = await pair.add_location(name="North", time_zone="America/New_York")
    south_id = await pair.add_location(name="South", time_zone="America/New_York")
    await pair.view(north_id)
    await pair.view(south_id)
    north = await open_catalog(pair.scheduling, pair.staff(), north_id)
    south = await open_catalog(pair.scheduling, pair.staff(), south_id)
    before = await _book(pair, north, "pat-before", MONDAY_NINE)
    assert await _reminder_timers(pair, before) > 0

    await pair.change_location(north_id, features={"reminders": False, "waitlist": False})
    await pair.view(north_id, lambda v: v["features"].get("reminders") is False)

    at_north = await _book(pair, north, "pat-north", MONDAY_NINE + timedelta(minutes=30))
    at_south = await _book(pair, south, "pat-south", MONDAY_NINE + timedelta(minutes=30))
    wait_north = await pair.scheduling.post(
        "/waitlist", json=_waitlisting(north, "pat-wait-n"), headers=pair.staff()
    )
    wait_south = await pair.scheduling.post(
        "/waitlist", json=_waitlisting(south, "pat-wait-s"), headers=pair.staff()
    )

    assert await _reminder_timers(pair, at_north) == 0
    assert await _reminder_timers(pair, at_south) > 0
    assert wait_north.status_code == 409, wait_north.text
    assert wait_south.status_code == 201, wait_south.text

    # Back on: the next booking there is reminded again.
    await pair.change_location(north_id, features={"reminders": True})
    await pair.view(north_id, lambda v: v["features"].get("reminders") is True)
    again = await _book(pair, north, "pat-again", MONDAY_NINE + timedelta(hours=1))
    assert await _reminder_timers(pair, again) > 0


async def test_a_location_event_names_no_address(pair: Pair) -> None:
    location_id = await pair.add_location(
        name="East",
        time_zone="America/Chicago",
        address={"line": ["1 Harbor Way"], "city": "Springfield"},
    )
    await pair.view(location_id)
    record = await _identity_record(pair, location_id, LocationCreated.event_type)
    assert "Harbor Way" not in record.value.decode()
    assert "address" not in json.loads(record.value)
    await pair.change_location(location_id, name="East Clinic")
    await pair.view(location_id, lambda v: v["display_name"] == "East Clinic")
    changed = await _identity_record(pair, location_id, LocationChanged.event_type)
    assert "Harbor Way" not in changed.value.decode()
