"""One call gives every service its runtime: database, Vault, Kafka relay and
consumers, telemetry and metrics, problem+json, request ids, `/healthz`, `/readyz`
and `/metrics`.

Nothing is built at import time: `create_service_app` returns an app whose
lifespan builds the runtime, so tests and processes each get their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Generic, TypeVar
from uuid import uuid4

from aiokafka import AIOKafkaProducer
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from opentelemetry import trace
from sqlalchemy import MetaData, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from careloop_contracts import CONSUMER_GROUPS, dead_letter_topic
from careloop_kit.audit import AUDIT_RECORDER_KEY, AuditRecorder
from careloop_kit.auth.dependencies import TOKEN_VERIFIER_KEY, install_auth_handlers
from careloop_kit.auth.feed import follow_revocations
from careloop_kit.auth.jwks import HttpJwksSource, JwksSource
from careloop_kit.auth.revocation import REVOKED_SESSIONS_KEY, RevokedSessions
from careloop_kit.auth.tokens import TokenVerifier
from careloop_kit.bus.consumer import EventConsumer, Handler
from careloop_kit.bus.kafka import ensure_topics, make_consumer, make_producer, topic_name
from careloop_kit.bus.outbox import Outbox, OutboxRelay
from careloop_kit.clock import Clock, SystemClock
from careloop_kit.db import PlatformTables, make_engine, make_sessionmaker
from careloop_kit.db.timers import timer_backlog
from careloop_kit.metrics import (
    BACKLOG_SAMPLE_INTERVAL_S,
    METRICS_PATH,
    PROMETHEUS_CONTENT_TYPE,
    SHUTDOWN_FLUSH_S,
    ServiceMetrics,
    reset_current,
    set_current,
)
from careloop_kit.problems import install_problem_handlers, problem_response
from careloop_kit.settings import KitSettings, internal_verify
from careloop_kit.telemetry import setup_telemetry
from careloop_kit.vault import Vault, VaultUnavailable

log = logging.getLogger(__name__)
tracer = trace.get_tracer("careloop.http")

HEALTH_PATHS = frozenset({"/healthz", "/readyz"})
OPERATIONS_PATHS = HEALTH_PATHS | {METRICS_PATH}
"""Answered while the service is not ready, and left out of request metrics and traces:
probes and scrapes every few seconds would drown the traffic they measure."""


@dataclass(frozen=True)
class ConsumerSpec:
    """A consumer group of this service: its topics and its handlers by event type."""

    name: str
    topics: Sequence[str]
    handlers: Callable[[Runtime], Mapping[str, Handler]]


def catalogued_group(service: str, consumer: ConsumerSpec) -> str:
    """The consumer's group id, once the topic catalogue is seen to list it with these topics.

    Deployments create dead-letter topics and grant topic access from the catalogue
    (`careloop topics apply`), so a group missing there would fail in production only.
    """
    group_id = f"careloop.{service}.{consumer.name}"
    listed = CONSUMER_GROUPS.get(group_id)
    if listed is None or set(listed.topics) != set(consumer.topics):
        raise RuntimeError(
            f"consumer group {group_id} reads {sorted(consumer.topics)} but the topic catalogue "
            f"lists {sorted(listed.topics) if listed else 'no such group'}: update "
            "CONSUMER_GROUPS in contracts/careloop_contracts/topics.py"
        )
    return group_id


@dataclass(frozen=True)
class ServiceSpec:
    """What makes a service: its name, tables, routers, consumers and start-up hook."""

    name: str
    metadata: MetaData
    tables: PlatformTables
    routers: Sequence[APIRouter]
    consumers: Sequence[ConsumerSpec] = ()
    on_startup: Callable[[Runtime], Awaitable[None]] | None = None
    on_shutdown: Callable[[Runtime], Awaitable[None]] | None = None
    background: Sequence[Callable[[Runtime, asyncio.Event], Awaitable[None]]] = ()
    description: str = ""
    verifies_tokens: bool = False
    """Verify identity's access tokens (`careloop_kit.auth.require`) and follow logouts."""


READINESS_DEPENDENCIES = ("database", "broker", "vault")
READINESS_CHECK_TIMEOUT_S = 3.0
"""How long one readiness probe of a dependency may take before it counts as failed."""


@dataclass
class DependencyHealth:
    """What the readiness checks have seen of one dependency."""

    answered: bool = False
    """Some check has succeeded since start-up."""
    failures: int = 0
    """Failed checks in a row since the last success."""
    error: str | None = None
    """Why the latest check failed; cleared by a success."""


