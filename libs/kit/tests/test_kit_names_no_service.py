"""The kit names no service: which services exist, and what each may do, is the
platform's list (`careloop_contracts.platform`), handed to the kit, never written in it."""

from __future__ import annotations

import ast
import itertools
import re
from pathlib import Path

import pytest

from careloop_contracts.platform import SERVICES
from careloop_contracts.topics import TOPICS
from careloop_kit.auth.permissions import PERMISSIONS

KIT = Path(__file__).resolve().parents[1] / "careloop_kit"

SERVICE_NAMES = frozenset(SERVICES) | {spec.owner for spec in TOPICS.values()}

# A literal with a blank in it is prose (a message, a help text): naming a service in a
# sentence is not a list of services. Anything else is a name, and is split on the
# separators names are built with (`careloop-audit-checkpoint`, `careloop/patients/x`).
_PROSE = re.compile(r"\s")
_SEGMENTS = re.compile(r"[./:_*<>\-]+")

# Where the word is not a service name, and why.
ALLOWED: dict[tuple[str, str], str] = {
    # The runtime-state key of the kit's own audit recorder (every service has one).
    ("audit.py", "audit"): "the audit hook's state key, not the audit service",
    # OpenTelemetry semantic conventions for messaging systems (Kafka spans).
    ("bus/consumer.py", "messaging.system"): "OpenTelemetry attribute, not the service",
    ("bus/consumer.py", "messaging.message.id"): "OpenTelemetry attribute, not the service",
}


def _docstrings(tree: ast.Module) -> set[int]:
    found: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if not isinstance(body, list) or not body:
            continue
        first = body[0]
        if (
            isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and isinstance(first, ast.Expr)
            and isinstance(first.value, ast.Constant)
        ):
            found.add(id(first.value))
        # An attribute docstring: a bare string right after an assignment.
        for previous, statement in itertools.pairwise(body):
            if (
                isinstance(statement, ast.Expr)
                and isinstance(statement.value, ast.Constant)
                and isinstance(previous, ast.Assign | ast.AnnAssign)
            ):
                found.add(id(statement.value))
    return found


def service_names_in(source: str, relative: str) -> list[str]:
    """`line: literal` for each string literal of `source` that names a service."""
    tree = ast.parse(source)
    docs = _docstrings(tree)
    hits = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
            continue
        text = node.value
        if id(node) in docs or _PROSE.search(text) or (relative, text) in ALLOWED:
            continue
        if text.startswith("careloop_kit."):
            # The kit's own modules (`careloop_kit.auth.service_identity`: the identity a
            # service proves, a concept of the kit, not the identity service).
            continue
        if text in PERMISSIONS:
            # A permission (`patients:read`) names a resource of the API, and the
            # permission table is the kit's own catalogue of them.
            continue
        if SERVICE_NAMES & set(_SEGMENTS.split(text.lower())):
            hits.append(f"{node.lineno}: {text!r}")
    return hits


def test_no_module_of_the_kit_names_a_service() -> None:
    found = {}
    for path in sorted(KIT.rglob("*.py")):
        relative = path.relative_to(KIT).as_posix()
        hits = service_names_in(path.read_text(), relative)
        if hits:
            found[relative] = hits
    assert found == {}, (
        "the kit names services; take the list from careloop_contracts.platform "
        f"or have the service hand it in: {found}"
    )


@pytest.mark.parametrize(
    "source",
    [
        'SERVICES = ["patients", "audit"]',
        'KEY = "careloop-audit-checkpoint"',
        'PATH = "careloop/scheduling/some-key"',
        'SHAPE = {"messaging": 1}',
        "TOPIC = 'careloop.identity'",
    ],
)
def test_the_scan_catches_a_planted_service_name(source: str) -> None:
    assert service_names_in(source, "planted.py")


@pytest.mark.parametrize(
    "source",
    [
        'def f():\n    """Talks to the patients service."""',
        'MESSAGE = "could not reach the audit service"',
        'GRANT = "patients:read"',
        'NAME = "careloop-phi"',
        'HOME = "careloop_kit.auth.service_identity"',
    ],
)
def test_the_scan_leaves_prose_permissions_and_other_words(source: str) -> None:
    assert service_names_in(source, "planted.py") == []


def test_every_allowed_exception_is_still_there() -> None:
    # A stale exception would let the same literal come back unnoticed elsewhere.
    for relative, literal in ALLOWED:
        source = (KIT / relative).read_text()
        assert repr(literal) in source or f'"{literal}"' in source, (relative, literal)
