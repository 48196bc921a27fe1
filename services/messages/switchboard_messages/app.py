"""Wiring of the messages service: consumer of `MessageSent`, owner of chats and the event log."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from switchboard_runtime.http_errors import install_error_handlers
from switchboard_runtime.service import add_health_routes, event_service, run_cli

from .api import router
from .handlers import HANDLERS
from .settings import Settings

__all__ = ["create_app", "main"]

SERVICE = "messages"
MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with event_service(SERVICE, settings, HANDLERS) as runtime:
            app.state.runtime = runtime
            yield

    app = FastAPI(title="Switchboard messages (internal)", lifespan=lifespan)
    app.include_router(router)
    install_error_handlers(app)
    add_health_routes(app, lambda: app.state.runtime.ready())
    return app


def main() -> None:
    settings = Settings()
    run_cli(
        service=SERVICE,
        app_factory=lambda: create_app(settings),
        settings=settings,
        port=settings.messages_port,
        migrations=MIGRATIONS,
    )
