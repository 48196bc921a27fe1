"""Starts the baseline server as a real process with a database of its own, for the benchmark.

    async with running_baseline(database_url, secret=secret) as baseline:
        ...  # drive baseline.ws_url and baseline.http_url; read /proc/<baseline.pid>

Mirrors tests/integration/system.py's `running_system`: a uniquely named database on the given
PostgreSQL, a free port, a log file, readiness polled rather than slept for, and everything
stopped and dropped afterwards whatever happened.
"""

import asyncio
import contextlib
import os
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_fixed

from tests.integration.system import BIN, READY_TIMEOUT, ROOT, Process, free_port

__all__ = ["Baseline", "running_baseline"]


@dataclass
class Baseline:
    process: Process
    database_url: str

    @property
    def http_url(self) -> str:
        return self.process.url

    @property
    def ws_url(self) -> str:
        return self.http_url.replace("http://", "ws://") + "/ws"

    @property
    def pid(self) -> int:
        if self.process.popen is None:
            raise RuntimeError("the baseline process is not running")
        return self.process.popen.pid

    @property
    def log(self) -> Path:
        return self.process.log

    def logs(self) -> str:
        return self.process.tail()


def _with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


async def _admin(database_url: str, statement: str) -> None:
    """Run one statement on the server's `postgres` database (CREATE and DROP DATABASE cannot
    run inside the database they name)."""
    conn = await asyncpg.connect(_with_database(database_url, "postgres"))
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def _wait_healthy(process: Process) -> None:
    """Poll /healthz (the process offers no event to await) until it answers 200."""
    async with httpx.AsyncClient() as client:
        async for attempt in AsyncRetrying(
            stop=stop_after_delay(READY_TIMEOUT),
            wait=wait_fixed(0.2),
            retry=retry_if_exception_type(httpx.HTTPError),
            reraise=True,
        ):
            with attempt:
                if process.popen is not None and process.popen.poll() is not None:
                    raise RuntimeError(f"{process.name} exited:\n{process.tail()}")
                (await client.get(f"{process.url}/healthz", timeout=2)).raise_for_status()


@contextlib.asynccontextmanager
async def running_baseline(database_url: str, *, secret: str) -> AsyncIterator[Baseline]:
    """A started baseline server on 127.0.0.1 with a fresh database, stopped (SIGTERM, then
    SIGKILL after 15 s) and its database dropped afterwards.

    `database_url` names any database on the PostgreSQL to use; its role must be allowed to
    create databases. `secret` is the HS256 secret the tokens are signed with.
    """
    name = f"sbbase_{uuid.uuid4().hex[:10]}"
    await _admin(database_url, f'CREATE DATABASE "{name}"')
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASELINE_")}
    env.update(
        BASELINE_DATABASE_URL=_with_database(database_url, name),
        BASELINE_JWT_SECRET=secret,
        BASELINE_HOST="127.0.0.1",
        BASELINE_PORT=str(port),
        # `python -m bench.baseline.server` needs the repository on the path: the workspace
        # installs the services, not the bench package.
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
    )
    logdir = Path(tempfile.mkdtemp(prefix="switchboard-baseline-"))
    process = Process(
        "baseline", [str(BIN / "python"), "-m", "bench.baseline.server"], env, port, logdir / "baseline.log"
    )
    try:
        process.start()
        await _wait_healthy(process)
        yield Baseline(process, env["BASELINE_DATABASE_URL"])
    finally:
        await asyncio.to_thread(process.stop)  # SIGTERM, then SIGKILL after 15 s
        await _admin(database_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
