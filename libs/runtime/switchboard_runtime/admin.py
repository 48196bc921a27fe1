"""`switchboard-admin`: look at the dead-letter queues and send their events back.

    switchboard-admin dlq list <service> [--limit N]
    switchboard-admin dlq replay <service> (--id <envelope id> ... | --all)

`<service>` is a name of SUBSCRIPTIONS or OPTIONAL_SUBSCRIPTIONS (messages, delivery, presence,
webhook); its dead letters are in `<ns>.<service>.dead`, one queue whatever its partitions, and a
replay sends each back to the queue of its partition. Settings come from the same `CHAT_*`
variables as the services (`CHAT_AMQP_URL`, `CHAT_NAMESPACE`, `CHAT_PARTITIONS`).

Safe while the services run: no service consumes a dead-letter queue, and this command takes
messages from it only as unacknowledged deliveries. Whatever it does not explicitly acknowledge
goes back to the queue when it is done, or when it dies (the broker requeues a closed channel's
unacknowledged deliveries), so an interrupted run loses nothing. Two runs at once do not see each
other's held messages: a replay that reports an id as not found may simply be racing a list.
"""

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aio_pika
import aiormq.exceptions
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from pamqp.commands import Basic
from pydantic import ValidationError

from switchboard_contracts.events import Envelope
from switchboard_contracts.partitions import partition_key, partition_of
from switchboard_contracts.topology import OPTIONAL_SUBSCRIPTIONS, PARTITIONED, SUBSCRIPTIONS, Topology

from .settings import CommonSettings

__all__ = ["main"]

SERVICES = (*SUBSCRIPTIONS, *OPTIONAL_SUBSCRIPTIONS)
# A terminal line's worth of the payload: enough to recognise the event, not to dump it.
EXCERPT_CHARS = 80
# How many dead letters `list` shows by default: each is held unacknowledged until the listing
# ends, and a screenful is what a person reads; --limit raises it.
DEFAULT_LIST_LIMIT = 100
# Headers the broker keeps per queue: a republished copy must start its own count, or it would
# arrive looking already redelivered.
DROPPED_ON_REPLAY = frozenset({"x-delivery-count"})


@dataclass(frozen=True)
class DeadLetter:
    """What `list` shows of one dead-lettered message."""

    id: str
    type: str
    time: str
    reason: str
    count: int
    first_queue: str
    excerpt: str

    @classmethod
    def of(cls, message: AbstractIncomingMessage) -> "DeadLetter":
        headers = message.headers or {}
        # x-death holds one entry per (queue, reason), the latest first; its count says how many
        # times the message died that way (a replayed poison event adds to it).
        deaths: list[dict[str, Any]] = list(headers.get("x-death") or [])  # type: ignore[arg-type]
        latest = deaths[0] if deaths else {}
        try:
            envelope = Envelope.model_validate_json(message.body)
        except ValidationError:
            # An unreadable event is dead-lettered too; its id is the AMQP message id, if any.
            ident, kind, when = message.message_id or "-", "(unreadable)", "-"
            excerpt = message.body.decode("utf-8", "replace")
        else:
            ident, kind, when = str(envelope.id), envelope.type, envelope.time.isoformat()
            excerpt = json.dumps(envelope.data, ensure_ascii=True)
        return cls(
            id=ident,
            type=kind,
            time=when,
            reason=str(latest.get("reason", "-")),
            count=int(latest.get("count", 0)),
            first_queue=str(headers.get("x-first-death-queue", "-")),
            excerpt=excerpt if len(excerpt) <= EXCERPT_CHARS else excerpt[: EXCERPT_CHARS - 3] + "...",
        )

    def line(self) -> str:
        return (
            f"{self.id}  {self.type}  {self.time}  {self.reason} x{self.count}"
            f" (first died in {self.first_queue})  {self.excerpt}"
        )


async def _held(channel: AbstractChannel, queue_name: str, limit: int) -> list[AbstractIncomingMessage]:
    """Take up to `limit` messages from a dead-letter queue, unacknowledged.

    A passive declare gives the depth now; taking no more than that ends the loop even while
    services keep dead-lettering. All of them stay held until the caller is done: a message
    handed back (nack with requeue) would be the very next one `basic.get` returns, so they
    cannot be looked at one at a time. `basic.get` works here because a dead-letter queue, unlike
    a service queue, has no single active consumer.
    """
    queue = await channel.declare_queue(queue_name, passive=True)
    depth = queue.declaration_result.message_count or 0
    held = []
    for _ in range(min(depth, limit)):
        message = await queue.get(no_ack=False, fail=False)
        if message is None:
            break
        held.append(message)
    return held


