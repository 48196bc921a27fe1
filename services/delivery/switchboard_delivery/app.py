"""Wiring of the delivery service: membership projection, pending deliveries, routing to users."""

from pathlib import Path

from fastapi import FastAPI

from switchboard_runtime.service import event_app, run_cli

from .domain import FlushPage
from .handlers import handlers_for
from .settings import Settings

__all__ = ["create_app", "main"]

SERVICE = "delivery"
MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    handlers = handlers_for(FlushPage(settings.flush_page_messages, settings.flush_page_bytes))
    return event_app(SERVICE, settings, handlers, title="Switchboard delivery")


def main() -> None:
    settings = Settings()
    run_cli(
        SERVICE, lambda: create_app(settings), settings, port=settings.delivery_port, migrations=MIGRATIONS
    )