@dataclass
class Readiness:
    """Whether the service takes traffic, as the readiness loop last saw it.

    A dependency counts as down until it has answered once after start-up, and again
    after `failure_threshold` failed checks in a row (Kubernetes probes count the same
    way), so one slow answer on a busy host does not turn all traffic away. One
    successful check counts it up again.
    """

    failure_threshold: int = 3
    dependencies: dict[str, DependencyHealth] = field(
        default_factory=lambda: {name: DependencyHealth() for name in READINESS_DEPENDENCIES}
    )
    checked_at: float = 0.0

    def record(self, name: str, error: str | None) -> None:
        """Count one check of dependency `name`: a success (`error` None) or a failure."""
        health = self.dependencies[name]
        if error is None:
            if health.failures:
                log.info("readiness: %s answers after %d failed checks", name, health.failures)
            health.answered, health.failures, health.error = True, 0, None
            return
        health.failures += 1
        health.error = error
        # Every failure up to the one that counts it down, so flapping shows in the logs;
        # then quiet until it answers again.
        if health.failures <= self.failure_threshold:
            log.warning(
                "readiness: check of %s failed (%d in a row, down at %d%s): %s",
                name,
                health.failures,
                self.failure_threshold,
                "" if health.answered else "; not answered since start-up",
                error,
            )

    def is_up(self, name: str) -> bool:
        """Dependency `name` has answered since start-up and not failed too often since."""
        health = self.dependencies[name]
        return health.answered and health.failures < self.failure_threshold

    @property
    def ready(self) -> bool:
        """Every dependency is up: the service takes traffic."""
        return all(self.is_up(name) for name in self.dependencies)

    @property
    def checks(self) -> dict[str, bool]:
        """Each dependency: counted up (true) or down."""
        return {name: self.is_up(name) for name in self.dependencies}

    @property
    def down(self) -> list[str]:
        """The dependencies counted down, by name."""
        return sorted(name for name in self.dependencies if not self.is_up(name))

    @property
    def failures(self) -> dict[str, int]:
        """Each dependency's failed checks in a row."""
        return {name: health.failures for name, health in self.dependencies.items()}

    @property
    def errors(self) -> dict[str, str]:
        """The error of each dependency whose latest check failed, down or not yet."""
        return {
            name: health.error
            for name, health in self.dependencies.items()
            if health.error is not None
        }


@dataclass
class Runtime:
    """The live I/O of one service process, built in the lifespan."""

    spec: ServiceSpec
    settings: KitSettings
    clock: Clock
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    vault: Vault
    producer: AIOKafkaProducer
    outbox: Outbox
    relay: OutboxRelay
    metrics: ServiceMetrics
    consumers: list[EventConsumer] = field(default_factory=list)
    readiness: Readiness = field(default_factory=Readiness)
    state: dict[str, Any] = field(default_factory=dict)

    def topic(self, name: str) -> str:
        """Physical name of a logical topic."""
        return topic_name(self.settings, name)


def _failure(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {READINESS_CHECK_TIMEOUT_S:g}s"
    return f"{type(exc).__name__}: {exc}"[:300]


async def _probe_database(runtime: Runtime) -> str | None:
    try:
        async with asyncio.timeout(READINESS_CHECK_TIMEOUT_S):
            async with runtime.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
    except Exception as exc:
        return _failure(exc)
    return None


async def _probe_broker(runtime: Runtime) -> str | None:
    try:
        await asyncio.wait_for(
            runtime.producer.client.fetch_all_metadata(), timeout=READINESS_CHECK_TIMEOUT_S
        )
    except Exception as exc:
        return _failure(exc)
    return None


async def _probe_vault(runtime: Runtime) -> str | None:
    try:
        healthy = await asyncio.wait_for(runtime.vault.healthy(), timeout=READINESS_CHECK_TIMEOUT_S)
    except Exception as exc:
        return _failure(exc)
    return None if healthy else "Vault unreachable, sealed, or token invalid"


async def check_readiness(runtime: Runtime) -> Readiness:
    """Probe database, broker and Vault once (together) and count the outcome.

    The readiness loop calls this every `readiness_interval_s`; `/readyz` and the
    request gate only read the state it leaves, so the threshold counts checks at one
    steady pace however many probes ask.
    """
    status = runtime.readiness
    outcomes = await asyncio.gather(
        _probe_database(runtime), _probe_broker(runtime), _probe_vault(runtime)
    )
    for name, error in zip(READINESS_DEPENDENCIES, outcomes, strict=True):
        status.record(name, error)
    status.checked_at = time.time()
    return status


STARTUP_RECHECK_S = 0.5


async def _first_readiness(runtime: Runtime) -> None:
    """The start-up checks: up to `readiness_failure_threshold` of them, a moment apart,
    until every dependency has answered once.

    A slow first answer on a busy host then costs start-up half a second, not a readiness
    interval of refused requests; a dependency that does not answer leaves the service
    starting not ready, for the loop to count it up once it does.
    """
    for attempt in range(runtime.readiness.failure_threshold):
        if attempt:
            await asyncio.sleep(STARTUP_RECHECK_S)
        await check_readiness(runtime)
        if runtime.readiness.ready:
            return


async def _readiness_loop(runtime: Runtime, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), timeout=runtime.settings.readiness_interval_s)
        except TimeoutError:
            await check_readiness(runtime)


