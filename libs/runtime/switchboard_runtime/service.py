"""What every service process has in common: its lifespan, health routes and command line."""

import argparse
import asyncio
import gc
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import structlog
import uvicorn
from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp

from switchboard_contracts.events import Event

from .amqp import Bus
from .consumer import EventConsumer, Handler
from .db import Conn, create_pool, ensure_database
from .eventlog import EventLog
from .internal_auth import internal_tokens
from .logs import configure_logging
from .migrate import apply_migrations
from .outbox import OutboxTable
from .settings import CommonSettings
from .uow import Outgoing, UnitsOfWork

__all__ = [
    "Runtime",
    "add_health_routes",
    "event_app",
    "event_service",
    "tune_collector",
    "run_cli",
    "spawn",
]

log = structlog.get_logger()


def spawn(coro: Coroutine[Any, Any, None], tasks: set[asyncio.Task[None]], name: str) -> None:
    """Start a background task that must live as long as the process.

    If it dies the process stops (SIGTERM to itself, so shutdown stays graceful) and its
    supervisor restarts it: a service whose consumer is dead must not look alive.
    """
    task = asyncio.create_task(coro, name=name)
    tasks.add(task)

    def done(t: asyncio.Task[None]) -> None:
        tasks.discard(t)
        if not t.cancelled() and t.exception() is not None:
            log.error("background task died; stopping", task=name, exc_info=t.exception())
            os.kill(os.getpid(), signal.SIGTERM)

    task.add_done_callback(done)


async def cancel_all(tasks: set[asyncio.Task[None]]) -> None:
    for task in list(tasks):
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


@dataclass
class Runtime:
    bus: Bus
    pool: asyncpg.Pool | None = None
    # The internal API's own connections (settings.api_pool_size): a bulkhead for the pipeline.
    api_pool: asyncpg.Pool | None = None
    # Units of work on the pipeline's pool (consumer, timers) and on the API's.
    units: UnitsOfWork[Any] | None = None
    api_units: UnitsOfWork[Any] | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def ready(self) -> bool:
        if not self.bus.is_ready:
            return False
        if self.pool is not None:
            try:
                await self.pool.fetchval("SELECT 1", timeout=2.0)
            except Exception:
                return False
        return True


def add_health_routes(app: FastAPI, ready: Callable[[], Awaitable[bool]]) -> None:
    @app.get("/healthz", tags=["health"], summary="Alive (no dependency checks)")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], summary="Broker and database reachable")
    async def readyz(response: Response) -> dict[str, str]:
        if await ready():
            return {"status": "ready"}
        response.status_code = 503
        return {"status": "not ready"}

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics", response_class=Response)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


# CPython collects its youngest generation every 700 new container objects by default. A
# service under load makes thousands of objects per batch, and every one still alive across an
# await (a batch being committed, a frame waiting for its socket) at such a collection is
# promoted; promotions are what trigger full collections, and a full collection walks every
# object the process holds: in a gateway with 2,500 sessions, a quarter of its CPU in a
# 5,000-member group. With 50,000, most of a batch's objects are gone before the collection
# that would have promoted them; the young generation stays a few megabytes.
GC_THRESHOLDS = (50_000, 20, 10)


