"""Rendered chart manifests per value set, rendered once per test session."""

from __future__ import annotations

from typing import Any

import pytest

from .helmchart import VALUE_SETS, render


class Renders:
    """Lazily rendered manifests of each value set, shared by the whole session."""

    def __init__(self) -> None:
        self._cache: dict[str, list[dict[str, Any]]] = {}

    def __getitem__(self, name: str) -> list[dict[str, Any]]:
        if name not in self._cache:
            self._cache[name] = render(VALUE_SETS[name])
        return self._cache[name]


@pytest.fixture(scope="session")
def renders() -> Renders:
    return Renders()
