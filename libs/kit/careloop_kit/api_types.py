"""Request fields every service's API declares the same way: an id in a path or a
query, and the size of a page."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query
from pydantic import StringConstraints

IdStr = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")]
"""An id as the services make them (UUIDs, `loc-north`): a letter or digit first, then
letters, digits and `._:-`, at most 64."""

PageLimit = Annotated[
    int,
    Query(
        ge=1,
        le=1000,
        description=(
            "Items per page; the service lists at most `CARELOOP_MAX_PAGE_SIZE` (200 by "
            "default) and says where to go on in `next_after`."
        ),
    ),
]
