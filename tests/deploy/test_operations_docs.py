"""The operations pages name every topic and consumer group of the catalogue.

Their tables are written for operators (what to create, what to scale, where dead
letters go); this keeps them from falling behind when a service adds a consumer group.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from careloop_contracts import topic_catalogue
from careloop_contracts.topics import CONSUMER_GROUPS

pytestmark = pytest.mark.unit

OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations"


@pytest.mark.parametrize("page", ["README.md", "dead-letters.md", "scale.md"])
def test_every_consumer_group_is_named(page: str) -> None:
    text = (OPERATIONS / page).read_text()
    assert [group for group in CONSUMER_GROUPS if f"`{group}`" not in text] == []


def test_every_topic_to_create_is_listed() -> None:
    text = (OPERATIONS / "deploy.md").read_text()
    assert [topic for topic in topic_catalogue() if f"`{topic}`" not in text] == []
