"""The fax channel against the Phaxio double on a real port: what each answer of the API
makes of a delivery."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from careloop_kit.infra.ports import free_port
from careloop_kit.testing.apps import serve_in_task
from careloop_referrals.channels.fax import PhaxioFaxChannel
from careloop_referrals.domain.outcome import Recipient, RenderedReport
from careloop_referrals.testing.phaxio_double import PhaxioDouble, pdf_text

REPORT = RenderedReport("outcome-r2-1", "Referral outcome report r2", "Synthetic note ( \\ ).")
TO = Recipient("+15550142")

pytestmark = pytest.mark.service


@pytest.fixture
async def phaxio() -> AsyncIterator[tuple[PhaxioDouble, str]]:
    double = PhaxioDouble(api_key="synthetic-key", api_secret="synthetic-secret")
    async with serve_in_task(double.app) as url:
        yield double, f"{url}/v2.1"


def _channel(base_url: str, secret: dict[str, str]) -> PhaxioFaxChannel:
    async def read() -> dict[str, str]:
        return secret

    return PhaxioFaxChannel(
        read, secret_path="careloop/referrals/fax", base_url=base_url, timeout_s=5
    )


GOOD = {"api_key": "synthetic-key", "api_secret": "synthetic-secret"}


async def test_a_queued_fax_is_accepted_with_phaxios_id(phaxio: tuple[PhaxioDouble, str]) -> None:
    double, base = phaxio
    delivery = await _channel(base, GOOD).send(REPORT, TO)
    [fax] = double.faxes
    assert (delivery.accepted, delivery.provider_id) == (True, f"phaxio-{fax.id}")
    assert pdf_text(fax.files[0].data) == (
        1,
        "\n".join(["Referral outcome report r2", "", "Synthetic note ( \\ ).", "", *_notice()]),
    )


def _notice() -> list[str]:
    return [
        "CONFIDENTIAL: this fax holds health information for the addressee only. If it reached",
        "you in error, tell the sender and destroy it.",
    ]


async def test_refused_credentials_fail_for_good_and_missing_ones_name_the_path(
    phaxio: tuple[PhaxioDouble, str],
) -> None:
    double, base = phaxio
    wrong = await _channel(base, {**GOOD, "api_secret": "not-it"}).send(REPORT, TO)
    assert (wrong.accepted, wrong.retryable) == (False, False)
    assert wrong.error == "fax API HTTP 401: the API key and secret were refused"
    missing = await _channel(base, {}).send(REPORT, TO)
    assert (missing.accepted, missing.retryable) == (False, False)
    assert "secret/careloop/referrals/fax" in str(missing.error)
    assert double.faxes == []


async def test_rate_limits_and_an_unreachable_api_are_worth_another_attempt(
    phaxio: tuple[PhaxioDouble, str],
) -> None:
    double, base = phaxio
    double.fail_next(1, status=429)
    limited = await _channel(base, GOOD).send(REPORT, TO)
    assert (limited.accepted, limited.retryable, limited.error) == (False, True, "fax API HTTP 429")
    down = await _channel(f"http://127.0.0.1:{free_port()}/v2.1", GOOD).send(REPORT, TO)
    assert (down.accepted, down.retryable) == (False, True)
    assert str(down.error).startswith("fax API unreachable")
    assert (await _channel(base, GOOD).send(REPORT, TO)).accepted
