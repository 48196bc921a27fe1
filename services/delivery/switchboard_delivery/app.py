"""Wiring of the delivery service: membership projection, pending deliveries, routing to users."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from switchboard_runtime.service import add_health_routes, event_service, run_cli

from .domain import FlushPage
from .handlers import handlers_for
from .settings import Settings

__all__ = ["create_app", "main"]

SERVICE = "delivery"
MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        handlers = handlers_for(FlushPage(settings.flush_page_messages, settings.flush_page_bytes))
        async with event_service(SERVICE, settings, handlers) as runtime:
            app.state.runtime = runtime
            yield

    app = FastAPI(title="Switchboard delivery", lifespan=lifespan)
    add_health_routes(app, lambda: app.state.runtime.ready())
    return app


def main() -> None:
    settings = Settings()
    run_cli(
        service=SERVICE,
        app_factory=lambda: create_app(settings),
        settings=settings,
        port=settings.delivery_port,
        migrations=MIGRATIONS,
    )
