"""The demo practice's referral directory, seeded by `careloop dev up` through the public
gateway.

A few providers and organizations a referral can come from or go to, added with the org
admin's login the way a care coordinator would. Every name is invented and marked as
synthetic, the addresses are under the reserved `example.org`, and no entry carries an
NPI (a made-up number with a valid check digit could be a real provider's). Seeding again
adds only the entries that are missing (by name).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from careloop_cli.demo_scheduling import _Gateway, sign_in_admin
from careloop_kit.smime import smime_identity

DEMO_DIRECT_ADDRESS = "imani.okafor@direct.dermatology.example.org"

DEMO_DIRECTORY: tuple[dict[str, Any], ...] = (
    {
        "kind": "provider",
        "name": "Dr. Rowan Vale (synthetic demo)",
        "specialty": "Cardiology",
        "contact": {"email": "rowan.vale@cardiology.example.org", "fax": "+1-555-0100"},
        "preferred_channel": "secure-email",
        "internal": False,
    },
    {
        "kind": "provider",
        "name": "Dr. Imani Okafor (synthetic demo)",
        "specialty": "Dermatology",
        "contact": {"direct_address": DEMO_DIRECT_ADDRESS},
        "preferred_channel": "direct",
        "internal": False,
    },
    {
        "kind": "organization",
        "name": "Lakeside Orthopedics Group (synthetic demo)",
        "specialty": "Orthopedic surgery",
        "contact": {"fax": "+1-555-0142", "phone": "+1-555-0143"},
        "preferred_channel": "fax",
        "internal": False,
    },
    {
        "kind": "provider",
        "name": "Dr. Sam Reyes (synthetic demo)",
        "specialty": "Family medicine",
        "contact": {"email": "sam.reyes@demo-group.example.org"},
        "preferred_channel": "secure-email",
        "internal": True,
    },
)
"""Outside specialists to refer to, and one of the group's own providers to refer from."""


@dataclass(frozen=True)
class DirectorySeeded:
    entries: int
    created: int

    def summary(self) -> str:
        return f"{self.entries} directory entries ({self.created} added this time)"


def seed_referrals(
    gateway_url: str, logins: dict[str, Any], *, admin_token: str | None = None
) -> DirectorySeeded:
    """Add the demo directory entries that are not there yet.

    `gateway_url` is the public API base (`.../api/v1`); `logins` the demo logins file;
    `admin_token` a token of the org admin (else the admin signs in here)."""
    admin = next(u for u in logins["users"] if u["role"] == "org_admin")
    created = 0
    with httpx.Client(base_url=gateway_url, timeout=30) as client:
        api = _Gateway(client, admin_token or sign_in_admin(client, logins["org_id"], admin))
        have = {
            entry["name"]
            for entry in api.call(
                "GET", "/referrals/referrals/directory?limit=1000", "listing the directory"
            )["items"]
        }
        for entry in DEMO_DIRECTORY:
            if entry["name"] not in have:
                api.call(
                    "POST",
                    "/referrals/referrals/directory",
                    f"adding {entry['name']} to the directory",
                    _with_direct_certificate(entry),
                )
                created += 1
    return DirectorySeeded(entries=len(DEMO_DIRECTORY), created=created)


def _with_direct_certificate(entry: dict[str, Any]) -> dict[str, Any]:
    """A Direct provider's entry needs the certificate reports are encrypted to: the demo
    makes a synthetic one when it adds the entry (its key is thrown away, so nothing
    sent to it can be read, as nothing should be)."""
    address = entry["contact"].get("direct_address")
    if address is None:
        return entry
    certificate = smime_identity(address).certificate_pem
    return {**entry, "contact": {**entry["contact"], "direct_certificate": certificate}}
