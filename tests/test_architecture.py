"""House rules no linter expresses: import boundaries between services and rooms."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
SERVICES = sorted(p for p in (ROOT / "services").iterdir() if (p / "pyproject.toml").exists())
FRAMEWORKS = {
    "fastapi",
    "starlette",
    "sqlalchemy",
    "aiokafka",
    "faststream",
    "hvac",
    "httpx",
    "asyncpg",
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _package(service: Path) -> str:
    return f"careloop_{service.name.replace('-', '_')}"


@pytest.mark.parametrize("service", SERVICES, ids=lambda p: p.name)
def test_no_service_imports_another_service(service: Path) -> None:
    others = {_package(s) for s in SERVICES if s != service}
    offenders = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in service.rglob("*.py")
        for name in _imports(path)
        if name.split(".")[0] in others
    ]
    assert offenders == []


@pytest.mark.parametrize("service", SERVICES, ids=lambda p: p.name)
def test_domain_imports_no_framework(service: Path) -> None:
    domain = service / _package(service) / "domain"
    offenders = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in domain.rglob("*.py")
        for name in _imports(path)
        if name.split(".")[0] in FRAMEWORKS
    ]
    assert offenders == []


@pytest.mark.parametrize("service", SERVICES, ids=lambda p: p.name)
def test_every_service_has_the_same_rooms(service: Path) -> None:
    package = service / _package(service)
    rooms = {"app.py", "settings.py", "api", "handlers", "domain", "store", "migrations"}
    assert rooms <= {p.name for p in package.iterdir()}
    assert (service / "README.md").exists()


def test_kit_and_contracts_import_no_service() -> None:
    services = {_package(s) for s in SERVICES}
    offenders = [
        f"{path.relative_to(ROOT)} imports {name}"
        for folder in (ROOT / "libs" / "kit", ROOT / "contracts")
        for path in folder.rglob("*.py")
        for name in _imports(path)
        if name.split(".")[0] in services
    ]
    assert offenders == []
