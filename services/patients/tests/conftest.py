from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

import careloop_patients
from careloop_kit.db.migrate import upgrade_async
from careloop_kit.testing.apps import running_app
from careloop_patients.app import create_app
from careloop_patients.settings import PatientsSettings

MIGRATIONS = Path(careloop_patients.__file__).parent / "migrations"


@pytest.fixture
async def patients_settings(
    make_database: Callable[[str], object],
    kafka_bootstrap: str,
    vault_addr: str,
    vault_tokens: dict[str, str],
    topic_prefix: str,
) -> PatientsSettings:
    dsn = await make_database("patients")  # type: ignore[misc]
    await upgrade_async(MIGRATIONS, dsn)
    return PatientsSettings(
        environment="test",
        database_url=dsn,
        kafka_bootstrap=kafka_bootstrap,
        vault_addr=vault_addr,
        vault_token=vault_tokens["patients"],
        topic_prefix=topic_prefix,
        log_json=False,
    )


@pytest.fixture
async def patients(patients_settings: PatientsSettings) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(create_app(patients_settings)) as client:
        yield client


@pytest.fixture
def org(unique_id: str) -> dict[str, str]:
    return {"X-Organization-Id": f"org-{unique_id}", "X-Actor-Id": f"user-{unique_id}"}


@pytest.fixture
def patient_body() -> Callable[..., dict[str, object]]:
    """Builds a synthetic registration body whose PHI carries a unique marker."""
    return new_patient


def new_patient(marker: str, **overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "location_id": "loc-north",
        "name": {"family": f"Fam{marker}", "given": [f"Giv{marker}"]},
        "birth_date": "1980-04-02",
        "sex": "female",
        "phones": ["(555) 201-3344"],
        "emails": [f"{marker}@example.org"],
        "preferred_language": "es",
    }
    body.update(overrides)
    return body
