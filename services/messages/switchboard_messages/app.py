"""Wiring of the messages service: consumer of `MessageSent`, owner of chats and the event log."""

from pathlib import Path

from fastapi import FastAPI

from switchboard_runtime.http_errors import install_error_handlers
from switchboard_runtime.service import event_app, run_cli

from .api import router
from .handlers import HANDLERS
from .settings import Settings
from .store import Store

__all__ = ["create_app", "main"]

SERVICE = "messages"
MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    # The event log is the outbox: every event this service emits is in it anyway.
    app = event_app(
        SERVICE, settings, HANDLERS, Store, title="Switchboard messages (internal)", event_log=True
    )
    app.state.settings = settings
    app.include_router(router)
    install_error_handlers(app)
    return app


def main() -> None:
    settings = Settings()
    run_cli(
        SERVICE, lambda: create_app(settings), settings, port=settings.messages_port, migrations=MIGRATIONS
    )
