"""Contact data from the patients service, read with messaging's own service identity.

This is one of the few synchronous calls between services the architecture allows, and
it is deliberate: phone numbers and email addresses are PHI and must not travel in
events (Kafka, its disks and every consumer would hold them), so messaging asks the
owner of the record at the moment it needs an address. The patients service checks the
token (SERVICE_GRANTS gives messaging `patients:read` for contact and preferences only),
withholds the rest, and audits the read under `service:messaging`.
"""

from __future__ import annotations

from typing import Any, Protocol

import httpx

from careloop_kit.auth import ServiceTokenSource
from careloop_messaging.domain.outreach import ContactData
from careloop_messaging.domain.templates import Channel


class PatientsUnavailable(Exception):
    """Patients (or identity, for the token) did not answer usefully: retry later."""


class ContactSource(Protocol):
    async def contact(self, org_id: str, patient_id: str) -> ContactData | None:
        """The patient's contact data; None when the record does not exist (for us)."""
        ...


def _channels(values: object) -> list[Channel]:
    known = {c.value for c in Channel}
    return [Channel(v) for v in values if v in known] if isinstance(values, list) else []


def contact_from_patient(body: dict[str, Any]) -> ContactData:
    """Read the fields messaging needs from a `PatientRead` body, nothing else."""
    preferences = body.get("preferences") or {}
    preferred = preferences.get("preferred_channel")
    language = body.get("preferred_language")
    return ContactData(
        phones=[p for p in body.get("phones") or [] if isinstance(p, str)],
        emails=[e for e in body.get("emails") or [] if isinstance(e, str)],
        # No preferences visible means we may not assume consent to any channel.
        allowed_channels=_channels(preferences.get("allowed_channels", [])),
        preferred_channel=Channel(preferred) if preferred in {c.value for c in Channel} else None,
        allow_automated_messages=bool(preferences.get("allow_automated_messages", False)),
        language=language.split("-")[0].lower() if isinstance(language, str) else None,
    )


class HttpContactSource:
    """`GET {patients_url}/patients/{id}` with a service token for the patient's org."""

    def __init__(
        self, http: httpx.AsyncClient, tokens: ServiceTokenSource, *, patients_url: str
    ) -> None:
        self._http = http
        self._tokens = tokens
        self._base = patients_url.rstrip("/")

    async def contact(self, org_id: str, patient_id: str) -> ContactData | None:
        for attempt in (1, 2):
            try:
                token = await self._tokens.token(org_id)
                response = await self._http.get(
                    f"{self._base}/patients/{patient_id}",
                    headers={"Authorization": f"Bearer {token}"},
                )
            except httpx.HTTPError as exc:
                raise PatientsUnavailable(f"patients unreachable: {type(exc).__name__}") from exc
            except Exception as exc:  # ServiceTokenError and Vault failures
                raise PatientsUnavailable(f"no service token: {type(exc).__name__}") from exc
            if response.status_code == 401 and attempt == 1:
                # A token revoked or expired early: get a fresh one, once.
                self._tokens.forget(org_id)
                continue
            if response.status_code == 404:
                return None
            if response.status_code != 200:
                raise PatientsUnavailable(f"patients answered {response.status_code}")
            return contact_from_patient(response.json())
        raise PatientsUnavailable("patients refused messaging's token twice")
