"""Wiring of the presence service: sessions in, online/offline out, the presence API."""

import asyncio
from collections.abc import Coroutine, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import structlog
from fastapi import FastAPI

from switchboard_runtime.http_errors import install_error_handlers
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


async def expiry_loop(pool: asyncpg.Pool, settings: Settings) -> None:
    expiry = timedelta(seconds=settings.session_expiry_seconds)
    # After a restart the heartbeats that arrived meanwhile are still queued; judging gateways
    # before one expiry period has passed would take live ones for dead.
    await asyncio.sleep(settings.session_expiry_seconds)
    while True:
        await asyncio.sleep(settings.expiry_check_seconds)
        try:
            async with pool.acquire() as conn, conn.transaction():
                outbox = await expire_silent_gateways(conn, expiry)
                await outbox.flush(conn)
        except Exception:
            # The next pass retries; a database outage only delays expiry.
            log.exception("session expiry pass failed")


async def grace_loop(pool: asyncpg.Pool, settings: Settings) -> None:
    # Its own loop, not the expiry one: that one waits a whole expiry period after a start, which
    # pending users, judged on presence's own table rather than on heartbeats, need not.
    grace = timedelta(seconds=settings.presence_grace_seconds)
    while True:
        await asyncio.sleep(settings.presence_grace_seconds / GRACE_CHECKS)
        try:
            async with pool.acquire() as conn, conn.transaction():
                outbox = await end_graces(conn, grace)
                await outbox.flush(conn)
        except Exception:
            # The next pass retries; a database outage only delays the offline.
            log.exception("grace period pass failed")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    def extra(pool: asyncpg.Pool) -> Mapping[str, Coroutine[Any, Any, None]]:
        return {"session-expiry": expiry_loop(pool, settings), "grace-period": grace_loop(pool, settings)}

    app = event_app(SERVICE, settings, HANDLERS, title="Switchboard presence (internal)", extra=extra)
    app.include_router(router)
    install_error_handlers(app)
    return app


def main() -> None:
    settings = Settings()
    run_cli(
        SERVICE, lambda: create_app(settings), settings, port=settings.presence_port, migrations=MIGRATIONS
    )
