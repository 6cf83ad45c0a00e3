"""Writes `docs/permissions.md` from the permission table
(`python -m careloop_kit.auth.permissions_doc`; `--check` fails when it is stale)."""

from __future__ import annotations

import sys
from pathlib import Path

from careloop_kit.auth.permissions import render_markdown
from careloop_kit.infra.kafka import find_repo_root


def target() -> Path:
    """Where the generated document lives."""
    return find_repo_root() / "docs" / "permissions.md"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    text = render_markdown()
    path = target()
    if "--check" in args:
        if not path.exists() or path.read_text() != text:
            print("docs/permissions.md is stale: run python -m careloop_kit.auth.permissions_doc")
            return 1
        return 0
    path.write_text(text)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
