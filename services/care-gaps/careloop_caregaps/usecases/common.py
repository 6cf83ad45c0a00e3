"""What every use case shares: the service's settings and measure library on the runtime,
the port to its sealed fields, the demographics source, and the problems it answers with."""

from __future__ import annotations

from datetime import date
from typing import Protocol

from careloop_caregaps.domain.facts import Sex
from careloop_caregaps.domain.library import MeasureLibrary
from careloop_caregaps.settings import CaregapsSettings
from careloop_caregaps.store.tables import field_key
from careloop_kit.fields import FieldCipher, cached_field_cipher
from careloop_kit.problems import Conflict, ProblemError
from careloop_kit.service import Runtime

SETTINGS_KEY = "caregaps_settings"
LIBRARY_KEY = "caregaps_library"
DEMOGRAPHICS_KEY = "caregaps_demographics"

SERVICE_ACTOR = "caregaps"
"""The actor of the service's own changes in the audit trail (a system principal)."""
SERVICE_SUBJECT = "service:caregaps"
"""Who made a change, as a gap's history shows it, when no one asked for it."""
RESOURCE = "MeasureReport"
"""The FHIR resource a gap is filed under in the audit trail (the permission table's)."""


class Demographics(Protocol):
    async def demographics(
        self, org_id: str, patient_id: str
    ) -> tuple[date | None, Sex | None] | None:
        """The patient's birth date and sex as patients shows them to care-gaps;
        None when the record does not exist (for us)."""
        ...


class InvalidGapRequest(ProblemError):
    status, title, slug = 422, "Invalid care-gap request", "invalid-care-gap-request"


class GapNotChangeableProblem(Conflict):
    title, slug = "Gap not changeable", "gap-not-changeable"


def settings_of(runtime: Runtime) -> CaregapsSettings:
    """The service's own settings (the runtime holds them typed as the kit's base)."""
    settings: CaregapsSettings = runtime.state[SETTINGS_KEY]
    return settings


def library_of(runtime: Runtime) -> MeasureLibrary:
    """The measure library loaded and validated at start."""
    library: MeasureLibrary = runtime.state[LIBRARY_KEY]
    return library


def demographics_source(runtime: Runtime) -> Demographics:
    source: Demographics = runtime.state[DEMOGRAPHICS_KEY]
    return source


def field_cipher(runtime: Runtime) -> FieldCipher:
    """The port of care-gaps' sealed fields, made once per runtime."""
    return cached_field_cipher(runtime, settings_of(runtime).fields_transit_key, field_key)
