"""Birth date and sex from the patients service, read with care-gaps' own service
identity (the kit's `RecordReader`).

Demographics are PHI and do not travel in events, so care-gaps asks the record's owner
when a registration or a change of birth date or sex says they changed. SERVICE_GRANTS
gives care-gaps `patients:read` for demographics only: patients withholds every other
field and audits the read under `service:caregaps`.
"""

from __future__ import annotations

from datetime import date
from typing import cast

import httpx

from careloop_caregaps.domain.facts import Sex
from careloop_caregaps.store.codec import SEXES
from careloop_kit.auth import ServiceTokenSource
from careloop_kit.record_reads import RecordReader


class HttpDemographics:
    def __init__(
        self, http: httpx.AsyncClient, tokens: ServiceTokenSource, *, patients_url: str
    ) -> None:
        self._reader = RecordReader(
            http, tokens, url_template=f"{patients_url.rstrip('/')}/patients/{{id}}"
        )

    async def demographics(
        self, org_id: str, patient_id: str
    ) -> tuple[date | None, Sex | None] | None:
        body = await self._reader.read(org_id, patient_id)
        if body is None:
            return None
        birth = body.get("birth_date")
        sex = body.get("sex")
        return (
            date.fromisoformat(birth) if isinstance(birth, str) else None,
            cast(Sex, sex) if sex in SEXES else None,
        )
