"""House rules no linter expresses: import boundaries between services and rooms.

Inside a service the rooms are layered: `domain/` (pure logic) < `store/` (tables and
repositories) < `usecases/` (the steps) < the doors (`api/`, `handlers/`). A room may import
its own room and the rooms below it, never one above; the two doors never import each other;
and `domain/` reaches no framework, not even through a first-party module it imports (a
package's `__init__` runs on import, so importing `careloop_kit.auth.principal` counts as
importing `careloop_kit.auth` too).

The rules are functions over a source tree, so the planted-violation tests at the bottom can
show each one fails on a tree that breaks it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
FRAMEWORKS = frozenset(
    {
        "fastapi",
        "starlette",
        "sqlalchemy",
        "aiokafka",
        "faststream",
        "hvac",
        "httpx",
        "asyncpg",
        "uvicorn",
    }
)
ROOMS = ("app.py", "settings.py", "api", "handlers", "usecases", "domain", "store", "migrations")
# Rank of each layered room: a room may import rooms of its rank or lower, and no other
# room of the same rank (the doors).
RANK = {"domain": 0, "store": 1, "usecases": 2, "api": 3, "handlers": 3}


@dataclass(frozen=True)
class Import:
    """One import statement of a module, resolved to an absolute module name."""

    module: str
    line: int
    at_import_time: bool


@dataclass
class SourceTree:
    """The first-party Python modules under a repository root, by dotted name."""

    root: Path
    modules: dict[str, Path] = field(default_factory=dict)

    @classmethod
    def scan(cls, root: Path) -> SourceTree:
        tree = cls(root)
        for top in ("libs", "cli", "contracts", "services"):
            base = root / top
            if not base.exists():
                continue
            for init in sorted(base.rglob("careloop_*/__init__.py")):
                package_dir = init.parent
                if package_dir.parent.name.startswith("careloop_"):
                    continue  # a subpackage; found from its top package
                for path in package_dir.rglob("*.py"):
                    relative = path.relative_to(package_dir.parent).with_suffix("")
                    parts = list(relative.parts)
                    if parts[-1] == "__init__":
                        parts.pop()
                    tree.modules[".".join(parts)] = path
        return tree

    def services(self) -> list[Path]:
        base = self.root / "services"
        return sorted(p for p in base.iterdir() if (p / "pyproject.toml").exists())

    def is_package(self, module: str) -> bool:
        return self.modules[module].name == "__init__.py"

    def imports(self, module: str) -> list[Import]:
        path = self.modules[module]
        package = module if self.is_package(module) else module.rpartition(".")[0]
        found: list[Import] = []
        for node, at_import_time in _walk(ast.parse(path.read_text()).body, True):
            if isinstance(node, ast.Import):
                found.extend(Import(a.name, node.lineno, at_import_time) for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join([*anchor, node.module] if node.module else anchor)
                else:
                    base = node.module or ""
                found.append(Import(base, node.lineno, at_import_time))
                # `from pkg import submodule` imports the submodule too.
                for alias in node.names:
                    candidate = f"{base}.{alias.name}"
                    if candidate in self.modules:
                        found.append(Import(candidate, node.lineno, at_import_time))
        return found

    def loaded_by(self, module: str) -> list[str]:
        """First-party modules Python executes to import `module`: it and its parents."""
        parts = module.split(".")
        prefixes = (".".join(parts[:i]) for i in range(1, len(parts) + 1))
        return [p for p in prefixes if p in self.modules]


def _walk(body: list[ast.stmt], at_import_time: bool) -> Iterator[tuple[ast.AST, bool]]:
    """Import statements with whether they run when the module is imported.

    Imports under `if TYPE_CHECKING:` never run and are left out; imports inside functions
    run later, when called, and are marked so.
    """
    for node in body:
        yield from _imports_within(node, at_import_time)


def _imports_within(node: ast.AST, at_import_time: bool) -> Iterator[tuple[ast.AST, bool]]:
    if isinstance(node, ast.Import | ast.ImportFrom):
        yield node, at_import_time
        return
    if isinstance(node, ast.If) and _is_type_checking(node.test):
        for child in node.orelse:
            yield from _imports_within(child, at_import_time)
        return
    deferred = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
    for child in ast.iter_child_nodes(node):
        yield from _imports_within(child, at_import_time and not deferred)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def package_of(service: Path) -> str:
    """The service's one top package (`services/care-gaps` holds `careloop_caregaps`)."""
    packages = sorted(init.parent.name for init in service.glob("careloop_*/__init__.py"))
    if len(packages) != 1:
        raise AssertionError(f"{service} must hold exactly one careloop_* package: {packages}")
    return packages[0]