VAULT_RENEW_INTERVAL_S = 3600.0


async def _renew_vault_token(runtime: Runtime, stop: asyncio.Event) -> None:
    """Keep the service's periodic Vault token alive: renewed hourly, it never reaches the
    end of its period (32 days) however long the process runs. A token from a file is
    renewed too: compose's bootstrap writes one that nothing else renews, and renewing a
    Vault agent's token as well does no harm."""
    while not stop.is_set():
        try:
            ttl = await runtime.vault.renew_token()
            log.info("vault token renewed for %ss", ttl)
        except VaultUnavailable as exc:
            log.warning("vault token renewal failed, retrying in a minute: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=60)
            continue
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=VAULT_RENEW_INTERVAL_S)


async def _sample_backlogs(runtime: Runtime, stop: asyncio.Event) -> None:
    """Measure consumer lag and the timer backlog for the metrics, once per interval.

    Scrapes read these samples and never query anything themselves; the outbox relay
    samples the outbox backlog in its own loop.
    """
    while not stop.is_set():
        for consumer in runtime.consumers:
            try:
                await asyncio.wait_for(consumer.measure_lag(), timeout=BACKLOG_SAMPLE_INTERVAL_S)
            except Exception as exc:  # the lag shown stays the last one measured
                log.warning("measuring the lag of %s failed: %r", consumer.group_id, exc)
        try:
            async with runtime.sessionmaker() as session:
                runtime.metrics.timer_backlog = await timer_backlog(
                    session, runtime.spec.tables, runtime.clock.now()
                )
        except Exception as exc:  # a database outage: readiness reports it, the gauge waits
            log.warning("measuring the timer backlog failed: %r", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=BACKLOG_SAMPLE_INTERVAL_S)


async def _supervise(name: str, work: Callable[[], Awaitable[None]], stop: asyncio.Event) -> None:
    """Keep a background loop alive through transient failures until shutdown."""
    while not stop.is_set():
        try:
            await work()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s crashed; restarting in 1s", name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1)


