"""The synthetic demo practice seeded by `careloop dev up`.

Every value here is invented for demonstration and marked as synthetic.
"""

from __future__ import annotations

import secrets
from typing import Any

import httpx

from careloop_kit.auth.permissions import OWN_RECORD_ROLES, ROLES

DEMO_EMAIL_DOMAIN = "demo-group.example.org"

# (name, IANA time zone, sensitive): two time zones, one behavioral-health location.
DEMO_LOCATIONS = [
    ("North Clinic (synthetic)", "America/Chicago", False),
    ("South Behavioral Health (synthetic)", "America/Chicago", True),
    ("West Clinic (synthetic)", "America/Los_Angeles", False),
]
# The location manager runs the North clinic and the front desk works at the West one;
# everyone else sees every location.
SINGLE_LOCATION_ROLES = {"location_manager": 0, "front_desk": 2}
STAFF_ROLES = [role for role in ROLES if role not in OWN_RECORD_ROLES]


def _password() -> str:
    # Generated per machine: never a fixed credential in the repository.
    return secrets.token_urlsafe(12) + "-Aa1"


def seed_identity(identity_url: str, bootstrap_token: str) -> dict[str, Any]:
    """Create the demo organization, its locations and one staff login per role."""
    headers = {"X-Bootstrap-Token": bootstrap_token}
    with httpx.Client(base_url=identity_url, timeout=30, headers=headers) as client:
        org = client.post("/organizations", json={"name": "Demo Medical Group (synthetic)"})
        org.raise_for_status()
        org_id = str(org.json()["id"])
        locations = []
        for name, time_zone, sensitive in DEMO_LOCATIONS:
            created = client.post(
                f"/organizations/{org_id}/locations",
                json={"name": name, "time_zone": time_zone, "sensitive": sensitive},
            )
            created.raise_for_status()
            locations.append({"id": created.json()["id"], "name": name, "time_zone": time_zone})
        users = []
        for index, role in enumerate(STAFF_ROLES):
            # Location managers and front desk work at one clinic; the rest see all.
            scope: list[str] | str = (
                [locations[index % 2 * 2]["id"]]
                if role in ("location_manager", "front_desk")
                else "*"
            )
            email = f"{role.replace('_', '.')}@{DEMO_EMAIL_DOMAIN}"
            password = _password()
            created = client.post(
                f"/organizations/{org_id}/users",
                json={
                    "email": email,
                    "display_name": f"Demo {role.replace('_', ' ').title()} (synthetic)",
                    "password": password,
                    "roles": [role],
                    "locations": scope,
                },
            )
            created.raise_for_status()
            users.append({"role": role, "email": email, "password": password, "locations": scope})
    return {
        "note": "Synthetic demo accounts for local development only.",
        "org_id": org_id,
        "locations": locations,
        "users": users,
    }


def demo_patients() -> list[dict[str, object]]:
    """Registration bodies of fictional patients (SYNTHETIC DATA, not real people)."""
    return [
        {
            "name": {"family": "Synthetic-Ortega", "given": ["Demo"]},
            "birth_date": "1961-02-03",
            "sex": "female",
            "phones": ["+1 555 010 0101"],
            "emails": ["demo.ortega@example.org"],
            "preferred_language": "es",
        },
        {
            "name": {"family": "Synthetic-Nakamura", "given": ["Demo"]},
            "birth_date": "1984-07-19",
            "sex": "male",
            "phones": ["+1 555 010 0102"],
            "emails": ["demo.nakamura@example.org"],
            "preferred_language": "en",
        },
        {
            "name": {"family": "Synthetic-Okafor", "given": ["Demo"]},
            "birth_date": "1999-11-30",
            "sex": "other",
            "phones": ["+1 555 010 0103"],
            "emails": ["demo.okafor@example.org"],
            "preferred_language": "en",
        },
    ]
