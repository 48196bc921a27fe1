"""Wiring of the delivery service: membership projection, pending deliveries, routing to users,
receipts, notification events, and (when configured) the webhook that posts them."""

from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from switchboard_runtime.http_errors import install_error_handlers
from switchboard_runtime.service import Runtime, event_app, run_cli

from .api import router
from .domain import FlushPage
from .handlers import handlers_for
from .settings import Settings
from .store import Store
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
    title = "Switchboard delivery (internal)"
    if settings.webhook_url is None:
        app = event_app(SERVICE, settings, handlers, Store, title=title)
    else:
        webhook = Webhook(str(settings.webhook_url), settings)

        def extra(_: Runtime) -> Mapping[str, Coroutine[Any, Any, None]]:
            return {"webhook": webhook.run()}

        app = event_app(SERVICE, settings, handlers, Store, title=title, extra=extra, setup=webhook.declared)
    app.include_router(router)
    install_error_handlers(app)
    return app


def main() -> None:
    settings = Settings()
    run_cli(
        SERVICE, lambda: create_app(settings), settings, port=settings.delivery_port, migrations=MIGRATIONS
    )