class _RequestContextMiddleware:
    """Request ids and refusal while not ready (pure ASGI).

    FastAPI itself opens the server span of each request (continuing an incoming
    `traceparent`), so the outbox stamps that trace onto the events it stages.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        request_id = headers.get("x-request-id") or str(uuid4())
        scope.setdefault("state", {})["request_id"] = request_id
        path: str = scope["path"]
        runtime: Runtime | None = getattr(scope["app"].state, "runtime", None)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        if runtime is not None and path not in OPERATIONS_PATHS and not runtime.readiness.ready:
            failing = ", ".join(runtime.readiness.down)
            response = problem_response(
                503,
                "Service unavailable",
                "dependency-unavailable",
                f"Not ready ({failing} failing); retry shortly. See /readyz.",
                path,
            )
            response.headers["X-Request-Id"] = request_id
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send_with_id)


def create_service_app(
    spec: ServiceSpec,
    settings: KitSettings,
    *,
    clock: Clock | None = None,
    jwks: JwksSource | None = None,
) -> FastAPI:
    """Build the FastAPI app of a service; its lifespan owns every connection.

    `jwks` replaces identity's published keys (tests sign their own tokens).
    """
    setup_telemetry(
        spec.name,
        level=settings.log_level,
        json_logs=settings.log_json,
        otlp_endpoint=settings.otel_exporter_otlp_endpoint,
    )
    the_clock = clock or SystemClock()
    # Built with the app, not per process: FastAPI records its request histogram on this
    # provider, and apps sharing a process must not share their metrics.
    metrics = ServiceMetrics(
        spec.name, clock=the_clock, otlp_endpoint=settings.otel_exporter_otlp_endpoint
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(
            settings.database_url.get_secret_value(), pool_size=settings.database_pool_size
        )
        sessionmaker = make_sessionmaker(engine)
        vault = Vault.from_settings(settings)
        producer = make_producer(settings, client_id=f"careloop-{spec.name}")
        await producer.start()
        outbox = Outbox(
            spec.tables, service=spec.name, topic_prefix=settings.topic_prefix, clock=the_clock
        )
        relay = OutboxRelay(
            sessionmaker,
            spec.tables,
            producer,
            service=spec.name,
            batch_size=settings.outbox_batch_size,
            poll_interval_s=settings.outbox_poll_interval_s,
            clock=the_clock,
        )
        runtime = Runtime(
            spec=spec,
            settings=settings,
            clock=the_clock,
            engine=engine,
            sessionmaker=sessionmaker,
            vault=vault,
            producer=producer,
            outbox=outbox,
            relay=relay,
            metrics=metrics,
            readiness=Readiness(failure_threshold=settings.readiness_failure_threshold),
        )
        runtime.state[AUDIT_RECORDER_KEY] = AuditRecorder(outbox, sessionmaker, clock=the_clock)
        stop = asyncio.Event()
        tasks: list[asyncio.Task[None]] = []
        kafka_consumers = []
        # Everything started below (start-up hook, consumers, background jobs) runs with
        # this service's metrics current; it is reset before serving.
        current = set_current(metrics)
        current_set = True
        try:
            await ensure_topics(settings, [outbox.own_topic])
            if spec.verifies_tokens:
                _install_token_verifier(runtime, jwks, stop, tasks)
            await _first_readiness(runtime)
            if spec.on_startup is not None:
                await spec.on_startup(runtime)
            for consumer_spec in spec.consumers:
                logical_group = catalogued_group(spec.name, consumer_spec)
                group_id = topic_name(settings, logical_group)
                dlq_topic = topic_name(settings, dead_letter_topic(logical_group))
                await ensure_topics(
                    settings,
                    [*(topic_name(settings, t) for t in consumer_spec.topics), dlq_topic],
                )
                kafka_consumer = make_consumer(
                    settings,
                    *(topic_name(settings, t) for t in consumer_spec.topics),
                    group_id=group_id,
                    client_id=f"careloop-{spec.name}-{consumer_spec.name}",
                )
                await kafka_consumer.start()
                kafka_consumers.append(kafka_consumer)
                consumer = EventConsumer(
                    kafka_consumer,
                    producer,
                    sessionmaker,
                    spec.tables,
                    group_id=group_id,
                    handlers=consumer_spec.handlers(runtime),
                    dlq_topic=dlq_topic,
                    max_retries=settings.consumer_max_retries,
                    retry_backoff_s=settings.consumer_retry_backoff_s,
                    clock=the_clock,
                    dead_letters=metrics.dead_letters,
                )
                runtime.consumers.append(consumer)
                tasks.append(
                    asyncio.create_task(
                        _supervise(group_id, lambda c=consumer: c.run(stop), stop)  # type: ignore[misc]
                    )
                )
            tasks.append(
                asyncio.create_task(_supervise("outbox relay", lambda: relay.run(stop), stop))
            )
            tasks.append(asyncio.create_task(_readiness_loop(runtime, stop)))
            metrics.watch(consumers=runtime.consumers, outbox=relay)
            tasks.append(
                asyncio.create_task(
                    _supervise("backlog sampler", lambda: _sample_backlogs(runtime, stop), stop)
                )
            )
            tasks.append(
                asyncio.create_task(
                    _supervise(
                        "vault token renewal", lambda: _renew_vault_token(runtime, stop), stop
                    )
                )
            )
            for job in spec.background:
                tasks.append(
                    asyncio.create_task(
                        _supervise(job.__name__, lambda j=job: j(runtime, stop), stop)  # type: ignore[misc]
                    )
                )
            app.state.runtime = runtime
            reset_current(current)
            current_set = False
            yield
        finally:
            if current_set:
                reset_current(current)
            stop.set()
            for task in tasks:
                try:
                    await asyncio.wait_for(task, timeout=10)
                except (TimeoutError, asyncio.CancelledError):
                    task.cancel()
            if spec.on_shutdown is not None:
                await spec.on_shutdown(runtime)
            for kafka_consumer in kafka_consumers:
                await kafka_consumer.stop()
            await producer.stop()
            await engine.dispose()
            metrics.unwatch()
            # The last points go to the collector from a thread: with the collector down the
            # export waits out its timeout, which must not stall the event loop.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.to_thread(metrics.flush), timeout=SHUTDOWN_FLUSH_S)

    app = FastAPI(
        title=f"Careloop {spec.name}",
        description=spec.description,
        version="0.1.0",
        lifespan=lifespan,
        telemetry={
            "meter_provider": metrics.provider,
            "exclude": lambda scope: scope.get("path") in OPERATIONS_PATHS,
        },
    )
    install_problem_handlers(app)
    install_auth_handlers(app)
    app.add_middleware(_RequestContextMiddleware)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process is up."""
        return {"status": "alive", "service": spec.name}

    @app.get("/readyz", tags=["health"])
    async def readyz(request: Request) -> Response:
        """Readiness: database, broker and Vault all reachable, as last checked."""
        # Reads the readiness loop's state and checks nothing itself: the request gate
        # refuses traffic on this same state, an answer never waits on a dependency's
        # timeout (which would outlast the kubelet's), and more probes do not mean more
        # counted failures.
        runtime: Runtime = request.app.state.runtime
        status = runtime.readiness
        body = {
            "service": spec.name,
            "ready": status.ready,
            "checks": status.checks,
            "failures": status.failures,
            "failure_threshold": status.failure_threshold,
            "errors": status.errors,
            "checked_at": datetime.fromtimestamp(status.checked_at, UTC).isoformat(),
            "outbox_published": runtime.relay.published,
        }
        if not status.ready:
            return problem_response(
                503,
                "Not ready",
                "not-ready",
                "A dependency is unreachable: " + ", ".join(status.down),
                "/readyz",
                **body,
            )
        return JSONResponse(body)

    # Left out of the OpenAPI document: it is for the operator's scraper, not an API
    # operation, and the gateway publishes every service's document.
    @app.get(METRICS_PATH, tags=["health"], response_class=Response, include_in_schema=False)
    async def prometheus_metrics() -> Response:
        """Metrics in the Prometheus text format (no PHI: routes are templates)."""
        return Response(metrics.render(), media_type=PROMETHEUS_CONTENT_TYPE)

    for router in spec.routers:
        app.include_router(router)
    return app


