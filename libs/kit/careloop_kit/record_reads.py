"""One record read from the service that owns it, with the calling service's own
service token.

A synchronous call between services is the exception the architecture allows when the
data is PHI that must not travel in events (contact data, a birth date): the caller asks
the record's owner at the moment it needs it. The owner checks the token (SERVICE_GRANTS
bounds what each service may see), withholds every other field, and audits the read
under `service:<name>`. What a service takes from the body is its own business; this
is the call, the token's refresh on a 401, and what a failure means. The service hands
in the record's URL, so the kit names no service.
"""

from __future__ import annotations

from typing import Any

import httpx

from careloop_kit.auth import ServiceTokenSource


class RecordUnavailable(Exception):
    """The owner (or identity, for the token) did not answer usefully: retry later."""


class RecordReader:
    """`GET {url_template with the record id}` with a service token for the record's org."""

    def __init__(
        self, http: httpx.AsyncClient, tokens: ServiceTokenSource, *, url_template: str
    ) -> None:
        if "{id}" not in url_template:
            raise ValueError("url_template must hold `{id}` where the record id goes")
        self._http = http
        self._tokens = tokens
        self._template = url_template

    async def read(self, org_id: str, record_id: str) -> dict[str, Any] | None:
        """The record's body as its owner shows it to this service; None when it does not
        exist (for this organization). `RecordUnavailable` otherwise."""
        url = self._template.replace("{id}", record_id)
        for attempt in (1, 2):
            try:
                token = await self._tokens.token(org_id)
                response = await self._http.get(url, headers={"Authorization": f"Bearer {token}"})
            except httpx.HTTPError as exc:
                raise RecordUnavailable(f"{url} unreachable: {type(exc).__name__}") from exc
            except Exception as exc:  # ServiceTokenError and Vault failures
                raise RecordUnavailable(f"no service token: {type(exc).__name__}") from exc
            if response.status_code == 401 and attempt == 1:
                # A token revoked or expired early: get a fresh one, once.
                self._tokens.forget(org_id)
                continue
            if response.status_code == 404:
                return None
            if response.status_code != 200:
                raise RecordUnavailable(f"{url} answered {response.status_code}")
            body: dict[str, Any] = response.json()
            return body
        raise RecordUnavailable(f"{url} refused {self._tokens.service}'s token twice")
