"""Generated documents: per-event JSON Schemas, the AsyncAPI 3 document, the catalogue.

Everything here is a pure function of the event models and the topic catalogue, and
its output is deterministic, so the committed files can be checked for freshness.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from careloop_contracts.base import Event, registry
from careloop_contracts.envelope import HEADER_NAMES, REQUIRED_HEADERS, TRACEPARENT_PATTERN
from careloop_contracts.topics import (
    CONSUMER_GROUPS,
    DEAD_LETTER_PREFIX,
    DEAD_LETTER_RETENTION_MS,
    TOPICS,
    TopicSpec,
)

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_ID_PREFIX = "urn:careloop:event:"
KAFKA_BINDING_VERSION = "0.5.0"

Schema = dict[str, Any]

HEADER_DESCRIPTIONS: dict[str, str] = {
    "ce_specversion": "CloudEvents spec version, always `1.0`.",
    "ce_id": "Unique event id (uuid4); consumers deduplicate on it (inbox).",
    "ce_type": "Event type, `careloop.<service>.<entity>.<verb>.v<N>`; selects the model.",
    "ce_source": "URI reference of the emitter, e.g. `/careloop/patients`.",
    "ce_time": "When the event happened, RFC 3339 in UTC.",
    "ce_subject": "The record key: the patient id for patient-scoped events.",
    "content-type": "Always `application/json` (the record value is the event's JSON).",
    "ce_orgid": "Organization (tenant) id.",
    "ce_locationid": "Location id, when the event concerns one location.",
    "ce_correlationid": "Id shared by everything caused by one request or workflow.",
    "ce_causationid": "Id of the event or request that directly caused this event.",
    "traceparent": "W3C trace context of the producing span.",
}


def schema_id(event_type: str) -> str:
    """The ``$id`` of an event type's JSON Schema."""
    return f"{SCHEMA_ID_PREFIX}{event_type}"


def _clean_text(text: str) -> str:
    paragraphs = [" ".join(p.split()) for p in text.strip().split("\n\n")]
    return "\n\n".join(p for p in paragraphs if p)


def topic_label(event: type[Event]) -> str:
    """The topic an event travels on, ``careloop.<emitter>`` for shared types."""
    return "careloop.<emitter>" if event.emitted_by_any_service else event.topic


def key_label(event: type[Event]) -> str:
    """A short description of an event's Kafka record key."""
    if not event.key_fields:
        return "constant (the event type): one partition, total order"
    return ", else ".join(f"`{name}`" for name in event.key_fields)


def event_schema(event: type[Event]) -> Schema:
    """The JSON Schema of an event's record value."""
    schema = event.model_json_schema()
    schema["description"] = _clean_text(event.__doc__ or "")
    schema["title"] = event.__name__
    schema["$schema"] = JSON_SCHEMA_DIALECT
    schema["$id"] = schema_id(event.event_type)
    schema["x-careloop-type"] = event.event_type
    schema["x-careloop-version"] = event.event_version
    schema["x-careloop-topic"] = topic_label(event)
    schema["x-careloop-key"] = list(event.key_fields)
    return schema


def _inline_refs(schema: Any, defs: Mapping[str, Any], depth: int = 0) -> Any:
    if depth > 32:
        raise ValueError("recursive schemas are not supported in event payloads")
    if isinstance(schema, list):
        return [_inline_refs(item, defs, depth) for item in schema]
    if not isinstance(schema, dict):
        return schema
    if isinstance(schema.get("$ref"), str) and schema["$ref"].startswith("#/$defs/"):
        target = defs[schema["$ref"].removeprefix("#/$defs/")]
        rest = {k: v for k, v in schema.items() if k != "$ref"}
        return _inline_refs({**target, **rest}, defs, depth + 1)
    return {k: _inline_refs(v, defs, depth) for k, v in schema.items()}


def payload_schema(event: type[Event]) -> Schema:
    """The event schema made self-contained for embedding in the AsyncAPI document."""
    schema = event_schema(event)
    defs = schema.pop("$defs", {})
    schema.pop("$schema")
    schema.pop("$id")
    inlined: Schema = _inline_refs(schema, defs)
    return inlined


def headers_schema(event_type: str) -> Schema:
    """JSON Schema of the CloudEvents Kafka headers of one event type."""
    properties: dict[str, Schema] = {}
    for header in HEADER_NAMES.values():
        prop: Schema = {"type": "string", "description": HEADER_DESCRIPTIONS[header]}
        if header == "ce_specversion":
            prop["const"] = "1.0"
        elif header == "ce_type":
            prop["const"] = event_type
        elif header == "content-type":
            prop["const"] = "application/json"
        elif header == "ce_time":
            prop["format"] = "date-time"
        elif header == "traceparent":
            prop["pattern"] = TRACEPARENT_PATTERN.pattern
        properties[header] = prop
    return {"type": "object", "required": list(REQUIRED_HEADERS), "properties": properties}


