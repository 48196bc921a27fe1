"""A whole Switchboard, started as real processes on free ports, isolated by name.

Each `System` gets its own database and its own broker namespace, so systems (and test runs)
sharing one RabbitMQ and one PostgreSQL never see each other's messages.
"""

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import asyncpg
import httpx
from tenacity import AsyncRetrying, stop_after_delay, stop_any, wait_fixed

from switchboard_contracts.partitions import DEFAULT_PARTITIONS
from switchboard_contracts.topology import OPTIONAL_SUBSCRIPTIONS, PARTITIONED, SUBSCRIPTIONS, Topology

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
JWT_SECRET = "integration-tests-secret-of-at-least-32-bytes"
INTERNAL_SECRET = "integration-tests-internal-secret-of-32-bytes"
# Services import their whole stack at start; on a busy 2-core machine that takes seconds.
READY_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Process:
    name: str
    command: list[str]
    env: dict[str, str]
    port: int
    log: Path
    popen: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(self.command, env=self.env, stdout=out, stderr=subprocess.STDOUT)

    async def wait_ready(self) -> None:
        """Poll /readyz (the process offers no event to await) until it answers 200."""

        def exited(_: object = None) -> bool:
            return self.popen is not None and self.popen.poll() is not None

        try:
            async with httpx.AsyncClient() as client:
                async for attempt in AsyncRetrying(
                    stop=stop_any(stop_after_delay(READY_TIMEOUT), exited), wait=wait_fixed(0.2), reraise=True
                ):
                    with attempt:
                        (await client.get(f"{self.url}/readyz", timeout=2)).raise_for_status()
        except httpx.HTTPError as exc:
            state = "exited" if exited() else f"not ready after {READY_TIMEOUT}s"
            raise RuntimeError(f"{self.name} {state}:\n{self.tail()}") from exc

    def send_signal(self, sig: signal.Signals) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(sig)

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        if self.popen is None:
            return
        self.send_signal(sig)
        try:
            self.popen.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class System:
    amqp_url: str
    server_database_url: str
    gateways: int = 2
    # Settings for every process of this system, e.g. {"CHAT_WEBHOOK_URL": ...}.
    settings: dict[str, str] = field(default_factory=dict)
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    processes: dict[str, Process] = field(default_factory=dict)
    logdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="switchboard-test-")))

    @property
    def namespace(self) -> str:
        return f"sbtest-{self.tag}"

    @property
    def database_url(self) -> str:
        parts = urlsplit(self.server_database_url)
        return urlunsplit(parts._replace(path=f"/sbtest_{self.tag}"))

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
        env.update(
            CHAT_AMQP_URL=self.amqp_url,
            CHAT_DATABASE_URL=self.database_url,
            CHAT_NAMESPACE=self.namespace,
            CHAT_JWT_SECRET=JWT_SECRET,
            CHAT_INTERNAL_SECRET=INTERNAL_SECRET,
            CHAT_LOG_LEVEL="INFO",
            # Small flush pages, so the offline-queue tests cross page boundaries.
            CHAT_FLUSH_PAGE_MESSAGES="40",
            # A low sync compaction limit, so a test can miss more than it with 120 messages.
            CHAT_SYNC_COMPACTION_LIMIT="100",
            # The delivery, sync and crash tests send hundreds of messages as fast as they can;
            # test_limits.py checks the send limit with small values of its own.
            CHAT_MESSAGE_BURST="1000000",
            CHAT_MESSAGES_PER_SECOND="1000000",
            # Likewise the read pace of one connection (the attack run measures it at its default).
            CHAT_FRAMES_PER_SECOND="1000000",
            CHAT_FRAME_BURST="1000000",
            CHAT_ADDRESS_MESSAGE_BURST="1000000",
            CHAT_ADDRESS_MESSAGES_PER_SECOND="1000000",
            CHAT_ADDRESS_FRAME_BURST="1000000",
            CHAT_ADDRESS_SYNC_BURST="1000000",
            CHAT_ADDRESS_SYNCS_PER_SECOND="1000000",
            CHAT_ADDRESS_FRAMES_PER_SECOND="1000000",
            # Every test client connects from 127.0.0.1, dozens of them at once.
            CHAT_ADDRESS_CONNECT_BURST="1000000",
            CHAT_ADDRESS_CONNECTS_PER_SECOND="1000000",
            # The fuzz and bad-input tests break the protocol from 127.0.0.1 on purpose;
            # test_limits.py checks what a violation costs an address.
            CHAT_ADDRESS_VIOLATION_COST="0",
        )
        env.update(self.settings)
        env.update(extra)
        return env

    def gateway_url(self, index: int = 0) -> str:
        return self.processes[f"gateway-{index}"].url

    def ws_url(self, index: int = 0) -> str:
        return self.gateway_url(index).replace("http://", "ws://") + "/ws"

    async def start(self) -> None:
        for service in ("messages", "delivery", "presence"):
            subprocess.run(  # noqa: ASYNC221 - a one-shot migration before anything runs
                [str(BIN / f"switchboard-{service}"), "migrate"],
                env=self.env(),
                check=True,
                capture_output=True,
            )
        ports = {"messages": free_port(), "delivery": free_port(), "presence": free_port()}
        for service, port in ports.items():
            self._add(service, service, port, **{f"CHAT_{service.upper()}_PORT": str(port)})
        for i in range(self.gateways):
            port = free_port()
            self._add(
                f"gateway-{i}",
                "gateway",
                port,
                CHAT_GATEWAY_PORT=str(port),
                CHAT_MESSAGES_URL=f"http://127.0.0.1:{ports['messages']}",
                CHAT_PRESENCE_URL=f"http://127.0.0.1:{ports['presence']}",
                CHAT_DELIVERY_URL=f"http://127.0.0.1:{ports['delivery']}",
            )
        for process in self.processes.values():
            process.start()
        await asyncio.gather(*(p.wait_ready() for p in self.processes.values()))

    def _add(self, name: str, service: str, port: int, **env: str) -> None:
        self.processes[name] = Process(
            name, [str(BIN / f"switchboard-{service}")], self.env(**env), port, self.logdir / f"{name}.log"
        )

    @property
    def topology(self) -> Topology:
        return Topology(self.namespace, int(self.settings.get("CHAT_PARTITIONS", DEFAULT_PARTITIONS)))

    def instances(self, service: str) -> list[str]:
        """The names of the processes of a service: `messages`, then `messages-2`, ..."""
        return [name for name in self.processes if name == service or name.startswith(f"{service}-")]

    async def add_instance(self, service: str) -> str:
        """Start one more instance of messages, delivery or presence beside the running ones;
        returns its process name (`<service>-2`, `<service>-3`, ...) once it is ready."""
        index = 2
        while f"{service}-{index}" in self.processes:
            index += 1
        name, port = f"{service}-{index}", free_port()
        self._add(name, service, port, **{f"CHAT_{service.upper()}_PORT": str(port)})
        await self.restart(name)
        return name

    def terminate(self, name: str) -> None:
        """SIGTERM, and wait for the process to end (it hands its partitions over first)."""
        self.processes[name].stop(signal.SIGTERM)

    def kill(self, name: str) -> None:
        """kill -9: no goodbye, no flush, no ack."""
        self.processes[name].stop(signal.SIGKILL)

    async def restart(self, name: str) -> None:
        process = self.processes[name]
        process.start()
        await process.wait_ready()

    def logs(self) -> str:
        return "\n".join(f"--- {name}\n{p.tail()}" for name, p in self.processes.items())

    async def stop(self) -> None:
        for process in self.processes.values():
            process.stop()
        await self._remove_broker_objects()
        admin = urlunsplit(urlsplit(self.server_database_url)._replace(path="/postgres"))
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "sbtest_{self.tag}" WITH (FORCE)')
        finally:
            await conn.close()

    async def _remove_broker_objects(self) -> None:
        topology = self.topology
        connection = await aio_pika.connect(self.amqp_url)
        async with connection:
            channel = await connection.channel()
            for service in (*SUBSCRIPTIONS, *OPTIONAL_SUBSCRIPTIONS):
                for queue in (*topology.queues(service), topology.dead_letter_queue(service)):
                    await channel.queue_delete(queue)
            for service in PARTITIONED:
                await channel.exchange_delete(topology.instances_exchange(service))
            for exchange in ("events", "route", "dead-letter"):
                await channel.exchange_delete(f"{self.namespace}.{exchange}")


@contextlib.asynccontextmanager
async def running_system(
    amqp_url: str, database_url: str, gateways: int = 2, **settings: str
) -> AsyncIterator[System]:
    """A started system, stopped and cleaned away afterwards whatever happened."""
    system = System(amqp_url, database_url, gateways=gateways, settings=settings)
    try:
        await system.start()
        yield system
    finally:
        await system.stop()
