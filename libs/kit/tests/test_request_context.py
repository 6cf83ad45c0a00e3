"""The kit's request context: loading an aggregate in the caller's scope, and the
dependency that builds the context for a route with the route's permission."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from starlette.requests import Request

from careloop_kit.audit import AuditEntry
from careloop_kit.auth import AuthenticatedPrincipal, require, required_permission
from careloop_kit.context import load_in_scope, request_context
from careloop_kit.errors import Forbidden, NotFound

pytestmark = pytest.mark.unit


@dataclass
class Visit:
    id: str
    patient_id: str


def entry() -> AuditEntry:
    return AuditEntry(action="read", resource_type="Appointment", phi_categories=["clinical"])


async def found(value: Visit | None) -> Visit | None:
    return value


async def test_a_missing_aggregate_is_a_404_with_the_callers_words() -> None:
    audited = entry()
    with pytest.raises(NotFound, match="No visit v-1"):
        await load_in_scope(
            audited,
            found(None),
            missing="No visit v-1 in this organization.",
            patient_of=lambda v: v.patient_id,
            check=lambda v: None,
        )
    assert audited.patient_id is None


async def test_the_patient_is_named_before_the_check_refuses() -> None:
    audited = entry()

    async def refuse(visit: Visit) -> None:
        # The trail of a refused access must already name whose record it was.
        assert audited.patient_id == "pat-1"
        raise Forbidden("not your location")

    with pytest.raises(Forbidden):
        await load_in_scope(
            audited,
            found(Visit("v-1", "pat-1")),
            missing="No visit v-1.",
            patient_of=lambda v: v.patient_id,
            check=refuse,
        )
    assert audited.patient_id == "pat-1"


async def test_a_plain_check_is_accepted_and_the_aggregate_returned() -> None:
    checked: list[str] = []
    visit = await load_in_scope(
        entry(),
        found(Visit("v-2", "pat-2")),
        missing="No visit v-2.",
        patient_of=lambda v: v.patient_id,
        check=lambda v: checked.append(v.id),
    )
    assert visit == Visit("v-2", "pat-2")
    assert checked == ["v-2"]


def test_the_context_dependency_names_the_routes_permission() -> None:
    dependency = request_context(require("scheduling:book"), lambda session: None)
    assert required_permission(dependency) == "scheduling:book"


class Built:
    """A repository class on the session, as most services pass theirs; it records what
    it was built on."""

    def __init__(self, session: object) -> None:
        self.parts: tuple[object, ...] = (session,)


def built_by(repositories: Any) -> tuple[object, ...]:
    """What the context's repositories were built on, the dependency called as FastAPI
    would call it (a request from 10.0.0.7, a principal, a runtime and a session)."""
    request = Request({"type": "http", "client": ("10.0.0.7", 4711), "headers": []})
    principal = AuthenticatedPrincipal(actor_id="u-1", actor_type="user", org_id="org-1")
    dependency = request_context(require("scheduling:book"), repositories)
    ctx = dependency(request, principal, RUNTIME, SESSION)
    assert (ctx.runtime, ctx.session, ctx.caller.source_ip) == (RUNTIME, SESSION, "10.0.0.7")
    parts: tuple[object, ...] = ctx.repos.parts
    return parts


RUNTIME, SESSION = object(), object()


def test_a_session_builder_is_built_on_the_session() -> None:
    assert built_by(Built) == (SESSION,)


def test_a_runtime_builder_is_built_on_the_runtime_and_the_session() -> None:
    def on_both(runtime: object, session: object, *, spare: int = 0) -> Built:
        built = Built(session)
        built.parts = (runtime, session)
        return built

    assert built_by(on_both) == (RUNTIME, SESSION)


def test_a_builder_of_neither_shape_is_refused_when_the_route_is_declared() -> None:
    def on_three(runtime: object, session: object, cipher: object) -> None:
        return None

    with pytest.raises(TypeError, match=r"\(session\) or \(runtime, session\)"):
        request_context(require("scheduling:book"), on_three)
