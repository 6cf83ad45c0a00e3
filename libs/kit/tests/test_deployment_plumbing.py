"""The kit's side of deployments: the topic catalogue applied to a real Kafka, Vault tokens
from a file a Vault agent rewrites, consumer groups the catalogue must list, and traces
exported over OTLP/HTTP."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import hvac
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from careloop_contracts import CONSUMER_GROUPS, TOPICS, dead_letter_topic, topic_catalogue
from careloop_kit.bus.kafka import apply_topic_catalogue
from careloop_kit.service import ConsumerSpec, catalogued_group
from careloop_kit.settings import LOCAL_DEVELOPMENT_PLACEHOLDER, KitSettings
from careloop_kit.telemetry import otlp_exporter
from careloop_kit.vault import Vault, VaultUnavailable


def test_catalogue_holds_every_stream_and_one_dead_letter_topic_per_group() -> None:
    catalogue = topic_catalogue()
    assert set(TOPICS) <= set(catalogue)
    dead_letters = {name for name in catalogue if name.startswith("careloop.dlq.")}
    assert dead_letters == {dead_letter_topic(group) for group in CONSUMER_GROUPS}
    for group in CONSUMER_GROUPS.values():
        # A group reads only catalogued topics, or its service would subscribe to nothing.
        assert set(group.topics) <= set(TOPICS), group.group_id
        assert catalogue[dead_letter_topic(group.group_id)].retention_ms > 0


def test_a_consumer_group_the_catalogue_does_not_list_is_refused() -> None:
    listed = CONSUMER_GROUPS["careloop.scheduling.replies"]
    spec = ConsumerSpec(name="replies", topics=listed.topics, handlers=lambda _: {})
    assert catalogued_group("scheduling", spec) == "careloop.scheduling.replies"
    with pytest.raises(RuntimeError, match="CONSUMER_GROUPS"):
        catalogued_group("scheduling", ConsumerSpec("brand-new", listed.topics, lambda _: {}))
    with pytest.raises(RuntimeError, match=r"careloop\.patients"):
        catalogued_group(
            "scheduling",
            ConsumerSpec("replies", (*listed.topics, "careloop.patients"), lambda _: {}),
        )


async def test_topic_catalogue_is_applied_once_and_differences_are_reported(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    settings = KitSettings(kafka_bootstrap=kafka_bootstrap, topic_prefix=topic_prefix)
    first = await apply_topic_catalogue(settings)
    expected = {f"{topic_prefix}{name}" for name in topic_catalogue()}
    assert set(first.created) == expected
    assert not first.unchanged
    assert not first.differing

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        wanted = {
            f"{topic_prefix}{name}": spec.partitions for name, spec in topic_catalogue().items()
        }
        for _ in range(100):  # the brokers' metadata lists new partitions within moments
            described = {d["topic"]: d for d in await admin.describe_topics(sorted(expected))}
            found = {name: len(d["partitions"]) for name, d in described.items()}
            if all(found.values()):
                break
            await asyncio.sleep(0.1)
        assert found == wanted
        dead_letters = dead_letter_topic("careloop.audit.trail")
        configs = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, f"{topic_prefix}{dead_letters}")]
        )
        entries = {entry[0]: entry[1] for entry in configs[0].resources[0][4]}
        assert entries["retention.ms"] == str(topic_catalogue()[dead_letters].retention_ms)
        # An operator grew one topic by hand: the next apply leaves it alone and says so.
        grown = f"{topic_prefix}careloop.identity"
        await admin.create_partitions({grown: NewPartitions(total_count=5)})
        for _ in range(100):  # the controller's metadata catches up within moments
            (now,) = await admin.describe_topics([grown])
            if len(now["partitions"]) == 5:
                break
            await asyncio.sleep(0.1)
    finally:
        await admin.close()

    second = await apply_topic_catalogue(settings)
    assert second.created == []
    assert set(second.unchanged) == expected - {grown}
    assert second.differing == {grown: "5 partitions, catalogue says 3"}


def test_vault_token_is_read_from_its_file_and_reread_when_it_changes(
    vault_addr: str, vault_root_token: str, vault_tokens: dict[str, str], tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(vault_tokens["patients"] + "\n")
    settings = KitSettings(vault_addr=vault_addr, vault_token_file=str(token_file))
    vault = Vault.from_settings(settings)
    read = asyncio.run(vault.read_secret("careloop/patients/blind-index"))
    assert "key" in read

    # The agent writes a new token and the old one is revoked: the next call uses the new one.
    root = hvac.Client(url=vault_addr, token=vault_root_token)
    fresh = root.auth.token.create(policies=["careloop-patients"], ttl="10m")["auth"]
    token_file.write_text(fresh["client_token"] + "\n")
    os.utime(token_file, ns=(1, 1))  # a distinct stamp even within one clock tick
    assert asyncio.run(vault.read_secret("careloop/patients/blind-index")) == read
    root.auth.token.revoke(fresh["client_token"])
    with pytest.raises(VaultUnavailable):
        asyncio.run(vault.read_secret("careloop/patients/blind-index"))

    token_file.unlink()
    with pytest.raises(VaultUnavailable, match="CARELOOP_VAULT_TOKEN_FILE"):
        asyncio.run(vault.read_secret("careloop/patients/blind-index"))


def test_production_takes_a_token_file_instead_of_a_token() -> None:
    tls = {
        "environment": "production",
        "database_url": "postgresql+asyncpg://svc:pw@db/svc?ssl=verify-full",
        "auth_jwks_url": "https://identity/.well-known/jwks.json",
        "vault_addr": "https://vault:8200",
        "kafka_security_protocol": "SSL",
        "http_tls_certfile": "/etc/careloop/tls/tls.crt",
        "http_tls_keyfile": "/etc/careloop/tls/tls.key",
    }
    with pytest.raises(ValueError, match="vault_token still holds"):
        KitSettings(**tls)
    assert KitSettings(**tls, vault_token_file="/vault/secrets/token").vault_token_file
    with pytest.raises(ValueError, match="database_url still holds"):
        KitSettings(
            **{
                **tls,
                "database_url": f"postgresql+asyncpg://a:{LOCAL_DEVELOPMENT_PLACEHOLDER}@db/a?ssl=require",
            },
            vault_token_file="/vault/secrets/token",
        )


class _Collector(BaseHTTPRequestHandler):
    received: list[tuple[str, str, int]] = []

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        self.rfile.read(length)
        self.received.append((self.path, self.headers["Content-Type"], length))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()


def test_spans_reach_an_otlp_collector(collector: str) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(otlp_exporter(collector)))
    with provider.get_tracer("test").start_as_current_span("booking"):
        pass
    assert provider.force_flush(10_000)
    provider.shutdown()
    assert _Collector.received
    path, content_type, length = _Collector.received[-1]
    assert path == "/v1/traces"
    assert content_type == "application/x-protobuf"
    assert length > 0


def test_a_service_token_is_renewed_to_its_full_period(
    vault_addr: str, vault_root_token: str
) -> None:
    root = hvac.Client(url=vault_addr, token=vault_root_token)
    token = root.auth.token.create(policies=["careloop-patients"], period="1h")["auth"]
    own = hvac.Client(url=vault_addr, token=token["client_token"])
    assert not own.auth.token.lookup_self()["data"].get("last_renewal_time")
    vault = Vault(vault_addr, token["client_token"])
    assert asyncio.run(vault.renew_token()) == 3600
    assert own.auth.token.lookup_self()["data"]["last_renewal_time"]
    assert not vault.token_from_file
