"""What the auth package's pure half pulls in, and the import order of audit and auth."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# The frameworks a service's `domain/` must never reach, not even through the kit.
FRAMEWORKS = (
    "fastapi",
    "starlette",
    "sqlalchemy",
    "httpx",
    "hvac",
    "aiokafka",
    "asyncpg",
    "faststream",
)


def _modules_after(statement: str) -> list[str]:
    """Top-level packages loaded by `statement` in a fresh interpreter."""
    probe = (
        f"import sys, json\n{statement}\n"
        "print(json.dumps(sorted({name.split('.')[0] for name in sys.modules})))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    loaded: list[str] = json.loads(result.stdout.strip().splitlines()[-1])
    return loaded


@pytest.mark.parametrize(
    "statement",
    [
        "import careloop_kit.auth.principal",
        "import careloop_kit.auth.permissions",
        "from careloop_kit.auth.principal import AuthenticatedPrincipal, Principal",
        "from careloop_kit.auth import permissions",
        "import careloop_kit.auth",
    ],
)
def test_the_pure_half_of_auth_loads_no_framework(statement: str) -> None:
    loaded = _modules_after(statement)
    assert "careloop_kit" in loaded  # the probe did import the kit
    assert [name for name in FRAMEWORKS if name in loaded] == []


def test_the_probe_sees_a_framework_when_one_is_loaded() -> None:
    # Guards the test above against a probe that would never see anything.
    loaded = _modules_after("import careloop_kit.auth.dependencies")
    assert "fastapi" in loaded


@pytest.mark.parametrize(
    "statement",
    [
        "import careloop_kit.audit",
        "import careloop_kit.auth.dependencies",
        "from careloop_kit.auth import require, AuthenticatedPrincipal",
        "from careloop_kit.audit import AuditRecorder\nfrom careloop_kit.auth import require",
    ],
)
def test_audit_and_auth_import_in_any_order(statement: str) -> None:
    _modules_after(statement)  # raises CalledProcessError on a circular import


def test_a_denied_object_check_is_the_kits_403() -> None:
    from careloop_kit.auth.principal import AuthenticatedPrincipal
    from careloop_kit.problems import Forbidden

    principal = AuthenticatedPrincipal(
        actor_id="u1", actor_type="user", org_id="org1", roles=("front_desk",), locations=("l1",)
    )
    with pytest.raises(Forbidden) as refused:
        principal.can_access_location("l2")
    assert refused.value.status == 403


def test_unknown_names_of_the_auth_package_are_attribute_errors() -> None:
    import careloop_kit.auth as auth

    with pytest.raises(AttributeError):
        _ = auth.no_such_name
    assert "require" in dir(auth)
