"""Schema migrations: plain SQL files per service, applied by yoyo under its lock."""

from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import structlog
from yoyo import get_backend, read_migrations

__all__ = ["apply_migrations"]

log = structlog.get_logger()


def apply_migrations(database_url: str, directory: Path) -> int:
    """Apply what is missing and return how many migrations ran (0 when up to date)."""
    parts = urlsplit(database_url)
    backend = get_backend(urlunsplit(parts._replace(scheme="postgresql+psycopg")))
    migrations = read_migrations(str(directory))
    with backend.lock():
        todo = backend.to_apply(migrations)
        backend.apply_migrations(todo)
    log.info("migrations applied", directory=directory.name, applied=len(todo))
    return len(todo)
