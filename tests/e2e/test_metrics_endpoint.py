"""`GET /metrics` on each of the nine services, started as the other e2e tests start them
(one process, real Kafka, PostgreSQL and OpenBao): each page shows its own service only,
requests by route template (never the identifier in the path), the outbox and timer
backlogs, consumer lag where the service consumes, and messaging counts the SMS it sent
through the Twilio double by channel.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import careloop_caregaps
import httpx
import pytest
from careloop_caregaps.app import create_app as create_caregaps
from careloop_caregaps.settings import CaregapsSettings

import careloop_audit
import careloop_gateway
import careloop_referrals
import careloop_tasks
from careloop_audit.app import create_app as create_audit
from careloop_audit.settings import AuditSettings
from careloop_contracts import CONSUMER_GROUPS
from careloop_gateway.app import create_app as create_gateway
from careloop_gateway.settings import GatewaySettings
from careloop_kit.db.migrate import upgrade_async
from careloop_kit.testing.apps import running_app
from careloop_messaging.testing.rig import publish, reminder_due
from careloop_referrals.app import create_app as create_referrals
from careloop_referrals.settings import ReferralsSettings
from careloop_tasks.app import create_app as create_tasks
from careloop_tasks.settings import TasksSettings

from .practice import scheduling_beside
from .test_messaging_reminders import Chain, admin_of_new_org, eventually, register
from .test_messaging_reminders import chain as chain

pytestmark = pytest.mark.e2e

REQUESTS = "http_server_request_duration_seconds_count"
IDENTIFIER = "pat-metrics-77810"
"""Stands in for any identifier a path carries: it must never reach a metrics page."""

# The request each service gets before its page is read, and the route it must show.
PROBES = {
    "identity": ("/.well-known/jwks.json", "/.well-known/jwks.json"),
    "patients": (f"/patients/{IDENTIFIER}", "/patients/{patient_id}"),
    "scheduling": (f"/appointments/{IDENTIFIER}", "/appointments/{appointment_id}"),
    "messaging": (f"/patients/{IDENTIFIER}/inbox", "/patients/{patient_id}/inbox"),
    "audit": (f"/audit/patients/{IDENTIFIER}/trail", "/audit/patients/{patient_id}/trail"),
    "gateway": (f"/api/v1/patients/patients/{IDENTIFIER}", "/api/v1/{service}/{path}"),
    "referrals": (f"/referrals/{IDENTIFIER}", "/referrals/{referral_id}"),
    "tasks": (f"/tasks/{IDENTIFIER}", "/tasks/{task_id}"),
    "caregaps": (f"/gaps/{IDENTIFIER}", "/gaps/{gap_id}"),
}


def series(page: str, metric: str) -> list[str]:
    """The label sets of every `metric` series on the page, with their values."""
    return [line for line in page.splitlines() if line.startswith(metric + "{")]


def value(line: str) -> float:
    return float(line.rsplit(" ", 1)[1])


async def page_with(
    client: httpx.AsyncClient, wanted: Callable[[str], bool], *, timeout_s: float = 30
) -> str:
    """The service's first `/metrics` page for which `wanted` holds."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        response = await client.get("/metrics")
        assert response.status_code == 200, response.text
        if wanted(response.text):
            return response.text
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"metrics page never matched:\n{response.text}")
        await asyncio.sleep(0.25)


