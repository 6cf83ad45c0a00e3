from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from careloop_kit.auth import StaticJwksSource
from careloop_kit.auth.testing import TestTokenIssuer
from careloop_kit.testing.apps import running_app
from careloop_kit.testing.services import Mint, ServiceSettingsFactory
from careloop_patients.app import create_app
from careloop_patients.settings import PatientsSettings


@pytest.fixture
async def patients_settings(
    service_settings: ServiceSettingsFactory, topic_prefix: str
) -> PatientsSettings:
    return await service_settings(PatientsSettings, "patients", topic_prefix=topic_prefix)


@pytest.fixture
async def patients(
    patients_settings: PatientsSettings, issuer: TestTokenIssuer
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(patients_settings, jwks=StaticJwksSource(issuer.jwks_document()))
    async with running_app(app) as client:
        yield client


@pytest.fixture
def org(mint: Mint) -> dict[str, str]:
    """Headers of this test's org admin (every location, MFA)."""
    return mint()


@pytest.fixture
def actor_id(unique_id: str) -> str:
    """The `sub` of the `org` fixture's token."""
    return f"user-{unique_id}"


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
