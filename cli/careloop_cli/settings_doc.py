"""Generates `docs/configuration.md` from the settings classes, so every setting's
default and meaning are documented where operators look (`python -m careloop_cli.settings_doc`)."""

from __future__ import annotations

import sys
from pathlib import Path

from pydantic import SecretStr
from pydantic_settings import BaseSettings

from careloop_cli.devstack import DevStackSettings
from careloop_cli.registry import SERVICES
from careloop_kit.infra.kafka import find_repo_root
from careloop_kit.settings import KitSettings

HEADER = """# Configuration

Generated from the settings classes by `python -m careloop_cli.settings_doc`; do not edit
by hand. Every setting is an environment variable. Each service process reads the
shared `CARELOOP_*` settings plus its own. Defaults suit local development; with
`CARELOOP_ENVIRONMENT=production` a service refuses to start while a secret still holds
the local-development placeholder or a URL is not TLS.
"""


def _default(value: object) -> str:
    if isinstance(value, SecretStr):
        secret = value.get_secret_value()
        return "local-development placeholder" if "local-development" in secret else "(secret)"
    if value is None:
        return "unset"
    if isinstance(value, str) and value == "":
        return '`""`'
    return f"`{value}`"


def _table(settings: type[BaseSettings], *, skip: set[str] | None = None) -> str:
    prefix = str(settings.model_config.get("env_prefix", ""))
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in settings.model_fields.items():
        if skip and name in skip:
            continue
        description = (field.description or "").replace("|", "\\|")
        default = field.get_default(call_default_factory=True)
        rows.append(f"| `{prefix}{name.upper()}` | {_default(default)} | {description} |")
    return "\n".join(rows) + "\n"


def render() -> str:
    parts = [HEADER, "\n## Shared by every service\n\n", _table(KitSettings)]
    shared = set(KitSettings.model_fields)
    for entry in SERVICES.values():
        settings = entry.settings_class()
        own = {
            name
            for name, field in settings.model_fields.items()
            if name not in shared or field.default != KitSettings.model_fields[name].default
        }
        parts.append(f"\n## {entry.name}\n\n")
        parts.append(_table(settings, skip=set(settings.model_fields) - own))
    parts.append("\n## Local stack (`make run`)\n\n")
    parts.append(_table(DevStackSettings))
    parts.append(
        "\nAlso: `CARELOOP_STATE_DIR` (default `.careloop/` in the repository) holds the local "
        "stack's data, logs, generated local-development secrets and `endpoints.json`.\n"
        "\n## Read by the `careloop` command\n\n"
        "| variable | default | meaning |\n|---|---|---|\n"
        "| `CARELOOP_SECRETS_DIR` | unset | A directory whose files supply settings: each named "
        "after a setting's variable in lower case (`careloop_database_url`), as a Vault agent "
        "or a mounted Kubernetes Secret writes them. Variables win over files. |\n"
        "| `CARELOOP_VAULT_ROOT_TOKEN` | unset | Root or admin token for `careloop vault "
        "bootstrap` (or `--root-token-file`). |\n"
    )
    return "".join(parts)


def target() -> Path:
    return find_repo_root() / "docs" / "configuration.md"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    text = render()
    if "--check" in args:
        if not target().exists() or target().read_text() != text:
            print("docs/configuration.md is stale: run python -m careloop_cli.settings_doc")
            return 1
        return 0
    target().write_text(text)
    print(f"wrote {target()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