async def test_every_service_shows_its_own_metrics_and_messaging_counts_the_sms(
    chain: Chain,
    make_database: Callable[[str], Awaitable[str]],
) -> None:
    settings = chain.messaging_settings
    common: dict[str, Any] = {
        "environment": "test",
        "kafka_bootstrap": settings.kafka_bootstrap,
        "vault_addr": settings.vault_addr,
        "topic_prefix": settings.topic_prefix,
        "log_json": False,
    }
    packages = {
        "audit": careloop_audit,
        "gateway": careloop_gateway,
        "referrals": careloop_referrals,
        "tasks": careloop_tasks,
        "caregaps": careloop_caregaps,
    }
    dsns = {name: await make_database(name) for name in packages}
    for name, package in packages.items():
        await upgrade_async(Path(package.__file__).parent / "migrations", dsns[name])
    jwks_url = f"{chain.identity_url}/.well-known/jwks.json"
    audit_app = create_audit(
        AuditSettings(database_url=dsns["audit"], vault_token=chain.vault_tokens["audit"], **common)
    )
    gateway_app = create_gateway(
        GatewaySettings(
            database_url=dsns["gateway"],
            vault_token=chain.vault_tokens["gateway"],
            auth_jwks_url=jwks_url,
            routes={"patients": str(chain.patients.base_url), "identity": chain.identity_url},
            **common,
        )
    )
    referrals_app = create_referrals(
        ReferralsSettings(
            database_url=dsns["referrals"],
            vault_token=chain.vault_tokens["referrals"],
            auth_jwks_url=jwks_url,
            **common,
        )
    )
    tasks_app = create_tasks(
        TasksSettings(
            database_url=dsns["tasks"],
            vault_token=chain.vault_tokens["tasks"],
            auth_jwks_url=jwks_url,
            **common,
        )
    )
    caregaps_app = create_caregaps(
        CaregapsSettings(
            database_url=dsns["caregaps"],
            vault_token=chain.vault_tokens["caregaps"],
            auth_jwks_url=jwks_url,
            patients_url=str(chain.patients.base_url),
            identity_token_url=f"{chain.identity_url}/oauth/token",
            **common,
        )
    )
    scheduling_app, _clock = await scheduling_beside(chain, make_database)

    org_id, admin = await admin_of_new_org(chain.identity_url)
    by_sms = await register(chain, admin, allowed_channels=["sms"], preferred_channel="sms")
    async with (
        httpx.AsyncClient(base_url=chain.identity_url) as identity,
        running_app(scheduling_app) as scheduling,
        running_app(audit_app) as audit,
        running_app(gateway_app) as gateway,
        running_app(referrals_app) as referrals,
        running_app(tasks_app) as tasks,
        running_app(caregaps_app) as caregaps,
    ):
        await publish(
            settings, reminder_due(org_id=org_id, patient_id=by_sms, appointment_id="appt-m")
        )
        await eventually(lambda: len(chain.double.messages) == 1)

        clients = {
            "identity": identity,
            "patients": chain.patients,
            "scheduling": scheduling,
            "messaging": chain.messaging,
            "audit": audit,
            "gateway": gateway,
            "referrals": referrals,
            "tasks": tasks,
            "caregaps": caregaps,
        }
        for service, client in clients.items():
            path, route = PROBES[service]
            probed = await client.get(path)
            assert probed.status_code < 500, (service, probed.text)
            groups = [g.group_id for g in CONSUMER_GROUPS.values() if g.service == service]

            def complete(page: str, route: str = route, groups: list[str] = groups) -> bool:
                return (
                    any(f'http_route="{route}"' in line for line in series(page, REQUESTS))
                    and bool(series(page, "careloop_outbox_backlog"))
                    and bool(series(page, "careloop_timer_backlog"))
                    and all(
                        any(f'{group}"' in line for line in series(page, "careloop_consumer_lag"))
                        for group in groups
                    )
                )

            page = await page_with(client, complete)
            (target,) = series(page, "target_info")
            assert f'service_name="careloop-{service}"' in target, target
            assert IDENTIFIER not in page, service
            assert "77810" not in page, service
            lag_groups = {
                found.group(1)
                for line in series(page, "careloop_consumer_lag")
                if (found := re.search(r'consumer_group="([^"]+)"', line))
            }
            assert lag_groups == {f"{settings.topic_prefix}{group}" for group in groups}, service

        sent = await page_with(
            chain.messaging,
            lambda page: any(
                'channel="sms"' in line for line in series(page, "careloop_messages_sent_total")
            ),
        )
        (sms,) = [
            line for line in series(sent, "careloop_messages_sent_total") if 'channel="sms"' in line
        ]
        assert 'outcome="queued"' in sms, sms
        assert value(sms) == 1, sms
        assert not [
            line
            for line in series(sent, "careloop_messages_sent_total")
            if 'channel="email"' in line
        ]
