from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest
from sqlalchemy import literal, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.types import Text

from careloop_kit.db import make_engine
from careloop_kit.rows import record_of, values_of


@dataclass(frozen=True)
class Stored:
    id: str
    name: str
    scopes: tuple[str, ...]


@pytest.mark.unit
def test_a_row_becomes_the_record_with_its_list_columns_as_tuples() -> None:
    row = {"id": "c-1", "name": "Partner", "scopes": ["patients:read"], "unmapped": 1}
    record = record_of(Stored, row, tuples=("scopes",))
    assert record == Stored(id="c-1", name="Partner", scopes=("patients:read",))


@pytest.mark.unit
def test_a_column_can_go_through_a_conversion() -> None:
    row = {"id": "c-1", "name": "partner", "scopes": ["a:b"]}
    record = record_of(Stored, row, tuples=("scopes",), convert={"name": str.title})
    assert record.name == "Partner"


@pytest.mark.unit
def test_a_row_missing_a_field_of_the_record_is_refused() -> None:
    with pytest.raises(KeyError):
        record_of(Stored, {"id": "c-1", "name": "Partner"})


@pytest.mark.unit
def test_the_record_is_written_back_with_lists_and_without_its_key() -> None:
    record = Stored(id="c-1", name="Partner", scopes=("a:b", "c:d"))
    values = values_of(record, lists=("scopes",), leave_out=("id",))
    assert values == {"name": "Partner", "scopes": ["a:b", "c:d"]}
    assert record.scopes == ("a:b", "c:d")


@pytest.mark.service
async def test_a_postgres_row_mapping_is_read_by_column_name(
    make_database: Callable[[str], Awaitable[str]],
) -> None:
    # A RowMapping as repositories get it: keyed by names and columns, an array column
    # coming back as a list, and a column the record does not have.
    query = select(
        literal("c-1").label("id"),
        literal("Partner").label("name"),
        literal(["a:b"], ARRAY(Text)).label("scopes"),
        literal(1).label("unmapped"),
    )
    engine = make_engine(await make_database("rows"))
    try:
        async with engine.connect() as connection:
            row = (await connection.execute(query)).one()
    finally:
        await engine.dispose()
    record = record_of(Stored, row._mapping, tuples=("scopes",))
    assert record == Stored(id="c-1", name="Partner", scopes=("a:b",))
