"""The faults a chaos run injects, each one real: signals to real processes, the real broker and
database stopped and started, real sockets cut. Only loopback services are ever touched.
"""

import asyncio
import glob
import random
import shutil
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from tests.integration.system import System

from .load import User

__all__ = ["Fault", "Infra", "Injected", "schedule"]

SERVICES = ("messages", "delivery", "presence")
# Longer than a missed AMQP heartbeat (10 s) plus the broker's detection margin, and than
# presence's 15 s session expiry for a gateway: a stall the system must notice and survive.
STALL_SECONDS = 16.0
# How long a client stops reading, and how long a stopped service stays down before restart.
PAUSE_READING_SECONDS = 5.0
DOWN_SECONDS = 1.0


class Infra:
    """Stops and starts the local RabbitMQ and PostgreSQL, refusing anything but loopback."""

    def __init__(self, amqp_url: str, database_url: str) -> None:
        for url in (amqp_url, database_url):
            host = urlsplit(url).hostname
            if host not in ("127.0.0.1", "localhost", "::1"):
                raise SystemExit(f"chaos only restarts loopback services; {url} is not one")
        missing = [tool for tool in ("rabbitmqctl", "pg_ctlcluster") if shutil.which(tool) is None]
        if missing:
            raise SystemExit(f"chaos needs {', '.join(missing)} to restart the broker and database")
        versions = sorted(Path(p).name for p in glob.glob("/etc/postgresql/*"))
        if not versions:
            raise SystemExit("no PostgreSQL cluster under /etc/postgresql to restart")
        self.pg_version = versions[-1]

    async def _run(self, *command: str) -> None:
        process = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
        )
        _, err = await process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed: {err.decode(errors='replace')}")

    async def restart_broker(self) -> None:
        await self.stop_broker()
        await asyncio.sleep(DOWN_SECONDS)  # the outage itself
        await self.start_broker()

    async def stop_broker(self) -> None:
        # stop_app/start_app: the node stays up, every connection is dropped, durable (quorum)
        # queues and persistent messages survive, as in a broker restart.
        await self._run("rabbitmqctl", "stop_app")

    async def start_broker(self) -> None:
        """Start it again and return once it takes connections."""
        await self._run("rabbitmqctl", "start_app")
        await self._run("rabbitmqctl", "await_startup")

    async def restart_database(self) -> None:
        pg = ("pg_ctlcluster", "--skip-systemctl-redirect", self.pg_version, "main")
        await self._run(*pg, "stop", "-m", "fast")
        await asyncio.sleep(DOWN_SECONDS)
        await self._run(*pg, "start")


@dataclass
class Injected:
    kind: str
    target: str
    started: float
    ended: float
    recovered: float | None = None
    # For a gateway kill: when every user it held was connected and caught up again.
    users_back: float | None = None
    # Seconds from `started` until the load's p99 was back to full speed (speed.py).
    full_speed: float | None = None


@dataclass(frozen=True)
class Fault:
    kind: str
    # A process name of the System ("messages", "gateway-1"), "rabbitmq", "postgresql", or
    # "client" (a random connected user).
    target: str

    async def inject(self, system: System, infra: Infra, users: list[User]) -> str:
        """Do it, return once the fault is over (the process restarted, the stall ended)."""
        return await INJECT[self.kind](self, system, infra, users)


async def _kill9(fault: Fault, system: System, _: Infra, __: list[User]) -> str:
    system.kill(fault.target)
    await asyncio.sleep(DOWN_SECONDS)  # down for a moment, as a crashed process under a supervisor
    await system.restart(fault.target)
    return fault.target


async def _sigterm(fault: Fault, system: System, _: Infra, __: list[User]) -> str:
    # The service drains (a gateway closes its sockets with 1012 so clients move to another)
    # and exits; then its supervisor starts it again.
    await asyncio.to_thread(system.processes[fault.target].stop, signal.SIGTERM)
    await system.restart(fault.target)
    return fault.target


async def _stall(fault: Fault, system: System, _: Infra, __: list[User]) -> str:
    process = system.processes[fault.target]
    process.send_signal(signal.SIGSTOP)
    try:
        await asyncio.sleep(STALL_SECONDS)  # the stall is the fault
    finally:
        process.send_signal(signal.SIGCONT)
    return fault.target


async def _broker(_: Fault, __: System, infra: Infra, ___: list[User]) -> str:
    await infra.restart_broker()
    return "rabbitmq"


async def _database(_: Fault, __: System, infra: Infra, ___: list[User]) -> str:
    await infra.restart_database()
    return "postgresql"


def _some_connected(users: list[User]) -> User:
    return random.choice([u for u in users if u.connected] or users)


async def _cut(_: Fault, __: System, ___: Infra, users: list[User]) -> str:
    user = _some_connected(users)
    user.cut()
    return user.id


async def _slow(_: Fault, __: System, ___: Infra, users: list[User]) -> str:
    user = _some_connected(users)
    user.stop_reading()
    await asyncio.sleep(PAUSE_READING_SECONDS)  # the client not reading is the fault
    user.resume_reading()
    return user.id


INJECT: dict[str, Callable[[Fault, System, Infra, list[User]], Awaitable[str]]] = {
    "kill -9": _kill9,
    "SIGTERM": _sigterm,
    "stall (SIGSTOP)": _stall,
    "broker restart": _broker,
    "database restart": _database,
    "client cut": _cut,
    "slow client": _slow,
}


def schedule(gateways: int, rounds: int) -> list[Fault]:
    """Every kind of fault on every target it applies to, `rounds` times, in random order
    within each round (the first round alone is the short run's schedule)."""
    processes = [*SERVICES, *(f"gateway-{i}" for i in range(gateways))]
    one_round = [
        *(Fault("kill -9", name) for name in processes),
        *(Fault("SIGTERM", name) for name in processes),
        Fault("broker restart", "rabbitmq"),
        Fault("database restart", "postgresql"),
        Fault("client cut", "client"),
        Fault("slow client", "client"),
    ]
    faults: list[Fault] = []
    for n in range(rounds):
        batch = [*one_round, Fault("stall (SIGSTOP)", processes[n % len(processes)])]
        random.shuffle(batch)
        faults += batch
    return faults
