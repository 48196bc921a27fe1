"""PostgreSQL: a pool per service, its `search_path` set to the service's own schema."""

from typing import TYPE_CHECKING, TypeAlias
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import structlog
from asyncpg.pool import PoolConnectionProxy

from .retry import connect_retrying

__all__ = ["CONNECT_ERRORS", "Conn", "create_pool", "ensure_database"]

# A connection as handlers see it: plain, or borrowed from a pool.
if TYPE_CHECKING:
    Conn: TypeAlias = asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]
else:
    Conn = asyncpg.Connection | PoolConnectionProxy

log = structlog.get_logger()

CONNECT_ERRORS = (
    OSError,
    asyncpg.CannotConnectNowError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.TooManyConnectionsError,
)


def _with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


async def ensure_database(url: str) -> None:
    """Create the configured database if it is missing (the quickstart promises it)."""
    name = urlsplit(url).path.lstrip("/")
    async for attempt in connect_retrying("postgresql", CONNECT_ERRORS):
        with attempt:
            conn = await asyncpg.connect(_with_database(url, "postgres"))
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            try:
                await conn.execute(f'CREATE DATABASE "{name}"')
                log.info("database created", database=name)
            except asyncpg.DuplicateDatabaseError:
                pass  # another service created it at the same moment
    finally:
        await conn.close()


async def _keep_session(_: "asyncpg.Connection[asyncpg.Record]") -> None:
    """What a connection gets on its way back to the pool, after asyncpg's own clean-up (an open
    transaction rolled back, listeners removed): nothing more. asyncpg's default also runs
    `SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`, a round trip on every
    release, for session state these services never leave behind: no cursors held past a
    transaction, no `SET`; the relays remove their own listeners, and the one session advisory
    lock (the event log relay's lead) is released by its holder, which terminates the connection
    when it cannot."""


async def create_pool(url: str, schema: str, *, min_size: int = 2, max_size: int = 10) -> asyncpg.Pool:
    async for attempt in connect_retrying("postgresql", CONNECT_ERRORS):
        with attempt:
            pool = await asyncpg.create_pool(
                url,
                min_size=min_size,
                max_size=max_size,
                reset=_keep_session,
                server_settings={"search_path": schema, "application_name": f"switchboard-{schema}"},
            )
    return pool
