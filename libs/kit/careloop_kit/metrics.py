"""OpenTelemetry metrics of one service app: a Prometheus `/metrics` page and OTLP export.

Each app gets its own `MeterProvider` and its own Prometheus registry, never the
process-global ones: several services may share a process (the end-to-end tests run
six), and each `/metrics` page must show only its own service.

Instruments, as OpenTelemetry names them -> as Prometheus shows them [attributes]:

- `http.server.request.duration` (s, histogram) -> `http_server_request_duration_seconds`
  [`http_request_method`, `http_route`, `http_response_status_code`]
- `careloop.consumer.lag` (gauge) -> `careloop_consumer_lag`
  [`consumer_group`, `topic`, `partition`]
- `careloop.consumer.dead_letters` (counter) -> `careloop_consumer_dead_letters_total`
  [`consumer_group`, `reason`]
- `careloop.outbox.backlog` (gauge) -> `careloop_outbox_backlog`
- `careloop.outbox.oldest_unsent_age` (s, gauge) -> `careloop_outbox_oldest_unsent_age_seconds`
- `careloop.timer.backlog` (gauge) -> `careloop_timer_backlog`
- `careloop.timer.oldest_due_age` (s, gauge) -> `careloop_timer_oldest_due_age_seconds`
- `careloop.messages.sent` (counter) -> `careloop_messages_sent_total` [`channel`, `outcome`]

FastAPI records the HTTP histogram itself (with the route template, never the raw path
or query string) on the provider given here. The gauges read values that the outbox
relay, the consumers and the backlog sampler keep up to date, so a scrape never waits
on the database or Kafka.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from contextvars import ContextVar, Token
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Counter, Meter, NoOpMeter, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from careloop_kit.clock import Clock

log = logging.getLogger(__name__)

METRICS_PATH = "/metrics"
PROMETHEUS_CONTENT_TYPE = CONTENT_TYPE_LATEST

HTTP_SERVER_DURATION = "http.server.request.duration"
CONSUMER_LAG = "careloop.consumer.lag"
DEAD_LETTERS = "careloop.consumer.dead_letters"
OUTBOX_BACKLOG = "careloop.outbox.backlog"
OUTBOX_OLDEST_AGE = "careloop.outbox.oldest_unsent_age"
TIMER_BACKLOG = "careloop.timer.backlog"
TIMER_OLDEST_AGE = "careloop.timer.oldest_due_age"
MESSAGES_SENT = "careloop.messages.sent"

BACKLOG_SAMPLE_INTERVAL_S = 5.0
"""How often consumer lag and the timer backlog are measured (the relay reads the outbox
backlog as often): fresh enough for alerts measured in minutes, one query per interval."""
OTLP_EXPORT_INTERVAL_MS = 15_000
OTLP_TIMEOUT_S = 5.0
SHUTDOWN_FLUSH_S = 3.0


@dataclass(frozen=True)
class Backlog:
    """Rows waiting, and the time the oldest of them has been waiting since."""

    count: int
    oldest_at: datetime | None


class LagSource(Protocol):
    """A consumer that knows how far behind the end of each of its partitions it is."""

    @property
    def group_id(self) -> str: ...

    @property
    def lag(self) -> Mapping[tuple[str, int], int]:
        """Records not yet committed, by (topic, partition)."""
        ...


class OutboxSource(Protocol):
    """The outbox relay, which samples the unsent rows as it polls."""

    @property
    def backlog(self) -> Backlog | None: ...


class ServiceMetrics:
    """The meter provider, Prometheus registry and instruments of one service app.

    Built with the app; the lifespan attaches what the gauges read (`watch`) and
    detaches it at shutdown, so a stopped app reports no stale backlog.
    """

    def __init__(
        self,
        service: str,
        *,
        clock: Clock,
        otlp_endpoint: str | None = None,
        otlp_interval_ms: int = OTLP_EXPORT_INTERVAL_MS,
    ) -> None:
        self.service = service
        self._clock = clock
        self.registry = CollectorRegistry(auto_describe=False)
        readers: list[MetricReader] = [PrometheusMetricReader(registry=self.registry)]
        if otlp_endpoint:
            readers.append(_otlp_reader(otlp_endpoint, otlp_interval_ms))
        self.provider = MeterProvider(
            metric_readers=readers,
            resource=Resource.create({"service.name": f"careloop-{service}"}),
        )
        self.meter = self.provider.get_meter("careloop")
        self.dead_letters: Counter = self.meter.create_counter(
            DEAD_LETTERS,
            unit="{record}",
            description="Records a consumer group gave up on and sent to its dead-letter topic.",
        )
        self._consumers: Sequence[LagSource] = ()
        self._outbox: OutboxSource | None = None
        self.timer_backlog: Backlog | None = None
        """Set by the backlog sampler of the running service."""
        self.meter.create_observable_gauge(
            CONSUMER_LAG,
            [self._observe_lag],
            unit="{record}",
            description="Records on a partition after the group's committed offset.",
        )
        self.meter.create_observable_gauge(
            OUTBOX_BACKLOG,
            [self._observe_outbox_count],
            unit="{event}",
            description="Outbox rows not yet published to Kafka.",
        )
        self.meter.create_observable_gauge(
            OUTBOX_OLDEST_AGE,
            [self._observe_outbox_age],
            unit="s",
            description="Age of the oldest outbox row not yet published.",
        )
        self.meter.create_observable_gauge(
            TIMER_BACKLOG,
            [self._observe_timer_count],
            unit="{timer}",
            description="Durable timers that are due and not yet fired or cancelled.",
        )
        self.meter.create_observable_gauge(
            TIMER_OLDEST_AGE,
            [self._observe_timer_age],
            unit="s",
            description="How long the longest-overdue timer has been due.",
        )

    def watch(self, *, consumers: Sequence[LagSource], outbox: OutboxSource) -> None:
        """Report these consumers' lag and this relay's backlog from now on."""
        self._consumers = consumers
        self._outbox = outbox

    def unwatch(self) -> None:
        """Stop reporting the running service's gauges (it is shutting down)."""
        self._consumers = ()
        self._outbox = None
        self.timer_backlog = None

    def render(self) -> bytes:
        """The Prometheus text exposition of this service's metrics."""
        return generate_latest(self.registry)

    def flush(self) -> None:
        """Push what the OTLP exporter has not sent yet. Blocking: with the collector down
        it waits out the export timeout, so call it from a thread."""
        try:
            self.provider.force_flush(timeout_millis=SHUTDOWN_FLUSH_S * 1000)
        except Exception as exc:  # a collector outage must not fail a shutdown
            log.warning("metrics flush failed: %r", exc)

    def _observe_lag(self, _options: CallbackOptions) -> Iterable[Observation]:
        for consumer in self._consumers:
            for (topic, partition), lag in sorted(consumer.lag.items()):
                yield Observation(
                    lag,
                    {"consumer_group": consumer.group_id, "topic": topic, "partition": partition},
                )

    def _outbox_backlog(self) -> Backlog | None:
        return self._outbox.backlog if self._outbox is not None else None

    def _observe_outbox_count(self, _options: CallbackOptions) -> Iterable[Observation]:
        return _count(self._outbox_backlog())

    def _observe_outbox_age(self, _options: CallbackOptions) -> Iterable[Observation]:
        return self._age(self._outbox_backlog())

    def _observe_timer_count(self, _options: CallbackOptions) -> Iterable[Observation]:
        return _count(self.timer_backlog)

    def _observe_timer_age(self, _options: CallbackOptions) -> Iterable[Observation]:
        return self._age(self.timer_backlog)

    def _age(self, backlog: Backlog | None) -> list[Observation]:
        if backlog is None:
            return []
        since = backlog.oldest_at
        age = max(0.0, (self._clock.now() - since).total_seconds()) if since else 0.0
        return [Observation(age)]


