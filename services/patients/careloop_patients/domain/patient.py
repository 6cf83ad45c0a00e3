"""The patient record and the rules that keep it consistent."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field, replace
from datetime import date
from enum import StrEnum


class AdministrativeSex(StrEnum):
    """FHIR R4 AdministrativeGender."""

    MALE = "male"
    FEMALE = "female"
    OTHER = "other"
    UNKNOWN = "unknown"


class Channel(StrEnum):
    SMS = "sms"
    EMAIL = "email"
    VOICE = "voice"
    PORTAL = "portal"


class PatientStatus(StrEnum):
    ACTIVE = "active"
    MERGED = "merged"


class PhiCategory(StrEnum):
    """Kinds of PHI an operation touches, as recorded in the audit trail."""

    DEMOGRAPHICS = "demographics"
    CONTACT = "contact"
    PREFERENCES = "preferences"


@dataclass(frozen=True)
class HumanName:
    family: str
    given: tuple[str, ...]


@dataclass(frozen=True)
class Address:
    line: tuple[str, ...] = ()
    city: str | None = None
    state: str | None = None
    postal_code: str | None = None
    country: str | None = None


@dataclass(frozen=True)
class ContactPreferences:
    allowed_channels: tuple[Channel, ...] = (Channel.SMS, Channel.EMAIL, Channel.PORTAL)
    preferred_channel: Channel | None = None
    allow_automated_messages: bool = True


@dataclass(frozen=True)
class PatientDetails:
    """Everything about a patient that is PHI; stored only encrypted."""

    name: HumanName
    birth_date: date
    sex: AdministrativeSex = AdministrativeSex.UNKNOWN
    phones: tuple[str, ...] = ()
    emails: tuple[str, ...] = ()
    address: Address | None = None
    preferred_language: str | None = None
    preferences: ContactPreferences = field(default_factory=ContactPreferences)


# Which PHI category each field belongs to, for audit records and minimum-necessary checks.
FIELD_CATEGORIES: dict[str, PhiCategory] = {
    "name": PhiCategory.DEMOGRAPHICS,
    "birth_date": PhiCategory.DEMOGRAPHICS,
    "sex": PhiCategory.DEMOGRAPHICS,
    "phones": PhiCategory.CONTACT,
    "emails": PhiCategory.CONTACT,
    "address": PhiCategory.CONTACT,
    "preferred_language": PhiCategory.PREFERENCES,
    "preferences": PhiCategory.PREFERENCES,
}

ALL_CATEGORIES = sorted({c.value for c in FIELD_CATEGORIES.values()})


class InvalidPatient(ValueError):
    """The record breaks a domain rule."""


def categories_of(fields: list[str] | tuple[str, ...]) -> list[str]:
    """The PHI categories touched by a set of field names."""
    return sorted({FIELD_CATEGORIES[f].value for f in fields})


def apply_changes(
    details: PatientDetails, changes: dict[str, object]
) -> tuple[PatientDetails, list[str]]:
    """New details with `changes` applied, and the names of fields that really changed."""
    unknown = set(changes) - set(FIELD_CATEGORIES)
    if unknown:
        raise InvalidPatient(f"unknown fields: {', '.join(sorted(unknown))}")
    changed = [name for name, value in changes.items() if getattr(details, name) != value]
    updated = replace(details, **changes)  # type: ignore[arg-type]
    validate(updated)
    return updated, sorted(changed)


def validate(details: PatientDetails) -> None:
    """Domain rules a record must satisfy whatever door it came through."""
    if not details.name.family.strip() or not any(g.strip() for g in details.name.given):
        raise InvalidPatient("a patient needs a family name and at least one given name")
    if details.birth_date > date.today():
        raise InvalidPatient("birth date is in the future")
    prefs = details.preferences
    if (
        prefs.preferred_channel is not None
        and prefs.preferred_channel not in prefs.allowed_channels
    ):
        raise InvalidPatient("the preferred channel must be one of the allowed channels")


# --- normalization for exact-match blind indexes ---------------------------------

_SPACES = re.compile(r"\s+")


def normalize_name(value: str) -> str:
    """Case-, accent- and spacing-insensitive form of a name."""
    decomposed = unicodedata.normalize("NFKD", value)
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return _SPACES.sub(" ", stripped.casefold().replace("-", " ")).strip()


def normalize_phone(value: str) -> str:
    """Digits only; a leading '+' is kept so country codes stay distinct."""
    digits = re.sub(r"\D", "", value)
    if value.strip().startswith("+"):
        return "+" + digits
    # Ten-digit North American numbers are stored with their country code.
    return "+1" + digits if len(digits) == 10 else digits


def normalize_email(value: str) -> str:
    return value.strip().lower()


@dataclass(frozen=True)
class SearchKey:
    """One exact-match lookup key: its kind and normalized value."""

    kind: str
    value: str


def name_birth_key(family: str, given: str, birth_date: date) -> SearchKey:
    return SearchKey(
        "name_birth", f"{normalize_name(family)}|{normalize_name(given)}|{birth_date.isoformat()}"
    )


def search_keys(details: PatientDetails) -> list[SearchKey]:
    """Every lookup key a record can be found by."""
    keys = [
        name_birth_key(details.name.family, g, details.birth_date) for g in details.name.given[:1]
    ]
    keys += [SearchKey("phone", normalize_phone(p)) for p in details.phones]
    keys += [SearchKey("email", normalize_email(e)) for e in details.emails]
    return list(dict.fromkeys(keys))


def merge_details(surviving: PatientDetails, merged: PatientDetails) -> PatientDetails:
    """The surviving record keeps its fields and gains the merged record's contacts."""
    return replace(
        surviving,
        phones=tuple(dict.fromkeys(surviving.phones + merged.phones)),
        emails=tuple(dict.fromkeys(surviving.emails + merged.emails)),
        address=surviving.address or merged.address,
        preferred_language=surviving.preferred_language or merged.preferred_language,
    )
