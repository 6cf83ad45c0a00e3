"""The base class of every integration event, its naming rules and the type registry.

An event class is a frozen pydantic model with two class-level facts: its CloudEvents
type (``careloop.<service>.<entity>.<verb>.v<N>``) and the topic it travels on
(``careloop.<service>``). Both are checked when the class is created, so a badly named
event fails at import time rather than in production. Every concrete class registers
itself, so ``parse`` can turn a Kafka record back into the right model.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, StringConstraints

EVENT_TYPE_PATTERN = re.compile(
    r"^careloop\.(?P<service>[a-z][a-z-]*)\.(?P<entity>[a-z][a-z_]*)\.(?P<verb>[a-z_]+)"
    r"\.v(?P<version>[0-9]+)$"
)
"""``careloop.<service>.<entity>.<verb-past-tense>.v<N>``."""

SERVICE_TOPIC_PATTERN = re.compile(r"^careloop\.(?P<service>[a-z][a-z-]*)$")
"""``careloop.<service>``: one topic per service stream."""


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
"""A timezone-aware datetime, normalised to UTC. Naive datetimes are rejected."""

Id = Annotated[str, StringConstraints(min_length=1, max_length=128)]
"""An opaque identifier (patient id, org id, ...). Never a name or other PHI."""


class UnknownEventType(LookupError):
    """No event class is registered for a CloudEvents type."""


_REGISTRY: dict[str, type[Event]] = {}


class Event(BaseModel):
    """Base class of integration events.

    Subclasses set ``event_type`` and ``topic`` (or ``emitted_by_any_service``), declare
    their fields and write a docstring saying when the event is emitted.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    event_type: ClassVar[str]
    """CloudEvents type, e.g. ``careloop.patients.patient.registered.v1``."""
    topic: ClassVar[str]
    """Kafka topic, ``careloop.<service>``. Unset when ``emitted_by_any_service``."""
    service: ClassVar[str]
    """The service segment of ``event_type`` (derived)."""
    event_version: ClassVar[int]
    """The ``N`` of the ``.vN`` suffix (derived). Named so it cannot clash with a field."""
    emitted_by_any_service: ClassVar[bool] = False
    """True for the few shared types every service publishes on its own topic
    (``careloop.<emitter>``); the topic/service check is skipped for them."""
    key_fields: ClassVar[tuple[str, ...]] = ("patient_id",)
    """Fields whose first non-empty value is the Kafka record key. Empty: one constant
    key (the event type), so every event of the type lands on one partition in order."""

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if "event_type" not in cls.__dict__:
            if any(base is not Event and "event_type" in vars(base) for base in cls.__mro__[1:]):
                raise TypeError(
                    f"{cls.__qualname__} subclasses a concrete event; a new event "
                    "(or a new version) must declare its own event_type"
                )
            return  # an abstract intermediate class
        _check_naming(cls)
        _check_key_fields(cls)
        _register(cls)

    @classmethod
    def topic_for(cls, emitter: str) -> str:
        """The topic this event goes to when published by service ``emitter``."""
        if cls.emitted_by_any_service:
            return f"careloop.{emitter}"
        if emitter != cls.service:
            raise ValueError(
                f"{cls.event_type} belongs to service {cls.service!r}, not {emitter!r}"
            )
        return cls.topic

    def partition_key(self) -> str:
        """The Kafka record key: the patient id for patient-scoped events."""
        for name in self.key_fields:
            value = getattr(self, name)
            if value is not None and str(value) != "":
                return str(value)
        if not self.key_fields:
            return self.event_type
        raise ValueError(f"{self.event_type}: no key among {self.key_fields}")

    def to_json(self) -> bytes:
        """The Kafka record value: the event's JSON."""
        return self.model_dump_json().encode()


def _check_naming(cls: type[Event]) -> None:
    event_type = cls.__dict__["event_type"]
    if not isinstance(event_type, str):
        raise TypeError(f"{cls.__qualname__}.event_type must be a str")
    match = EVENT_TYPE_PATTERN.fullmatch(event_type)
    if match is None:
        raise TypeError(
            f"{cls.__qualname__}: event type {event_type!r} does not match "
            "careloop.<service>.<entity>.<verb-past-tense>.v<N> "
            f"(pattern {EVENT_TYPE_PATTERN.pattern})"
        )
    version = int(match["version"])
    if version < 1:
        raise TypeError(f"{cls.__qualname__}: event versions start at v1, got {event_type!r}")
    cls.service = match["service"]
    cls.event_version = version
    if cls.emitted_by_any_service:
        if "topic" in cls.__dict__:
            raise TypeError(
                f"{cls.__qualname__} is emitted by any service on its own topic; "
                "it must not declare a topic (use topic_for(emitter))"
            )
        return
    topic = cls.__dict__.get("topic")
    if not isinstance(topic, str):
        raise TypeError(f"{cls.__qualname__} must declare topic = 'careloop.{match['service']}'")
    topic_match = SERVICE_TOPIC_PATTERN.fullmatch(topic)
    if topic_match is None or topic_match["service"] != match["service"]:
        raise TypeError(
            f"{cls.__qualname__}: topic {topic!r} must be 'careloop.{match['service']}', "
            f"the stream of the service named in {event_type!r}"
        )


def _check_key_fields(cls: type[Event]) -> None:
    missing = [name for name in cls.key_fields if name not in cls.model_fields]
    if missing:
        raise TypeError(f"{cls.__qualname__}: key_fields {missing} are not fields of the event")


def _register(cls: type[Event]) -> None:
    existing = _REGISTRY.get(cls.event_type)
    if existing is not None and existing is not cls:
        same_definition = (existing.__module__, existing.__qualname__) == (
            cls.__module__,
            cls.__qualname__,
        )
        if not same_definition:  # re-executing the same module (reload) replaces quietly
            raise TypeError(
                f"event type {cls.event_type!r} is already defined by "
                f"{existing.__module__}.{existing.__qualname__}; a changed contract "
                "needs a new version (a new model)"
            )
    _REGISTRY[cls.event_type] = cls


def registry() -> dict[str, type[Event]]:
    """A copy of the registry: event type -> event class, sorted by type."""
    return dict(sorted(_REGISTRY.items()))


def event_class(event_type: str) -> type[Event]:
    """The class registered for ``event_type``; raises ``UnknownEventType``."""
    try:
        return _REGISTRY[event_type]
    except KeyError:
        raise UnknownEventType(f"no event class registered for type {event_type!r}") from None


def parse(event_type: str, payload: bytes) -> Event:
    """Decode a record value into its event model.

    Raises ``UnknownEventType`` or ``pydantic.ValidationError``. Unknown fields are
    ignored, so consumers keep working when a producer adds an optional field.
    """
    return event_class(event_type).model_validate_json(payload)


@contextmanager
def isolated_registry(initial: Mapping[str, type[Event]] | None = None) -> Iterator[None]:
    """Swap the registry for ``initial`` (or an empty one) and restore it afterwards.

    For tests and tooling that define throwaway event classes.
    """
    saved = dict(_REGISTRY)
    _REGISTRY.clear()
    _REGISTRY.update(initial or {})
    try:
        yield
    finally:
        _REGISTRY.clear()
        _REGISTRY.update(saved)
