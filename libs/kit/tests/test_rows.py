from __future__ import annotations

from dataclasses import dataclass

import pytest

from careloop_kit.rows import record_of, values_of

pytestmark = pytest.mark.unit


@dataclass(frozen=True)
class Stored:
    id: str
    name: str
    scopes: tuple[str, ...]


def test_a_row_becomes_the_record_with_its_list_columns_as_tuples() -> None:
    row = {"id": "c-1", "name": "Partner", "scopes": ["patients:read"], "unmapped": 1}
    record = record_of(Stored, row, tuples=("scopes",))
    assert record == Stored(id="c-1", name="Partner", scopes=("patients:read",))


def test_a_column_can_go_through_a_conversion() -> None:
    row = {"id": "c-1", "name": "partner", "scopes": ["a:b"]}
    record = record_of(Stored, row, tuples=("scopes",), convert={"name": str.title})
    assert record.name == "Partner"


def test_a_row_missing_a_field_of_the_record_is_refused() -> None:
    with pytest.raises(KeyError):
        record_of(Stored, {"id": "c-1", "name": "Partner"})


def test_the_record_is_written_back_with_lists_and_without_its_key() -> None:
    record = Stored(id="c-1", name="Partner", scopes=("a:b", "c:d"))
    values = values_of(record, lists=("scopes",), leave_out=("id",))
    assert values == {"name": "Partner", "scopes": ["a:b", "c:d"]}
    assert record.scopes == ("a:b", "c:d")