def room_of(module: str, package: str) -> str | None:
    """The room of a service module (`careloop_x.api.routes` -> `api`), None outside one."""
    parts = module.split(".")
    if parts[0] != package or len(parts) < 2:
        return None
    return parts[1] if parts[1] in RANK else None


def cross_service_imports(tree: SourceTree, service: Path) -> list[str]:
    own = package_of(service)
    others = {package_of(s) for s in tree.services() if s != service}
    return [
        f"{tree.modules[m].relative_to(tree.root)}:{i.line} imports {i.module}"
        for m in tree.modules
        if m.split(".")[0] == own
        for i in tree.imports(m)
        if i.module.split(".")[0] in others
    ]


def room_violations(tree: SourceTree, service: Path) -> list[str]:
    """Upward imports (a room importing one above it) and doors importing each other."""
    package = package_of(service)
    offenders = []
    for module in tree.modules:
        room = room_of(module, package)
        if room is None:
            continue
        for imported in tree.imports(module):
            target = room_of(imported.module, package)
            if target is None or target == room:
                continue
            if RANK[target] > RANK[room]:
                kind = "upward import"
            elif RANK[target] == RANK[room]:
                kind = "door imports door"
            else:
                continue
            path = tree.modules[module].relative_to(tree.root)
            offenders.append(f"{kind}: {path}:{imported.line} ({room}) imports {imported.module}")
    return offenders


def frameworks_reached_from_domain(tree: SourceTree, service: Path) -> list[str]:
    """Every framework a `domain/` module loads when imported, with the chain that loads it."""
    package = package_of(service)
    starts = [m for m in tree.modules if room_of(m, package) == "domain"]
    offenders = []
    for start in starts:
        chains: dict[str, list[str]] = {start: [start]}
        queue = [start]
        while queue:
            module = queue.pop()
            for imported in tree.imports(module):
                if not imported.at_import_time:
                    continue
                top = imported.module.split(".")[0]
                if top in FRAMEWORKS:
                    chain = " -> ".join([*chains[module], imported.module])
                    offenders.append(f"{tree.modules[start].relative_to(tree.root)}: {chain}")
                    continue
                for loaded in tree.loaded_by(imported.module):
                    if loaded not in chains:
                        chains[loaded] = [*chains[module], loaded]
                        queue.append(loaded)
    return sorted(set(offenders))


def missing_rooms(service: Path) -> set[str]:
    package = service / package_of(service)
    present = {p.name for p in package.iterdir()}
    missing = set(ROOMS) - present
    if not (service / "README.md").exists():
        missing.add("README.md")
    return missing


TREE = SourceTree.scan(ROOT)
SERVICES = TREE.services()


@pytest.mark.parametrize("service", SERVICES, ids=lambda p: p.name)
def test_no_service_imports_another_service(service: Path) -> None:
    assert cross_service_imports(TREE, service) == []


@pytest.mark.parametrize("service", SERVICES, ids=lambda p: p.name)
def test_rooms_import_downward_and_doors_not_each_other(service: Path) -> None:
    assert room_violations(TREE, service) == []


@pytest.mark.parametrize("service", SERVICES, ids=lambda p: p.name)
def test_domain_reaches_no_framework_even_transitively(service: Path) -> None:
    assert frameworks_reached_from_domain(TREE, service) == []


@pytest.mark.parametrize("service", SERVICES, ids=lambda p: p.name)
def test_every_service_has_the_same_rooms(service: Path) -> None:
    assert missing_rooms(service) == set()


def test_kit_and_contracts_import_no_service() -> None:
    # The `careloop` command is an application (cli/), not a library: it may drive the
    # services; nothing under libs/ or contracts/ may reach it or them.
    services = {package_of(s) for s in SERVICES} | {"careloop_cli"}
    offenders = [
        f"{path.relative_to(ROOT)} imports {i.module}"
        for module, path in TREE.modules.items()
        if module.split(".")[0] in ("careloop_kit", "careloop_contracts")
        for i in TREE.imports(module)
        if i.module.split(".")[0] in services
    ]
    assert offenders == []