def tune_collector() -> None:
    """Exempt everything alive after start-up (modules, pydantic schemas, routes) from the garbage
    collector's full passes, and make those passes rare (GC_THRESHOLDS). The start-up objects live
    as long as the process, yet each full collection walked all of them: 80-150 ms pauses about
    once a minute in every service, the largest single contribution to a quiet system's p99
    (docs/reliability.md section 7). Objects made later, per message and per connection, are
    collected as before."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


@asynccontextmanager
async def event_service(
    service: str,
    settings: CommonSettings,
    handlers: Mapping[type[Event], Handler],
    store: Callable[[Conn], Any],
    *,
    event_log: bool = False,
    extra: Callable[[Runtime], Mapping[str, Coroutine[Any, Any, None]]] | None = None,
) -> AsyncIterator[Runtime]:
    """Bus, pools, units of work, outbox relay and consumer for a service that handles events in
    PostgreSQL. `store` binds the service's SQL to a transaction's connection; with `event_log`,
    the service's event log is its outbox (eventlog.py), else its `outbox` table (outbox.py)."""
    configure_logging(service, settings.log_level)
    bus = Bus(settings.amqp_url, settings.topology(), source=service)
    await bus.connect()
    pool = await create_pool(settings.database_url, schema=service)
    api_pool = await create_pool(
        settings.database_url, schema=service, min_size=1, max_size=settings.api_pool_size
    )
    relay: Outgoing = EventLog(pool, bus, service) if event_log else OutboxTable(pool, bus)
    units = UnitsOfWork(pool, store, bus, relay, source=service)
    runtime = Runtime(
        bus=bus,
        pool=pool,
        api_pool=api_pool,
        units=units,
        api_units=UnitsOfWork(api_pool, store, bus, relay, source=service),
    )
    consumer = EventConsumer(
        service=service,
        units=units,
        handlers=handlers,
        prefetch=settings.prefetch,
        batch_size=settings.batch_size,
    )
    await consumer.declare()
    spawn(relay.run(), runtime.tasks, "outbox-relay")
    spawn(consumer.run(), runtime.tasks, "consumer")
    for name, coro in (extra(runtime) if extra else {}).items():
        spawn(coro, runtime.tasks, name)
    tune_collector()
    log.info(
        "service started",
        namespace=settings.namespace,
        partitions=settings.partitions,
        instance=consumer.instance_id,
    )
    try:
        yield runtime
    finally:
        # Partitions go to the other instances before anything else stops: the batch in
        # progress finishes and is acknowledged rather than being redone elsewhere.
        await consumer.stop()
        await cancel_all(runtime.tasks)
        await bus.close()
        await api_pool.close()
        await pool.close()
        log.info("service stopped")


def event_app(
    service: str,
    settings: CommonSettings,
    handlers: Mapping[type[Event], Handler],
    store: Callable[[Conn], Any],
    *,
    title: str,
    event_log: bool = False,
    extra: Callable[[Runtime], Mapping[str, Coroutine[Any, Any, None]]] | None = None,
    setup: Callable[[], AbstractAsyncContextManager[object]] | None = None,
) -> FastAPI:
    """The HTTP face of an event service (health, metrics), its lifespan running `event_service`.

    `setup` is entered before the service starts consuming and left after it stopped: for what
    must exist before the first event is handled (delivery's webhook queue).
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with (
            setup() if setup else nullcontext(),
            event_service(service, settings, handlers, store, event_log=event_log, extra=extra) as runtime,
        ):
            app.state.runtime = runtime
            yield

    app = FastAPI(title=title, lifespan=lifespan)
    # Refused at start without the secret: every internal call would be refused anyway.
    app.state.internal_tokens = internal_tokens(settings)
    add_health_routes(app, lambda: app.state.runtime.ready())
    return app


def run_cli(
    service: str,
    app_factory: Callable[[], ASGIApp],
    settings: CommonSettings,
    *,
    port: int,
    migrations: Path | None = None,
    uvicorn_options: Mapping[str, Any] | None = None,
) -> None:
    parser = argparse.ArgumentParser(prog=f"switchboard-{service}")
    parser.add_argument("command", nargs="?", default="serve", choices=["serve", "migrate"])
    args = parser.parse_args()
    configure_logging(service, settings.log_level)
    if args.command == "migrate":
        if migrations is None:
            log.info("nothing to migrate: this service keeps no tables")
            return
        asyncio.run(ensure_database(settings.database_url))
        apply_migrations(settings.database_url, migrations)
        return
    uvicorn.run(
        app_factory,
        factory=True,
        host=settings.host,
        port=port,
        log_config=None,
        access_log=False,
        # The default lets uvicorn wait forever for open WebSockets; past this the process exits
        # and clients reconnect elsewhere.
        timeout_graceful_shutdown=10,
        **(uvicorn_options or {}),
    )
