"""Compatibility of a published event version.

A published version is a promise in both directions: consumers on the old model read
events from new producers, and consumers on the new model read events still in
topics, outboxes and dead-letter queues from old producers. So within a version the
only allowed change is adding an optional field (old consumers ignore it, new ones
default it). Anything else (removing or retyping a field, making a field required,
changing an enum's values or a constraint) needs a new version: a new model.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from careloop_contracts.base import Event, registry
from careloop_contracts.schema import event_schema

# Keywords that document a schema without constraining the data.
_ANNOTATIONS = frozenset(
    {
        "title",
        "description",
        "examples",
        "default",
        "$comment",
        "$id",
        "$schema",
        "$defs",
        "definitions",
        "deprecated",
        "readOnly",
        "writeOnly",
    }
)
_STRUCTURE = frozenset(
    {"properties", "required", "items", "anyOf", "oneOf", "allOf", "enum", "const"}
)

Schema = dict[str, Any]


def breaking_changes(old_schema: Schema, new_schema: Schema) -> list[str]:
    """Every reason ``new_schema`` breaks the published ``old_schema``; empty if compatible."""
    problems: list[str] = []
    _compare(old_schema, old_schema, new_schema, new_schema, "", problems)
    return problems


def _resolve(schema: Schema, root: Schema) -> Schema:
    seen: set[str] = set()
    while "$ref" in schema:
        ref = schema["$ref"]
        if not isinstance(ref, str) or not ref.startswith("#/") or ref in seen:
            raise ValueError(f"unsupported or cyclic $ref {ref!r}")
        seen.add(ref)
        target: Any = root
        for part in ref[2:].split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def _canonical(schema: Schema, root: Schema) -> Any:
    """A comparable form of ``schema``: refs inlined, annotations dropped."""
    schema = _resolve(schema, root)
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _ANNOTATIONS or key.startswith("x-"):
            continue
        if key == "properties":
            out[key] = {name: _canonical(sub, root) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _canonical(value, root)
        elif key in ("anyOf", "oneOf", "allOf"):
            alternatives = [_canonical(sub, root) for sub in value]
            out[key] = sorted(alternatives, key=lambda alt: json.dumps(alt, sort_keys=True))
        else:
            out[key] = value
    return out


def _show(schema: Any) -> str:
    return json.dumps(schema, sort_keys=True, separators=(",", ":"))


def _values(schema: Schema) -> list[Any] | None:
    if "enum" in schema:
        return list(schema["enum"])
    if "const" in schema:
        return [schema["const"]]
    return None


def _nullable_part(schema: Schema) -> Schema | None:
    """``X`` when ``schema`` is ``X | None`` (pydantic's ``anyOf`` with null), else None."""
    alternatives = schema.get("anyOf")
    if not isinstance(alternatives, list) or len(alternatives) != 2:
        return None
    rest = [alt for alt in alternatives if alt != {"type": "null"}]
    return rest[0] if len(rest) == 1 else None


def _compare(
    old: Schema, old_root: Schema, new: Schema, new_root: Schema, path: str, out: list[str]
) -> None:
    old = _resolve(old, old_root)
    new = _resolve(new, new_root)
    where = path or "(event)"

    old_part, new_part = _nullable_part(old), _nullable_part(new)
    if old_part is not None and new_part is not None:
        _compare(old_part, old_root, new_part, new_root, path, out)
        return
    unions = ("anyOf", "oneOf", "allOf")
    if any(key in old or key in new for key in unions):
        # Other unions (or a field becoming nullable, or no longer nullable) are
        # compared whole: any difference changes what a reader may receive.
        old_c, new_c = _canonical(old, old_root), _canonical(new, new_root)
        if old_c != new_c:
            out.append(f"{where}: type changed from {_show(old_c)} to {_show(new_c)}")
        return

    if old.get("type") != new.get("type"):
        out.append(f"{where}: type changed from {old.get('type')!r} to {new.get('type')!r}")
        return

    old_values, new_values = _values(old), _values(new)
    if old_values is not None or new_values is not None:
        if old_values is None or new_values is None:
            out.append(f"{where}: allowed values changed from {old_values} to {new_values}")
        else:
            removed = [v for v in old_values if v not in new_values]
            added = [v for v in new_values if v not in old_values]
            if removed:
                out.append(f"{where}: enum narrowed, values removed: {removed}")
            if added:
                # Old consumers validate against the closed set and would reject these.
                out.append(f"{where}: enum widened, values added: {added}")

    if "properties" in old or "properties" in new:
        _compare_object(old, old_root, new, new_root, path, out)

    if "items" in old or "items" in new:
        if "items" in old and "items" in new:
            _compare(old["items"], old_root, new["items"], new_root, f"{path}[]", out)
        else:
            out.append(f"{where}: array items changed")

    remaining = (set(old) | set(new)) - _ANNOTATIONS - _STRUCTURE - {"type"}
    for key in sorted(k for k in remaining if not k.startswith("x-")):
        old_value, new_value = old.get(key), new.get(key)
        if isinstance(old_value, dict) or isinstance(new_value, dict):
            old_c = _canonical(old_value, old_root) if isinstance(old_value, dict) else old_value
            new_c = _canonical(new_value, new_root) if isinstance(new_value, dict) else new_value
            if old_c != new_c:
                out.append(f"{where}: {key} changed from {_show(old_c)} to {_show(new_c)}")
        elif old_value != new_value:
            out.append(f"{where}: {key} changed from {old_value!r} to {new_value!r}")


def _compare_object(
    old: Schema, old_root: Schema, new: Schema, new_root: Schema, path: str, out: list[str]
) -> None:
    old_props: dict[str, Schema] = old.get("properties", {})
    new_props: dict[str, Schema] = new.get("properties", {})
    old_required = set(old.get("required", []))
    new_required = set(new.get("required", []))
    prefix = f"{path}." if path else ""
    for name, old_sub in old_props.items():
        if name not in new_props:
            out.append(f"{prefix}{name}: field removed")
            continue
        if name in new_required and name not in old_required:
            out.append(f"{prefix}{name}: optional field made required")
        _compare(old_sub, old_root, new_props[name], new_root, f"{prefix}{name}", out)
    for name in new_props:
        if name not in old_props and name in new_required:
            out.append(f"{prefix}{name}: required field added")


def load_published(directory: Path) -> dict[str, Schema]:
    """The published baseline: event type -> schema, from ``<type>.json`` files."""
    return {
        path.name.removesuffix(".json"): json.loads(path.read_text(encoding="utf-8"))
        for path in sorted(directory.glob("*.json"))
    }


def check_compatibility(
    published: Mapping[str, Schema], models: Mapping[str, type[Event]] | None = None
) -> list[str]:
    """Breaking changes of ``models`` (default: the registry) against ``published``.

    A published type without a model is reported too: removing an event type breaks
    its consumers.
    """
    models = registry() if models is None else models
    problems: list[str] = []
    for event_type, old_schema in sorted(published.items()):
        model = models.get(event_type)
        if model is None:
            problems.append(f"{event_type}: published event type has no model any more")
            continue
        problems.extend(
            f"{event_type}: {problem}"
            for problem in breaking_changes(old_schema, event_schema(model))
        )
    return problems
