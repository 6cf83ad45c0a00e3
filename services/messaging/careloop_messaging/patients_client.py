"""Contact data from the patients service, read with messaging's own service identity.

This is one of the few synchronous calls between services the architecture allows, and
it is deliberate: phone numbers and email addresses are PHI and must not travel in
events (Kafka, its disks and every consumer would hold them), so messaging asks the
owner of the record at the moment it needs an address. The patients service checks the
token (SERVICE_GRANTS gives messaging `patients:read` for contact and preferences only),
withholds the rest, and audits the read under `service:messaging`.

`BatchContacts` reads the contacts a consumer batch needs before the batch transaction
opens: one read per patient of the batch (however many touches it has there), several
at a time, so no pooled connection or row lock waits on patients. Each read is still a
separate, audited request; nothing is kept beyond the batch it was read for.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any, Protocol

import httpx

from careloop_kit.auth import ServiceTokenSource
from careloop_kit.record_reads import RecordReader, RecordUnavailable
from careloop_messaging.domain.outreach import ContactData
from careloop_messaging.domain.templates import Channel

log = logging.getLogger(__name__)

PatientsUnavailable = RecordUnavailable
"""Patients (or identity, for the token) did not answer usefully: retry later."""

__all__ = [
    "BatchContacts",
    "ContactSource",
    "HttpContactSource",
    "PatientsUnavailable",
    "contact_from_patient",
]


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
        patient_id=body["id"] if isinstance(body.get("id"), str) else None,
    )


class HttpContactSource:
    """Contact data from `GET {patients_url}/patients/{id}` (the kit's `RecordReader`)."""

    def __init__(
        self, http: httpx.AsyncClient, tokens: ServiceTokenSource, *, patients_url: str
    ) -> None:
        self._reader = RecordReader(
            http, tokens, url_template=f"{patients_url.rstrip('/')}/patients/{{id}}"
        )

    async def contact(self, org_id: str, patient_id: str) -> ContactData | None:
        body = await self._reader.read(org_id, patient_id)
        return None if body is None else contact_from_patient(body)


class BatchContacts:
    """Contacts read ahead for the touches of one batch; anything else is read on demand.

    What `load` reads serves only the touches it was given, so a handler never sees
    contact data read for another batch, and a touch `load` did not cover (an event
    type without a `prepare`) gets a fresh read. `load` replaces what the previous batch
    left. A read that fails in `load` is left out: the handler then reads it itself, and
    its failure takes the kit's retry and dead-letter path.
    """

    def __init__(self, source: ContactSource, *, concurrency: int) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._source = source
        self._concurrency = concurrency
        self._loaded: dict[str, tuple[str, str, ContactData | None]] = {}
        self.reads = 0

    def clear(self) -> None:
        """Forget what was read ahead (a new batch begins)."""
        self._loaded = {}

    async def load(self, touches: Iterable[tuple[str, str, str]]) -> None:
        """Read the contacts for these (touch key, org id, patient id), one read per
        patient however many of the touches are theirs."""
        self.clear()
        by_touch = {touch_key: (org_id, patient_id) for touch_key, org_id, patient_id in touches}
        patients = list(dict.fromkeys(by_touch.values()))
        if not patients:
            return
        gate = asyncio.Semaphore(self._concurrency)
        read_ahead: dict[tuple[str, str], ContactData | None] = {}

        async def read(key: tuple[str, str]) -> None:
            async with gate:
                try:
                    read_ahead[key] = await self._source.contact(*key)
                except PatientsUnavailable as exc:
                    log.warning("reading contacts ahead failed, read on demand: %s", exc)
                else:
                    self.reads += 1

        await asyncio.gather(*(read(key) for key in patients))
        self._loaded = {
            touch_key: (*key, read_ahead[key])
            for touch_key, key in by_touch.items()
            if key in read_ahead
        }

    async def contact(self, touch_key: str, org_id: str, patient_id: str) -> ContactData | None:
        """The contact read ahead for this touch of the batch, else a fresh read."""
        loaded = self._loaded.get(touch_key)
        if loaded is not None and loaded[:2] == (org_id, patient_id):
            return loaded[2]
        self.reads += 1
        return await self._source.contact(org_id, patient_id)