def _count(backlog: Backlog | None) -> list[Observation]:
    """Nothing before the first sample: a made-up zero would hide a sampler that fails."""
    return [] if backlog is None else [Observation(backlog.count)]


def _otlp_reader(endpoint: str, interval_ms: int) -> MetricReader:
    """Periodic OTLP/HTTP export to `<endpoint>/v1/metrics`, from the reader's own thread:
    with the collector down an export fails after `OTLP_TIMEOUT_S` and its points are
    dropped; requests and consumers never wait for it."""
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    exporter = OTLPMetricExporter(
        endpoint=endpoint.rstrip("/") + "/v1/metrics", timeout=OTLP_TIMEOUT_S
    )
    return PeriodicExportingMetricReader(
        exporter,
        export_interval_millis=interval_ms,
        export_timeout_millis=OTLP_TIMEOUT_S * 1000,
    )


_current: ContextVar[ServiceMetrics | None] = ContextVar("careloop_service_metrics", default=None)


def current_metrics() -> ServiceMetrics | None:
    """The metrics of the service whose start-up (or background work) is running."""
    return _current.get()


def service_meter() -> Meter:
    """The meter of the service whose start-up or background work is running, for
    adapters built there (messaging's channels); a no-op meter anywhere else."""
    metrics = _current.get()
    return metrics.meter if metrics is not None else NoOpMeter("careloop")


def set_current(metrics: ServiceMetrics | None) -> Token[ServiceMetrics | None]:
    """Make `metrics` the current service's (returns the token for `reset_current`).

    The lifespan sets it before start-up and resets it before serving: the tasks it
    starts on the way (consumers, relay, background jobs) copy it, requests do not need it.
    """
    return _current.set(metrics)


def reset_current(token: Token[ServiceMetrics | None]) -> None:
    """Undo `set_current`."""
    _current.reset(token)
