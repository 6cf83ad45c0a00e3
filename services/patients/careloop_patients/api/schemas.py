"""Request and response bodies of the patients API."""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, ConfigDict, EmailStr, Field, field_validator

from careloop_patients.domain.patient import AdministrativeSex, Channel, PatientStatus

_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"
MAX_PAGE = 50


class NameIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    family: str = Field(min_length=1, max_length=100)
    given: list[str] = Field(min_length=1, max_length=5)

    @field_validator("given")
    @classmethod
    def _given_not_blank(cls, value: list[str]) -> list[str]:
        if any(not g.strip() or len(g) > 100 for g in value):
            raise ValueError("each given name must be 1-100 characters and not blank")
        return value


class AddressIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    line: list[str] = Field(default_factory=list, max_length=4)
    city: str | None = Field(None, max_length=100)
    state: str | None = Field(None, max_length=100)
    postal_code: str | None = Field(None, max_length=20)
    country: str | None = Field(None, max_length=2, min_length=2, description="ISO 3166-1 alpha-2")


class ContactPreferencesIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    allowed_channels: list[Channel] = Field(
        default_factory=lambda: [Channel.SMS, Channel.EMAIL, Channel.PORTAL]
    )
    preferred_channel: Channel | None = None
    allow_automated_messages: bool = True


def _validate_phones(value: list[str] | None) -> list[str] | None:
    for phone in value or []:
        digits = sum(ch.isdigit() for ch in phone)
        if not 7 <= digits <= 15 or any(ch not in "0123456789+-() ." for ch in phone):
            raise ValueError(
                "not a phone number: use 7-15 digits with spaces, '+', '-', '(' or ')'"
            )
    return value


class PatientCreate(BaseModel):
    """A patient to register."""

    model_config = ConfigDict(extra="forbid")
    location_id: str | None = Field(None, pattern=_ID_PATTERN, description="Registering location.")
    name: NameIn
    birth_date: date
    sex: AdministrativeSex = AdministrativeSex.UNKNOWN
    phones: list[str] = Field(default_factory=list, max_length=5)
    emails: list[EmailStr] = Field(default_factory=list, max_length=5)
    address: AddressIn | None = None
    preferred_language: str | None = Field(
        None,
        pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$",
        description="BCP 47 tag, e.g. `es` or `en-US`",
    )
    preferences: ContactPreferencesIn = Field(default_factory=ContactPreferencesIn)

    _phones = field_validator("phones")(_validate_phones)


class PatientUpdate(BaseModel):
    """Fields to change; omitted fields keep their value. `version` must be the one you read."""

    model_config = ConfigDict(extra="forbid")
    version: int = Field(
        ge=1, description="The record version you are changing (optimistic concurrency)."
    )
    name: NameIn | None = None
    birth_date: date | None = None
    sex: AdministrativeSex | None = None
    phones: list[str] | None = Field(None, max_length=5)
    emails: list[EmailStr] | None = Field(None, max_length=5)
    address: AddressIn | None = None
    preferred_language: str | None = Field(None, pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
    preferences: ContactPreferencesIn | None = None

    _phones = field_validator("phones")(_validate_phones)


class PatientMerge(BaseModel):
    """Merge a duplicate record into this one."""

    model_config = ConfigDict(extra="forbid")
    merged_patient_id: str = Field(pattern=_ID_PATTERN)
    version: int = Field(ge=1, description="Version of the surviving record you read.")


class PatientSearch(BaseModel):
    """Search keys: family + given + birth_date together, phone, or email (any of them).

    Sent as the body of `POST /patients/_search`, so the values stay out of URLs and
    every log that records one."""

    model_config = ConfigDict(extra="forbid")
    family: str | None = Field(None, max_length=100)
    given: str | None = Field(None, max_length=100)
    birth_date: date | None = None
    phone: str | None = Field(None, max_length=40)
    email: str | None = Field(None, max_length=254)
    limit: int = Field(20, ge=1, le=MAX_PAGE, description="At most this many patients.")


class NameOut(BaseModel):
    family: str
    given: list[str]


class AddressOut(BaseModel):
    line: list[str]
    city: str | None
    state: str | None
    postal_code: str | None
    country: str | None


class ContactPreferencesOut(BaseModel):
    allowed_channels: list[Channel]
    preferred_channel: Channel | None
    allow_automated_messages: bool


class PatientRead(BaseModel):
    """A patient record as the caller may see it.

    Minimum necessary: the fields of PHI categories the caller's roles may not see
    are null (lists empty), and `withheld_categories` names those categories.
    """

    id: str
    org_id: str
    location_id: str | None
    status: PatientStatus
    merged_into_id: str | None
    version: int
    name: NameOut | None
    birth_date: date | None
    sex: AdministrativeSex | None
    phones: list[str]
    emails: list[str]
    address: AddressOut | None
    preferred_language: str | None
    preferences: ContactPreferencesOut | None
    withheld_categories: list[str] = Field(
        default_factory=list,
        description="PHI categories left out of this response for the caller's role.",
    )
    created_at: datetime
    updated_at: datetime


class PatientPage(BaseModel):
    items: list[PatientRead]
    count: int