async def list_dead(settings: CommonSettings, service: str, limit: int) -> int:
    topology = settings.topology()
    queue_name = topology.dead_letter_queue(service)
    connection = await aio_pika.connect(settings.amqp_url, client_properties={"connection_name": "admin"})
    async with connection:
        channel = await connection.channel()
        held = await _held(channel, queue_name, limit)
        for message in held:
            print(DeadLetter.of(message).line())
        # Closing the channel would requeue them too; saying so is clearer and immediate.
        if held:
            await held[-1].nack(multiple=True, requeue=True)
        print(f"{len(held)} dead-lettered message(s) shown from {queue_name}")
    return 0


async def replay(settings: CommonSettings, service: str, ids: Sequence[str], replay_all: bool) -> int:
    """Move the chosen dead letters back to the service's own queue; 1 if an id was not found.

    They go to the service's queue through the default exchange, not to `<ns>.events`:
    republishing on the topic exchange would hand the event again to every other service bound
    to its type, which handled it already. For a partitioned service that is the queue of the
    event's partition, computed from the event as its publisher did (`target_queue`), so it
    keeps its place in its chat's order. Each copy is persistent and confirmed by the broker
    before its dead letter is acknowledged, so a crash in between leaves it in both queues
    (handled at least once, like everything else), never in neither.
    """
    topology = settings.topology()
    wanted = set(ids)
    connection = await aio_pika.connect(settings.amqp_url, client_properties={"connection_name": "admin"})
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        held = await _held(channel, topology.dead_letter_queue(service), sys.maxsize)
        chosen: list[AbstractIncomingMessage] = []
        kept: list[AbstractIncomingMessage] = []
        for message in held:
            (chosen if replay_all or DeadLetter.of(message).id in wanted else kept).append(message)
        targets: dict[str, int] = {}
        for message in chosen:
            target = target_queue(topology, service, message)
            if target not in targets:
                # Passive: a missing service queue is an error here, not something to create
                # with the wrong arguments.
                await channel.declare_queue(target, passive=True)
                targets[target] = 0
            copy = aio_pika.Message(
                message.body,
                headers={k: v for k, v in (message.headers or {}).items() if k not in DROPPED_ON_REPLAY},
                message_id=message.message_id,
                content_type=message.content_type,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            )
            # mandatory: if the queue vanished since the declare, the copy comes back instead of
            # being dropped, and its dead letter stays.
            confirm = await channel.default_exchange.publish(copy, target, mandatory=True)
            if not isinstance(confirm, Basic.Ack):
                raise RuntimeError(f"{target} did not take {message.message_id}; nothing more replayed")
            await message.ack()
            targets[target] += 1
        for message in kept:
            await message.nack(requeue=True)
        missing = sorted(wanted - {DeadLetter.of(m).id for m in chosen})
        for ident in missing:
            print(f"not found in {topology.dead_letter_queue(service)}: {ident}")
        where = ", ".join(f"{name} ({count})" for name, count in sorted(targets.items())) or "none"
        print(f"{len(chosen)} message(s) replayed to {where}")
    return 1 if missing else 0


def target_queue(topology: Topology, service: str, message: AbstractIncomingMessage) -> str:
    """The queue a dead letter of `service` goes back to.

    A service that is not partitioned has one. For a partitioned one, the queue of the event's
    partition under the current partition count, computed from the envelope; an event that
    cannot be read goes back to the queue it first died in (it will die there again).
    """
    if service not in PARTITIONED:
        return topology.service_queue(service)
    try:
        envelope = Envelope.model_validate_json(message.body)
        key = partition_key(envelope.type, envelope.data)
    except (ValidationError, KeyError, TypeError):
        first = str((message.headers or {}).get("x-first-death-queue", ""))
        if first in topology.queues(service):
            return first
        return topology.partition_queue(service, 0)
    return topology.partition_queue(service, partition_of(key, topology.partitions))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="switchboard-admin", description="Look at the dead-letter queues and replay their events."
    )
    commands = parser.add_subparsers(dest="area", required=True)
    dlq = commands.add_parser("dlq", help="dead-letter queues").add_subparsers(dest="command", required=True)
    listing = dlq.add_parser("list", help="show dead-lettered events; they stay in the queue")
    listing.add_argument("service", choices=SERVICES)
    listing.add_argument("--limit", type=int, default=DEFAULT_LIST_LIMIT)
    replaying = dlq.add_parser("replay", help="move dead-lettered events back to the service's queue")
    replaying.add_argument("service", choices=SERVICES)
    which = replaying.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", dest="ids", action="append", default=[], metavar="ENVELOPE_ID")
    which.add_argument("--all", action="store_true")
    args = parser.parse_args(argv)
    settings = CommonSettings()
    try:
        if args.command == "list":
            sys.exit(asyncio.run(list_dead(settings, args.service, args.limit)))
        sys.exit(asyncio.run(replay(settings, args.service, args.ids, args.all)))
    except aiormq.exceptions.ChannelNotFoundEntity as exc:
        # A wrong CHAT_NAMESPACE, or "webhook" where no delivery process has CHAT_WEBHOOK_URL set.
        sys.exit(f"switchboard-admin: {exc} (namespace {settings.namespace!r})")


if __name__ == "__main__":
    main()
