"""Round-robin among a queue's members: each new task goes to the member after the one
who got the last, in a stable order, so the work spreads evenly whoever joins or leaves."""

from __future__ import annotations

from collections.abc import Sequence


def next_in_turn(members: Sequence[str], last: str | None) -> str | None:
    """The member whose turn it is after `last` (None: the queue has no members). A
    `last` who has left the queue counts from where they were in the order."""
    ordered = sorted(set(members))
    if not ordered:
        return None
    if last is None:
        return ordered[0]
    after = [member for member in ordered if member > last]
    return after[0] if after else ordered[0]