def topic_events(topic: TopicSpec, events: Mapping[str, type[Event]]) -> list[type[Event]]:
    """The event classes published on ``topic``: its own plus the shared types."""
    if topic.kind != "events":
        return []
    return [
        event
        for _, event in sorted(events.items())
        if event.emitted_by_any_service or event.topic == topic.name
    ]


def _package_version() -> str:
    try:
        return version("careloop-contracts")
    except PackageNotFoundError:  # pragma: no cover - running from an uninstalled tree
        return "0.0.0"


def _summary(event: type[Event]) -> str:
    text = _clean_text(event.__doc__ or "")
    return text.split(". ", 1)[0].rstrip(".") + "."


def asyncapi_document(
    events: Mapping[str, type[Event]] | None = None,
    topics: Mapping[str, TopicSpec] | None = None,
) -> Schema:
    """The AsyncAPI 3.0.0 document of every topic and event."""
    events = registry() if events is None else events
    topics = TOPICS if topics is None else topics
    channels: Schema = {}
    operations: Schema = {}
    messages: Schema = {}
    schemas: Schema = {}

    for event_type, event in sorted(events.items()):
        schemas[event_type] = payload_schema(event)
        messages[event_type] = {
            "name": event.__name__,
            "title": event.__name__,
            "summary": _summary(event),
            "description": _clean_text(event.__doc__ or ""),
            "contentType": "application/json",
            "headers": headers_schema(event_type),
            "payload": {"$ref": f"#/components/schemas/{event_type}"},
            "correlationId": {"location": "$message.header#/ce_correlationid"},
            "bindings": {
                "kafka": {
                    "key": {"type": "string", "description": key_label(event)},
                    "bindingVersion": KAFKA_BINDING_VERSION,
                }
            },
        }

    for name, topic in sorted(topics.items()):
        channel_messages: Schema = {}
        if topic.kind == "events":
            for event in topic_events(topic, events):
                channel_messages[event.event_type] = {
                    "$ref": f"#/components/messages/{event.event_type}"
                }
        elif topic.value_type is not None and topic.value_type in events:
            record_name = f"{name}.record"
            messages[record_name] = {
                "name": record_name,
                "title": f"{name} record",
                "summary": f"Keyed record on {name} (no CloudEvents headers).",
                "contentType": "application/json",
                "payload": {"$ref": f"#/components/schemas/{topic.value_type}"},
                "bindings": {
                    "kafka": {
                        "key": {"type": "string", "description": topic.key},
                        "bindingVersion": KAFKA_BINDING_VERSION,
                    }
                },
            }
            channel_messages[record_name] = {"$ref": f"#/components/messages/{record_name}"}
        channels[name] = {
            "address": name,
            "title": name,
            "description": f"{topic.description} Key: {topic.key}",
            "messages": channel_messages,
            "bindings": {
                "kafka": {
                    "topic": name,
                    "partitions": topic.partitions,
                    "topicConfiguration": {
                        "cleanup.policy": [topic.cleanup_policy],
                        "retention.ms": topic.retention_ms,
                    },
                    "bindingVersion": KAFKA_BINDING_VERSION,
                }
            },
        }
        operation_id = f"{topic.owner}.send.{name.removeprefix('careloop.')}"
        operations[operation_id] = {
            "action": "send",
            "title": f"{topic.owner} publishes to {name}",
            "channel": {"$ref": f"#/channels/{name}"},
            "messages": [
                {"$ref": f"#/channels/{name}/messages/{message}"}
                for message in sorted(channel_messages)
            ],
        }

    return {
        "asyncapi": "3.0.0",
        "id": "urn:careloop:events",
        "info": {
            "title": "Careloop events",
            "version": _package_version(),
            "description": (
                "Integration events between Careloop services, on Kafka. Each record "
                "carries a CloudEvents 1.0 envelope in its headers (binary mode) and the "
                "event's JSON as its value. Generated from careloop_contracts; do not edit."
            ),
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }


def render_json(document: Any) -> str:
    """Deterministic JSON text: sorted keys, two-space indent, trailing newline."""
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _type_text(schema: Schema) -> str:
    if "anyOf" in schema:
        return " or ".join(_type_text(alt) for alt in schema["anyOf"])
    if "enum" in schema:
        return "one of " + ", ".join(f"`{value}`" for value in schema["enum"])
    if "const" in schema:
        return f"`{schema['const']}`"
    kind = str(schema.get("type", "any"))
    if kind == "array":
        return f"array of {_type_text(schema.get('items', {}))}"
    details = []
    if "format" in schema:
        details.append(str(schema["format"]))
    if "pattern" in schema:
        details.append(f"pattern `{schema['pattern']}`")
    if "minimum" in schema:
        details.append(f">= {schema['minimum']}")
    if "maxLength" in schema:
        details.append(f"max {schema['maxLength']} chars")
    return f"{kind} ({', '.join(details)})" if details else kind


def _fields_table(schema: Schema) -> list[str]:
    required = set(schema.get("required", []))
    lines = ["| field | type | required | description |", "|---|---|---|---|"]
    for name, prop in schema.get("properties", {}).items():
        if name in required:
            needed = "yes"
        elif "default" in prop and prop["default"] is not None:
            needed = f"no (default `{prop['default']}`)"
        else:
            needed = "no"
        lines.append(
            f"| `{name}` | {_cell(_type_text(prop))} | {needed} | "
            f"{_cell(str(prop.get('description', '')))} |"
        )
    return lines


def _retention(ms: int) -> str:
    if ms < 0:
        return "forever"
    days = ms / (24 * 60 * 60 * 1000)
    return f"{days:g} days"


def events_markdown(
    events: Mapping[str, type[Event]] | None = None,
    topics: Mapping[str, TopicSpec] | None = None,
) -> str:
    """The human event catalogue (``docs/events.md``)."""
    events = registry() if events is None else events
    topics = TOPICS if topics is None else topics
    out: list[str] = [
        "# Careloop event catalogue",
        "",
        "<!-- Generated by `python -m careloop_contracts.generate` from careloop_contracts."
        " Do not edit by hand. -->",
        "",
        "Services talk to each other only through these Kafka events. The models live in",
        "`contracts/careloop_contracts/`; JSON Schemas and the AsyncAPI 3 document",
        "(`contracts/schemas/asyncapi.json`) are generated from them.",
        "",
        "## Envelope",
        "",
        "CloudEvents 1.0 in Kafka binary mode: the record value is the event's JSON, the",
        "attributes travel as headers. Consumers ignore unknown headers and unknown fields.",
        "",
        "| header | required | description |",
        "|---|---|---|",
    ]
    for header in HEADER_NAMES.values():
        needed = "yes" if header in REQUIRED_HEADERS else "no"
        out.append(f"| `{header}` | {needed} | {_cell(HEADER_DESCRIPTIONS[header])} |")
    out += [
        "",
        "## Keys, ordering and dead letters",
        "",
        "- Event streams are keyed by patient id, so one patient's events stay in order on",
        "  one partition. Each event below names its key.",
        "- Type names: `careloop.<service>.<entity>.<verb-past-tense>.v<N>`; one topic per",
        "  service stream, `careloop.<service>`.",
        "- A consumer group that gives up on an event after its retries moves it to",
        f"  `{DEAD_LETTER_PREFIX}<group_id>` (one partition, kept "
        f"{_retention(DEAD_LETTER_RETENTION_MS)}), with the original key, value and headers.",
        "- Within a version only optional fields may be added. Removing or retyping a field,",
        "  making one required, or changing an enum or constraint needs a new version (a new",
        "  model). `python -m careloop_contracts.generate --check` enforces this against the",
        "  published baseline in `contracts/schemas/published/`.",
        "",
        "## Topics",
        "",
        "| topic | owner | partitions | retention | cleanup | key |",
        "|---|---|---|---|---|---|",
    ]
    for name, topic in sorted(topics.items()):
        out.append(
            f"| `{name}` | {topic.owner} | {topic.partitions} | {_retention(topic.retention_ms)}"
            f" | {topic.cleanup_policy} | {_cell(topic.key)} |"
        )
    out += [
        "",
        "## Consumer groups",
        "",
        "Every group reads from the earliest offset it has not committed; `careloop topics "
        "apply` creates each group's dead-letter topic with the streams.",
        "",
        "| group | service | reads | dead-letter topic | what it does |",
        "|---|---|---|---|---|",
    ]
    for group_id, group in sorted(CONSUMER_GROUPS.items()):
        reads = ", ".join(f"`{t}`" for t in group.topics)
        out.append(
            f"| `{group_id}` | {group.service} | {reads} | `{DEAD_LETTER_PREFIX}{group_id}` "
            f"| {_cell(group.description)} |"
        )
    for name, topic in sorted(topics.items()):
        out += ["", f"### `{name}`", "", topic.description, ""]
        if topic.kind != "events":
            out += [f"Key: {topic.key}", ""]
            if topic.value_type:
                out.append(
                    f"Value: the JSON of [`{topic.value_type}`](#{_anchor(topic.value_type)})."
                )
            continue
        out.append("| event | type |")
        out.append("|---|---|")
        for event in topic_events(topic, events):
            out.append(
                f"| [{event.__name__}](#{_anchor(event.event_type)}) | `{event.event_type}` |"
            )
    out += ["", "## Events"]
    for event_type, event in sorted(events.items()):
        schema = event_schema(event)
        out += [
            "",
            f"### `{event_type}`",
            "",
            f"Model `{event.__module__}.{event.__name__}`, version {event.event_version}.",
            "",
            schema["description"],
            "",
            f"- Topic: `{topic_label(event)}`"
            + (
                " (each service publishes it on its own stream)"
                if event.emitted_by_any_service
                else ""
            ),
            f"- Key: {key_label(event)}",
            f"- Schema: `contracts/schemas/{event_type}.json`",
            "",
        ]
        out += _fields_table(schema)
    return "\n".join(out) + "\n"


def _anchor(heading: str) -> str:
    # GitHub's heading anchors: lowercase, punctuation other than - and _ dropped.
    return "".join(ch for ch in heading.lower() if ch.isalnum() or ch in "-_")
