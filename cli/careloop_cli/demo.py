"""The synthetic demo practice seeded by `careloop dev up`.

Every value here is invented for demonstration and marked as synthetic.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx

from careloop_kit.auth import totp
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


@dataclass(frozen=True)
class AdminSession:
    """An organization's first org admin, signed in with a second factor."""

    org_id: str
    user_id: str
    email: str
    password: str
    totp_secret: str
    access_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


def _ok(response: httpx.Response, what: str) -> httpx.Response:
    if response.is_error:
        raise RuntimeError(f"{what} failed: HTTP {response.status_code} {response.text[:300]}")
    return response


def create_organization(
    client: httpx.Client,
    bootstrap_token: str,
    name: str,
    admin_email: str,
    *,
    admin_name: str = "Demo Org Admin (synthetic)",
) -> AdminSession:
    """Create an organization with its first org admin (the operator's bootstrap token),
    then sign the admin in the way every admin signs in: password, TOTP enrollment, and
    a sign-in with a one-time code. Everything else is created with that admin's token."""
    password = _password()
    org = _ok(
        client.post(
            "/organizations",
            json={
                "name": name,
                "admin": {"email": admin_email, "display_name": admin_name, "password": password},
            },
            headers={"X-Bootstrap-Token": bootstrap_token},
        ),
        "creating the organization",
    ).json()
    credentials = {"org_id": org["id"], "email": admin_email, "password": password}
    first = _ok(client.post("/auth/login", json=credentials), "the admin's first sign-in").json()
    bearer = {"Authorization": f"Bearer {first['access_token']}"}
    enrolled = _ok(client.post("/auth/mfa/enroll", headers=bearer), "TOTP enrollment").json()
    secret = totp.from_base32(enrolled["secret"])
    now = datetime.now(UTC)
    _ok(
        client.post("/auth/mfa/verify", json={"code": totp.totp(secret, now)}, headers=bearer),
        "TOTP verification",
    )
    # The verified code is spent; the next step's code is inside the drift window.
    next_code = totp.totp(secret, now + timedelta(seconds=totp.STEP_S))
    signed_in = _ok(
        client.post("/auth/login", json={**credentials, "otp": next_code}),
        "the admin's sign-in with a one-time code",
    ).json()
    return AdminSession(
        org_id=str(org["id"]),
        user_id=str(org["admin_user_id"]),
        email=admin_email,
        password=password,
        totp_secret=enrolled["secret"],
        access_token=signed_in["access_token"],
    )


def seed_identity(identity_url: str, bootstrap_token: str) -> tuple[dict[str, Any], AdminSession]:
    """Create the demo organization, its locations and one staff login per role; returns
    the logins and the org admin's session (signed in with a one-time code)."""
    with httpx.Client(base_url=identity_url, timeout=30) as client:
        admin = create_organization(
            client,
            bootstrap_token,
            "Demo Medical Group (synthetic)",
            f"org.admin@{DEMO_EMAIL_DOMAIN}",
        )
        org_id = admin.org_id
        locations = []
        for name, time_zone, sensitive in DEMO_LOCATIONS:
            created = _ok(
                client.post(
                    f"/organizations/{org_id}/locations",
                    json={"name": name, "time_zone": time_zone, "sensitive": sensitive},
                    headers=admin.headers,
                ),
                f"creating location {name}",
            )
            locations.append({"id": created.json()["id"], "name": name, "time_zone": time_zone})
        users: list[dict[str, Any]] = [
            {
                "role": "org_admin",
                "email": admin.email,
                "password": admin.password,
                "locations": "*",
                # Add it to an authenticator app: org admins sign in with a one-time code.
                "totp_secret": admin.totp_secret,
            }
        ]
        for role in STAFF_ROLES:
            if role == "org_admin":
                continue
            scope: list[str] | str = (
                [locations[SINGLE_LOCATION_ROLES[role]]["id"]]
                if role in SINGLE_LOCATION_ROLES
                else "*"
            )
            email = f"{role.replace('_', '.')}@{DEMO_EMAIL_DOMAIN}"
            password = _password()
            _ok(
                client.post(
                    f"/organizations/{org_id}/users",
                    json={
                        "email": email,
                        "display_name": f"Demo {role.replace('_', ' ').title()} (synthetic)",
                        "password": password,
                        "roles": [role],
                        "locations": scope,
                    },
                    headers=admin.headers,
                ),
                f"creating the {role} login",
            )
            users.append({"role": role, "email": email, "password": password, "locations": scope})
        partner = _ok(
            client.post(
                f"/organizations/{org_id}/clients",
                json=demo_partner_client(date.today()),
                headers=admin.headers,
            ),
            "registering the demo partner client",
        ).json()
    logins = {
        "note": "Synthetic demo accounts for local development only.",
        "org_id": org_id,
        "locations": locations,
        "users": users,
        "partner_clients": [
            {
                "name": partner["name"],
                "client_id": partner["client_id"],
                "client_secret": partner["client_secret"],
                "scopes": partner["scopes"],
                "token_url": "/oauth/token (grant_type=client_credentials, HTTP Basic)",
            }
        ],
    }
    return logins, admin


def demo_partner_client(today: date) -> dict[str, Any]:
    """A partner integration (a fictional patient-intake app) with a current BAA: it may
    look up and register patients (demographics and contact only), at 120 requests/min."""
    return {
        "name": "Demo Intake App (synthetic partner)",
        "scopes": ["locations:read", "patients:search", "patients:read", "patients:create"],
        "locations": "*",
        "rate_limit_per_minute": 120,
        "baa_signed_on": (today - timedelta(days=30)).isoformat(),
        "baa_expires_on": (today + timedelta(days=365)).isoformat(),
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
