"""Rows to records and back, for repositories whose frozen dataclass mirrors its table.

A hand-written mapper names every column twice (row to record, record to values) and
drifts from the table when one is added; these read the names off the dataclass. Array
and JSON list columns come back as lists: records keep them as tuples so they stay
immutable, and they are written back as lists.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import fields
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

R = TypeVar("R", bound="DataclassInstance")


def record_of(
    cls: type[R],
    # Any keys: SQLAlchemy's RowMapping is keyed by column objects as well as names.
    row: Mapping[Any, Any],
    *,
    tuples: Collection[str] = (),
    convert: Mapping[str, Callable[[Any], Any]] | None = None,
) -> R:
    """The dataclass `cls` from the row's columns of the same names (`row._mapping`);
    the columns named in `tuples` become tuples, those in `convert` go through their
    function (an enum, a dict copy of a JSON object)."""
    values = {field.name: row[field.name] for field in fields(cls)}
    for name in tuples:
        values[name] = tuple(values[name])
    for name, function in (convert or {}).items():
        values[name] = function(values[name])
    return cls(**values)


def values_of(
    record: DataclassInstance, *, lists: Collection[str] = (), leave_out: Collection[str] = ()
) -> dict[str, Any]:
    """The record's fields as column values for an insert or update: the fields named in
    `lists` as lists, those in `leave_out` (a key that never changes) left out."""
    values = {
        field.name: getattr(record, field.name)
        for field in fields(record)
        if field.name not in leave_out
    }
    for name in lists:
        values[name] = list(values[name])
    return values
