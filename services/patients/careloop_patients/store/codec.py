"""Turns PHI fields into plaintext strings for encryption and back."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

from careloop_patients.domain.patient import (
    Address,
    AdministrativeSex,
    Channel,
    ContactPreferences,
    HumanName,
    PatientDetails,
)


def encode_fields(details: PatientDetails) -> dict[str, str | None]:
    """One plaintext string per encrypted column (None when the field is empty)."""
    address = details.address
    return {
        "name": json.dumps({"family": details.name.family, "given": list(details.name.given)}),
        "birth_date": details.birth_date.isoformat(),
        "sex": details.sex.value,
        "phones": json.dumps(list(details.phones)),
        "emails": json.dumps(list(details.emails)),
        "address": None
        if address is None
        else json.dumps(
            {
                "line": list(address.line),
                "city": address.city,
                "state": address.state,
                "postal_code": address.postal_code,
                "country": address.country,
            }
        ),
        "preferred_language": details.preferred_language,
        "preferences": json.dumps(
            {
                "allowed_channels": [c.value for c in details.preferences.allowed_channels],
                "preferred_channel": details.preferences.preferred_channel.value
                if details.preferences.preferred_channel
                else None,
                "allow_automated_messages": details.preferences.allow_automated_messages,
            }
        ),
    }


def decode_fields(values: dict[str, str | None]) -> PatientDetails:
    """Inverse of `encode_fields`."""
    name: dict[str, Any] = json.loads(values["name"] or "{}")
    address_raw = values.get("address")
    address = None
    if address_raw:
        a = json.loads(address_raw)
        address = Address(
            line=tuple(a["line"]),
            city=a["city"],
            state=a["state"],
            postal_code=a["postal_code"],
            country=a["country"],
        )
    prefs = json.loads(values["preferences"] or "{}")
    return PatientDetails(
        name=HumanName(family=name["family"], given=tuple(name["given"])),
        birth_date=date.fromisoformat(values["birth_date"] or ""),
        sex=AdministrativeSex(values["sex"] or "unknown"),
        phones=tuple(json.loads(values["phones"] or "[]")),
        emails=tuple(json.loads(values["emails"] or "[]")),
        address=address,
        preferred_language=values.get("preferred_language"),
        preferences=ContactPreferences(
            allowed_channels=tuple(Channel(c) for c in prefs.get("allowed_channels", [])),
            preferred_channel=Channel(prefs["preferred_channel"])
            if prefs.get("preferred_channel")
            else None,
            allow_automated_messages=bool(prefs.get("allow_automated_messages", True)),
        ),
    )
