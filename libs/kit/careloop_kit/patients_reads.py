"""One patient record from the patients service, read with the calling service's own
service token.

A synchronous call between services is the exception the architecture allows when the
data is PHI that must not travel in events (contact data, a birth date): the caller asks
the record's owner at the moment it needs it. Patients checks the token (SERVICE_GRANTS
bounds what each service may see), withholds every other field, and audits the read
under `service:<name>`. What a service takes from the body is its own business; this
is the call, the token's refresh on a 401, and what a failure means.
"""

from __future__ import annotations

from typing import Any

import httpx

from careloop_kit.auth import ServiceTokenSource


class PatientsUnavailable(Exception):
    """Patients (or identity, for the token) did not answer usefully: retry later."""


class PatientReader:
    """`GET {patients_url}/patients/{id}` with a service token for the patient's org."""

    def __init__(
        self, http: httpx.AsyncClient, tokens: ServiceTokenSource, *, patients_url: str
    ) -> None:
        self._http = http
        self._tokens = tokens
        self._base = patients_url.rstrip("/")

    async def patient(self, org_id: str, patient_id: str) -> dict[str, Any] | None:
        """The `PatientRead` body as patients shows it to this service; None when the
        record does not exist (for this organization). `PatientsUnavailable` otherwise."""
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
            body: dict[str, Any] = response.json()
            return body
        raise PatientsUnavailable(f"patients refused {self._tokens.service}'s token twice")
