from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

import careloop_patients
from careloop_kit.auth import StaticJwksSource
from careloop_kit.auth.testing import TestTokenIssuer
from careloop_kit.clock import SystemClock
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


@pytest.fixture(scope="session")
def issuer() -> TestTokenIssuer:
    """Signs access tokens the way identity does; the apps under test trust its key."""
    return TestTokenIssuer(SystemClock())


Mint = Callable[..., dict[str, str]]


def bearer(issuer: TestTokenIssuer, **claims: object) -> dict[str, str]:
    """`Authorization` header of a fresh access token with these claims."""
    return {"Authorization": f"Bearer {issuer.mint(**claims)}"}


@pytest.fixture
def mint(issuer: TestTokenIssuer, unique_id: str) -> Mint:
    """Headers for a token of this test's organization: `mint(roles=[...], loc=[...])`.

    Defaults: an org admin of every location who signed in with a one-time code."""

    def make(**claims: object) -> dict[str, str]:
        values: dict[str, object] = {
            "org": f"org-{unique_id}",
            "sub": f"user-{unique_id}",
            "sid": f"session-{unique_id}",
            "roles": ["org_admin"],
            "loc": ["*"],
            "amr": ["pwd", "otp"],
        }
        values.update(claims)
        return bearer(issuer, **values)

    return make


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
