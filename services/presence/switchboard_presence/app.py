"""Wiring of the presence service: sessions in, online/offline out, the presence API."""

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import structlog
from fastapi import FastAPI

from switchboard_runtime.http_errors import install_error_handlers
from switchboard_runtime.service import Runtime, event_app, run_cli
from switchboard_runtime.uow import UnitOfWork, UnitsOfWork

from .api import router
from .handlers import HANDLERS, end_graces, expire_silent_gateways
from .settings import Settings
from .store import Store

__all__ = ["create_app", "main"]

SERVICE = "presence"
MIGRATIONS = Path(__file__).parent / "migrations"
log = structlog.get_logger()
# Pending users are checked this many times per grace period, so an offline is announced at most
# a fifth of the grace late (1 s at the default 5 s), while the check stays one indexed query.
GRACE_CHECKS = 5


async def every(
    units: UnitsOfWork[Store],
    seconds: float,
    job: Callable[[UnitOfWork[Store]], Awaitable[None]],
    name: str,
    *,
    first_after: float = 0.0,
) -> None:
    """Run `job` in a unit of work every `seconds`; a failed pass (a database outage) only
    delays the work to the next one."""
    await asyncio.sleep(first_after)
    while True:
        await asyncio.sleep(seconds)
        try:
            async with units() as uow:
                await job(uow)
        except Exception:
            log.exception("periodic pass failed", job=name)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    expiry = timedelta(seconds=settings.session_expiry_seconds)
    grace = timedelta(seconds=settings.presence_grace_seconds)

    def extra(runtime: Runtime) -> Mapping[str, Coroutine[Any, Any, None]]:
        units: UnitsOfWork[Store] = runtime.units  # type: ignore[assignment]
        return {
            # After a restart the heartbeats that arrived meanwhile are still queued; judging
            # gateways before one expiry period has passed would take live ones for dead.
            "session-expiry": every(
                units,
                settings.expiry_check_seconds,
                lambda uow: expire_silent_gateways(uow, expiry),
                "session-expiry",
                first_after=settings.session_expiry_seconds,
            ),
            # Pending users are judged on presence's own table, not on heartbeats: no first wait.
            "grace-period": every(
                units,
                settings.presence_grace_seconds / GRACE_CHECKS,
                lambda uow: end_graces(uow, grace),
                "grace-period",
            ),
        }

    app = event_app(SERVICE, settings, HANDLERS, Store, title="Switchboard presence (internal)", extra=extra)
    app.include_router(router)
    install_error_handlers(app)
    return app


def main() -> None:
    settings = Settings()
    run_cli(
        SERVICE, lambda: create_app(settings), settings, port=settings.presence_port, migrations=MIGRATIONS
    )
