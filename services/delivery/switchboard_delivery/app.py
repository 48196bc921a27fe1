"""Wiring of the delivery service: membership projection, pending deliveries, routing to users,
notification events, and (when configured) the webhook that posts them."""

from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import Any

import asyncpg
from fastapi import FastAPI

from switchboard_runtime.service import event_app, run_cli

from .domain import FlushPage
from .handlers import handlers_for
from .settings import Settings
from .webhook import Webhook

__all__ = ["create_app", "main"]

SERVICE = "delivery"
MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    handlers = handlers_for(
        FlushPage(settings.flush_page_messages, settings.flush_page_bytes),
        preview_chars=settings.notification_preview_chars,
    )
    if settings.webhook_url is None:
        return event_app(SERVICE, settings, handlers, title="Switchboard delivery")
    webhook = Webhook(str(settings.webhook_url), settings)

    def extra(_: asyncpg.Pool) -> Mapping[str, Coroutine[Any, Any, None]]:
        return {"webhook": webhook.run()}

    return event_app(
        SERVICE, settings, handlers, title="Switchboard delivery", extra=extra, setup=webhook.declared
    )


def main() -> None:
    settings = Settings()
    run_cli(
        SERVICE, lambda: create_app(settings), settings, port=settings.delivery_port, migrations=MIGRATIONS
    )
