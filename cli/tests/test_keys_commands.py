"""`careloop keys`: which services the rewrap and reindex commands reach."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from careloop_cli.main import _stores_phi, app
from careloop_cli.registry import SERVICES

pytestmark = pytest.mark.unit


def test_rewrap_all_reaches_every_service_that_seals_fields_and_only_those() -> None:
    assert [name for name in SERVICES if _stores_phi(name)] == [
        "patients",
        "identity",
        "messaging",
        "referrals",
        "tasks",
        "caregaps",
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["keys", "rewrap"], "name one service or pass --all"),
        (["keys", "rewrap", "patients", "--all"], "name one service or pass --all"),
        (["keys", "rewrap", "scheduling"], "scheduling stores no sealed fields"),
        (["keys", "reindex", "identity"], "identity keeps no versioned blind indexes"),
        (["keys", "reindex", "messaging"], "messaging keeps no versioned blind indexes"),
        (["keys", "reindex", "referrals"], "referrals keeps no versioned blind indexes"),
    ],
)
def test_wrong_targets_are_refused_before_anything_runs(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, args)

    assert result.exit_code == 2
    assert message in result.output
