"""No credential in any deployment file: the image, compose and its server configs, the
chart and the value sets the tests use. Compose's secrets are `${VAR:-default}` with a
default marked `local-development-only` (its own tests hold production to refusing them);
the chart has none at all (its tests scan every rendered manifest)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from careloop_kit.settings import LOCAL_DEVELOPMENT_PLACEHOLDER

pytestmark = pytest.mark.deploy

REPO = Path(__file__).resolve().parents[2]
DEPLOYMENT_FILES = sorted(
    path
    for path in [
        REPO / "docker-compose.yml",
        REPO / ".dockerignore",
        *(REPO / "deploy").rglob("*"),
        *(REPO / "helm").rglob("*"),
        *(REPO / "tests" / "deploy" / "values").rglob("*"),
    ]
    if path.is_file() and path.suffix not in {".jar"}
)

CREDENTIALS = {
    "a private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "a Vault token": re.compile(r"\b(hvs|hvb|hvr|s)\.[A-Za-z0-9_-]{24,}"),
    "an AWS access key": re.compile(r"\bAKIA[0-9A-Z]{16}\b"),
    "a URL with a password": re.compile(r"://[^/\s:@${}]+:(?!\$\{)[^@\s/${}]+@"),
}
# `password: x`, `token = "x"` and the like with a literal value: allowed only when the
# value is a reference (`${...}`, `{{ ... }}`, psql's `:'name'`), a file path, empty, or
# marked local-only.
ASSIGNED = re.compile(
    r"(?i)\b([\w.-]*(password|passwd|secret|token|api[_-]?key))\b[ \t]*(?::(?!')|=)[ \t]*"
    r"['\"]?(?P<value>[^\s'\"#]+)"
)
# Keys that name a Kubernetes Secret object (`tlsSecret: vault-agent-tls`): references.
SECRET_REFERENCE_KEY = re.compile(r"(tls|existing|ca|imagePull)Secret")
REFERENCE = re.compile(r"^(\$\{|\{\{|/|\$|:|<|\[|\{|\(|true$|false$|null$|~$|\||>)")


def credentials_in(text: str) -> list[str]:
    """What in `text` looks like a credential: a known format, or a literal value assigned
    to a password, secret, token or API key."""
    found = [
        f"{what}: {m.group(0)[:12]}..."
        for what, pattern in CREDENTIALS.items()
        for m in pattern.finditer(text)
        if LOCAL_DEVELOPMENT_PLACEHOLDER not in m.group(0)
    ]
    found += [
        match.group(0)
        for match in ASSIGNED.finditer(text)
        if not REFERENCE.match(match["value"])
        and LOCAL_DEVELOPMENT_PLACEHOLDER not in match["value"]
        and not match["value"].isupper()  # a variable's name, e.g. `secretKey: CARELOOP_X`
        and not SECRET_REFERENCE_KEY.fullmatch(match.group(1))
    ]
    return found


def test_the_scan_covers_the_deployment() -> None:
    names = {path.relative_to(REPO).as_posix() for path in DEPLOYMENT_FILES}
    assert {"docker-compose.yml", "deploy/Dockerfile", "helm/careloop/values.yaml"} <= names
    assert any(name.startswith("helm/careloop/templates/") for name in names)


@pytest.mark.parametrize("path", DEPLOYMENT_FILES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_no_credential_in_the_file(path: Path) -> None:
    found = credentials_in(path.read_text(errors="replace"))
    assert not found, f"{path.name} holds credentials: {found[:3]}"


def test_the_scan_finds_what_it_looks_for() -> None:
    samples = [
        "password: hunter2hunter2",
        "CARELOOP_VAULT_TOKEN: hvs.CAESIJ3xNWJ0dGh4dWx1c2VybmFtZXBhc3N3b3Jk",
        "url: postgresql://app:s3cret@db/app",
        "api_key = 'k3y-from-the-dashboard'",
        "clientSecret: abc123",
        "-----BEGIN EC PRIVATE KEY-----",
    ]
    for sample in samples:
        assert credentials_in(sample), sample
    allowed = [
        "password: ${CARELOOP_DB_PASSWORD:-local-development-only-x}",
        "tlsSecret: vault-agent-tls",
        "secretKey: CARELOOP_DATABASE_URL",
        "CREATE ROLE :\"name\" LOGIN PASSWORD :'password';",
    ]
    for sample in allowed:
        assert not credentials_in(sample), sample