def test_libraries_hold_no_application() -> None:
    # Every package under libs/ is a library the services build on.
    packages = [p.parent.name for p in (ROOT / "libs").glob("*/pyproject.toml")]
    assert packages == ["kit"]
    assert (ROOT / "cli" / "careloop_cli" / "main.py").exists()


# --- the rules fail on a tree that breaks them -------------------------------------------


def _plant(root: Path, files: dict[str, str]) -> SourceTree:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return SourceTree.scan(root)


DEMO = "services/demo/careloop_demo"
KIT = "libs/kit/careloop_kit"
CLEAN_SERVICE = {
    "services/demo/pyproject.toml": "",
    f"{DEMO}/__init__.py": "",
    f"{DEMO}/domain/__init__.py": "",
    f"{DEMO}/domain/model.py": "import dataclasses\n",
    f"{DEMO}/store/__init__.py": "",
    f"{DEMO}/store/repo.py": "from careloop_demo.domain import model\n",
    f"{DEMO}/usecases/__init__.py": "",
    f"{DEMO}/usecases/book.py": (
        "from careloop_demo.store.repo import model\nfrom ..domain.model import dataclasses\n"
    ),
    f"{DEMO}/api/__init__.py": "",
    f"{DEMO}/api/routes.py": ("import fastapi\nfrom careloop_demo.usecases import book\n"),
    f"{DEMO}/handlers/__init__.py": "",
    f"{DEMO}/handlers/events.py": "from careloop_demo.usecases.book import model\n",
    f"{KIT}/__init__.py": "",
    f"{KIT}/pure.py": "import json\n",
}


def test_a_clean_tree_passes(tmp_path: Path) -> None:
    tree = _plant(tmp_path, CLEAN_SERVICE)
    service = tmp_path / "services" / "demo"
    assert room_violations(tree, service) == []
    assert frameworks_reached_from_domain(tree, service) == []


def test_an_upward_import_fails(tmp_path: Path) -> None:
    tree = _plant(
        tmp_path,
        {
            **CLEAN_SERVICE,
            f"{DEMO}/domain/model.py": "from careloop_demo.usecases import book\n",
        },
    )
    assert room_violations(tree, tmp_path / "services" / "demo") == [
        "upward import: services/demo/careloop_demo/domain/model.py:1 (domain) "
        "imports careloop_demo.usecases",
        "upward import: services/demo/careloop_demo/domain/model.py:1 (domain) "
        "imports careloop_demo.usecases.book",
    ]


def test_a_door_importing_a_door_fails(tmp_path: Path) -> None:
    tree = _plant(
        tmp_path,
        {
            **CLEAN_SERVICE,
            f"{DEMO}/handlers/events.py": ("def later():\n    from ..api.routes import book\n"),
        },
    )
    assert room_violations(tree, tmp_path / "services" / "demo") == [
        "door imports door: services/demo/careloop_demo/handlers/events.py:2 (handlers) "
        "imports careloop_demo.api.routes"
    ]


def test_a_framework_reached_transitively_from_domain_fails(tmp_path: Path) -> None:
    tree = _plant(
        tmp_path,
        {
            **CLEAN_SERVICE,
            f"{DEMO}/domain/model.py": "from careloop_kit.auth.principal import P\n",
            f"{KIT}/auth/__init__.py": "from careloop_kit.auth.deps import require\n",
            f"{KIT}/auth/principal.py": "P = object\n",
            f"{KIT}/auth/deps.py": "from fastapi import Depends\n",
        },
    )
    assert frameworks_reached_from_domain(tree, tmp_path / "services" / "demo") == [
        f"{DEMO}/domain/model.py: careloop_demo.domain.model -> "
        "careloop_kit.auth -> careloop_kit.auth.deps -> fastapi"
    ]


def test_imports_that_never_run_at_import_time_do_not_count_for_domain(tmp_path: Path) -> None:
    tree = _plant(
        tmp_path,
        {
            **CLEAN_SERVICE,
            f"{DEMO}/domain/model.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    import sqlalchemy\n"
                "def later():\n    import httpx\n"
            ),
        },
    )
    assert frameworks_reached_from_domain(tree, tmp_path / "services" / "demo") == []


def test_a_missing_room_fails(tmp_path: Path) -> None:
    files = {k: v for k, v in CLEAN_SERVICE.items() if "/usecases/" not in k}
    _plant(tmp_path, files)
    assert "usecases" in missing_rooms(tmp_path / "services" / "demo")
