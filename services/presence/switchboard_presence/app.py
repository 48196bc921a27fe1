"""Wiring of the presence service: sessions in, online/offline out, the presence API."""

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import structlog
from fastapi import FastAPI

from switchboard_runtime.db import Conn
from switchboard_runtime.http_errors import install_error_handlers
from switchboard_runtime.outbox import OutboxWriter
from switchboard_runtime.service import event_app, run_cli

from .api import router
from .handlers import HANDLERS, end_graces, expire_silent_gateways
from .settings import Settings

__all__ = ["create_app", "main"]

SERVICE = "presence"
MIGRATIONS = Path(__file__).parent / "migrations"
log = structlog.get_logger()
# Pending users are checked this many times per grace period, so an offline is announced at most
# a fifth of the grace late (1 s at the default 5 s), while the check stays one indexed query.
GRACE_CHECKS = 5


async def every(
    pool: asyncpg.Pool,
    seconds: float,
    job: Callable[[Conn], Awaitable[OutboxWriter]],
    name: str,
    *,
    first_after: float = 0.0,
) -> None:
    """Run `job` in a transaction every `seconds`, publishing what it emits; a failed pass (a
    database outage) only delays the work to the next one."""
    await asyncio.sleep(first_after)
    while True:
        await asyncio.sleep(seconds)
        try:
            async with pool.acquire() as conn, conn.transaction():
                outbox = await job(conn)
                await outbox.flush(conn)
        except Exception:
            log.exception("periodic pass failed", job=name)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    expiry = timedelta(seconds=settings.session_expiry_seconds)
    grace = timedelta(seconds=settings.presence_grace_seconds)

    def extra(pool: asyncpg.Pool) -> Mapping[str, Coroutine[Any, Any, None]]:
        return {
            # After a restart the heartbeats that arrived meanwhile are still queued; judging
            # gateways before one expiry period has passed would take live ones for dead.
            "session-expiry": every(
                pool,
                settings.expiry_check_seconds,
                lambda conn: expire_silent_gateways(conn, expiry, settings.partitions),
                "session-expiry",
                first_after=settings.session_expiry_seconds,
            ),
            # Pending users are judged on presence's own table, not on heartbeats: no first wait.
            "grace-period": every(
                pool,
                settings.presence_grace_seconds / GRACE_CHECKS,
                lambda conn: end_graces(conn, grace, settings.partitions),
                "grace-period",
            ),
        }

    app = event_app(SERVICE, settings, HANDLERS, title="Switchboard presence (internal)", extra=extra)
    app.include_router(router)
    install_error_handlers(app)
    return app


def main() -> None:
    settings = Settings()
    run_cli(
        SERVICE, lambda: create_app(settings), settings, port=settings.presence_port, migrations=MIGRATIONS
    )
