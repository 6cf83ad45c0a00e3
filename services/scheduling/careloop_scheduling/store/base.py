"""What every repository shares: the caller's session (a repository never commits: the
request, event or timer boundary does) and new ids."""

from __future__ import annotations

from uuid import uuid4

from sqlalchemy.ext.asyncio import AsyncSession


def new_id() -> str:
    return str(uuid4())


class Repository:
    """A repository of one aggregate, on the caller's session."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session
