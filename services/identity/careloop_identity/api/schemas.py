"""Request and response bodies of the identity API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, EmailStr, Field, StringConstraints

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Ref = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")]
FeatureName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FirstAdmin(_In):
    email: EmailStr
    display_name: Name
    password: str = Field(min_length=1, max_length=256)


class OrganizationCreate(_In):
    name: Name
    admin: FirstAdmin | None = Field(
        default=None,
        description=(
            "The organization's first org admin (every location). Every later account, "
            "location and role change is made with an org admin's access token."
        ),
    )


class OrganizationRead(BaseModel):
    id: str
    name: str
    created_at: datetime


class OrganizationCreated(OrganizationRead):
    admin_user_id: str | None = Field(description="The first org admin, when one was created.")


class OrganizationPage(BaseModel):
    items: list[OrganizationRead]


class AddressIn(_In):
    line: list[Annotated[str, StringConstraints(max_length=200)]] = Field(
        default_factory=list, max_length=4
    )
    city: str | None = Field(default=None, max_length=100)
    state: str | None = Field(default=None, max_length=100)
    postal_code: str | None = Field(default=None, max_length=20)
    country: str | None = Field(default=None, max_length=2)


class LocationCreate(_In):
    name: Name
    address: AddressIn | None = None
    time_zone: str = Field(description="IANA time zone, e.g. `America/Chicago`.", max_length=64)
    sensitive: bool = Field(
        default=False,
        description="Behavioral health and similar: neutral sender names, stricter access.",
    )
    features: dict[FeatureName, bool] = Field(
        default_factory=dict,
        description=(
            'Feature switches, e.g. `{"reminders": true, "waitlist": false}`; a switch not '
            "named is on."
        ),
    )


class LocationUpdate(_In):
    name: Name | None = None
    address: AddressIn | None = None
    time_zone: str | None = Field(
        default=None, description="IANA time zone, e.g. `America/Chicago`.", max_length=64
    )
    sensitive: bool | None = None
    features: dict[FeatureName, bool] | None = Field(
        default=None,
        description=(
            "Feature switches to set; switches not named keep their value, and a switch "
            "never set is on. Scheduling honours `reminders`, `two_way_confirmation`, "
            "`waitlist` and `self_scheduling`."
        ),
    )


class LocationRead(BaseModel):
    id: str
    org_id: str
    name: str
    address: dict[str, object] | None
    time_zone: str
    sensitive: bool
    features: dict[str, bool]
    created_at: datetime


class LocationPage(BaseModel):
    items: list[LocationRead]


Role = Literal[
    "org_admin",
    "location_manager",
    "provider",
    "care_coordinator",
    "front_desk",
    "billing",
    "auditor",
    "patient",
]


class UserAssignment(_In):
    roles: list[Role] = Field(min_length=1, max_length=8)
    locations: list[Ref] | Literal["*"] = Field(
        description='Location ids the user works at, or "*" for every location.'
    )
    patient_id: Ref | None = Field(
        default=None, description="For the patient role: the linked patient record."
    )


# Sign-in fields first (pydantic orders inherited fields from the last base on), as the
# first org admin's, then the assignment a later account needs.
class UserCreate(UserAssignment, FirstAdmin):
    pass


class UserRead(BaseModel):
    id: str
    org_id: str
    email: str
    display_name: str
    roles: list[str]
    locations: list[str]
    patient_id: str | None
    # Read off the stored account, which names it after the TOTP secret it guards.
    mfa_enabled: bool = Field(validation_alias=AliasChoices("mfa_enabled", "totp_enabled"))
    created_at: datetime


class UserPage(BaseModel):
    items: list[UserRead]
    next_after: str | None = Field(
        description="Pass as `after` for the next page; null on the last page."
    )


class LoginRequest(_In):
    org_id: Ref
    email: Annotated[str, StringConstraints(min_length=1, max_length=254)]
    password: str = Field(min_length=1, max_length=256)
    otp: Annotated[str, StringConstraints(pattern=r"^[0-9]{6}$")] | None = None


class TokenResponse(BaseModel):
    access_token: str
    refresh_token: str
    expires_in: int
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 (a scheme name, not a secret)
    mfa_enrollment_required: bool = Field(
        default=False,
        description="The user's role requires TOTP and none is enrolled yet: enroll now.",
    )


class RefreshRequest(_In):
    refresh_token: str = Field(min_length=1, max_length=200)


class LogoutRequest(_In):
    refresh_token: str | None = Field(default=None, min_length=1, max_length=200)


class MfaEnrollment(BaseModel):
    secret: str = Field(description="The TOTP secret, base32, for manual entry.")
    otpauth_uri: str = Field(description="`otpauth://` URI to show as a QR code.")


class MfaVerify(_In):
    code: Annotated[str, StringConstraints(pattern=r"^[0-9]{6}$")]


class MfaStatus(BaseModel):
    mfa_enabled: bool


BreakGlassReasonCode = Literal[
    "emergency_treatment", "urgent_continuity_of_care", "patient_unable_to_consent"
]


class BreakGlassRequest(_In):
    patient_id: Ref = Field(description="The one patient to open, outside your locations.")
    reason_code: BreakGlassReasonCode = Field(description="The typed reason for the access.")
    reason: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=20, max_length=500)
    ] = Field(description="Why, in your words (20-500 characters); stored encrypted.")


class BreakGlassResponse(BaseModel):
    grant_id: str
    patient_id: str
    reason_code: BreakGlassReasonCode
    granted_at: datetime
    expires_at: datetime
    access_token: str = Field(description="A new access token whose `bg` claim names the grant.")
    expires_in: int = Field(description="Lifetime of the access token, in seconds.")
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 (a scheme name, not a secret)
