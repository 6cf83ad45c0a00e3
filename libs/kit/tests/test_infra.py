"""Service-tier checks that the local infrastructure really runs: Kafka, PostgreSQL, OpenBao."""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from pathlib import Path

import hvac
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from hvac.exceptions import Forbidden
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine

from careloop_kit.infra.kafka import create_topics
from careloop_kit.infra.openbao import OpenBaoServer, bootstrap_vault
from careloop_kit.infra.ports import free_port
from careloop_kit.infra.postgres import PostgresServer

pytestmark = pytest.mark.service


async def test_kafka_produce_and_consume(kafka_bootstrap: str, topic_prefix: str) -> None:
    topic = f"{topic_prefix}careloop.infra"
    await create_topics(kafka_bootstrap, [topic], partitions=3)
    await create_topics(kafka_bootstrap, [topic], partitions=3)  # already exists: no error

    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap, acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        meta = await producer.send_and_wait(
            topic,
            b'{"hello": "world"}',
            key=b"patient-1",
            headers=[("ce_type", b"careloop.infra.checked.v1")],
        )
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=f"{topic_prefix}group",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        record = await consumer.getone()
    finally:
        await consumer.stop()
    assert record.value == b'{"hello": "world"}'
    assert record.key == b"patient-1"
    assert (record.partition, record.offset) == (meta.partition, meta.offset)
    assert ("ce_type", b"careloop.infra.checked.v1") in list(record.headers)


async def test_postgres_database_per_test(
    make_database: Callable[[str], Awaitable[str]], postgres_server: PostgresServer
) -> None:
    dsn = await make_database("infra")
    engine = create_async_engine(dsn)
    try:
        async with engine.begin() as conn:
            assert (await conn.execute(text("select 1"))).scalar_one() == 1
            user = (await conn.execute(text("select current_user"))).scalar_one()
            await conn.execute(text("create table probe (secret text)"))
            await conn.execute(text("insert into probe values ('dump-me')"))
    finally:
        await engine.dispose()
    assert user.startswith("infra_")
    database = make_url(dsn).database
    assert database is not None
    assert "dump-me" in postgres_server.dump(database)
    await postgres_server.drop_database(database)
    assert not await postgres_server.database_exists(database)


def test_vault_service_tokens_are_least_privilege(
    vault_addr: str, vault_tokens: dict[str, str]
) -> None:
    patients = hvac.Client(url=vault_addr, token=vault_tokens["patients"])
    datakey = patients.secrets.transit.generate_data_key(name="careloop-phi", key_type="plaintext")[
        "data"
    ]
    assert len(base64.b64decode(datakey["plaintext"])) == 32
    unwrapped = patients.secrets.transit.decrypt_data(
        name="careloop-phi", ciphertext=datakey["ciphertext"]
    )["data"]["plaintext"]
    assert unwrapped == datakey["plaintext"]

    blind = patients.secrets.kv.v2.read_secret_version(
        path="careloop/patients/blind-index", mount_point="secret", raise_on_deleted_version=True
    )["data"]["data"]["key"]
    assert len(base64.b64decode(blind)) == 32

    with pytest.raises(Forbidden):
        patients.secrets.transit.sign_data(
            name="careloop-audit-checkpoint", hash_input=base64.b64encode(b"x").decode()
        )

    audit = hvac.Client(url=vault_addr, token=vault_tokens["audit"])
    signed = audit.secrets.transit.sign_data(
        name="careloop-audit-checkpoint", hash_input=base64.b64encode(b"x").decode()
    )["data"]["signature"]
    assert signed.startswith("vault:v1:")
    with pytest.raises(Forbidden):
        audit.secrets.transit.generate_data_key(name="careloop-phi", key_type="plaintext")
    with pytest.raises(Forbidden):
        audit.secrets.kv.v2.read_secret_version(
            path="careloop/patients/blind-index",
            mount_point="secret",
            raise_on_deleted_version=True,
        )


def test_persistent_openbao_keeps_transit_keys(tmp_path: Path) -> None:
    server = OpenBaoServer.persistent(tmp_path / "bao", port=free_port(), cluster_port=free_port())
    server.start()
    try:
        assert (server.init_file.stat().st_mode & 0o777) == 0o600
        tokens = bootstrap_vault(server.addr, server.root_token, ["patients"])
        client = hvac.Client(url=server.addr, token=tokens["patients"])
        datakey = client.secrets.transit.generate_data_key(
            name="careloop-phi", key_type="plaintext"
        )["data"]
        blind_before = hvac.Client(
            url=server.addr, token=server.root_token
        ).secrets.kv.v2.read_secret_version(
            path="careloop/patients/blind-index",
            mount_point="secret",
            raise_on_deleted_version=True,
        )["data"]["data"]["key"]

        server.stop()
        server.start()  # unseals from init.json

        assert bootstrap_vault(server.addr, server.root_token, ["patients"])  # idempotent
        unwrapped = client.secrets.transit.decrypt_data(
            name="careloop-phi", ciphertext=datakey["ciphertext"]
        )["data"]["plaintext"]
        assert unwrapped == datakey["plaintext"]
        blind_after = hvac.Client(
            url=server.addr, token=server.root_token
        ).secrets.kv.v2.read_secret_version(
            path="careloop/patients/blind-index",
            mount_point="secret",
            raise_on_deleted_version=True,
        )["data"]["data"]["key"]
        assert blind_after == blind_before
    finally:
        server.stop()
