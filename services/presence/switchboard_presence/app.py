"""Wiring of the presence service: sessions in, online/offline out, silent gateways expired."""

import asyncio
from collections.abc import Coroutine, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import structlog
from fastapi import FastAPI

from switchboard_runtime.service import event_app, run_cli

from .handlers import HANDLERS, expire_silent_gateways
from .settings import Settings

__all__ = ["create_app", "main"]

SERVICE = "presence"
MIGRATIONS = Path(__file__).parent / "migrations"
log = structlog.get_logger()


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


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    def extra(pool: asyncpg.Pool) -> Mapping[str, Coroutine[Any, Any, None]]:
        return {"session-expiry": expiry_loop(pool, settings)}

    return event_app(SERVICE, settings, HANDLERS, title="Switchboard presence", extra=extra)


def main() -> None:
    settings = Settings()
    run_cli(
        SERVICE, lambda: create_app(settings), settings, port=settings.presence_port, migrations=MIGRATIONS
    )
