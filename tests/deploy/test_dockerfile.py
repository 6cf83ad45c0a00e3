"""Static checks of deploy/Dockerfile and .dockerignore.

There is no Docker engine where the tests run, so the image cannot be built here: these tests
read the Dockerfile and hold it to what the deployment needs (a pinned base, no development
tools or local-stack binaries in the image, a non-root numeric user, every workspace member in
the build) and check that .dockerignore keeps local state out of the build context without
dropping a file the build copies.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytestmark = pytest.mark.deploy

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
VENV = "/opt/venv"


@dataclass
class Instruction:
    keyword: str
    args: str


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: list[Stage]


def _logical_lines(text: str) -> list[str]:
    """Instructions with their continuation lines joined; comment lines dropped (Docker drops
    them inside a continuation too)."""
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not current):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        if current.strip():
            lines.append(current.strip())
        current = ""
    if current.strip():
        lines.append(current.strip())
    return lines


def _substitute(value: str, args: dict[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in args:
            raise AssertionError(f"${name} has no default: the base image is not pinned")
        return args[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", replace, value)


def _arg_default(args: str) -> tuple[str, str | None]:
    name, _, default = args.partition("=")
    return name.strip(), (default.strip().strip('"') if default else None)


def parse_dockerfile(text: str) -> Dockerfile:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in _logical_lines(text):
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        args = args.strip()
        if keyword == "FROM":
            words = args.split()
            words = [w for w in words if not w.startswith("--platform")]
            base = _substitute(words[0], global_args)
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=base, name=name))
        elif not stages:
            assert keyword == "ARG", f"only ARG may come before the first FROM, not {keyword}"
            name, default = _arg_default(args)
            if default is not None:
                global_args[name] = default
        else:
            stages[-1].instructions.append(Instruction(keyword, args))
    return Dockerfile(global_args, stages)


def _exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list), f"{args} is not the exec (JSON array) form"
    return [str(v) for v in value]


def _env(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in stage.all("ENV"):
        for word in shlex.split(instruction.args):
            key, sep, value = word.partition("=")
            assert sep, f"ENV {instruction.args!r}: use the KEY=value form"
            env[key] = value
    return env


def _labels(stage: Stage) -> dict[str, str]:
    labels: dict[str, str] = {}
    for instruction in stage.all("LABEL"):
        for word in shlex.split(instruction.args):
            key, _, value = word.partition("=")
            labels[key] = value
    return labels


def _copy_sources(instruction: Instruction) -> list[str]:
    words = [w for w in shlex.split(instruction.args) if not w.startswith("--")]
    return words[:-1]


def _uv_sync_commands(stage: Stage) -> list[list[str]]:
    commands: list[list[str]] = []
    for run in stage.all("RUN"):
        for part in re.split(r"&&|;", run.args):
            words = shlex.split(part)
            for index in range(len(words) - 1):
                if words[index] == "uv" and words[index + 1] == "sync":
                    commands.append(words[index + 2 :])
    return commands


def _flag_values(flags: list[str], name: str) -> list[str]:
    values: list[str] = []
    for index, flag in enumerate(flags):
        if flag == name and index + 1 < len(flags):
            values.append(flags[index + 1])
        elif flag.startswith(name + "="):
            values.append(flag.split("=", 1)[1])
    return values


def workspace_members() -> list[str]:
    """Member directories from pyproject.toml's [tool.uv.workspace] globs, as uv sees them."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    workspace = pyproject["tool"]["uv"]["workspace"]
    excluded = set(workspace.get("exclude", []))
    members: set[str] = set()
    for pattern in workspace["members"]:
        for path in sorted(ROOT.glob(pattern)):
            relative = path.relative_to(ROOT).as_posix()
            if (path / "pyproject.toml").is_file() and relative not in excluded:
                members.add(relative)
    return sorted(members)


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return parse_dockerfile(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def build(dockerfile: Dockerfile) -> Stage:
    builders = [s for s in dockerfile.stages if _uv_sync_commands(s)]
    assert len(builders) == 1, "exactly one stage should run `uv sync`"
    return builders[0]


@pytest.fixture(scope="module")
def final(dockerfile: Dockerfile) -> Stage:
    return dockerfile.stages[-1]


# ------------------------------------------------------------------ the parser itself


def test_parser_joins_continuations_and_resolves_global_args() -> None:
    parsed = parse_dockerfile(
        "ARG BASE=python:3.11.9-slim\nFROM ${BASE} AS one\n# note\nRUN a \\\n  # inside\n"
        "  && b\nFROM $BASE\nUSER 1:1\n"
    )
    assert [s.base for s in parsed.stages] == ["python:3.11.9-slim"] * 2
    assert parsed.stages[0].name == "one"
    (run,) = parsed.stages[0].instructions
    assert (run.keyword, " ".join(run.args.split())) == ("RUN", "a && b")
    with pytest.raises(AssertionError, match="UNSET"):
        parse_dockerfile("FROM ${UNSET}\n")


def test_workspace_members_come_from_the_globs() -> None:
    members = workspace_members()
    assert "libs/kit" in members
    assert "contracts" in members
    assert sum(m.startswith("services/") for m in members) >= 6


# ------------------------------------------------------------------ stages and base image


def test_multi_stage_on_one_pinned_base(dockerfile: Dockerfile, final: Stage) -> None:
    assert len(dockerfile.stages) >= 2
    bases = {stage.base for stage in dockerfile.stages}
    assert len(bases) == 1, f"every stage must use the same base, got {sorted(bases)}"
    (base,) = bases
    # An exact patch version: python:3.11.14-slim-bookworm, not python:3.11 or :latest.
    assert re.fullmatch(r"python:3\.11\.\d+-slim-[a-z]+", base), base
    assert final.name is not None


def test_uv_is_the_makefiles_version(dockerfile: Dockerfile, build: Stage) -> None:
    makefile = (ROOT / "Makefile").read_text()
    match = re.search(r"^UV_VERSION\s*:?=\s*(\S+)", makefile, re.MULTILINE)
    assert match, "Makefile has no UV_VERSION"
    wanted = match.group(1)
    args = dict(_arg_default(i.args) for i in build.all("ARG"))
    installs = [r.args for r in build.all("RUN") if "pip install" in r.args and "uv==" in r.args]
    assert installs, "uv is not installed with pip in the build stage"
    resolved = _substitute(installs[0], {k: v for k, v in args.items() if v is not None})
    assert f"uv=={wanted}" in resolved


def test_manifests_are_copied_before_the_sources(build: Stage) -> None:
    copies = [(index, i) for index, i in enumerate(build.instructions) if i.keyword == "COPY"]
    first_sync = next(
        index
        for index, i in enumerate(build.instructions)
        if i.keyword == "RUN" and "uv sync" in i.args
    )
    early = {src for index, i in copies if index < first_sync for src in _copy_sources(i)}
    for manifest in ("pyproject.toml", "uv.lock"):
        assert manifest in early, f"{manifest} must be copied before the first uv sync"
    for member in workspace_members():
        assert f"{member}/pyproject.toml" in early, (
            f"workspace member {member} is missing from the manifest layer of deploy/Dockerfile"
        )
    everything = {src.rstrip("/") for _, i in copies for src in _copy_sources(i)}
    for member in workspace_members():
        parts = member.split("/")
        prefixes = {"/".join(parts[: n + 1]) for n in range(len(parts))}
        assert prefixes & everything, f"the sources of {member} are never copied"


def test_dependency_groups_stay_out(build: Stage) -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    default_groups = set(pyproject["tool"]["uv"].get("default-groups", []))
    assert {"dev", "local-stack"} <= set(pyproject["dependency-groups"])
    syncs = _uv_sync_commands(build)
    for flags in syncs:
        assert "--frozen" in flags, "uv sync must use the lock file as it is"
        assert "--no-dev" in flags
        assert "local-stack" in _flag_values(flags, "--no-group")
        for forbidden in ("--dev", "--all-groups", "--group", "--only-group", "--extra"):
            assert not any(f == forbidden or f.startswith(forbidden + "=") for f in flags)
        if "--no-default-groups" not in flags:
            excluded = set(_flag_values(flags, "--no-group")) | {"dev"}
            assert default_groups <= excluded, f"default groups installed: {default_groups}"
    installing = syncs[-1]
    assert "--no-editable" in installing
    assert "--compile-bytecode" in installing
    assert "--no-install-workspace" not in installing
    assert _env(build).get("UV_PROJECT_ENVIRONMENT") == VENV


# ------------------------------------------------------------------ the final stage


def test_final_stage_holds_only_the_virtual_environment(build: Stage, final: Stage) -> None:
    copies = final.all("COPY") + final.all("ADD")
    assert copies, "the final stage copies nothing"
    for copy in copies:
        assert copy.keyword == "COPY"
        assert f"--from={build.name}" in copy.args.split(), f"unexpected COPY {copy.args}"
        assert _copy_sources(copy) == [VENV], f"only {VENV} comes from the build: {copy.args}"
    env = _env(final)
    assert env["PATH"].split(":")[0] == f"{VENV}/bin"


def test_final_stage_has_no_installers_or_compilers(final: Stage) -> None:
    runs = " ".join(r.args for r in final.all("RUN"))
    words = set(re.split(r"[\s;&|]+", runs))
    assert "uv" not in words, "uv must not be in the final stage"
    assert "pip install" not in runs
    assert not re.search(r"apt-get\s+install|apk\s+add", runs), "no packages in the final stage"
    for compiler in ("gcc", "g++", "build-essential", "clang", "make"):
        assert compiler not in words
    uninstall = re.search(r"pip\s+uninstall\s+(.*?)(?:&&|;|$)", runs)
    assert uninstall, "pip, setuptools and wheel must be removed from the final stage"
    removed = set(uninstall.group(1).split())
    assert {"pip", "setuptools", "wheel"} <= removed


def test_final_stage_runs_as_a_numeric_non_root_user(final: Stage) -> None:
    users = final.all("USER")
    assert users, "the final stage has no USER"
    user = users[-1].args
    assert re.fullmatch(r"\d+:\d+", user), f"USER must be numeric uid:gid, got {user}"
    uid, gid = (int(part) for part in user.split(":"))
    assert uid != 0
    assert gid != 0
    assert (uid, gid) == (10001, 10001)
    runs = " ".join(r.args for r in final.all("RUN"))
    useradd = re.search(r"useradd\s+(.*?)(?:&&|;|$)", runs)
    assert useradd, "the user is not created"
    assert f"--uid {uid}" in useradd.group(1)
    assert "--shell /usr/sbin/nologin" in useradd.group(1)
    assert "--no-create-home" in useradd.group(1)


def test_entrypoint_environment_and_labels(final: Stage) -> None:
    assert _exec_form(final.all("ENTRYPOINT")[-1].args) == ["careloop"]
    assert _exec_form(final.all("CMD")[-1].args) == ["--help"]
    assert final.all("WORKDIR")[-1].args == "/app"
    env = _env(final)
    assert env["CARELOOP_HTTP_HOST"] == "0.0.0.0"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"
    labels = _labels(final)
    for label in ("source", "licenses", "title"):
        assert labels.get(f"org.opencontainers.image.{label}"), f"missing OCI label {label}"
    # The port differs per service: compose and the chart probe /readyz themselves.
    assert not final.all("HEALTHCHECK")


# ------------------------------------------------------------------ .dockerignore


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; `!` re-includes; a directory pattern
    excludes everything below it."""
    ignored = False
    parts = path.split("/")
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw[1:] if negate else raw
        pattern = pattern.strip("/")
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        if any(_match(prefix, pattern) for prefix in prefixes):
            ignored = not negate
    return ignored


def _match(path: str, pattern: str) -> bool:
    if pattern.startswith("**/"):
        tail = pattern[3:]
        segments = path.split("/")
        return any(fnmatch.fnmatchcase("/".join(segments[n:]), tail) for n in range(len(segments)))
    return fnmatch.fnmatchcase(path, pattern)


@pytest.fixture(scope="module")
def ignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_dockerignore_matcher() -> None:
    assert _ignored("a/b/c.pyc", ["**/*.pyc"])
    assert _ignored(".git/HEAD", [".git"])
    assert not _ignored("docs/README.md", ["*.md", "!**/README.md"])
    assert not _ignored("src/x.py", [".git"])


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        ".git/HEAD",
        ".careloop/postgres/PG_VERSION",
        ".tools/bin/uv",
        "tests/deploy/test_dockerfile.py",
        "services/patients/tests/test_api.py",
        "docs/configuration.md",
        "libs/kit/careloop_kit/__pycache__/settings.cpython-311.pyc",
        ".pytest_cache/v/cache",
        ".mypy_cache/3.11/x.json",
    ],
)
def test_dockerignore_keeps_local_state_out(path: str, ignore_patterns: list[str]) -> None:
    assert _ignored(path, ignore_patterns), f"{path} would be sent to the build"


def test_dockerignore_keeps_what_the_build_copies(
    dockerfile: Dockerfile, ignore_patterns: list[str]
) -> None:
    needed: list[str] = []
    for stage in dockerfile.stages:
        for copy in stage.all("COPY"):
            if any(w.startswith("--from") for w in copy.args.split()):
                continue
            for source in _copy_sources(copy):
                base = ROOT / source
                if base.is_dir():
                    files = [p for p in base.rglob("*.py") if "tests" not in p.parts]
                    files += list(base.rglob("pyproject.toml"))
                    needed += [p.relative_to(ROOT).as_posix() for p in files]
                    needed += [p.relative_to(ROOT).as_posix() for p in base.rglob("*.ini")]
                else:
                    needed.append(source)
    needed = [path for path in needed if "__pycache__" not in path]
    assert any(path.endswith("/migrations/env.py") for path in needed)
    dropped = [path for path in needed if _ignored(path, ignore_patterns)]
    assert not dropped, f".dockerignore drops files the build copies: {dropped[:10]}"
