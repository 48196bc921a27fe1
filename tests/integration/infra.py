"""Where the tests' broker and database come from: env URLs, else testcontainers, else a loud error."""

import contextlib
import os
import warnings
from collections.abc import Iterator

import pytest

FIX = (
    "Set CHAT_AMQP_URL and CHAT_DATABASE_URL to a running RabbitMQ and PostgreSQL "
    "(scripts/test does this for the local ones), or start a Docker engine for testcontainers."
)


@contextlib.contextmanager
def broker_url() -> Iterator[str]:
    if url := os.environ.get("CHAT_AMQP_URL"):
        yield url
        return
    try:
        # testcontainers warns about its own deprecated internals; not ours to fix.
        warnings.simplefilter("ignore", DeprecationWarning)
        from testcontainers.community.rabbitmq import RabbitMqContainer

        with RabbitMqContainer("rabbitmq:3.13-management") as rabbit:
            host, port = rabbit.get_container_host_ip(), rabbit.get_exposed_port(5672)
            yield f"amqp://guest:guest@{host}:{port}/"
    except Exception as exc:  # docker.errors.DockerException and friends
        raise pytest.UsageError(f"No RabbitMQ for the tests: {exc}. {FIX}") from exc


@contextlib.contextmanager
def database_url() -> Iterator[str]:
    if url := os.environ.get("CHAT_DATABASE_URL"):
        yield url
        return
    try:
        warnings.simplefilter("ignore", DeprecationWarning)
        from testcontainers.community.postgres import PostgresContainer

        with PostgresContainer("postgres:15", driver=None) as postgres:
            yield postgres.get_connection_url()
    except Exception as exc:
        raise pytest.UsageError(f"No PostgreSQL for the tests: {exc}. {FIX}") from exc