S = TypeVar("S", bound=KitSettings)


@dataclass(frozen=True)
class ServiceAppFactory(Generic[S]):
    """A service's `create_app(settings=None, *, clock=None, jwks=None)`: the FastAPI app
    of the spec `build_spec` makes from the settings (read from the environment when not
    given), with its runtime lifespan. `jwks` replaces identity's published keys (tests
    sign their own tokens)."""

    build_spec: Callable[[S], ServiceSpec]
    settings_type: type[S]

    def __call__(
        self,
        settings: S | None = None,
        *,
        clock: Clock | None = None,
        jwks: JwksSource | None = None,
    ) -> FastAPI:
        settings = settings or self.settings_type()
        return create_service_app(self.build_spec(settings), settings, clock=clock, jwks=jwks)


def _install_token_verifier(
    runtime: Runtime,
    jwks: JwksSource | None,
    stop: asyncio.Event,
    tasks: list[asyncio.Task[None]],
) -> None:
    settings = runtime.settings
    revoked = RevokedSessions(clock=runtime.clock)
    source = jwks or HttpJwksSource(
        settings.auth_jwks_url,
        ttl_s=settings.auth_jwks_ttl_s,
        clock=runtime.clock,
        verify=internal_verify(settings),
    )
    runtime.state[TOKEN_VERIFIER_KEY] = TokenVerifier(
        source,
        issuer=settings.auth_issuer,
        audience=settings.auth_audience,
        clock=runtime.clock,
        revoked=revoked,
    )
    runtime.state[REVOKED_SESSIONS_KEY] = revoked
    lookback = timedelta(seconds=revoked.ttl_s)

    async def follow() -> None:
        await follow_revocations(settings, revoked, stop, clock=runtime.clock, lookback=lookback)

    tasks.append(asyncio.create_task(_supervise("revocation feed", follow, stop)))


def get_runtime(request: Request) -> Runtime:
    """The runtime of the app handling this request."""
    runtime: Runtime = request.app.state.runtime
    return runtime


async def transactional_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One transaction per request: committed when the handler returns, before the response."""
    runtime = get_runtime(request)
    async with runtime.sessionmaker() as session, session.begin():
        yield session


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
SessionDep = Annotated[AsyncSession, Depends(transactional_session, scope="function")]
