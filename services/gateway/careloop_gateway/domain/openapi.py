"""Merge the services' OpenAPI documents into one public document.

Each service's paths are prefixed with `/api/v1/<service>`, its components are renamed
`<service>_<Name>` and every `$ref` (and security requirement) is rewritten to match, so
two services may both define `HTTPValidationError` without clashing.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

API_PREFIX = "/api/v1"
HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})


def component_name(service: str, name: str) -> str:
    """Namespaced name of a service's component."""
    return f"{service}_{name}"


def _rewrite_ref(ref: str, service: str) -> str:
    parts = ref.split("/")
    # Local component references look like "#/components/<section>/<name>[/...]".
    if len(parts) >= 4 and parts[0] == "#" and parts[1] == "components":
        parts[3] = component_name(service, parts[3])
        return "/".join(parts)
    return ref


def _rewrite(node: Any, service: str) -> Any:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                out[key] = _rewrite_ref(value, service)
            elif key == "discriminator" and isinstance(value, dict):
                rewritten = dict(value)
                if isinstance(value.get("mapping"), dict):
                    rewritten["mapping"] = {
                        k: _rewrite_ref(v, service) if isinstance(v, str) else v
                        for k, v in value["mapping"].items()
                    }
                out[key] = rewritten
            else:
                out[key] = _rewrite(value, service)
        return out
    if isinstance(node, list):
        return [_rewrite(item, service) for item in node]
    return node


def _rewrite_security(requirements: Any, service: str) -> Any:
    if not isinstance(requirements, list):
        return requirements
    return [
        {component_name(service, name): scopes for name, scopes in req.items()}
        if isinstance(req, dict)
        else req
        for req in requirements
    ]


def _prefix_path(service: str, path: str) -> str:
    return f"{API_PREFIX}/{service}" + (path if path.startswith("/") else f"/{path}")


def namespace_document(service: str, document: Mapping[str, Any]) -> dict[str, Any]:
    """One service's paths and components, prefixed and renamed for the merged document."""
    doc = copy.deepcopy(dict(document))
    paths: dict[str, Any] = {}
    for path, item in (doc.get("paths") or {}).items():
        new_item = _rewrite(item, service)
        if isinstance(new_item, dict):
            for method, operation in new_item.items():
                if method not in HTTP_METHODS or not isinstance(operation, dict):
                    continue
                if "operationId" in operation:
                    operation["operationId"] = component_name(service, operation["operationId"])
                if "security" in operation:
                    operation["security"] = _rewrite_security(operation["security"], service)
                operation["tags"] = operation.get("tags") or [service]
        paths[_prefix_path(service, path)] = new_item
    components: dict[str, dict[str, Any]] = {}
    for section, entries in (doc.get("components") or {}).items():
        if not isinstance(entries, dict):
            continue
        components[section] = {
            component_name(service, name): _rewrite(value, service)
            for name, value in entries.items()
        }
    return {
        "paths": paths,
        "components": components,
        "tags": doc.get("tags") or [],
        "security": _rewrite_security(doc.get("security"), service),
    }


def merge_documents(
    info: Mapping[str, Any],
    documents: Mapping[str, Mapping[str, Any]],
    unavailable: Sequence[str] = (),
) -> dict[str, Any]:
    """The public OpenAPI 3.1 document: the gateway's info, every service's API."""
    paths: dict[str, Any] = {}
    components: dict[str, dict[str, Any]] = {}
    tags: list[dict[str, Any]] = []
    seen_tags: set[str] = set()
    for service in sorted(documents):
        part = namespace_document(service, documents[service])
        paths.update(part["paths"])
        for section, entries in part["components"].items():
            components.setdefault(section, {}).update(entries)
        for tag in part["tags"]:
            if isinstance(tag, dict) and tag.get("name") not in seen_tags:
                seen_tags.add(str(tag.get("name")))
                tags.append(tag)
        # Document-wide security of a service applies to its operations only.
        if part["security"]:
            for item in part["paths"].values():
                for method, operation in item.items():
                    if method in HTTP_METHODS and isinstance(operation, dict):
                        operation.setdefault("security", part["security"])
    merged: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": dict(info),
        "paths": dict(sorted(paths.items())),
        "components": components,
        "x-careloop-unavailable": sorted(unavailable),
    }
    if tags:
        merged["tags"] = tags
    return merged


def iter_refs(node: Any) -> Iterator[str]:
    """Every `$ref` string in a document."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from iter_refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from iter_refs(item)


def resolve_ref(document: Mapping[str, Any], ref: str) -> Any:
    """The target of a local `$ref` (JSON pointer); KeyError when it does not exist."""
    if not ref.startswith("#/"):
        raise KeyError(ref)
    node: Any = document
    for raw in ref[2:].split("/"):
        token = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, list):
            node = node[int(token)]
        elif isinstance(node, dict):
            node = node[token]
        else:
            raise KeyError(ref)
    return node
