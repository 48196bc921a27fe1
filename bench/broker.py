"""What the broker itself counted: messages published, routed, delivered and acknowledged.

RabbitMQ 3.10 keeps global counters that need no plugin (the management plugin's rates would be
load of their own, and are not enabled here); `rabbitmqctl eval` prints them as an Erlang map:

    #{[{protocol,amqp091}] => #{messages_received_total => 24564, messages_routed_total => ...},
      [{protocol,amqp091},{queue_type,rabbit_classic_queue}] => #{messages_delivered_total => ...,
                                                                  messages_acknowledged_total => ...},
      [{protocol,amqp091},{queue_type,rabbit_quorum_queue}] => #{...}, ...}

The counters are the whole broker's, every virtual host's: a window's figures are the system
under test's only while nothing else uses the broker, as the suite already requires of the
machine. Reading them starts an Erlang VM for the CLI (about a second and most of a core), so a
window reads them before it starts measuring CPU and after it stops.
"""

import asyncio
import contextlib
import re
import shutil
from dataclasses import dataclass

COMMAND = ("rabbitmqctl", "eval", "rabbit_global_counters:overview().")
# The CLI answers in about a second; far past that, the node is in trouble and the figures are
# given up on rather than holding the run.
TIMEOUT_SECONDS = 30.0

PROTOCOL = {"protocol": "amqp091"}
# Queue types whose deliveries and acknowledgements are counted: the services use only these.
QUEUE_TYPES = ("rabbit_classic_queue", "rabbit_quorum_queue")

# One block of the map: a key list (tuples only, so no brackets inside) and a map of counters
# (integers only, so no braces inside). Pretty-printing may break a line anywhere in either.
_BLOCK = re.compile(r"\[([^\[\]]*)\]\s*=>\s*#\{([^{}]*)\}")
_TAG = re.compile(r"\{\s*(\w+)\s*,\s*(\w+)\s*\}")
_COUNTER = re.compile(r"(\w+)\s*=>\s*(-?\d+)")


@dataclass
class Reading:
    """The counters at one moment, or why they could not be read."""

    counters: dict[str, int] | None
    error: str | None = None


def parse(text: str) -> dict[str, int]:
    """The counters this suite reports, from `rabbit_global_counters:overview()` output; raises
    ValueError when a block they come from is missing."""
    blocks: dict[tuple[tuple[str, str], ...], dict[str, int]] = {}
    for key, body in _BLOCK.findall(text):
        tags = tuple(sorted(_TAG.findall(key)))
        blocks[tags] = {name: int(value) for name, value in _COUNTER.findall(body)}
    protocol = blocks.get(tuple(PROTOCOL.items()))
    if protocol is None:
        raise ValueError("no [{protocol,amqp091}] block")
    per_type = []
    for queue_type in QUEUE_TYPES:
        block = blocks.get(tuple(sorted({**PROTOCOL, "queue_type": queue_type}.items())))
        if block is None:
            raise ValueError(f"no {queue_type} block")
        per_type.append(block)
    try:
        return {
            "publishes": protocol["messages_received_total"],
            "routed": protocol["messages_routed_total"],
            "deliveries": sum(block["messages_delivered_total"] for block in per_type),
            "acks": sum(block["messages_acknowledged_total"] for block in per_type),
            # Quorum queues are where the services' persistent events go: each delivery from one
            # was a replicated write, the work the floor's quorum-queue rate measures.
            "quorum_deliveries": per_type[QUEUE_TYPES.index("rabbit_quorum_queue")][
                "messages_delivered_total"
            ],
        }
    except KeyError as missing:
        raise ValueError(f"no counter {missing}") from None


async def read() -> Reading:
    """The broker's counters now; never raises: a missing or failing CLI is a Reading with the
    reason, and the run goes on without broker figures."""
    if shutil.which(COMMAND[0]) is None:
        return Reading(None, f"{COMMAND[0]} not found")
    try:
        process = await asyncio.create_subprocess_exec(
            *COMMAND, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
    except OSError as error:
        return Reading(None, f"{COMMAND[0]} did not start: {error}")
    try:
        async with asyncio.timeout(TIMEOUT_SECONDS):
            out, err = await process.communicate()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        return Reading(None, f"{COMMAND[0]} gave no answer in {TIMEOUT_SECONDS:g} s")
    if process.returncode != 0:
        detail = (err or out).decode(errors="replace").strip().splitlines()
        return Reading(None, f"{COMMAND[0]} failed ({process.returncode}): {' '.join(detail[:2])}")
    try:
        return Reading(parse(out.decode(errors="replace")))
    except ValueError as error:
        return Reading(None, f"unexpected {COMMAND[0]} output: {error}")


def per_unit(before: Reading, after: Reading, units: int) -> tuple[dict[str, float] | None, str | None]:
    """Each counter's growth between two readings per unit (a message sent, or a delivery), or
    None and why."""
    if before.counters is None or after.counters is None:
        return None, before.error or after.error
    if units <= 0:
        return None, "nothing was sent"
    return {
        key: round((after.counters[key] - before.counters[key]) / units, 2) for key in before.counters
    }, None
