"""The demo practice's schedule, seeded by `careloop dev up` through the public gateway.

An operator opening a location for booking does the same calls with an admin login:
the location's scheduling settings (time zone and sensitivity as identity holds them),
providers, visit types, weekday hours and reminder settings. Every step reads what
exists first, so seeding the same data again changes nothing. All names are invented
and marked as synthetic.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from time import monotonic, sleep
from typing import Any

import httpx

from careloop_kit.auth import totp

# Visit types of the whole organization (scheduling keeps them per organization).
DEMO_VISIT_TYPES: list[dict[str, Any]] = [
    {"name": "Office visit (synthetic)", "duration_minutes": 30, "patient_kind": "established"},
    {"name": "New patient visit (synthetic)", "duration_minutes": 60, "patient_kind": "new"},
    {
        "name": "Telehealth follow-up (synthetic)",
        "duration_minutes": 20,
        "visit_category": "telehealth",
        "patient_kind": "established",
    },
]

# Providers by the demo location's name (see `careloop_cli.demo.DEMO_LOCATIONS`).
DEMO_PROVIDERS: dict[str, list[str]] = {
    "North Clinic (synthetic)": ["Dr. Demo Alvarez (synthetic)", "Dr. Demo Chen (synthetic)"],
    "South Behavioral Health (synthetic)": ["Demo Therapist Iqbal (synthetic)"],
    "West Clinic (synthetic)": ["Dr. Demo Novak (synthetic)"],
}

# Monday to Friday, morning and afternoon with a lunch break, in the location's own zone.
WEEKDAYS = range(5)
BUSINESS_HOURS = [(time(9, 0), time(12, 0)), (time(13, 0), time(17, 0))]

# Quiet hours (20:00-08:00 by default) rightly hold an automated text until morning, so
# the README's booking would show its confirmation only by day at the clinic. The demo
# practice keeps one quiet minute (scheduling refuses none at all) so the journey works
# at any hour; a real practice keeps the default.
DEMO_QUIET_HOURS = {"quiet_hours_start": "03:00:00", "quiet_hours_end": "03:01:00"}

_RATE_LIMITED_RETRIES = 5
# Scheduling learns a location from identity's events; a fresh stack applies them within
# seconds. A location older than those events has none: one unchanged edit republishes it.
_VIEW_WAIT_S = 90.0
_REPUBLISH_AFTER_S = 20.0


@dataclass(frozen=True)
class ScheduleSeeded:
    """What one seeding found and what it added."""

    locations: int
    providers: int
    visit_types: int
    windows: int
    created: int

    def summary(self) -> str:
        return (
            f"{self.locations} locations, {self.providers} providers, "
            f"{self.visit_types} visit types, {self.windows} weekly windows "
            f"({self.created} added this time)"
        )


class _Gateway:
    """Calls through the gateway with one bearer token; a 429 waits and retries."""

    def __init__(self, client: httpx.Client, token: str) -> None:
        self.client = client
        self.headers = {"Authorization": f"Bearer {token}"}

    def call(self, method: str, path: str, what: str, body: Any = None) -> Any:
        for _ in range(_RATE_LIMITED_RETRIES):
            response = self.client.request(method, path, json=body, headers=self.headers)
            if response.status_code != 429:
                break
            sleep(float(response.headers.get("Retry-After", "1")))
        if response.is_error:
            raise RuntimeError(f"{what} failed: HTTP {response.status_code} {response.text[:300]}")
        return response.json()


def sign_in_admin(client: httpx.Client, org_id: str, admin: dict[str, Any]) -> str:
    """The org admin's access token, signed in through the gateway with password and a
    one-time code computed from the TOTP secret `make run` keeps in demo-logins.json."""
    secret = totp.from_base32(admin["totp_secret"])
    credentials = {"org_id": org_id, "email": admin["email"], "password": admin["password"]}
    for attempt in range(3):
        now = datetime.now(UTC)
        # The latest step identity accepts: an earlier sign-in may have spent the others.
        code = totp.totp(secret, now + timedelta(seconds=totp.STEP_S * totp.WINDOW))
        response = client.post("/identity/auth/login", json={**credentials, "otp": code})
        if response.status_code == 200:
            return str(response.json()["access_token"])
        if response.status_code != 401 or attempt == 2:
            break
        # That step is spent too (a sign-in moments ago): the next one is fresh.
        sleep(totp.STEP_S - now.timestamp() % totp.STEP_S + 1)
    raise RuntimeError(
        f"the demo org admin's sign-in failed: HTTP {response.status_code} {response.text[:300]}"
    )


def wait_for_location_view(api: _Gateway, org_id: str, location: dict[str, Any]) -> None:
    """Wait until scheduling holds its view of an identity `location` (built from the
    location events), republishing the location once if it takes too long."""
    path = f"/scheduling/locations/{location['id']}"
    began = monotonic()
    republished = False
    while True:
        response = api.client.get(path, headers=api.headers)
        if response.status_code == 200:
            return
        if response.status_code not in (404, 429):
            raise RuntimeError(
                f"reading {location['name']} in scheduling failed: "
                f"HTTP {response.status_code} {response.text[:300]}"
            )
        waited = monotonic() - began
        if not republished and waited > _REPUBLISH_AFTER_S:
            api.call(
                "PATCH",
                f"/identity/organizations/{org_id}/locations/{location['id']}",
                f"announcing {location['name']} again",
                {"name": location["name"]},
            )
            republished = True
        if waited > _VIEW_WAIT_S:
            raise RuntimeError(
                f"scheduling has not learnt {location['name']} from identity's location "
                f"events after {_VIEW_WAIT_S:.0f} s: check the scheduling log and the "
                "careloop.scheduling.locations consumer group"
            )
        sleep(0.5)


def _same_time(wire: str, wanted: time) -> bool:
    return time.fromisoformat(wire) == wanted


def seed_scheduling(
    gateway_url: str, logins: dict[str, Any], *, admin_token: str | None = None
) -> ScheduleSeeded:
    """Open every demo location for booking, adding only what is not there yet.

    `gateway_url` is the public API base (`.../api/v1`); `logins` the demo logins file;
    `admin_token` a token of the org admin signed in with a one-time code (else the
    admin signs in here)."""
    org_id = logins["org_id"]
    admin = next(u for u in logins["users"] if u["role"] == "org_admin")
    created = 0
    with httpx.Client(base_url=gateway_url, timeout=30) as client:
        api = _Gateway(client, admin_token or sign_in_admin(client, org_id, admin))
        locations = api.call(
            "GET", f"/identity/organizations/{org_id}/locations", "listing the locations"
        )["items"]
        demo = [loc for loc in locations if loc["name"] in DEMO_PROVIDERS]

        types = api.call("GET", "/scheduling/appointment-types", "listing visit types")["items"]
        have_types = {t["name"] for t in types}
        for kind in DEMO_VISIT_TYPES:
            if kind["name"] not in have_types:
                api.call("POST", "/scheduling/appointment-types", f"adding {kind['name']}", kind)
                created += 1

        providers = windows = 0
        for location in demo:
            loc_id = location["id"]
            wait_for_location_view(api, org_id, location)
            reminders = api.call(
                "GET",
                f"/scheduling/locations/{loc_id}/reminder-settings",
                f"reading {location['name']}'s reminder settings",
            )
            if any(reminders.get(k) is None for k in DEMO_QUIET_HOURS):
                api.call(
                    "PUT",
                    f"/scheduling/locations/{loc_id}/reminder-settings",
                    f"setting {location['name']}'s reminder settings",
                    DEMO_QUIET_HOURS,
                )
                created += 1
            staff = api.call(
                "GET",
                f"/scheduling/providers?location_id={loc_id}",
                f"listing {location['name']}'s providers",
            )["items"]
            by_name = {p["display_name"]: p for p in staff}
            for name in DEMO_PROVIDERS[location["name"]]:
                provider = by_name.get(name)
                if provider is None:
                    provider = api.call(
                        "POST",
                        "/scheduling/providers",
                        f"adding {name}",
                        {"display_name": name, "location_ids": [loc_id]},
                    )
                    created += 1
                providers += 1
                schedule = api.call(
                    "GET",
                    f"/scheduling/providers/{provider['id']}/availability",
                    f"reading {name}'s hours",
                )["windows"]
                for weekday in WEEKDAYS:
                    for start, end in BUSINESS_HOURS:
                        windows += 1
                        if any(
                            w["location_id"] == loc_id
                            and w["weekday"] == weekday
                            and _same_time(w["start"], start)
                            and _same_time(w["end"], end)
                            for w in schedule
                        ):
                            continue
                        api.call(
                            "POST",
                            f"/scheduling/providers/{provider['id']}/availability",
                            f"opening {name}'s hours",
                            {
                                "location_id": loc_id,
                                "weekday": weekday,
                                "start": start.isoformat("minutes"),
                                "end": end.isoformat("minutes"),
                            },
                        )
                        created += 1
    return ScheduleSeeded(
        locations=len(demo),
        providers=providers,
        visit_types=len(DEMO_VISIT_TYPES),
        windows=windows,
        created=created,
    )
