"""The systems the scenarios drive: Switchboard, and the room-based baseline (bench/baseline/).

Both speak the same wire subset (JWT on the WebSocket handshake, `send_message`, `new_message`,
`message_received`, `queue_flushed`, `POST /chats`), so one load generator drives both.
"""

import asyncio
import contextlib
import os
import resource
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx

from bench.baseline.launch import running_baseline
from bench.load import bearer
from tests.integration.system import JWT_SECRET, running_system

AMQP_URL = os.environ.get("CHAT_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
DATABASE_URL = os.environ.get(
    "CHAT_DATABASE_URL", "postgresql://switchboard:switchboard@127.0.0.1:5432/switchboard"
)

# Production settings, except the allowances that keep one address or one user from flooding a
# gateway: every benchmark client connects from 127.0.0.1, and the group scenario's one sender
# sends 20 messages a second (twice a person's allowance). The tests' small flush pages and
# compaction limit (tests/integration/system.py) are put back to the production defaults.
SWITCHBOARD_SETTINGS = {
    "CHAT_FLUSH_PAGE_MESSAGES": "1000",
    "CHAT_SYNC_COMPACTION_LIMIT": "1000",
    "CHAT_MAX_CONNECTIONS_PER_IP": "1000000",
    "CHAT_MESSAGE_BURST": "1000000",
    "CHAT_MESSAGES_PER_SECOND": "1000000",
}

# Twenty thousand idle sessions need as many sockets in the gateway and in the load generator,
# past the usual soft limit of 1,024 (and this machine's 20,000). Child processes inherit it.
OPEN_FILES = 65_536


def raise_open_files() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max(soft, OPEN_FILES)
    with contextlib.suppress(ValueError, OSError):
        # Raising the hard limit needs root; without it, take what the hard limit allows.
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(hard, wanted)))
        return
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


@dataclass
class Target:
    name: str
    ws_urls: list[str]
    http_url: str
    secret: str
    # The processes to measure, by name.
    processes: dict[str, int]
    # The one of them that holds the sessions connected to ws_urls[0].
    gateway: str
    # Its database, on the server DATABASE_URL names.
    database: str
    # Whether a sender's other devices get a copy of its own messages (Switchboard does; the
    # baseline, like the guide it follows, does not).
    echoes_to_sender: bool
    # Where each process serves its Prometheus metrics (Switchboard's; none for the baseline).
    metrics_urls: dict[str, str] = field(default_factory=dict)

    async def database_writes(self) -> dict[str, int]:
        """Transactions committed and rows written so far in this target's database, and the
        full-page images the server wrote to its WAL, from PostgreSQL's own statistics (which a
        backend reports within a second or so).

        Full-page images are the trace of a checkpoint: after one starts, the first change to
        each page writes the whole page to the WAL, so commits cost more for a while. The
        counter is the server's (nothing else runs during a step), not this database's.
        """
        # pg_stat_database is cluster-wide: read it from the server's maintenance database.
        conn = await asyncpg.connect(urlunsplit(urlsplit(DATABASE_URL)._replace(path="/postgres")))
        try:
            row = await conn.fetchrow(
                "SELECT xact_commit AS commits, tup_inserted + tup_updated + tup_deleted AS rows,"
                " (SELECT wal_fpi FROM pg_stat_wal) AS full_page_images"
                " FROM pg_stat_database WHERE datname = $1",
                self.database,
            )
        finally:
            await conn.close()
        if row is None:
            return {"commits": 0, "rows": 0, "full_page_images": 0}
        return {key: row[key] for key in ("commits", "rows", "full_page_images")}

    async def create_chats(self, chats: list[tuple[str, list[str], str]], concurrency: int = 20) -> list[str]:
        """Create chats (creator, other members, "direct" or "group") through the HTTP API."""
        gate = asyncio.Semaphore(concurrency)
        async with httpx.AsyncClient(base_url=self.http_url, timeout=120) as http:

            async def one(creator: str, members: list[str], kind: str) -> str:
                async with gate:
                    response = await http.post(
                        "/chats",
                        json={"type": kind, "members": members},
                        headers=bearer(creator, self.secret),
                    )
                    if response.status_code != 201:
                        raise RuntimeError(f"creating a chat: {response.status_code} {response.text}")
                    chat_id: str = response.json()["id"]
                    return chat_id

            return list(await asyncio.gather(*(one(*chat) for chat in chats)))


@contextlib.asynccontextmanager
async def switchboard(
    gateways: int = 2, instances: int = 1, partitions: int | None = None
) -> AsyncIterator[Target]:
    """Messages and delivery as `instances` processes each (sharing the partitions), presence as
    one, and `gateways` gateways; with `partitions`, that many (CHAT_PARTITIONS).

    By default one partition per instance (docs/scaling.md section 2): every partition is a
    queue of its own, and each producer's batches are per partition, so partitions beyond the
    instances that consume them only split the batches into smaller ones.
    """
    settings = dict(SWITCHBOARD_SETTINGS)
    settings["CHAT_PARTITIONS"] = str(partitions if partitions is not None else instances)
    async with running_system(AMQP_URL, DATABASE_URL, gateways=gateways, **settings) as system:
        for _ in range(instances - 1):
            await system.add_instance("messages")
            await system.add_instance("delivery")
        processes = {name: process.popen.pid for name, process in system.processes.items() if process.popen}
        yield Target(
            "switchboard",
            [system.ws_url(i) for i in range(gateways)],
            system.gateway_url(0),
            JWT_SECRET,
            processes,
            "gateway-0",
            urlsplit(system.database_url).path.lstrip("/"),
            echoes_to_sender=True,
            metrics_urls={name: process.url for name, process in system.processes.items()},
        )


@contextlib.asynccontextmanager
async def baseline(
    gateways: int = 2, instances: int = 1, partitions: int | None = None
) -> AsyncIterator[Target]:
    """The room-based reference server: one process, a query per recipient (the arguments are
    Switchboard's and do not apply)."""
    async with running_baseline(DATABASE_URL, secret=JWT_SECRET) as server:
        yield Target(
            "baseline",
            [server.ws_url],
            server.http_url,
            JWT_SECRET,
            {"baseline": server.pid},
            "baseline",
            urlsplit(server.database_url).path.lstrip("/"),
            echoes_to_sender=False,
        )


TARGETS = {"switchboard": switchboard, "baseline": baseline}
